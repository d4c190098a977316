"""Reading, conforming and writing clips and frames.

A clip's frames are a uint8 RGB array of shape (F, H, W, 3), values 0..255. Wan2.1's VAE compresses
time by 4, so a clip must have 4k+1 frames (5, 9, 17, 33, 49, 81, ...); its width and height must be
multiples of 16. `conform_clip` brings any clip to that shape: it picks frames (uniformly or the first
N), scales the frames until they cover the target size and centre-crops the rest, and records what it
changed in `Clip.notes` so the user can be told.

Frame selection (`select_frames`) and geometry (`resize_center_crop`, `cover_crop_geometry`) work on
any array whose first axis is time, so masks are conformed with exactly the same choices
(see `maskedit.method.masks.conform_region`).

`read_conformed` is `conform_clip(read_video(path), ...)` bit for bit, but decodes only the frames it keeps
(ffmpeg's select filter; it stops after the last one) and resizes each as it arrives, so its memory is
the conformed clip's plus one source frame, whatever the source's length or resolution. Sources beyond
`maskedit.limits`' duration, size and frame limits are refused before decoding; a file that decodes to
fewer frames than its header promises is read with a warning note that it is truncated or damaged.
Frames are the stream's decoded frames as they are (no frames duplicated or dropped to a constant rate).
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
from maskedit.media.files import atomic_path, display_path
from maskedit.limits import MAX_SOURCE_FRAMES, MAX_SOURCE_SECONDS, MAX_SOURCE_SIDE

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


class FrameShape:
    """`num_frames`, `height` and `width` of a class whose `frames` is an array (F, H, W, 3)."""

    frames: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


@dataclass
class Clip(FrameShape):
    """A video clip.

    frames: uint8 RGB array (F, H, W, 3), values 0..255.
    fps: frames per second (float, > 0).
    notes: human-readable notes of what reading or conforming changed.
    """

    frames: np.ndarray
    fps: float
    notes: list[str] = field(default_factory=list)


@dataclass
class SourceInfo:
    """What a source video holds, learnt without decoding its frames into memory.

    width, height: pixels (after the container's rotation). num_frames: decodable frames. fps: > 0.
    duration: the container's duration in seconds, None when it does not say. notes: warnings for the user.
    """

    width: int
    height: int
    num_frames: int
    fps: float
    duration: float | None = None
    notes: list[str] = field(default_factory=list)


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
    path = _check_source_path(path)
    if path.is_dir():
        return _read_frame_folder(path, folder_fps)
    return _read_video_file(path)


def _check_source_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    shown = display_path(path)
    if not path.exists():
        raise MaskEditError(f"{shown} does not exist; give {_READABLE_FORMATS}")
    if path.is_dir():
        return path
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise MaskEditError(f"{shown} is a single image, not a video; give {_READABLE_FORMATS}")
    # ffmpeg would happily "decode" a text file as ANSI art, so only known video names go to it.
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise MaskEditError(f"{shown} could not be read as a video (unknown file type); give {_READABLE_FORMATS}")
    return path


def _not_a_video(path: Path, why: str) -> MaskEditError:
    return MaskEditError(f"{display_path(path)} could not be read as a video ({why}); give {_READABLE_FORMATS}")


def _decoded_frames(path: Path, output_params: list[str] | None = None):
    """(meta, iterator of (H, W, 3) uint8 frames) from ffmpeg, the stream's frames as decoded (no frame rate
    conversion); the source limits are checked on the header before any frame is decoded."""
    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "passthrough", *(output_params or [])])
    try:
        meta = next(reader)
        _check_source_limits(path, *meta["size"], meta.get("duration"))
    except BaseException:
        reader.close()
        raise
    return meta, _FrameStream(reader, *meta["size"])


class _FrameStream:
    """Frames of an ffmpeg reader as (H, W, 3) uint8 arrays; close() ends ffmpeg (also when never iterated)."""

    def __init__(self, reader, width: int, height: int):
        self.reader, self.width, self.height = reader, width, height

    def __iter__(self):
        try:
            for raw in self.reader:
                yield np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 3)
        finally:
            self.close()

    def close(self) -> None:
        self.reader.close()


def _check_source_limits(path: Path, width: int, height: int, duration: float | None = None,
                         num_frames: int | None = None) -> None:
    problems = []
    if max(width, height) > MAX_SOURCE_SIDE:
        problems.append(f"it is {width}x{height}, larger than {MAX_SOURCE_SIDE} pixels on a side")
    if duration is not None and duration > MAX_SOURCE_SECONDS:
        problems.append(f"it lasts {duration:g} s, longer than {MAX_SOURCE_SECONDS:g} s")
    if num_frames is not None and num_frames > MAX_SOURCE_FRAMES:
        problems.append(f"it holds {num_frames} frames, more than {MAX_SOURCE_FRAMES}")
    if problems:
        raise MaskEditError(f"{display_path(path)} is too large to edit: {'; '.join(problems)}. Cut or scale it "
                            f"down first (e.g. with ffmpeg -ss START -t SECONDS -vf scale=-2:1080)")


def _read_video_file(path: Path) -> Clip:
    try:
        meta, frames = _decoded_frames(path)
        frames = list(frames)
    except MaskEditError:
        raise
    except Exception as err:  # ffmpeg reports corrupt/unsupported input as several error types
        raise _not_a_video(path, f"ffmpeg: {_first_line(err)}") from None
    if not frames:
        raise _not_a_video(path, "it holds no frames")
    clip = Clip(np.stack(frames), float(meta.get("fps") or 0.0))
    if clip.fps <= 0:
        clip.fps = DEFAULT_FOLDER_FPS
        clip.notes.append(f"frame rate unknown; assumed {DEFAULT_FOLDER_FPS:g} fps")
    return clip


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(
        (p for p in folder.iterdir()
         if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise MaskEditError(
            f"the folder {display_path(folder)} holds no image frames; give {_READABLE_FORMATS}"
        )
    if len(files) > MAX_SOURCE_FRAMES:
        _check_source_limits(folder, 0, 0, num_frames=len(files))
    return files


def _read_frame_folder(folder: Path, fps: float) -> Clip:
    files = _frame_files(folder)
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


def box_to_conformed(box, src_width: int, src_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A box x0,y0,x1,y1 (x1, y1 exclusive) in pixels of the source frame → the same region in pixels of the frame
    conformed to width x height (resized to cover, centre-cropped: `resize_frames`' geometry), grown outward to
    whole pixels and clipped to the frame. MaskEditError when nothing of it is left after the crop."""
    scaled_width, scaled_height, left, top = cover_crop_geometry(src_width, src_height, width, height)
    sx, sy = scaled_width / src_width, scaled_height / src_height
    x0, y0, x1, y1 = (float(v) for v in box)
    mapped = (max(0, int(np.floor(x0 * sx - left))), max(0, int(np.floor(y0 * sy - top))),
              min(width, int(np.ceil(x1 * sx - left))), min(height, int(np.ceil(y1 * sy - top))))
    if not (mapped[0] < mapped[2] and mapped[1] < mapped[3]):
        raise MaskEditError(
            f"the box {','.join(str(int(v)) for v in box)} in pixels of the {src_width}x{src_height} source lies outside "
            f"what the {width}x{height} clip keeps of it (the source is resized and centre-cropped)"
        )
    return mapped


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
    plan = _conform_plan(clip, num_frames, width, height, mode, start)
    frames, _ = select_frames(clip.frames, plan.num_frames, mode, start)
    if frames.shape[1:3] != (plan.height, plan.width):
        frames = resize_center_crop(frames, plan.width, plan.height)
    return Clip(frames, plan.fps, list(clip.notes) + plan.notes)


