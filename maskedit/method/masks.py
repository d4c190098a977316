"""Masks: polarity, loose boxes, mask videos.

Conventions (this module is their one home):
- In files and videos a mask is white (255) = region to edit/generate, black (0) = keep, as
  segmentation tools write them. Reading thresholds luminance at 128 (H.264 is lossy).
- In code an *edit region* is a bool array (F, H, W) (or one (H, W) frame): True = object/region to edit.
- Wan's condition mask, the *keep mask*, is float32 (F, H, W): 1.0 = keep/known, 0.0 = generate.
  `keep_mask_from_region` and `region_from_keep_mask` are the only conversions between the two.
- Boxes are (x0, y0, x1, y1) in pixels with x1 and y1 exclusive, like slices: rows y0..y1-1, columns x0..x1-1.
- Frame 0 is always fully kept by the method, so a region's frame 0 is not judged by `check_region`.

The method trains and generates with *loose boxes*, not the tight segmentation (METHOD.md §3): per frame,
every 8-connected component of at least 50 pixels becomes its bounding box grown by 10% of its width and
height (5% per side), clipped to the frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from maskedit.errors import MaskEditError
from maskedit.limits import check_text, parse_number_text, shown_value
from maskedit.media.video import (
    IMAGE_EXTENSIONS, Clip, probe_video, read_frames_at, read_image, read_video, resize_frames,
    resolve_conform_settings, select_frame_indices, select_frames, video_writer, write_video,
)

MASK_THRESHOLD = 128  # luminance at or above this is "edit"
BOX_MARGIN = 0.10  # total growth of a box, as a fraction of its width/height (half on each side)
MIN_COMPONENT_AREA = 50  # pixels; smaller specks of a segmentation are ignored

Box = tuple[int, int, int, int]


# ----- polarity


def keep_mask_from_region(region: np.ndarray) -> np.ndarray:
    """Edit region (bool, True = edit) → keep mask (float32, 1.0 = keep, 0.0 = generate), same shape."""
    return (~np.asarray(region, dtype=bool)).astype(np.float32)


def region_from_keep_mask(keep: np.ndarray) -> np.ndarray:
    """Keep mask (float, 1.0 = keep) → edit region (bool, True where keep < 0.5), same shape."""
    return np.asarray(keep) < 0.5


def region_from_mask_pixels(pixels: np.ndarray) -> np.ndarray:
    """Mask pixels as stored in files, uint8 (..., H, W, 3) or (..., H, W), white = edit → bool region."""
    pixels = np.asarray(pixels)
    if pixels.ndim >= 3 and pixels.shape[-1] == 3:
        luminance = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
    else:
        luminance = pixels
    return luminance >= MASK_THRESHOLD


def mask_pixels_from_region(region: np.ndarray) -> np.ndarray:
    """Bool region (..., H, W) → uint8 (..., H, W, 3): white (255) = edit, black (0) = keep."""
    grey = np.asarray(region, dtype=bool).astype(np.uint8) * 255
    return np.repeat(grey[..., None], 3, axis=-1)


# ----- connected components and boxes


def _component_boxes(region: np.ndarray, min_area: int) -> list[list[Box]]:
    """Tight boxes (x0, y0, x1, y1 exclusive) of the 8-connected components of each frame of a
    (F, H, W) bool region, components with fewer than `min_area` pixels left out."""
    num_frames, height, width = region.shape
    rows = region.reshape(num_frames * height, width)
    # Horizontal runs of True: each run is [start, end) in one row of the stacked frames.
    padded = np.zeros((rows.shape[0], width + 2), dtype=np.int8)
    padded[:, 1:-1] = rows
    steps = np.diff(padded, axis=1)
    run_row, run_start = np.nonzero(steps == 1)
    _, run_end = np.nonzero(steps == -1)
    num_runs = run_row.size
    if num_runs == 0:
        return [[] for _ in range(num_frames)]

    # A run touches a run of the next row (same frame) when their column ranges overlap or touch
    # diagonally (8-connectivity): next.start <= run.end and next.end >= run.start.
    stride = width + 2
    start_keys = run_row * stride + run_start
    end_keys = run_row * stride + run_end
    looks_down = (run_row % height) != height - 1
    first = np.searchsorted(end_keys, (run_row + 1) * stride + run_start, side="left")
    stop = np.searchsorted(start_keys, (run_row + 1) * stride + run_end, side="right")
    counts = np.where(looks_down, np.maximum(stop - first, 0), 0)
    upper = np.repeat(np.arange(num_runs), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    lower = np.repeat(first, counts) + offsets

    # Union-find by hooking roots onto the smaller root, then full path compression, until stable.
    parent = np.arange(num_runs)
    while upper.size:
        root_upper, root_lower = parent[upper], parent[lower]
        differ = root_upper != root_lower
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(root_upper, root_lower)[differ], np.minimum(root_upper, root_lower)[differ])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand

    is_root = parent == np.arange(num_runs)
    run_label = (np.cumsum(is_root) - 1)[parent]
    count = int(is_root.sum())
    y = run_row % height
    area = np.bincount(run_label, weights=run_end - run_start, minlength=count)
    x0 = np.full(count, width)
    y0 = np.full(count, height)
    x1 = np.zeros(count, dtype=np.int64)
    y1 = np.zeros(count, dtype=np.int64)
    np.minimum.at(x0, run_label, run_start)
    np.maximum.at(x1, run_label, run_end)
    np.minimum.at(y0, run_label, y)
    np.maximum.at(y1, run_label, y + 1)
    frame_of = np.zeros(count, dtype=np.int64)
    frame_of[run_label] = run_row // height

    boxes: list[list[Box]] = [[] for _ in range(num_frames)]
    for c in np.nonzero(area >= min_area)[0]:
        boxes[frame_of[c]].append((int(x0[c]), int(y0[c]), int(x1[c]), int(y1[c])))
    return boxes


def grow_box(box: Box, height: int, width: int, margin: float = BOX_MARGIN) -> Box:
    """Grow a box by `margin` of its width and height in total, clipped to a width x height frame.

    Each side moves out by round(size * margin / 2) pixels, halves rounded up: a 100-pixel-wide box
    with margin 0.10 gains 5 columns on the left and 5 on the right; a 10-wide one gains 1 on each side.
    """
    x0, y0, x1, y1 = box
    pad_x = int(np.floor((x1 - x0) * margin / 2 + 0.5 + 1e-9))
    pad_y = int(np.floor((y1 - y0) * margin / 2 + 0.5 + 1e-9))
    return max(0, x0 - pad_x), max(0, y0 - pad_y), min(width, x1 + pad_x), min(height, y1 + pad_y)


def find_loose_boxes(region: np.ndarray, margin: float = BOX_MARGIN, min_area: int = MIN_COMPONENT_AREA) -> list[list[Box]]:
    """Per frame of a bool (F, H, W) region, the loose boxes (x0, y0, x1, y1 exclusive) of its
    8-connected components with at least `min_area` pixels, each grown by `grow_box`."""
    region = np.asarray(region, dtype=bool)
    if region.ndim != 3:
        raise MaskEditError(f"expected a mask of shape (F, H, W), got {region.shape}")
    _, height, width = region.shape
    return [[grow_box(box, height, width, margin) for box in frame_boxes]
            for frame_boxes in _component_boxes(region, min_area)]


def region_from_boxes(boxes: list[list[Box]], height: int, width: int) -> np.ndarray:
    """Bool (F, H, W) region, F = len(boxes): the union of each frame's boxes (x1, y1 exclusive)."""
    region = np.zeros((len(boxes), height, width), dtype=bool)
    for frame, frame_boxes in zip(region, boxes):
        for x0, y0, x1, y1 in frame_boxes:
            frame[y0:y1, x0:x1] = True
    return region


