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

import math
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskedit.errors import MaskEditError
from maskedit.media.files import atomic_path, display_path
from maskedit.limits import (MAX_IMAGE_SIDE, MAX_SOURCE_FPS, MAX_SOURCE_FRAMES, MAX_SOURCE_SECONDS, MAX_SOURCE_SIDE,
                             MIN_SOURCE_FPS)

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
    fps, notes = source_fps(path, meta.get("fps"), len(frames), meta.get("duration"))
    return Clip(np.stack(frames), fps, notes)


def source_fps(path: Path, stated, num_frames: int, duration) -> tuple[float, list[str]]:
    """The frame rate a source is read at, and a note when it is not the container's: the container's own
    rate when it is plausible (`limits.MIN_SOURCE_FPS`..`MAX_SOURCE_FPS`); else, when the container gives a
    duration, its decodable frames over that duration (a container that says 0 or "1k" fps), if that is
    plausible; else, with no timing at all, DEFAULT_FOLDER_FPS, said as an assumption. A source whose timing is
    known but implausible (1,000 frames a second) is a MaskEditError saying how to re-encode it: reading it at
    an assumed rate would stretch a 2 s clip to minutes."""
    rate = float(stated) if isinstance(stated, (int, float)) and math.isfinite(stated) and stated > 0 else None
    measured = num_frames / float(duration) if isinstance(duration, (int, float)) and duration > 0 else None

    def plausible(value):
        return value is not None and MIN_SOURCE_FPS <= value <= MAX_SOURCE_FPS

    if plausible(rate):
        return rate, []
    said = f"{_format_fps(rate)} fps" if rate else "no usable frame rate"
    if plausible(measured):
        return measured, [f"the container says {said}; read at {_format_fps(measured)} fps, from its "
                          f"{num_frames} frames in {duration:g} s"]
    if rate is None and measured is None:
        return DEFAULT_FOLDER_FPS, [f"frame rate unknown; assumed {DEFAULT_FOLDER_FPS:g} fps"]
    timing = f"{said}" + (f" and {num_frames} frames in {duration:g} s ({_format_fps(measured)} fps)"
                          if measured is not None else "")
    raise MaskEditError(
        f"{display_path(path)} has an implausible frame rate: its container says {timing}, outside "
        f"{MIN_SOURCE_FPS:g}..{MAX_SOURCE_FPS:g} fps. Re-encode it at its real rate first, e.g. "
        f"ffmpeg -i {path.name} -r 16 clip.mp4"
    )


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
    _check_source_limits(path, int(width), int(height), num_frames=int(counted))
    fps, notes = source_fps(path, meta.get("fps"), int(counted), meta.get("duration"))
    info = SourceInfo(int(width), int(height), int(counted), fps, meta.get("duration"), notes)
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
                   folder_fps: float = DEFAULT_FOLDER_FPS, into: str | os.PathLike | None = None,
                   ) -> tuple[Clip, SourceInfo]:
    """`conform_clip(read_video(path), num_frames, width, height, mode, start)`, equal bit for bit, decoding
    only the kept frames and resizing each as it is decoded. Returns (conformed clip, source info); the
    clip's notes include the source's warnings. Memory: the conformed clip plus about one source frame.

    into: a .npy path: the frames are written there as they are decoded (`clipstore.array_writer`) and the clip's
    frames are its read-only memory map, so memory is about one source frame whatever the clip's length (long
    clips, METHOD.md §7b)."""
    info = probe_video(path, folder_fps)
    plan = _conform_plan(info, num_frames, width, height, mode, start)
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        frames = _fit_each((read_image(files[i]) for i in plan.indices), plan, info, path, into, files)
    else:
        frames = _decode_kept(path, plan, info, into)
        if frames is None:  # fewer frames decode through the selection than the count promised: count them
            info.num_frames = _count_delivered(path)
            info.notes = [n for n in info.notes if not n.startswith("warning:")]
            _note_damage(path, info)
            plan = _conform_plan(info, num_frames, width, height, mode, start)
            frames = _decode_kept(path, plan, info, into)
            if frames is None:
                raise _not_a_video(path, "its frames could not all be decoded; the file is damaged")
    return Clip(frames, plan.fps, info.notes + plan.notes), info