@dataclass
class _ConformPlan:
    indices: np.ndarray  # source frames kept
    num_frames: int
    width: int
    height: int
    fps: float
    notes: list[str]


def _conform_plan(source, num_frames, width, height, mode, start) -> _ConformPlan:
    """What conforming `source` (a Clip or SourceInfo) does: the frames kept, the size, the fps and the notes."""
    num_frames, width, height = resolve_conform_settings(
        source.num_frames, source.height, source.width, num_frames, width, height, start)
    check_size_multiple(width, height)
    indices = select_frame_indices(source.num_frames, num_frames, mode, start)
    notes = []
    if num_frames != source.num_frames:
        where = f" from frame {start}" if start else ""
        notes.append(f"kept {num_frames} of {source.num_frames} frames ({mode}{where})")
    fps = source.fps
    span = int(indices[-1] - indices[0])
    if mode == "uniform" and span > num_frames - 1:
        fps = source.fps * (num_frames - 1) / span
        notes.append(f"fps {_format_fps(source.fps)} → {_format_fps(fps)}")
    if (source.height, source.width) != (height, width):
        scaled_width, scaled_height, _, _ = cover_crop_geometry(source.width, source.height, width, height)
        note = f"resized {source.width}x{source.height} → {scaled_width}x{scaled_height}"
        if (scaled_width, scaled_height) != (width, height):
            note += f" and centre-cropped to {width}x{height}"
        notes.append(note)
    return _ConformPlan(indices, num_frames, width, height, fps, notes)


