"""Segmenting what to edit: clicks (SAM 3's tracker, SAM2, or an offline fallback) or a sentence (SAM 3), one
object or several, and the loose boxes of their union.

The user clicks on one frame (default frame 0): positive points (label 1) on the object, negative points
(label 0) on what is not the object; optionally a box. A `Segmenter` turns that into

- `image_mask(frame, points, labels)` → bool (H, W): the mask on that frame alone, for a live overlay
  while the user clicks (the frame's image embedding / working copy is computed once and reused);
- `propagate(frames, points, labels, frame_index)` → bool (F, H, W): the object through the whole clip,
  forward from the prompted frame and backward when it is not frame 0.

Three backends sit behind that interface, chosen in one place (`SegmentationBackends`, `load_segmenter`):
- "sam3": SAM 3 through transformers (`maskedit.perception.segmentation_sam3`): text prompts
  (`find_instances`: every instance a sentence names, tracked through the clip) and clicks (its tracker);
  gated weights (facebook/sam3), a GPU to be fast.
- "sam2": SAM2.1 through transformers' `Sam2VideoModel` (`maskedit.perception.segmentation_sam2`): clicks;
  from a hub id or a local folder; exact, needs the weights (and a GPU to be fast).
- "fallback": colour models, GrabCut and optical flow (`maskedit.perception.segmentation_fallback`): colour
  clicks, offline and CPU-only; *approximate*: UIs must say so (`segmenter.approximate`, `segmenter.label`).
"auto" takes SAM 3 first on a GPU (or when a SAM 3 model is named), then SAM2 when its weights load, then
the fallback (`segmenter.note` says why). Text prompts always need SAM 3; `SegmentationBackends.text()`
loads it beside another clicks backend, or says what to install or download.

Conventions: points are (x, y) in pixels of the frame (x to the right, y down); labels 1 = include,
0 = exclude; `object_ids` (optional, one per point) split the points into several objects, each segmented
on its own, their masks unioned into the edit region; a box (x0, y0, x1, y1, x1/y1 exclusive) belongs to
the first object. Masks are bool, True = object (`maskedit.method.masks`). `segment_clip` adds the loose boxes
(METHOD.md §3); `union_region` makes one edit region of several objects (the loose box of each connected
component of their union); `write_segmentation` writes masks.mp4, boxes.mp4 and overlay.mp4.
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

BACKENDS = ("auto", "sam3", "sam2", "fallback")
DEFAULT_SAM2_MODEL = "facebook/sam2.1-hiera-large"
"""SAM2.1 (Hiera-L) in transformers format; any SAM2/SAM2.1 hub id or local folder with a config.json works."""
DEFAULT_SAM3_MODEL = "facebook/sam3"
"""SAM 3 in transformers format (gated: accept its licence on the hub); any SAM 3 hub id or local folder works."""

MASKS_VIDEO = "masks.mp4"  # the tight segmentation, white = object
BOXES_VIDEO = "boxes.mp4"  # the loose boxes, white = region to edit, black = keep
OVERLAY_VIDEO = "overlay.mp4"  # a preview: the clip with the mask tinted and the boxes outlined


Progress = Callable[[int, int], None]
"""progress(done, total): called after each frame of a propagation."""


# ----- the interface


@runtime_checkable
class Segmenter(Protocol):
    """What the app and the CLI call; see the module docstring for the conventions."""

    name: str  # "sam3", "sam2" or "fallback"
    label: str  # one line for UIs, e.g. "SAM2 (facebook/sam2.1-hiera-large, cuda)"
    approximate: bool  # True for the offline fallback: say "approximate" next to its results
    note: str | None  # why this backend was chosen, when "auto" fell back
    # optional: supports_text = True (SAM 3) when it also has find_instances(frames, text) (segmentation_sam3)

    def image_mask(self, frame: np.ndarray, points, labels, *, box=None, object_ids=None) -> np.ndarray:
        """bool (H, W): the objects' union on one frame (H, W, 3) uint8."""

    def propagate(self, frames: np.ndarray, points, labels, frame_index: int = 0, *, box=None, object_ids=None,
                  progress: Progress | None = None) -> np.ndarray:
        """bool (F, H, W): the objects' union on every frame of (F, H, W, 3) uint8 frames."""

    def release(self) -> None:
        """Free the model and its (GPU) memory; the segmenter cannot be used afterwards (SAM2)."""