def read_frames_at(path: str | os.PathLike, indices, convert=None, folder_fps: float = DEFAULT_FOLDER_FPS) -> np.ndarray:
    """Frames `indices` (increasing) of a video file or frame folder, each passed through `convert` (e.g. to a
    bool mask) as it is decoded, stacked: (len(indices), ...). Only those frames are decoded (memory: the
    result plus one source frame). Raises MaskEditError when the source has fewer frames."""
    return np.stack(list(iter_frames_at(path, indices, convert)))


def iter_frames_at(path: str | os.PathLike, indices, convert=None):
    """`read_frames_at`'s frames one at a time (a generator): memory is one source frame, whatever the count."""
    path = _check_source_path(path)
    indices = [int(i) for i in indices]
    convert = convert or (lambda frame: frame)
    if path.is_dir():
        files = _frame_files(path)
        if indices and indices[-1] >= len(files):
            raise MaskEditError(f"{display_path(path)} has {len(files)} frames; frame {indices[-1]} was asked for")
        for i in indices:
            yield convert(read_image(files[i]))
        return
    delivered = 0
    try:
        frames = _kept_stream(path, indices)
        try:
            for frame in frames:
                delivered += 1
                yield convert(frame)
        finally:
            frames.close()
    except MaskEditError:
        raise
    except Exception as err:
        raise _decoding_failed(path, len(indices), err) from None
    if delivered < len(indices):
        raise _not_a_video(path, f"it delivered {delivered} of the {len(indices)} frames asked for; it is damaged")


