"""Reading, conforming and writing clips and frames.

A clip's frames are a uint8 RGB array of shape (F, H, W, 3), values 0..255. Wan2.1's VAE compresses
time by 4, so a clip must have 4k+1 frames (5, 9, 17, 33, 49, 81, ...); its width and height must be
multiples of 16. `conform_clip` brings any clip to that shape: it picks frames (uniformly or the first
N), scales the frames until they cover the target size and centre-crops the rest, and records what it
changed in `Clip.notes` so the user can be told.

Frame selection (`select_frames`) and geometry (`resize_center_crop`, `cover_crop_geometry`) work on
any array whose first axis is time, so masks are conformed with exactly the same choices
(see `maskedit.masks.conform_region`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskedit.errors import MaskEditError
from maskedit.files import atomic_path

TEMPORAL_STRIDE = 4  # Wan VAE temporal compression: valid frame counts are 4k+1
SIZE_MULTIPLE = 16  # width and height must be multiples of this
LANDSCAPE_SIZE = (832, 480)  # (width, height)
PORTRAIT_SIZE = (480, 832)  # (width, height)
MIN_FRAMES = TEMPORAL_STRIDE + 1  # the shortest clip the method can use
MAX_DEFAULT_FRAMES = 81  # what conform_clip keeps at most unless told otherwise
DEFAULT_FOLDER_FPS = 16.0  # Wan2.1's native frame rate, for folders of frames

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".ogv", ".3gp")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
WRITABLE_VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v")
VIDEO_CRF = 18  # x264 quality: visually near-lossless, small files

_READABLE_FORMATS = "a video file (mp4, mov, webm, mkv, avi, gif) or a folder of frames (png, jpg, webp, bmp)"


@dataclass
class Clip:
    """A video clip.

    frames: uint8 RGB array (F, H, W, 3), values 0..255.
    fps: frames per second (float, > 0).
    notes: human-readable notes of what reading or conforming changed.
    """

    frames: np.ndarray
    fps: float
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


# ----- frame counts


def is_valid_frame_count(num_frames: int) -> bool:
    """True for the counts Wan's VAE accepts: 4k+1 (1, 5, 9, ..., 49, ..., 81)."""
    return num_frames >= 1 and (num_frames - 1) % TEMPORAL_STRIDE == 0


def check_frame_count(num_frames: int) -> None:
    """Raise MaskEditError unless `num_frames` is 4k+1."""
    if not is_valid_frame_count(num_frames):
        lower = largest_valid_frame_count(num_frames) if num_frames >= 1 else None
        hint = f" (the nearest below is {lower})" if lower else ""
        raise MaskEditError(
            f"the number of frames is {num_frames}, but it must be 4k+1, e.g. 17, 33, 49, 81{hint}; "
            "choose one of those"
        )


def largest_valid_frame_count(num_frames: int) -> int:
    """The largest 4k+1 that is <= `num_frames` (>= 1)."""
    if num_frames < 1:
        raise MaskEditError(f"a clip needs at least 1 frame, got {num_frames}")
    return (num_frames - 1) // TEMPORAL_STRIDE * TEMPORAL_STRIDE + 1


# ----- reading


def read_video(path: str | os.PathLike, folder_fps: float = DEFAULT_FOLDER_FPS) -> Clip:
    """Read a video file, or a folder of image frames, as a Clip.

    Video files (mp4, mov, webm, mkv, avi, gif, ...) are decoded by ffmpeg and keep their fps. A folder
    is read as its image files in natural name order (frame2 before frame10) at `folder_fps`.
    Raises MaskEditError when the path is missing or cannot be read as a video.
    """
    path = Path(path)
    if not path.exists():
        raise MaskEditError(f"{path} does not exist; give {_READABLE_FORMATS}")
    if path.is_dir():
        return _read_frame_folder(path, folder_fps)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise MaskEditError(f"{path} is a single image, not a video; give {_READABLE_FORMATS}")
    # ffmpeg would happily "decode" a text file as ANSI art, so only known video names go to it.
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise MaskEditError(f"{path} could not be read as a video (unknown file type); give {_READABLE_FORMATS}")
    return _read_video_file(path)