def loose_boxes(region: np.ndarray, margin: float = BOX_MARGIN, min_area: int = MIN_COMPONENT_AREA) -> np.ndarray:
    """The loose-box region of a tight bool region (F, H, W) or one frame (H, W); same shape, bool.

    Per frame, each 8-connected component with >= `min_area` pixels is replaced by its bounding box
    grown by `margin` (see `grow_box`), clipped to the frame; smaller components are dropped.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim == 2:
        return loose_boxes(region[None], margin, min_area)[0]
    _, height, width = region.shape
    return region_from_boxes(find_loose_boxes(region, margin, min_area), height, width)


def box_region(height: int, width: int, box: Box, num_frames: int = 1) -> np.ndarray:
    """Bool region (num_frames, height, width), True inside `box` = (x0, y0, x1, y1), x1/y1 exclusive."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise MaskEditError(
            f"the box {x0},{y0},{x1},{y1} is empty or leaves the {width}x{height} frame; give x0,y0,x1,y1 "
            f"with 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (x1, y1 exclusive)"
        )
    return region_from_boxes([[(x0, y0, x1, y1)]] * num_frames, height, width)


def parse_box(text: str) -> Box:
    """Parse "x0,y0,x1,y1" (pixels, x1/y1 exclusive) into a tuple of 4 ints."""
    text = check_text(text, "box", 200)
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4:
        raise MaskEditError(
            f"the box {shown_value(text)} is not four whole numbers; write it as x0,y0,x1,y1, e.g. 300,120,560,400"
        )
    x0, y0, x1, y1 = (int(parse_number_text(part, f"corner of the box {shown_value(text)}", integer=True,
                                            example="x0,y0,x1,y1 = 300,120,560,400")) for part in parts)
    return x0, y0, x1, y1


