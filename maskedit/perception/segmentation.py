"""Segmenting the object to edit from a few clicks: SAM2 video segmentation, or an offline fallback.

The user clicks on one frame (default frame 0): positive points (label 1) on the object, negative points
(label 0) on what is not the object; optionally a box. A `Segmenter` turns that into

- `image_mask(frame, points, labels)` → bool (H, W): the mask on that frame alone, for a live overlay
  while the user clicks (the frame's image embedding / working copy is computed once and reused);
- `propagate(frames, points, labels, frame_index)` → bool (F, H, W): the object through the whole clip,
  forward from the prompted frame and backward when it is not frame 0.

Two backends sit behind that interface (`load_segmenter`):
- "sam2": SAM2.1 through transformers' `Sam2VideoModel` (`maskedit.perception.segmentation_sam2`), from a hub id or a
  local folder; exact, needs the weights (and a GPU to be fast).
- "fallback": colour models, GrabCut and optical flow (`maskedit.perception.segmentation_fallback`), offline and
  CPU-only; *approximate*: UIs must say so (`segmenter.approximate`, `segmenter.label`).
"auto" loads SAM2 when its weights load and the fallback otherwise (`segmenter.note` says why).

Conventions: points are (x, y) in pixels of the frame (x to the right, y down); labels 1 = include,
0 = exclude; `object_ids` (optional, one per point) split the points into several objects, each segmented
on its own, their masks unioned into the edit region; a box (x0, y0, x1, y1, x1/y1 exclusive) belongs to
the first object. Masks are bool, True = object (`maskedit.method.masks`). `segment_clip` adds the loose boxes
(METHOD.md §3) and `write_segmentation` writes masks.mp4, boxes.mp4 and overlay.mp4.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..method import masks
from ..errors import MaskEditError
from .segmentation_prompts import (  # noqa: F401  (part of this module's API)
    EXCLUDE, INCLUDE, ObjectPrompt, check_frame_index, check_frames, parse_point, prompts_by_object,
)

BACKENDS = ("auto", "sam2", "fallback")
DEFAULT_SAM2_MODEL = "facebook/sam2.1-hiera-large"
"""SAM2.1 (Hiera-L) in transformers format; any SAM2/SAM2.1 hub id or local folder with a config.json works."""

MASKS_VIDEO = "masks.mp4"  # the tight segmentation, white = object
BOXES_VIDEO = "boxes.mp4"  # the loose boxes, white = region to edit, black = keep
OVERLAY_VIDEO = "overlay.mp4"  # a preview: the clip with the mask tinted and the boxes outlined


Progress = Callable[[int, int], None]
"""progress(done, total): called after each frame of a propagation."""


# ----- the interface


@runtime_checkable
class Segmenter(Protocol):
    """What the app and the CLI call; see the module docstring for the conventions."""

    name: str  # "sam2" or "fallback"
    label: str  # one line for UIs, e.g. "SAM2 (facebook/sam2.1-hiera-large, cuda)"
    approximate: bool  # True for the offline fallback: say "approximate" next to its results
    note: str | None  # why this backend was chosen, when "auto" fell back

    def image_mask(self, frame: np.ndarray, points, labels, *, box=None, object_ids=None) -> np.ndarray:
        """bool (H, W): the objects' union on one frame (H, W, 3) uint8."""

    def propagate(self, frames: np.ndarray, points, labels, frame_index: int = 0, *, box=None, object_ids=None,
                  progress: Progress | None = None) -> np.ndarray:
        """bool (F, H, W): the objects' union on every frame of (F, H, W, 3) uint8 frames."""

    def release(self) -> None:
        """Free the model and its (GPU) memory; the segmenter cannot be used afterwards (SAM2)."""