def _read_video_file(path: Path) -> Clip:
    def not_a_video(why: str) -> MaskEditError:
        return MaskEditError(f"{path} could not be read as a video ({why}); give {_READABLE_FORMATS}")

    reader = None
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]
    except Exception as err:  # ffmpeg reports corrupt/unsupported input as several error types
        raise not_a_video(f"ffmpeg: {_first_line(err)}") from None
    finally:
        if reader is not None:
            reader.close()
    if not frames:
        raise not_a_video("it holds no frames")
    clip = Clip(np.stack(frames), float(meta.get("fps") or 0.0))
    if clip.fps <= 0:
        clip.fps = DEFAULT_FOLDER_FPS
        clip.notes.append(f"frame rate unknown; assumed {DEFAULT_FOLDER_FPS:g} fps")
    return clip


def _read_frame_folder(folder: Path, fps: float) -> Clip:
    files = sorted(
        (p for p in folder.iterdir()
         if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise MaskEditError(
            f"the folder {folder} holds no image frames; give {_READABLE_FORMATS}"
        )
    frames = [read_image(p) for p in files]
    height, width = frames[0].shape[:2]
    for file, frame in zip(files, frames):
        if frame.shape[:2] != (height, width):
            raise MaskEditError(
                f"the frames in {folder} differ in size: {files[0].name} is {width}x{height} but {file.name} "
                f"is {frame.shape[1]}x{frame.shape[0]}; every frame of a clip must have the same size"
            )
    return Clip(np.stack(frames), float(fps))


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----- frame selection


def select_frame_indices(num_available: int, num_frames: int, mode: str = "uniform", start: int = 0) -> np.ndarray:
    """Indices (int64, strictly increasing) of the frames `select_frames` keeps.

    "first" keeps frames start, start+1, ..., start+num_frames-1; "uniform" spreads num_frames over
    start..num_available-1 (first and last included, rounded to the nearest frame).
    """
    check_frame_count(num_frames)
    if mode not in ("uniform", "first"):
        raise MaskEditError(f"the frame selection mode is {mode!r}; use 'uniform' or 'first'")
    if num_available < MIN_FRAMES:
        raise MaskEditError(
            f"the clip has {num_available} frame(s); at least {MIN_FRAMES} are needed"
        )
    if num_frames < MIN_FRAMES:
        raise MaskEditError(f"a clip needs at least {MIN_FRAMES} frames; {num_frames} were asked for")
    if not 0 <= start < num_available:
        raise MaskEditError(
            f"the start frame is {start} but the clip has frames 0..{num_available - 1}"
        )
    remaining = num_available - start
    if remaining < num_frames:
        raise MaskEditError(
            f"the clip has {num_available} frames ({remaining} from frame {start} on) but {num_frames} "
            f"are needed; ask for fewer frames (e.g. {largest_valid_frame_count(remaining)}) or start earlier"
        )
    if mode == "first":
        return np.arange(start, start + num_frames, dtype=np.int64)
    # Round half up rather than numpy's half-to-even: with spacing >= 1 this keeps indices strictly increasing.
    positions = np.linspace(start, num_available - 1, num_frames)
    return np.floor(positions + 0.5).astype(np.int64)


def select_frames(frames: np.ndarray, num_frames: int, mode: str = "uniform", start: int = 0) -> tuple[np.ndarray, str | None]:
    """Keep `num_frames` (4k+1) frames of `frames` (any array with time first, e.g. (F,H,W,3) or (F,H,W)).

    Returns (selected frames, note), note None when nothing changed. See `select_frame_indices`.
    """
    total = int(frames.shape[0])
    indices = select_frame_indices(total, num_frames, mode, start)
    if num_frames == total:
        return frames, None
    how = "uniform" if mode == "uniform" else "first"
    where = f" from frame {start}" if start else ""
    return frames[indices], f"kept {num_frames} of {total} frames ({how}{where})"


# ----- geometry


def check_size_multiple(width: int, height: int) -> None:
    """Raise MaskEditError unless width and height are positive multiples of 16."""
    if width <= 0 or height <= 0 or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        raise MaskEditError(
            f"the size {width}x{height} is not allowed: width and height must be multiples of "
            f"{SIZE_MULTIPLE}, e.g. {LANDSCAPE_SIZE[0]}x{LANDSCAPE_SIZE[1]} or {PORTRAIT_SIZE[0]}x{PORTRAIT_SIZE[1]}"
        )


def cover_crop_geometry(src_width: int, src_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """How to scale a src image so it covers width x height, then centre-crop.

    Returns (scaled_width, scaled_height, left, top): scale to scaled_width x scaled_height, then keep
    columns left..left+width-1 and rows top..top+height-1.
    """
    scale = max(width / src_width, height / src_height)
    scaled_width = max(width, round(src_width * scale))
    scaled_height = max(height, round(src_height * scale))
    return scaled_width, scaled_height, (scaled_width - width) // 2, (scaled_height - height) // 2


def _resize_crop_image(image: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    src_height, src_width = image.shape[:2]
    scaled_width, scaled_height, left, top = cover_crop_geometry(src_width, src_height, width, height)
    pil = Image.fromarray(image)
    if (scaled_width, scaled_height) != (src_width, src_height):
        pil = pil.resize((scaled_width, scaled_height), resample)
    return np.asarray(pil.crop((left, top, left + width, top + height)))


def resize_frames(frames: np.ndarray, width: int, height: int, resample: int = Image.LANCZOS) -> np.ndarray:
    """Resize+centre-crop every frame of a (F, H, W[, C]) uint8 array to (F, height, width[, C]).

    Returns `frames` itself when it already has the size.
    """
    check_size_multiple(width, height)
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([_resize_crop_image(frame, width, height, resample) for frame in frames])


def resize_center_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale (F, H, W, 3) uint8 frames to cover width x height (Lanczos), then centre-crop.

    width and height must be multiples of 16. Returns `frames` itself when the size already matches.
    """
    return resize_frames(frames, width, height, Image.LANCZOS)


def default_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) to conform to: 832x480 for landscape or square sources, 480x832 for portrait."""
    return LANDSCAPE_SIZE if width >= height else PORTRAIT_SIZE


def resolve_conform_settings(num_available: int, src_height: int, src_width: int, num_frames: int | None = None,
                             width: int | None = None, height: int | None = None, start: int = 0) -> tuple[int, int, int]:
    """Fill in conform_clip's defaults: returns (num_frames, width, height).

    num_frames None → the largest 4k+1 <= min(frames from `start` on, 81); width/height None →
    `default_size` (both or neither must be given).
    """
    if (width is None) != (height is None):
        raise MaskEditError("give both width and height, or neither to use the default size")
    if width is None:
        width, height = default_size(src_height, src_width)
    if num_frames is None:
        num_frames = largest_valid_frame_count(max(1, min(num_available - start, MAX_DEFAULT_FRAMES)))
    return num_frames, width, height


def conform_clip(clip: Clip, num_frames: int | None = None, width: int | None = None, height: int | None = None,
                 mode: str = "uniform", start: int = 0) -> Clip:
    """Bring a clip to 4k+1 frames and a multiple-of-16 size; the result's notes say what changed.

    Defaults: see `resolve_conform_settings`. When "uniform" selection skips frames, the fps drops so the
    clip keeps its duration: fps * (num_frames-1) / (last index - first index).
    """
    num_frames, width, height = resolve_conform_settings(
        clip.num_frames, clip.height, clip.width, num_frames, width, height, start)
    check_size_multiple(width, height)
    notes = list(clip.notes)
    frames, note = select_frames(clip.frames, num_frames, mode, start)
    if note:
        notes.append(note)
    fps = clip.fps
    indices = select_frame_indices(clip.num_frames, num_frames, mode, start)
    span = int(indices[-1] - indices[0])
    if mode == "uniform" and span > num_frames - 1:
        fps = clip.fps * (num_frames - 1) / span
        notes.append(f"fps {_format_fps(clip.fps)} → {_format_fps(fps)}")
    if frames.shape[1:3] != (height, width):
        scaled_width, scaled_height, _, _ = cover_crop_geometry(clip.width, clip.height, width, height)
        note = f"resized {clip.width}x{clip.height} → {scaled_width}x{scaled_height}"
        if (scaled_width, scaled_height) != (width, height):
            note += f" and centre-cropped to {width}x{height}"
        notes.append(note)
        frames = resize_center_crop(frames, width, height)
    return Clip(frames, fps, notes)


def _format_fps(fps: float) -> str:
    return f"{round(fps, 2):g}"


# ----- writing


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Write (F, H, W, 3) uint8 RGB frames as a browser-playable H.264 mp4 (yuv420p, faststart).

    Width and height must be even (yuv420p). The file appears only when complete: frames go to a
    temporary file in the same folder, renamed on success. Parent folders are created.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1 or frames.dtype != np.uint8:
        raise MaskEditError(
            f"cannot write a video from an array of shape {frames.shape} and dtype {frames.dtype}; "
            "expected uint8 frames of shape (F, H, W, 3)"
        )
    _, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise MaskEditError(
            f"cannot write a {width}x{height} video: H.264 (yuv420p) needs an even width and height; "
            "resize or crop the frames first"
        )
    if not fps or fps <= 0:
        raise MaskEditError(f"cannot write a video at {fps} fps; the frame rate must be positive")
    if path.suffix.lower() not in WRITABLE_VIDEO_EXTENSIONS:
        raise MaskEditError(
            f"cannot write {path.name}: videos are written as H.264, give a name ending in .mp4"
        )
    try:
        with atomic_path(path) as temp_name:
            writer = imageio_ffmpeg.write_frames(
                temp_name, (int(width), int(height)), fps=float(fps), codec="libx264",
                pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                ffmpeg_log_level="error",
                output_params=["-crf", str(VIDEO_CRF), "-movflags", "+faststart"],
            )
            writer.send(None)
            try:
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame))
            finally:
                writer.close()
    except Exception as err:
        raise MaskEditError(f"could not write the video {path} (ffmpeg: {_first_line(err)})") from None


# ----- single images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (png, jpg, webp, bmp, ...) as (H, W, 3) uint8 RGB, honouring EXIF rotation."""
    path = Path(path)
    if not path.is_file():
        raise MaskEditError(f"{path} does not exist or is not a file; give an image (png, jpg, webp, bmp)")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise MaskEditError(
            f"{path} could not be read as an image ({_first_line(err)}); give a png, jpg, webp or bmp file"
        ) from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB or (H, W) uint8/bool image; the format follows the file name.

    Parent folders are created; the file appears only when complete.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise MaskEditError(
            f"cannot write an image from an array of shape {image.shape} and dtype {image.dtype}; "
            "expected uint8 (H, W, 3) or (H, W)"
        )
    try:
        with atomic_path(path) as temp_name:
            Image.fromarray(image).save(temp_name, format=Image.registered_extensions().get(path.suffix.lower()))
    except (ValueError, OSError, KeyError) as err:
        raise MaskEditError(f"could not write the image {path} ({_first_line(err)}); use .png or .jpg") from None


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize+centre-crop an (H, W, 3) uint8 image to (height, width, 3), the same way as clip frames."""
    return resize_center_crop(image[None], width, height)[0]


def check_image_size(image: np.ndarray, width: int, height: int, what: str = "edited frame") -> None:
    """Raise MaskEditError unless `image` (H, W, 3) is width x height; the message offers 'fit'."""
    image_height, image_width = image.shape[:2]
    if (image_width, image_height) != (width, height):
        raise MaskEditError(
            f"the {what} is {image_width}x{image_height} but the clip is {width}x{height}; resize it to "
            f"{width}x{height}, or use fit (--fit) to resize and centre-crop it automatically"
        )