def select_expression(indices) -> str:
    """ffmpeg's select filter expression that keeps frames `indices`: their eq(n,i) terms summed as a balanced
    tree. A flat sum of more than about 100 terms is more than ffmpeg's expression parser nests, and it fails
    with "Cannot allocate memory" (which imageio reports as "Could not load meta information"); the tree nests
    log2(len(indices)) deep, so any number of frames can be selected."""
    terms = [f"eq(n\\,{int(i)})" for i in indices]
    while len(terms) > 1:
        terms = [f"({terms[k]}+{terms[k + 1]})" if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
    return terms[0] if terms else "0"


SELECT_TERMS_MAX = 64
"""Most frame indices spelled out in ffmpeg's select filter (its expression parser gives up near 100 terms);
longer selections use a range or are picked here."""


class _KeptStream:
    """Frames `indices` (increasing) of a video file, in order, stopping after the last; close() ends ffmpeg.

    A short selection goes to ffmpeg's select filter term by term; a consecutive one as a range; a long, gapped
    one (a long clip's uniform selection) is picked from every decoded frame here (ffmpeg evaluates the select
    expression once per frame, so thousands of terms would cost more than the decode)."""

    def __init__(self, path: Path, indices):
        self.indices = [int(i) for i in indices]
        first, last = (self.indices[0], self.indices[-1]) if self.indices else (0, -1)
        self.pick = None
        if len(self.indices) <= SELECT_TERMS_MAX:
            terms = select_expression(self.indices)
        elif last - first + 1 == len(self.indices):
            terms = f"between(n\\,{first}\\,{last})"
        else:
            terms, self.pick = f"between(n\\,{first}\\,{last})", set(self.indices)
        params = ["-vf", f"select={terms}"] + ([] if self.pick else ["-frames:v", str(len(self.indices))])
        _, self.frames = _decoded_frames(path, params)
        self.first = first

    def __iter__(self):
        count = 0
        position = self.first
        try:
            for frame in self.frames:
                keep = self.pick is None or position in self.pick
                position += 1
                if keep:
                    yield frame
                    count += 1
                    if count == len(self.indices):
                        break
        finally:
            self.close()

    def close(self) -> None:
        self.frames.close()


def _kept_stream(path: Path, indices) -> _KeptStream:
    return _KeptStream(path, indices)


def _decode_kept(path: Path, plan: _ConformPlan, info: SourceInfo, into=None) -> np.ndarray | None:
    """The plan's frames, decoded by ffmpeg (`_KeptStream`: it stops after the last), each resized as it arrives;
    None when ffmpeg delivers fewer than asked for."""
    try:
        frames = _kept_stream(path, plan.indices)
        out = _fit_each(frames, plan, info, path, into)
    except MaskEditError:
        raise
    except Exception as err:
        raise _decoding_failed(path, len(plan.indices), err) from None
    return out


def _decoding_failed(path: Path, count: int, err: Exception) -> MaskEditError:
    """A source that was read (probed) but whose kept frames ffmpeg then failed to deliver: said as such, not
    as "not a video"."""
    return MaskEditError(f"{display_path(path)} is a readable video, but ffmpeg failed while decoding the {count} "
                         f"frames asked for (ffmpeg: {_first_line(err)}); ask for fewer frames, or re-encode the "
                         "file (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) and try again")


def _count_delivered(path: Path) -> int:
    _, frames = _decoded_frames(path)
    try:
        return sum(1 for _ in frames)
    finally:
        frames.close()


def _fit_each(frames, plan: _ConformPlan, info: SourceInfo, path: Path, into=None, files=None) -> np.ndarray | None:
    """The plan's frames, each resized as it arrives, in memory or (`into`: a .npy path) in a memory-mapped file;
    None when fewer frames arrive than the plan keeps."""
    shape = (len(plan.indices), plan.height, plan.width, 3)
    if into is None:
        out = np.empty(shape, np.uint8)
        count = _fill(out, frames, plan, info, path, files)
        return out if count == len(out) else None
    from .clipstore import array_writer, open_array

    class _Short(Exception):
        pass

    try:
        with array_writer(into, shape, np.uint8) as out:
            if _fill(out, frames, plan, info, path, files) != len(out):
                raise _Short
    except _Short:
        return None
    return open_array(into)


def _fill(out: np.ndarray, frames, plan: _ConformPlan, info: SourceInfo, path: Path, files=None) -> int:
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
    return count


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as `read_image` returns it (EXIF rotation applied), from its header."""
    try:
        with _open_image(path, "frame") as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, MaskEditError):
            raise
        raise MaskEditError(
            f"{display_path(path)} could not be read as an image ({_first_line(err)}); give a png, jpg, webp or "
            "bmp file"
        ) from None


def _format_fps(fps: float) -> str:
    return f"{round(fps, 2):g}"


# ----- writing


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, comment: str | None = None) -> None:
    """Write (F, H, W, 3) uint8 RGB frames as a browser-playable H.264 mp4 (yuv420p, faststart).

    Width and height must be even (yuv420p). The file appears only when complete: frames go to a
    temporary file in the same folder, renamed on success. Parent folders are created. A memory-mapped
    array is written frame by frame (never whole in memory). comment: text stored
    in the file's `comment` metadata tag (None: no tag, the same file as before the option existed).
    """
    frames = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1 or frames.dtype != np.uint8:
        raise MaskEditError(
            f"cannot write a video from an array of shape {frames.shape} and dtype {frames.dtype}; "
            "expected uint8 frames of shape (F, H, W, 3)"
        )
    _, height, width, _ = frames.shape
    with video_writer(path, width, height, fps, comment) as send:
        for frame in frames:
            send(frame)


@contextmanager
def video_writer(path: str | os.PathLike, width: int, height: int, fps: float, comment: str | None = None):
    """Write an H.264 mp4 (as `write_video`, `comment` too) frame by frame: yields `send(frame)` taking
    (height, width, 3) uint8 RGB frames (or (n, height, width, 3) blocks). The file appears only when the block ends without an exception
    and at least one frame was sent; memory is one frame whatever the video's length."""
    path = Path(path)
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
    sent, body = [0], [False]

    def send(frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        block = frames[None] if frames.ndim == 3 else frames
        if block.ndim != 4 or block.shape[1:] != (height, width, 3) or block.dtype != np.uint8:
            raise MaskEditError(f"cannot write frames of shape {frames.shape} {frames.dtype} to a {width}x{height} "
                                "video; expected uint8 (H, W, 3) frames")
        for frame in block:
            try:
                writer.send(np.ascontiguousarray(frame))
            except Exception as err:
                raise MaskEditError(f"could not write the video {path} (ffmpeg: {_first_line(err)})") from None
            sent[0] += 1

    try:
        with atomic_path(path) as temp_name:
            writer = imageio_ffmpeg.write_frames(
                temp_name, (int(width), int(height)), fps=float(fps), codec="libx264",
                pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                ffmpeg_log_level="error",
                output_params=["-crf", str(VIDEO_CRF), "-movflags", "+faststart"]
                + (["-metadata", f"comment={comment}"] if comment else []),
            )
            writer.send(None)
            try:
                body[0] = True
                yield send
                body[0] = False
            finally:
                writer.close()
            if not sent[0]:
                raise MaskEditError(f"no frame was written to {path.name}")
    except MaskEditError:
        raise
    except Exception as err:
        if body[0]:  # the caller's own error (between frames): not ffmpeg's
            raise
        raise MaskEditError(f"could not write the video {path} (ffmpeg: {_first_line(err)})") from None


# ----- single images


def read_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image file (png, jpg, webp, bmp, ...) as (H, W, 3) uint8 RGB, honouring EXIF rotation.

    Bounded like videos: the size is read from the header (`check_image_header`) and an image larger than
    `limits.MAX_IMAGE_SIDE` on a side (or a decompression bomb) is refused before any pixel is decoded. Every
    mode is converted faithfully (`image_to_rgb`): 16-bit greyscale scaled to 8 bits, greyscale and palette
    expanded, CMYK converted, an alpha channel dropped when every pixel is opaque; a partly transparent image is
    refused (a video frame needs a colour at every pixel). `what` names the image in messages."""
    path = Path(path)
    if not path.is_file():
        raise MaskEditError(f"{path} does not exist or is not a file; give an image (png, jpg, webp, bmp)")
    try:
        with _open_image(path, what) as image:
            image = ImageOps.exif_transpose(image)
            return image_to_rgb(image, f"{what} {display_path(path)}")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, MaskEditError):
            raise
        raise MaskEditError(
            f"{path} could not be read as an image ({_first_line(err)}); give a png, jpg, webp or bmp file"
        ) from None


def check_image_header(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file from its header alone, no pixel decoded; MaskEditError when it is not
    an image or is larger than `limits.MAX_IMAGE_SIDE` on a side (a 12000x12000 PNG of 140 KB is 430 MB of
    pixels)."""
    try:
        with _open_image(Path(path), what) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, MaskEditError):
            raise
        raise MaskEditError(f"the {what} {display_path(path)} could not be read as an image ({_first_line(err)}); "
                            "give a png, jpg, webp or bmp file") from None


@contextmanager
def _open_image(path: Path, what: str):
    """PIL's lazy open (header only) with the size checked against the image limit before anything decodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our message
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise _image_too_large(path, what, f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    with image:
        width, height = image.size
        if max(width, height) > MAX_IMAGE_SIDE:
            raise _image_too_large(path, what, f"{width}x{height}")
        yield image


class ImageTooLarge(MaskEditError):
    """An image beyond `limits.MAX_IMAGE_SIDE` (or a decompression bomb), refused from its header."""


def _image_too_large(path: Path, what: str, size: str) -> MaskEditError:
    return ImageTooLarge(f"the {what} {display_path(path)} is {size} pixels, larger than {MAX_IMAGE_SIDE} pixels "
                         f"on a side; scale it down first (edited frames are used at the clip's size)")


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def image_to_rgb(image: Image.Image, what: str = "image") -> np.ndarray:
    """A PIL image of any mode as (H, W, 3) uint8 RGB, faithfully: 16-bit greyscale (I;16*, and I from a
    16-bit PNG) scaled by 1/257 (PIL's own RGB conversion clips it, turning most of it white); palette and
    greyscale expanded; CMYK and YCbCr converted by PIL; an alpha channel (RGBA, LA, a palette's transparent
    colour) dropped when every pixel is opaque. Refused (MaskEditError): a partly transparent image, and modes
    without a faithful 8-bit form (32-bit float, integers beyond 16 bits)."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
            raise MaskEditError(f"the {what} holds integers beyond 16 bits (mode {mode}); save it as an 8- or "
                                "16-bit PNG or a JPEG")
        grey = np.round(values.astype(np.float32) / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise MaskEditError(f"the {what} is a 32-bit float image; save it as an 8- or 16-bit PNG or a JPEG")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        transparent = float((rgba[..., 3] < 255).mean())
        if transparent > 0:
            raise MaskEditError(f"the {what} is partly transparent ({max(transparent, 1e-4):.2%} of its pixels); a "
                                "video frame needs a colour at every pixel: flatten it onto a background (export "
                                "without transparency) and upload it again")
        return np.ascontiguousarray(rgba[..., :3])
    return np.asarray(image.convert("RGB")).copy()


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