def load_segmenter(backend: str = "auto", model_id: str | None = None, device: str | None = None,
                   dtype=None, download: bool | None = None) -> Segmenter:
    """The segmenter for `backend` ("auto", "sam2" or "fallback").

    model_id: a hub id or local folder of a SAM2 checkpoint in transformers format (default
    DEFAULT_SAM2_MODEL). device: "cuda", "cpu", ... (default: CUDA when available). download: may the
    weights be fetched from the hub? Default: yes for "sam2"; for "auto" only on a CUDA device, so a CPU
    machine never starts a large download just to run slowly (it uses cached weights, else the fallback).
    "sam2" raises MaskEditError (saying what to do) when the weights cannot be loaded; "auto" falls back
    and puts the reason in `segmenter.note`.
    """
    if backend not in BACKENDS:
        raise MaskEditError(f"unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "fallback":
        from .segmentation_fallback import FallbackSegmenter

        return FallbackSegmenter()
    from .segmentation_sam2 import Sam2Segmenter, Sam2Unavailable, default_device

    device = device or default_device()
    model_id = model_id or DEFAULT_SAM2_MODEL
    if download is None:
        download = backend == "sam2" or str(device).startswith("cuda")
    try:
        segmenter = Sam2Segmenter.from_pretrained(model_id, device=device, dtype=dtype, download=download)
    except Sam2Unavailable as error:
        if backend == "sam2":
            raise
        from .segmentation_fallback import FallbackSegmenter

        hint = "" if download else " (--backend sam2 downloads it)"
        return FallbackSegmenter(note=f"SAM2 could not be loaded from {model_id}: {error.reason}{hint}; using the "
                                      "approximate offline segmenter")
    if not str(device).startswith("cuda"):
        segmenter.note = (f"SAM2 runs on the {device}: expect seconds per frame (a GPU takes a fraction of a "
                          "second); --backend fallback is fast but approximate")
    return segmenter


# ----- prompts and checks: maskedit.perception.segmentation_prompts (the backends import them from there, not from here)


# ----- a whole clip


@dataclass
class Segmentation:
    """The result of segmenting a clip.

    region: bool (F, H, W), the tight masks (True = object). boxes: bool (F, H, W), their loose boxes
    (METHOD.md §3), the region to edit; box_lists: the same boxes as rectangles per frame. label and
    approximate: which backend made it. notes: what the user should know (e.g. frames without the object).
    """

    region: np.ndarray
    boxes: np.ndarray
    label: str
    approximate: bool
    frame_index: int = 0
    notes: list[str] = field(default_factory=list)
    box_lists: list[list[masks.Box]] = field(default_factory=list)  # per frame, (x0, y0, x1, y1) exclusive


def segment_clip(segmenter: Segmenter, frames: np.ndarray, points, labels, frame_index: int = 0, *, box=None,
                 object_ids=None, margin: float = masks.BOX_MARGIN, min_area: int = masks.MIN_COMPONENT_AREA,
                 progress: Progress | None = None) -> Segmentation:
    """Propagate the clicks through the clip and turn the masks into loose boxes.

    Raises MaskEditError when the object is found on no frame. Frames without it (it left the view, or
    the segmenter lost it) are listed in `notes`.
    """
    frames = check_frames(frames)
    region = np.asarray(segmenter.propagate(frames, points, labels, frame_index, box=box, object_ids=object_ids,
                                            progress=progress), dtype=bool)
    if region.shape != frames.shape[:3]:
        raise MaskEditError(f"the segmenter returned masks of shape {region.shape} for frames {frames.shape[:3]}")
    box_lists = masks.find_loose_boxes(region, margin, min_area)
    boxes = masks.region_from_boxes(box_lists, region.shape[1], region.shape[2])
    if not boxes.any():
        raise MaskEditError(
            "the object was not found on any frame (or only as specks smaller than "
            f"{min_area} pixels); click on the middle of the object, add more clicks, or use another backend"
        )
    notes = []
    if segmenter.note:
        notes.append(segmenter.note)
    if segmenter.approximate:
        notes.append("the masks are approximate (offline fallback segmenter); check overlay.mp4")
    missing = [index for index in range(len(boxes)) if not boxes[index].any()]
    if missing:
        notes.append(f"the object was not found on {len(missing)} frame(s): {_ranges(missing)}")
    return Segmentation(region, boxes, segmenter.label, segmenter.approximate, int(frame_index), notes, box_lists)


def _ranges(indices: list[int]) -> str:
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ", ".join(parts)


# ----- previews and files


OBJECT_TINT = np.array([255, 60, 60], dtype=np.float32)  # red over the tight mask
BOX_COLOR = np.array([255, 230, 0], dtype=np.uint8)  # yellow box outlines
POINT_COLORS = {INCLUDE: (40, 220, 40), EXCLUDE: (230, 40, 40)}  # green = include, red = exclude


def overlay_frames(frames: np.ndarray, region: np.ndarray, box_lists: list[list[masks.Box]] | None = None, *,
                   points=None, labels=None, frame_index: int = 0, alpha: float = 0.45) -> np.ndarray:
    """Preview frames (F, H, W, 3) uint8: the tight mask tinted red, the loose boxes (per frame, a list of
    (x0, y0, x1, y1), x1/y1 exclusive) outlined yellow, the clicks drawn on the prompted frame (green =
    include, red = exclude). For the app's live overlay pass one frame: frames[None], region[None]."""
    frames = check_frames(frames)
    region = np.asarray(region, dtype=bool)
    out = frames.astype(np.float32)
    out[region] = out[region] * (1 - alpha) + OBJECT_TINT * alpha
    out = np.clip(out, 0, 255).astype(np.uint8)
    thickness = max(1, min(frames.shape[1:3]) // 200)
    for index, frame_boxes in enumerate(box_lists or []):
        for x0, y0, x1, y1 in frame_boxes:
            for t in range(thickness):
                ya, yb, xa, xb = y0 + t, y1 - 1 - t, x0 + t, x1 - 1 - t
                if ya > yb or xa > xb:
                    break
                out[index, ya, xa:xb + 1] = BOX_COLOR
                out[index, yb, xa:xb + 1] = BOX_COLOR
                out[index, ya:yb + 1, xa] = BOX_COLOR
                out[index, ya:yb + 1, xb] = BOX_COLOR
    if points is not None and len(points):
        import cv2

        labels = np.ones(len(points), dtype=int) if labels is None else np.asarray(labels).reshape(-1)
        radius = max(3, min(frames.shape[1:3]) // 80)
        canvas = np.ascontiguousarray(out[frame_index])
        for (x, y), label in zip(np.asarray(points, dtype=float).reshape(-1, 2), labels):
            centre = (int(round(x)), int(round(y)))
            cv2.circle(canvas, centre, radius + 1, (255, 255, 255), -1, lineType=cv2.LINE_AA)
            cv2.circle(canvas, centre, radius, POINT_COLORS.get(int(label), POINT_COLORS[INCLUDE]), -1,
                       lineType=cv2.LINE_AA)
        out[frame_index] = canvas
    return out


@dataclass
class SegmentationOutputs:
    masks: Path
    boxes: Path
    overlay: Path


def write_segmentation(out_dir: str | os.PathLike, frames: np.ndarray, segmentation: Segmentation, fps: float, *,
                       points=None, labels=None) -> SegmentationOutputs:
    """Write masks.mp4 (tight, white = object), boxes.mp4 (loose boxes, white = edit, black = keep) and
    overlay.mp4 (preview) to `out_dir`, with the clip's frame count and fps."""
    out = Path(out_dir)
    outputs = SegmentationOutputs(out / MASKS_VIDEO, out / BOXES_VIDEO, out / OVERLAY_VIDEO)
    masks.write_mask_video(outputs.masks, segmentation.region, fps)
    masks.write_mask_video(outputs.boxes, segmentation.boxes, fps)
    from ..media.video import write_video

    preview = overlay_frames(frames, segmentation.region, segmentation.box_lists, points=points, labels=labels,
                             frame_index=segmentation.frame_index)
    write_video(outputs.overlay, preview, fps)
    return outputs