# ----- reading only what is kept


def probe_video(path: str | os.PathLike, folder_fps: float = DEFAULT_FOLDER_FPS) -> SourceInfo:
    """Size, decodable frame count, fps and duration of a video file or frame folder, without keeping any
    frame in memory (a file is decoded once by ffmpeg to count its frames; a folder's image headers are
    read). Refuses sources beyond the limits of `maskedit.limits` and adds a warning note when a file
    decodes to fewer frames than its header says (truncated or damaged)."""
    path = _check_source_path(path)
    if path.is_dir():
        files = _frame_files(path)
        width, height = _image_size(files[0])
        _check_source_limits(path, width, height, num_frames=len(files))
        return SourceInfo(width, height, len(files), float(folder_fps))
    try:
        meta, frames = _decoded_frames(path)
        frames.close()
        counted, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except MaskEditError:
        raise
    except Exception as err:  # ffmpeg reports corrupt/unsupported input as several error types
        raise _not_a_video(path, f"ffmpeg: {_first_line(err)}") from None
    if not counted:
        raise _not_a_video(path, "it holds no frames")
    width, height = meta["size"]
    info = SourceInfo(int(width), int(height), int(counted), float(meta.get("fps") or 0.0), meta.get("duration"))
    _check_source_limits(path, info.width, info.height, num_frames=info.num_frames)
    if info.fps <= 0:
        info.fps = DEFAULT_FOLDER_FPS
        info.notes.append(f"frame rate unknown; assumed {DEFAULT_FOLDER_FPS:g} fps")
    _note_damage(path, info)
    return info


