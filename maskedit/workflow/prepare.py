"""Preparing a clip for an edit: read and conform it (4k+1 frames, multiple-of-16 size), its edit region as loose
boxes (METHOD.md §3), the prepared folder the other steps read, and the edited frames the user brings.

    prepared = prepare_clip("clip.mp4", box=(300, 120, 560, 400))          # or mask_video="mask.mp4"
    save_prepared(prepared, "work/prepared")                               # clip, boxes, first_frame.png
    edited_first = load_edited_frame("first_frame_edited.png", prepared.width, prepared.height)

Files are written under temporary names and renamed when complete, so a failed run never leaves a folder that
looks done (prepared.json is written last).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import MaskEditError
from ..limits import check_settings, parse_number_text
from ..media.files import save_npz, write_text
from ..media import clipstore
from ..media.video import (IMAGE_EXTENSIONS, Clip, box_to_conformed, check_frame_count, check_image_size, fit_image, iter_frames_at,
                           probe_video, read_conformed, read_image, read_video, resolve_conform_settings, write_image,
                           write_video)
from ..method import masks

PREPARED_JSON = "prepared.json"
CLIP_VIDEO, CLIP_ARRAY = "clip.mp4", "clip.npz"
BOXES_VIDEO, BOXES_ARRAY = "boxes.mp4", "boxes.npz"
TIGHT_ARRAY = "tight.npz"
FIRST_FRAME = "first_frame.png"
FRAMES_FOLDER = "frames"
PREPARED_FORMAT = 1


@dataclass
class PreparedClip:
    """A clip conformed for the model, with the region to edit.

    clip: the conformed clip (4k+1 frames, multiple-of-16 size, its fps). region: bool (F, H, W), the loose
    boxes, True = edit. tight: the segmentation the boxes came from (bool (F, H, W)), None for a box.
    notes: what reading and conforming changed, for the user. source: where it came from (JSON-able).
    """

    clip: Clip
    region: np.ndarray
    tight: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def frames(self) -> np.ndarray:
        return self.clip.frames

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames

    @property
    def width(self) -> int:
        return self.clip.width

    @property
    def height(self) -> int:
        return self.clip.height

    @property
    def fps(self) -> float:
        return self.clip.fps

    @property
    def source_size(self) -> tuple[int, int] | None:
        """(width, height) of the video before conforming, when known."""
        if "width" in self.source and "height" in self.source:
            return int(self.source["width"]), int(self.source["height"])
        return None


def prepare_clip(
    video_path: str | os.PathLike,
    mask_video: str | os.PathLike | None = None,
    box: str | tuple[int, int, int, int] | None = None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    start: int = 0,
    frame_mode: str = "uniform",
    margin: float = masks.BOX_MARGIN,
    min_area: int = masks.MIN_COMPONENT_AREA,
    fit: bool = False,
    store: str | os.PathLike | None = None,
    box_in: str = "clip",
) -> PreparedClip:
    """Read and conform a clip and its edit region (exactly one of `mask_video` and `box`).

    mask_video: a video, a folder of frames or one image, white = edit; it gets the clip's frame selection
    and geometry (`masks.conform_region`), then becomes loose boxes (`masks.loose_boxes`, margin and
    min_area). box: "x0,y0,x1,y1" or a tuple (x1, y1 exclusive), the same box on every frame, in pixels of the
    *conformed* clip (box_in "clip") or of the source video (box_in "source": mapped through the conform's resize and
    crop, `video.box_to_conformed`); the notes say which. fit: resize a mask of another shape to the clip instead of
    refusing it. num_frames: 4k+1 frames (up to `limits.MAX_CLIP_FRAMES`); clips longer than one window are edited
    window by window (METHOD.md §7b).
    store: where a clip longer than `clipstore.LAZY_ABOVE_FRAMES` frames keeps its frames and boxes (memory-mapped
    .npy files, frame by frame: such a clip is never whole in memory); give the folder `save_prepared` will write
    (then it only adds the rest). None: a new temporary folder. Shorter clips stay in memory (store unused).
    Raises MaskEditError on anything the user must fix.
    """
    if (mask_video is None) == (box is None):
        raise MaskEditError("give the region to edit as either a mask video or a box (exactly one of them)")
    check_settings(num_frames=num_frames, width=width, height=height, start=start, margin=margin, min_area=min_area)
    if num_frames is not None:
        check_frame_count(num_frames)
    plan = conform_settings(video_path, num_frames, width, height, frame_mode, start)
    if box is not None and box_in not in BOX_GRIDS:
        raise MaskEditError(f"box_in must be one of {', '.join(BOX_GRIDS)}, not {box_in!r}")
    if clipstore.is_lazy(plan[0]):
        return _prepare_long(video_path, mask_video, box, plan, start, frame_mode, margin, min_area, fit, store,
                             box_in)
    clip, source_clip = read_conformed(video_path, num_frames, width, height, frame_mode, start)  # decodes only kept frames
    notes = list(clip.notes)
    source = {"video": str(video_path), "width": source_clip.width, "height": source_clip.height,
              "frames": source_clip.num_frames, "fps": source_clip.fps, "frame_mode": frame_mode, "start": start}

    if box is not None:
        parsed, note = _box_on_clip(box, box_in, source_clip, clip)
        notes.append(note)
        region = masks.box_region(clip.height, clip.width, parsed, clip.num_frames)
        tight = None
        source["box"] = list(parsed)
    else:
        raw = masks.read_mask_for_clip(mask_video, source_clip, clip.num_frames, frame_mode, start)  # kept frames only
        if fit and raw.shape[1:] != (source_clip.height, source_clip.width) and raw.shape[1:] != (clip.height, clip.width):
            raw = masks.fit_region(raw, source_clip.width, source_clip.height)
            notes.append(f"mask resized to the clip's {source_clip.width}x{source_clip.height} (fit)")
        try:
            tight = masks.conform_region(raw, source_clip, clip.num_frames, clip.width, clip.height, frame_mode, start)
        except MaskEditError as error:
            if raw.shape[1:] in ((source_clip.height, source_clip.width), (clip.height, clip.width)):
                raise
            raise MaskEditError(f"{error}; or use fit (--fit) to resize and centre-crop it to the clip") from None
        region = masks.loose_boxes(tight, margin, min_area)
        source.update(mask_video=str(mask_video), margin=margin, min_area=min_area)
        judged = slice(1, None) if tight.shape[0] > 1 else slice(None)
        if tight[judged].any() and not region[judged].any():
            raise MaskEditError(
                f"every marked part of the mask is smaller than {min_area} pixels, so no box is left; mark the "
                "object larger, or lower the minimum area (--min-area)"
            )
    masks.check_region(region, clip.num_frames, clip.height, clip.width)
    return PreparedClip(clip, region, tight, notes, source)


def all_frames(video_path, start: int = 0) -> int:
    """Every frame of a video from `start` on, as a clip length: the largest 4k+1 (at most 3 frames dropped at the
    end; at most `limits.MAX_CLIP_FRAMES`)."""
    from ..limits import MAX_CLIP_FRAMES
    from ..media.video import MIN_FRAMES, largest_valid_frame_count

    available = probe_video(video_path).num_frames - int(start)
    if available < MIN_FRAMES:
        raise MaskEditError(f"the clip has {available} frame(s) from frame {start} on; at least {MIN_FRAMES} are needed")
    return min(largest_valid_frame_count(available), MAX_CLIP_FRAMES)


def conform_settings(video_path, num_frames=None, width=None, height=None, frame_mode: str = "uniform",
                     start: int = 0) -> tuple[int, int, int]:
    """(frames, width, height) a clip is conformed to (`video.resolve_conform_settings` on the source's header and
    frame count): known before any frame is decoded."""
    info = probe_video(video_path)
    return resolve_conform_settings(info.num_frames, info.height, info.width, num_frames, width, height, start)


def _prepare_long(video_path, mask_video, box, plan, start, frame_mode, margin, min_area, fit, store,
                  box_in: str = "clip") -> PreparedClip:
    """`prepare_clip` of a clip longer than one window: frames and boxes go frame by frame into memory-mapped
    files in `store` (the tight mask is not kept); the same selection, geometry and boxes as the in-memory path."""
    import tempfile

    num_frames, width, height = plan
    store = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="maskedit-clip-"))
    store.mkdir(parents=True, exist_ok=True)
    (store / PREPARED_JSON).unlink(missing_ok=True)  # the folder is complete again only when save_prepared is done
    clip, source_clip = read_conformed(video_path, num_frames, width, height, frame_mode, start,
                                       into=store / clipstore.FRAMES_FILE)
    notes = list(clip.notes)
    source = {"video": str(video_path), "width": source_clip.width, "height": source_clip.height,
              "frames": source_clip.num_frames, "fps": source_clip.fps, "frame_mode": frame_mode, "start": start}
    shape = (clip.num_frames, clip.height, clip.width)
    with clipstore.array_writer(store / clipstore.REGION_FILE, shape, bool) as region:
        if box is not None:
            parsed, note = _box_on_clip(box, box_in, source_clip, clip)
            notes.append(note)
            frame = masks.box_region(clip.height, clip.width, parsed)[0]
            for part in clipstore.chunks(clip.num_frames):
                region[part] = frame
            source["box"] = list(parsed)
        else:
            _long_mask_boxes(region, mask_video, source_clip, clip, frame_mode, start, margin, min_area, fit, notes)
            source.update(mask_video=str(mask_video), margin=margin, min_area=min_area)
    region = clipstore.open_array(store / clipstore.REGION_FILE)
    masks.check_region(region, clip.num_frames, clip.height, clip.width)
    return PreparedClip(clip, region, None, notes, source)


def _long_mask_boxes(region, mask_video, source_clip, clip, frame_mode, start, margin, min_area, fit, notes) -> None:
    """Fill `region` (F, H, W) with the loose boxes of a mask video, one frame at a time (as `prepare_clip` does for
    the whole mask at once: the clip's frame selection, its geometry, `masks.loose_boxes`)."""
    path = Path(mask_video)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        frames = iter(masks.read_mask_video(path))
        repeat = True
    else:
        frames = iter_frames_at(path, masks.mask_frame_indices(path, source_clip, clip.num_frames, frame_mode, start),
                                masks.region_from_mask_pixels)
        repeat = probe_video(path).num_frames == 1
    marked = kept = False
    sizes = ((source_clip.height, source_clip.width), (clip.height, clip.width))
    boxes = None
    for index in range(clip.num_frames):
        if boxes is None or not repeat:
            tight = next(frames)
            if fit and tight.shape not in sizes:
                tight = masks.fit_region(tight, source_clip.width, source_clip.height)
                if index == 0:
                    notes.append(f"mask resized to the clip's {source_clip.width}x{source_clip.height} (fit)")
            try:
                tight = masks.conform_region_size(tight, source_clip, clip.width, clip.height)
            except MaskEditError as error:
                if tight.shape in sizes:
                    raise
                raise MaskEditError(f"{error}; or use fit (--fit) to resize and centre-crop it to the clip") from None
            boxes = masks.loose_boxes(tight, margin, min_area)
        region[index] = boxes
        if index >= 1:
            marked, kept = marked or bool(tight.any()), kept or bool(boxes.any())
    if marked and not kept:
        raise MaskEditError(
            f"every marked part of the mask is smaller than {min_area} pixels, so no box is left; mark the "
            "object larger, or lower the minimum area (--min-area)"
        )


BOX_GRIDS = ("clip", "source")
"""The pixel grids a box may be given in: the conformed clip's, or the source video's."""


def _box_on_clip(box, box_in: str, source, clip) -> tuple[tuple, str]:
    """(the box in pixels of the conformed clip, a note saying which grid it was given in); box: "x0,y0,x1,y1" or
    four whole numbers. A clip-grid box that leaves the clip but fits the (larger) source is refused with the hint
    to say --box-in source."""
    if isinstance(box, str):
        box = masks.parse_box(box)
    else:
        given = box
        try:
            box = tuple(int(v) for v in box)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4:
            raise MaskEditError(f"the box {given!r} needs four whole numbers x0, y0, x1, y1")
    text = ",".join(map(str, box))
    same = (source.width, source.height) == (clip.width, clip.height)
    if box_in == "source":
        mapped = box if same else box_to_conformed(box, source.width, source.height, clip.width, clip.height)
        return mapped, (f"box {text} in pixels of the {source.width}x{source.height} source"
                        + ("" if same else f" = {','.join(map(str, mapped))} on the {clip.width}x{clip.height} clip"))
    x0, y0, x1, y1 = box
    if not same and not (x1 <= clip.width and y1 <= clip.height) and x1 <= source.width and y1 <= source.height:
        raise MaskEditError(
            f"the box {text} leaves the {clip.width}x{clip.height} conformed clip: --box is in pixels of the conformed "
            f"clip; for pixels of the {source.width}x{source.height} source video add --box-in source"
        )
    return box, (f"box {text} in pixels of the {clip.width}x{clip.height} conformed clip"
                 + ("" if same else f" (the source is {source.width}x{source.height}; --box-in source takes its pixels)"))


def save_prepared(prepared: PreparedClip, folder: str | os.PathLike, export_frames: bool = False) -> Path:
    """Write a prepared clip to `folder`: clip.mp4, boxes.mp4 (white = edit), first_frame.png (to edit),
    lossless clip.npz / boxes.npz (/ tight.npz), and prepared.json last. export_frames: also every frame
    as frames/NNN.png (for editing later frames). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PREPARED_JSON).unlink(missing_ok=True)  # the folder is complete again only when this is back
    long = clipstore.is_lazy(prepared.num_frames)
    if long:  # memory-mapped .npy files, frame by frame (`clipstore`); the .npz files of a short clip go
        _store_array(prepared.frames, folder / clipstore.FRAMES_FILE)
        _store_array(np.asarray(prepared.region, dtype=bool), folder / clipstore.REGION_FILE)
        for name in (CLIP_ARRAY, BOXES_ARRAY, TIGHT_ARRAY):
            (folder / name).unlink(missing_ok=True)
    else:
        for name in (clipstore.FRAMES_FILE, clipstore.REGION_FILE):
            (folder / name).unlink(missing_ok=True)
        save_npz(folder / CLIP_ARRAY, frames=prepared.frames)
        save_npz(folder / BOXES_ARRAY, region=np.asarray(prepared.region, dtype=bool))
    if prepared.tight is not None and not long:
        save_npz(folder / TIGHT_ARRAY, region=np.asarray(prepared.tight, dtype=bool))
    else:
        (folder / TIGHT_ARRAY).unlink(missing_ok=True)
    write_video(folder / CLIP_VIDEO, prepared.frames, prepared.fps)
    masks.write_mask_video(folder / BOXES_VIDEO, prepared.region, prepared.fps)
    write_image(folder / FIRST_FRAME, prepared.frames[0])
    if export_frames:
        for old in (folder / FRAMES_FOLDER).glob("*.png"):  # frames of an earlier, longer clip
            old.unlink()
        digits = max(3, len(str(prepared.num_frames - 1)))
        for index, frame in enumerate(prepared.frames):
            write_image(folder / FRAMES_FOLDER / f"{index:0{digits}d}.png", frame)
    info = {
        "format": PREPARED_FORMAT, "fps": prepared.fps, "frames": prepared.num_frames, "width": prepared.width,
        "height": prepared.height, "notes": prepared.notes, "source": prepared.source,
        "created": now_text(),
    }
    write_text(folder / PREPARED_JSON, json.dumps(info, indent=2))
    return folder


def load_prepared_info(folder: str | os.PathLike) -> dict:
    """prepared.json of a prepared folder (frames, size, fps, notes, source) without reading any array."""
    path = Path(folder) / PREPARED_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MaskEditError(f"{path} is missing or damaged ({error}); prepare the clip again") from None


def load_prepared(folder: str | os.PathLike) -> PreparedClip:
    """Read a folder written by `save_prepared` (the lossless .npz files when present, else the mp4s)."""
    folder = Path(folder)
    info_path = folder / PREPARED_JSON
    if not info_path.is_file():
        raise MaskEditError(
            f"{folder} is not a prepared clip folder (no {PREPARED_JSON}); make one with "
            "`python -m maskedit prepare --video ... --out FOLDER`"
        )
    try:
        info = json.loads(info_path.read_text())
        fps, num_frames = float(info["fps"]), int(info["frames"])
        width, height = int(info["width"]), int(info["height"])
    except (ValueError, KeyError, TypeError) as error:
        raise MaskEditError(f"{info_path} is damaged ({error}); run `prepare` again") from None
    if (folder / clipstore.FRAMES_FILE).is_file():  # a long clip: read-only memory maps, never whole in memory
        frames = clipstore.open_array(folder / clipstore.FRAMES_FILE)
        region = clipstore.open_array(folder / clipstore.REGION_FILE)
        tight = None
    else:
        frames = _load_npz(folder / CLIP_ARRAY, "frames")
        if frames is None:
            frames = read_video(folder / CLIP_VIDEO).frames
        region = _load_npz(folder / BOXES_ARRAY, "region")
        if region is None:
            region = masks.read_mask_video(folder / BOXES_VIDEO)
        tight = _load_npz(folder / TIGHT_ARRAY, "region")
    expected = (num_frames, height, width)
    if frames.shape != (*expected, 3) or frames.dtype != np.uint8 or region.shape != expected:
        raise MaskEditError(
            f"the files in {folder} do not match {PREPARED_JSON} ({num_frames} frames of {width}x{height}); "
            "run `prepare` again"
        )
    if tight is not None and tight.shape != expected:
        tight = None
    region = region if region.dtype == bool else region.astype(bool)
    masks.check_region(region, num_frames, height, width)
    return PreparedClip(Clip(frames, fps, []), region, tight, list(info.get("notes", [])), dict(info.get("source", {})))


def load_edited_frame(path: str | os.PathLike, width: int, height: int, fit: bool = False,
                      source_size: tuple[int, int] | None = None, what: str = "edited frame") -> np.ndarray:
    """Read an edited frame as uint8 (height, width, 3).

    A frame of the prepared size is taken as it is; one of the source video's size (`source_size`,
    (width, height) before conforming) is resized and centre-cropped exactly like the clip's frames; any
    other size is refused, or fitted the same way when `fit`.
    """
    image = read_image(path, what)
    image_size = (image.shape[1], image.shape[0])
    if image_size != (width, height) and (fit or (source_size is not None and image_size == tuple(source_size))):
        return fit_image(image, width, height)
    check_image_size(image, width, height, what)
    return image


def parse_frame_index(text, num_frames: int | None = None) -> int:
    """A later frame's index K (1..num_frames-1 of the prepared clip) from text or a number: a whole number
    (2.5 is refused, never rounded; bounded like every number written as text, `limits.parse_number_text`)."""
    index = int(parse_number_text(text, "edited later frame number", integer=True, example="24 (K=PATH: 24=frame24.png)"))
    if index == 0:
        raise MaskEditError("frame 0 is the edited first frame itself; edited later frames are numbered 1 and up")
    if index < 0 or (num_frames is not None and index >= num_frames):
        last = f"{num_frames - 1}" if num_frames is not None else "F-1"
        raise MaskEditError(f"the edited later frame number {index} is outside the prepared clip's frames 1..{last}")
    return index


def _store_array(array: np.ndarray, path: Path) -> None:
    """`array` as the memory-mapped .npy at `path`: nothing to do when it is that file already; a hard link when it
    is another such file (written once, never changed in place: `clipstore.array_writer` replaces by renaming);
    else written chunk by chunk."""
    source = clipstore.mapped_file(array)
    if source is not None and source.resolve() == path.resolve():
        return
    if source is not None and array.shape == np.load(source, mmap_mode="r").shape:
        clipstore.link_or_copy(source, path)
        return
    clipstore.copy_array(array, path)


def now_text() -> str:
    """The current UTC time, ISO 8601 to the second (what the files of a run record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_npz(path: Path, key: str) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data[key])
    except (OSError, ValueError, KeyError) as error:
        raise MaskEditError(f"{path} is damaged ({error}); run `prepare` again") from None