def load_segmenter(backend: str = "auto", model_id: str | None = None, device: str | None = None,
                   dtype=None, download: bool | None = None, *, sam3_model: str | None = None) -> Segmenter:
    """The clicks segmenter for `backend` ("auto", "sam3", "sam2" or "fallback"): `SegmentationBackends.clicks()`.

    model_id: a hub id or local folder of a SAM2 checkpoint in transformers format (default
    DEFAULT_SAM2_MODEL); sam3_model: the same for SAM 3 (default DEFAULT_SAM3_MODEL). device: "cuda", "cpu",
    ... (default: CUDA when available). download: may the weights be fetched from the hub? Default: yes for a
    backend named explicitly; for "auto" only on a CUDA device, so a CPU machine never starts a large download
    just to run slowly (it uses cached weights, else the fallback). "sam3"/"sam2" raise MaskEditError (saying
    what to do) when the weights cannot be loaded; "auto" falls back and puts the reasons in `segmenter.note`.
    """
    return SegmentationBackends(backend, sam2_model=model_id, sam3_model=sam3_model, device=device, dtype=dtype,
                                download=download).clicks()


class SegmentationBackends:
    """The segmentation backends of one app or command, in one place: which one segments clicks (`clicks()`),
    which one text (`text()`: SAM 3 only), each loaded on first use and kept, and what each backend needs
    (`describe()`). backend: the clicks backend asked for (BACKENDS); the other arguments as `load_segmenter`."""

    def __init__(self, backend: str = "auto", *, sam2_model: str | None = None, sam3_model: str | None = None,
                 device: str | None = None, dtype=None, download: bool | None = None):
        if backend not in BACKENDS:
            raise MaskEditError(f"unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.sam2_model = sam2_model or DEFAULT_SAM2_MODEL
        self.sam3_model = sam3_model or DEFAULT_SAM3_MODEL
        self.sam3_named = sam3_model is not None
        self._device = device
        self.dtype = dtype
        self.download = download
        self._clicks: Segmenter | None = None
        self._text = None
        self.failures: dict[str, str] = {}  # backend name → why it could not be loaded (tried once)

    @property
    def device(self) -> str:
        from ..runtime import default_device

        return str(self._device or default_device())

    def _may_download(self, name: str) -> bool:
        if self.download is not None:
            return bool(self.download)
        return self.backend == name or self.device.startswith("cuda")

    def _load(self, name: str):
        """Load backend `name` ("sam3" or "sam2") once; raises its *Unavailable error (a MaskEditError)."""
        if name in self.failures:
            raise MaskEditError(self.failures[name])
        try:
            if name == "sam3":
                from .segmentation_sam3 import Sam3Segmenter

                return Sam3Segmenter.from_pretrained(self.sam3_model, device=self.device, dtype=self.dtype,
                                                     download=self._may_download(name))
            from .segmentation_sam2 import Sam2Segmenter

            return Sam2Segmenter.from_pretrained(self.sam2_model, device=self.device, dtype=self.dtype,
                                                 download=self._may_download(name))
        except MaskEditError as error:
            self.failures[name] = str(error)
            raise

    def clicks(self) -> Segmenter:
        """The segmenter for clicks (loaded on the first call)."""
        if self._clicks is None:
            self._clicks = self._load_clicks()
            if getattr(self._clicks, "supports_text", False):
                self._text = self._clicks
        return self._clicks

    def _load_clicks(self) -> Segmenter:
        from .segmentation_fallback import FallbackSegmenter

        if self.backend == "fallback":
            return FallbackSegmenter()
        if self.backend in ("sam3", "sam2"):
            segmenter = self._load(self.backend)
        else:
            order = (["sam3"] if self.device.startswith("cuda") or self.sam3_named else []) + ["sam2"]
            reasons, segmenter = [], None
            for name in order:
                try:
                    segmenter = self._load(name)
                    break
                except MaskEditError as error:
                    reasons.append(f"{_TITLES[name]} could not be loaded from {self._model(name)}: "
                                   f"{getattr(error, 'reason', error)}")
            if segmenter is None:
                hint = "" if self._may_download("sam2") else " (--segmenter sam2 or sam3 downloads the weights)"
                return FallbackSegmenter(note="; ".join(reasons) + hint + "; using the approximate offline segmenter")
            if reasons:
                segmenter.note = "; ".join(reasons)
        if not self.device.startswith("cuda"):
            slow = (f"{segmenter.title} runs on the {self.device}: expect seconds per frame (a GPU takes a fraction "
                    "of a second); the fallback segmenter is fast but approximate")
            segmenter.note = f"{segmenter.note}; {slow}" if segmenter.note else slow
        return segmenter

    def _model(self, name: str) -> str:
        return self.sam3_model if name == "sam3" else self.sam2_model

    def text(self):
        """The text segmenter (SAM 3, `segmentation_sam3.Sam3Segmenter`): the clicks one when it is SAM 3, else
        SAM 3 loaded beside it. Raises MaskEditError naming what to install or download when it cannot load."""
        if self._text is None and self._clicks is None and self.backend in ("auto", "sam3") and (
                self.backend == "sam3" or self.device.startswith("cuda") or self.sam3_named):
            try:
                self.clicks()  # SAM 3 would be the clicks backend too: load it once, for both
            except MaskEditError:
                pass
        if self._text is None:
            try:
                self._text = self._load("sam3")
            except MaskEditError as error:
                raise MaskEditError(f"text prompts need SAM 3, and it is not available here — {error}") from None
        return self._text

    def describe(self) -> list[str]:
        """One line per backend: what it does and whether it runs here (in use, loads on first use, or what
        it would need), e.g. "SAM2 (clicks): in use — SAM2 (facebook/sam2.1-hiera-large, cuda)"."""
        lines = []
        for name in ("sam3", "sam2"):
            role = "text and clicks" if name == "sam3" else "clicks"
            used = [what for what, segmenter in (("clicks", self._clicks), ("text", self._text))
                    if segmenter is not None and segmenter.name == name]
            if used:
                label = (self._clicks if "clicks" in used else self._text).label
                state = f"in use for {' and '.join(used)} — {label}"
            elif name in self.failures:
                state = "not available — " + self.failures[name]
            else:
                state = _weights_state(self._model(name), self._may_download(name))
                state = f"chosen for clicks; {state}" if self.backend == name else state
            lines.append(f"{_TITLES[name]} ({role}): {state}")
        if self._clicks is not None and self._clicks.name == "fallback":
            fallback = "in use for clicks (approximate)"
        elif self.backend == "fallback":
            fallback = "chosen for clicks (approximate, CPU)"
        else:
            fallback = "always available (approximate, CPU)"
        lines.append(f"offline fallback (colour clicks): {fallback}")
        return lines

    def loaded(self) -> list:
        """The segmenters loaded now (each once, also when one serves clicks and text)."""
        return list({id(s): s for s in (self._clicks, self._text) if s is not None}.values())

    def release(self) -> None:
        """Free every loaded model (GPU memory included); the next call loads again."""
        for segmenter in self.loaded():
            segmenter.release()
        self._clicks = self._text = None


_TITLES = {"sam3": "SAM 3", "sam2": "SAM2"}


def _weights_state(model_id: str, download: bool) -> str:
    """Where a checkpoint would load from, without loading it: a local folder, the Hugging Face cache, a download."""
    if os.path.isdir(model_id):
        return f"loads on first use from the folder {Path(model_id).name}"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 (an odd id or cache: treat as not cached)
        cached = False
    if cached:
        return f"loads on first use from the local Hugging Face cache ({model_id})"
    if download:
        return f"downloads {model_id} on first use"
    return (f"not in the local Hugging Face cache ({model_id}), and this CPU machine does not download it; "
            f"`hf download {model_id}` fetches it (name the backend to download on demand)")


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


@dataclass
class TextSegmentation:
    """What a text prompt found: `instances` (`segmentation_sam3.TextInstance`: object id, score, masks per
    frame; highest score first), the backend's `label` and `notes` for the user."""

    text: str
    instances: list
    label: str
    notes: list[str] = field(default_factory=list)


def segment_text(segmenter, frames: np.ndarray, text: str, *, max_instances: int | None = None,
                 progress: Progress | None = None) -> TextSegmentation:
    """Every instance of `text` in the clip with a text-capable segmenter (SAM 3: `SegmentationBackends.text()`);
    at most `max_instances` (default `limits.MAX_OBJECTS`). Raises MaskEditError for a segmenter without text."""
    from ..limits import MAX_OBJECTS, check_text_prompt

    text = check_text_prompt(text)
    if not getattr(segmenter, "supports_text", False):
        raise MaskEditError(f"{segmenter.label} cannot segment from text; text prompts need SAM 3 (--segmenter sam3)")
    instances = segmenter.find_instances(frames, text, max_instances=max_instances or MAX_OBJECTS,
                                         progress=progress)
    notes = [segmenter.note] if segmenter.note else []
    later = [i.object_id for i in instances if i.area0 == 0]
    if later:
        notes.append(f"{len(later)} instance(s) appear only after frame 0")
    return TextSegmentation(text, instances, segmenter.label, notes)


def _ranges(indices: list[int]) -> str:
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ", ".join(parts)


def union_region(tight: list[np.ndarray], boxes: list[masks.Box], num_frames: int, height: int, width: int, *,
                 margin: float = masks.BOX_MARGIN, min_area: int = masks.MIN_COMPONENT_AREA
                 ) -> tuple[np.ndarray, list[list[masks.Box]]]:
    """One edit region of several objects: per frame, the loose box of each connected component of the union of
    the `tight` masks (bool (F, H, W) each; METHOD.md §3), plus each of `boxes` (x0, y0, x1, y1, x1/y1 exclusive:
    regions the user gave as a box) as it is, on every frame. Returns (region bool (F, H, W), boxes per frame)."""
    union = np.zeros((num_frames, height, width), dtype=bool)
    for mask in tight:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != union.shape:
            raise MaskEditError(f"an object's masks have shape {mask.shape}, not the clip's {union.shape}")
        union |= mask
    box_lists = masks.find_loose_boxes(union, margin, min_area)
    for box in boxes:
        for frame_boxes in box_lists:
            frame_boxes.append(tuple(int(v) for v in box))
    return masks.region_from_boxes(box_lists, height, width), box_lists


def frame_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box (x0, y0, x1, y1, x1/y1 exclusive) of a bool (H, W) mask, None when it is empty: the box
    that clicks refining an object (from text or a mask) start from."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ----- previews and files


OBJECT_COLORS = (  # one tint per object, in the order objects are made (object k: OBJECT_COLORS[(k - 1) % 8])
    ("red", (255, 60, 60)), ("blue", (60, 130, 255)), ("green", (50, 200, 80)), ("orange", (255, 160, 0)),
    ("magenta", (230, 60, 220)), ("cyan", (0, 210, 220)), ("purple", (140, 80, 255)), ("lime", (180, 240, 40)),
)
OBJECT_TINT = np.array(OBJECT_COLORS[0][1], dtype=np.float32)  # red over the tight mask (object 1)


def object_color(object_id: int) -> tuple[str, tuple[int, int, int]]:
    """(name, RGB) of object `object_id` (1, 2, ...) in previews and lists."""
    return OBJECT_COLORS[(int(object_id) - 1) % len(OBJECT_COLORS)]
BOX_COLOR = np.array([255, 230, 0], dtype=np.uint8)  # yellow box outlines
POINT_COLORS = {INCLUDE: (40, 220, 40), EXCLUDE: (230, 40, 40)}  # green = include, red = exclude


def overlay_frames(frames: np.ndarray, region: np.ndarray, box_lists: list[list[masks.Box]] | None = None, *,
                   points=None, labels=None, frame_index: int = 0, alpha: float = 0.45) -> np.ndarray:
    """Preview frames (F, H, W, 3) uint8: the tight mask tinted red, the loose boxes (per frame, a list of
    (x0, y0, x1, y1), x1/y1 exclusive) outlined yellow, the clicks drawn on the prompted frame (green =
    include, red = exclude). For the app's live overlay pass one frame: frames[None], region[None]."""
    return overlay_objects(frames, [(region, OBJECT_COLORS[0][1])], box_lists, points=points, labels=labels,
                           frame_index=frame_index, alpha=alpha)


def overlay_objects(frames: np.ndarray, tints: list[tuple[np.ndarray, tuple[int, int, int]]],
                    box_lists: list[list[masks.Box]] | None = None, *, points=None, labels=None, frame_index: int = 0,
                    alpha: float = 0.45) -> np.ndarray:
    """`overlay_frames` with several objects: each (mask bool (F, H, W), RGB colour) of `tints` tinted in its
    colour (later ones over earlier ones where they overlap)."""
    frames = check_frames(frames)
    out = frames.astype(np.float32)
    for region, colour in tints:
        region = np.asarray(region, dtype=bool)
        out[region] = out[region] * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
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
                       points=None, labels=None, tints=None) -> SegmentationOutputs:
    """Write masks.mp4 (tight, white = object), boxes.mp4 (loose boxes, white = edit, black = keep) and
    overlay.mp4 (preview) to `out_dir`, with the clip's frame count and fps. tints: several objects' (masks,
    RGB) for the preview (`overlay_objects`; default: the region in red)."""
    out = Path(out_dir)
    outputs = SegmentationOutputs(out / MASKS_VIDEO, out / BOXES_VIDEO, out / OVERLAY_VIDEO)
    masks.write_mask_video(outputs.masks, segmentation.region, fps)
    masks.write_mask_video(outputs.boxes, segmentation.boxes, fps)
    from ..media.video import write_video

    preview = overlay_objects(frames, tints or [(segmentation.region, OBJECT_COLORS[0][1])], segmentation.box_lists,
                              points=points, labels=labels, frame_index=segmentation.frame_index)
    write_video(outputs.overlay, preview, fps)
    return outputs