def _note_damage(path: Path, info: SourceInfo) -> None:
    if not info.duration or info.fps <= 0:
        return
    expected = round(info.duration * info.fps)
    if info.num_frames < expected - max(2, expected // 50):
        info.notes.append(
            f"warning: {display_path(path)} looks truncated or damaged: its header says {info.duration:g} s "
            f"(about {expected} frames) but only {info.num_frames} frames could be decoded "
            f"({info.num_frames / info.fps:.2f} s); it is read as that shorter clip"
        )


def read_conformed(path: str | os.PathLike, num_frames: int | None = None, width: int | None = None,
                   height: int | None = None, mode: str = "uniform", start: int = 0,
                   folder_fps: float = DEFAULT_FOLDER_FPS) -> tuple[Clip, SourceInfo]:
    """`conform_clip(read_video(path), num_frames, width, height, mode, start)`, equal bit for bit, decoding
    only the kept frames and resizing each as it is decoded. Returns (conformed clip, source info); the
    clip's notes include the source's warnings. Memory: the conformed clip plus about one source frame."""
    info = probe_video(path, folder_fps)
    plan = _conform_plan(info, num_frames, width, height, mode, start)
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        frames = _fit_each((read_image(files[i]) for i in plan.indices), plan, info, path, files)
    else:
        frames = _decode_kept(path, plan, info)
        if frames is None:  # fewer frames decode through the selection than the count promised: count them
            info.num_frames = _count_delivered(path)
            info.notes = [n for n in info.notes if not n.startswith("warning:")]
            _note_damage(path, info)
            plan = _conform_plan(info, num_frames, width, height, mode, start)
            frames = _decode_kept(path, plan, info)
            if frames is None:
                raise _not_a_video(path, "its frames could not all be decoded; the file is damaged")
    return Clip(frames, plan.fps, info.notes + plan.notes), info


def read_frames_at(path: str | os.PathLike, indices, convert=None, folder_fps: float = DEFAULT_FOLDER_FPS) -> np.ndarray:
    """Frames `indices` (increasing) of a video file or frame folder, each passed through `convert` (e.g. to a
    bool mask) as it is decoded, stacked: (len(indices), ...). Only those frames are decoded (memory: the
    result plus one source frame). Raises MaskEditError when the source has fewer frames."""
    path = _check_source_path(path)
    indices = [int(i) for i in indices]
    convert = convert or (lambda frame: frame)
    if path.is_dir():
        files = _frame_files(path)
        if indices and indices[-1] >= len(files):
            raise MaskEditError(f"{display_path(path)} has {len(files)} frames; frame {indices[-1]} was asked for")
        return np.stack([convert(read_image(files[i])) for i in indices])
    terms = "+".join(f"eq(n\\,{i})" for i in indices)
    out = []
    try:
        _, frames = _decoded_frames(path, ["-vf", f"select={terms}", "-frames:v", str(len(indices))])
        for frame in frames:
            out.append(convert(frame))
            if len(out) == len(indices):
                break
        frames.close()
    except MaskEditError:
        raise
    except Exception as err:
        raise _not_a_video(path, f"ffmpeg: {_first_line(err)}") from None
    if len(out) < len(indices):
        raise _not_a_video(path, f"it delivered {len(out)} of the {len(indices)} frames asked for; it is damaged")
    return np.stack(out)


def _decode_kept(path: Path, plan: _ConformPlan, info: SourceInfo) -> np.ndarray | None:
    """The plan's frames, decoded by ffmpeg's select filter (it stops after the last), each resized as it
    arrives; None when ffmpeg delivers fewer than asked for."""
    terms = "+".join(f"eq(n\\,{int(i)})" for i in plan.indices)
    params = ["-vf", f"select={terms}", "-frames:v", str(len(plan.indices))]
    try:
        _, frames = _decoded_frames(path, params)
        out = _fit_each(frames, plan, info, path)
    except MaskEditError:
        raise
    except Exception as err:
        raise _not_a_video(path, f"ffmpeg: {_first_line(err)}") from None
    return out


def _count_delivered(path: Path) -> int:
    _, frames = _decoded_frames(path)
    try:
        return sum(1 for _ in frames)
    finally:
        frames.close()


def _fit_each(frames, plan: _ConformPlan, info: SourceInfo, path: Path, files=None) -> np.ndarray | None:
    out = np.empty((len(plan.indices), plan.height, plan.width, 3), np.uint8)
    count = 0
    for frame in frames:
        if frame.shape[:2] != (info.height, info.width):
            name = files[plan.indices[count]].name if files else f"frame {plan.indices[count]}"
            raise MaskEditError(
                f"the frames in {display_path(path)} differ in size: the first is {info.width}x{info.height} but "
                f"{name} is {frame.shape[1]}x{frame.shape[0]}; every frame of a clip must have the same size"
            )
        out[count] = frame if frame.shape[:2] == (plan.height, plan.width) else \
            _resize_crop_image(frame, plan.width, plan.height, Image.LANCZOS)
        count += 1
        if count == len(out):
            break
    if hasattr(frames, "close"):
        frames.close()
    return out if count == len(out) else None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as `read_image` returns it (EXIF rotation applied), from its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise MaskEditError(
            f"{display_path(path)} could not be read as an image ({_first_line(err)}); give a png, jpg, webp or "
            "bmp file"
        ) from None


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