# ----- files


def read_mask_video(path: str | os.PathLike) -> np.ndarray:
    """Read a mask (white = edit) from a video file, a folder of frames or one image → bool (F, H, W).

    A single image gives one frame (F = 1); `conform_region` repeats it over the clip.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return region_from_mask_pixels(read_image(path))[None]
    return region_from_mask_pixels(read_video(path).frames)


def read_mask_for_clip(path: str | os.PathLike, source, num_frames: int, mode: str = "uniform",
                       start: int = 0) -> np.ndarray:
    """`read_mask_video(path)` for `conform_region(mask, source, num_frames, ..., mode, start)`, decoding only
    the frames the clip keeps: a mask video with the source's frame count gives just those frames (which
    `conform_region` takes as already selected), so memory follows the conformed clip, not the source.

    source: the clip before conforming (a `video.Clip` or `video.SourceInfo`); num_frames: the conformed count.
    Returns bool (F, H, W) with F = num_frames, or 1 for one image, or the mask's own count when it was
    made for the conformed clip.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return read_mask_video(path)
    return read_frames_at(path, mask_frame_indices(path, source, num_frames, mode, start), region_from_mask_pixels)


def mask_frame_indices(path: str | os.PathLike, source, num_frames: int, mode: str = "uniform",
                       start: int = 0) -> range | np.ndarray:
    """The frames of a mask video that the conformed clip keeps (`read_mask_for_clip`'s rule): the clip's selection
    when the mask has the source's frame count, all of them when it has the conformed count (or one frame)."""
    count = probe_video(path).num_frames
    if count == source.num_frames and count != num_frames:
        return select_frame_indices(source.num_frames, num_frames, mode, start)
    if count in (num_frames, 1):
        return range(count)
    raise MaskEditError(
        f"the mask has {count} frames but the clip has {source.num_frames} ({num_frames} after conforming); "
        "give a mask made from this clip"
    )


def write_mask_video(path: str | os.PathLike, region: np.ndarray, fps: float) -> None:
    """Write a bool (F, H, W) region as an H.264 mp4, white = edit, black = keep (frame by frame: a memory-mapped
    region of a long clip is never whole in memory)."""
    region = np.asarray(region, dtype=bool)
    if region.ndim != 3:
        raise MaskEditError(f"expected a mask of shape (F, H, W), got {region.shape}")
    if region.shape[0] <= 1:
        write_video(path, mask_pixels_from_region(region), fps)
        return
    with video_writer(path, region.shape[2], region.shape[1], fps) as send:
        for frame in region:
            send(mask_pixels_from_region(frame))


# ----- checking and conforming


def check_region(region: np.ndarray, num_frames: int | None = None, height: int | None = None,
                 width: int | None = None) -> None:
    """Raise MaskEditError unless a bool (F, H, W) region fits the clip and marks something sensible.

    Frames 1.. (frame 0 alone for a one-frame region) must not be all empty nor all full.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 3:
        raise MaskEditError(f"expected a mask of shape (F, H, W), got {region.shape}")
    frames, mask_height, mask_width = region.shape
    if num_frames is not None and frames != num_frames:
        raise MaskEditError(
            f"the mask has {frames} frames but the clip has {num_frames}; give a mask with the clip's "
            "frames, or the source clip's mask and the same frame settings so it is conformed with it"
        )
    if (height is not None and mask_height != height) or (width is not None and mask_width != width):
        raise MaskEditError(
            f"the mask is {mask_width}x{mask_height} but the clip is {width or mask_width}x{height or mask_height}; "
            "resize it to match, or use fit (--fit) to resize and centre-crop it like the clip"
        )
    judged = region[1:] if frames > 1 else region
    if not judged.any():
        raise MaskEditError(
            "the mask marks nothing to edit (it is black on every frame after the first); mark the object "
            "in white, or pick it again"
        )
    if judged.all():
        raise MaskEditError(
            "the mask covers the whole frame on every frame after the first, so nothing would be kept; "
            "mark only the object to edit"
        )


def fit_region(region: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize+centre-crop a bool region (F, H, W) or (H, W) to width x height with nearest-neighbour,
    the same geometry as `maskedit.media.video.resize_center_crop`. Returns `region` itself when it fits."""
    region = np.asarray(region, dtype=bool)
    if region.ndim == 2:
        return fit_region(region[None], width, height)[0]
    if region.shape[1:] == (height, width):
        return region
    pixels = region.astype(np.uint8) * 255
    return resize_frames(pixels, width, height, Image.NEAREST) >= MASK_THRESHOLD


def conform_region(region: np.ndarray, source: Clip, num_frames: int | None = None, width: int | None = None,
                   height: int | None = None, mode: str = "uniform", start: int = 0) -> np.ndarray:
    """Conform a bool (F, H, W) region exactly like `maskedit.media.video.conform_clip(source, ...)` conforms its clip.

    `source` is the clip before conforming. The region may have the source's frame count (it gets the same
    frame selection), the conformed count (taken as already selected), or one frame (repeated). Its size
    must have the source's aspect ratio (or already be the target size); it is resized with nearest-neighbour.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 3:
        raise MaskEditError(f"expected a mask of shape (F, H, W), got {region.shape}")
    num_frames, width, height = resolve_conform_settings(
        source.num_frames, source.height, source.width, num_frames, width, height, start)
    frames = region.shape[0]
    if frames == source.num_frames:
        region, _ = select_frames(region, num_frames, mode, start)
    elif frames == 1:
        region = np.repeat(region, num_frames, axis=0)
    elif frames != num_frames:
        raise MaskEditError(
            f"the mask has {frames} frames but the clip has {source.num_frames} ({num_frames} after conforming); "
            "give a mask made from this clip"
        )
    return conform_region_size(region, source, width, height)


def conform_region_size(region: np.ndarray, source, width: int, height: int) -> np.ndarray:
    """The geometry part of `conform_region`: a bool region (F, H, W) or one frame (H, W) of the source's aspect
    ratio (or already width x height) resized and centre-cropped to width x height like the clip's frames."""
    mask_height, mask_width = region.shape[-2:]
    if (mask_height, mask_width) != (height, width):
        same_aspect = abs(mask_width * source.height - mask_height * source.width) <= max(mask_height, source.height)
        if not same_aspect:
            raise MaskEditError(
                f"the mask is {mask_width}x{mask_height} but the clip is {source.width}x{source.height}; "
                "give a mask of the clip's size (or shape), made from this clip"
            )
        region = fit_region(region, width, height)
    return region
