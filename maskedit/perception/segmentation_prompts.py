"""Clicks on a frame, grouped per object, and the checks every segmentation backend shares.

Points are (x, y) in pixels of the frame (x to the right, y down); labels 1 = include (the object),
0 = exclude. `maskedit.perception.segmentation` and its backends (`segmentation_sam2`, `segmentation_fallback`) import
these from here, so no backend imports the module that loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import MaskEditError
from ..limits import parse_number_text, shown_value

INCLUDE, EXCLUDE = 1, 0  # point labels


@dataclass
class ObjectPrompt:
    """One object's clicks (and box) on the prompted frame, in pixels of the frame they apply to."""

    object_id: int
    points: np.ndarray  # float (N, 2), (x, y)
    labels: np.ndarray  # int (N,), 1 = include, 0 = exclude
    box: tuple[float, float, float, float] | None = None
    original_points: np.ndarray | None = field(default=None, repr=False)  # in clip pixels, for messages

    @property
    def positive_points(self) -> np.ndarray:
        return self.points[self.labels == INCLUDE]

    @property
    def negative_points(self) -> np.ndarray:
        return self.points[self.labels == EXCLUDE]

    @property
    def original_positive_points(self) -> np.ndarray:
        source = self.points if self.original_points is None else self.original_points
        return source[self.labels == INCLUDE]

    def scaled(self, scale: float) -> "ObjectPrompt":
        """The same prompt on a frame resized by `scale` (pixel centres map onto pixel centres)."""
        if scale == 1.0:
            return self
        points = (self.points + 0.5) * scale - 0.5
        box = None if self.box is None else tuple(v * scale for v in self.box)
        original = self.points if self.original_points is None else self.original_points
        return replace(self, points=points, box=box, original_points=original)


def parse_point(text: str) -> tuple[float, float, int, int]:
    """"X,Y[,LABEL[,OBJECT]]" → (x, y, label, object_id); label 1 (include, default) or 0 (exclude),
    object 1 by default. Coordinates are pixels of the frame, x to the right, y down."""
    parts = [part.strip() for part in str(text).split(",")]
    if not 2 <= len(parts) <= 4:
        raise MaskEditError(
            f"the point {text!r} is not X,Y[,LABEL[,OBJECT]]; write e.g. 320,200 (on the object), 320,200,1, "
            "or 40,30,0 for a point that is NOT the object"
        )
    x = float(parse_number_text(parts[0], f"X of the point {shown_value(text)}", example="320,200"))
    y = float(parse_number_text(parts[1], f"Y of the point {shown_value(text)}", example="320,200"))
    label, object_id = INCLUDE, 1
    if len(parts) >= 3:
        if parts[2] not in ("0", "1"):
            raise MaskEditError(f"the label of the point {shown_value(text)} is {shown_value(parts[2])}; use 1 (the "
                                "object) or 0 (not the object)")
        label = int(parts[2])
    if len(parts) == 4:
        object_id = int(parse_number_text(parts[3], f"object of the point {shown_value(text)}", integer=True,
                                          example="320,200,1,2"))
    return x, y, label, object_id


def prompts_by_object(points, labels, height: int, width: int, *, object_ids=None, box=None) -> dict[int, ObjectPrompt]:
    """Check clicks against a height x width frame and group them per object (ordered by first use).

    Raises MaskEditError when a point leaves the frame, a label is not 0/1, the counts differ, or an
    object has no positive click (and no box).
    """
    if points is None or np.size(points) == 0:
        points = np.zeros((0, 2))
    else:
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-1] != 2:
            raise MaskEditError(f"points must be (x, y) pairs, got an array of shape {points.shape}")
        points = points.reshape(-1, 2)
    labels = np.asarray([] if labels is None else labels).reshape(-1)
    if labels.size == 0 and points.shape[0] > 0:
        labels = np.full(points.shape[0], INCLUDE)
    if labels.shape[0] != points.shape[0]:
        raise MaskEditError(f"there are {points.shape[0]} points but {labels.shape[0]} labels; give one label per point")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise MaskEditError(f"point labels must be 1 (the object) or 0 (not the object), got {sorted(set(labels.tolist()))}")
    labels = labels.astype(np.int64)
    ids = np.ones(points.shape[0], dtype=np.int64) if object_ids is None else np.asarray(object_ids).reshape(-1)
    if ids.shape[0] != points.shape[0]:
        raise MaskEditError(f"there are {points.shape[0]} points but {ids.shape[0]} object ids; give one per point")
    for x, y in points:
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < width and 0 <= y < height):
            raise MaskEditError(
                f"the point ({x:g}, {y:g}) lies outside the {width}x{height} frame; give pixel coordinates with "
                f"0 <= x < {width} and 0 <= y < {height} (x to the right, y down, on the frame as it is read)"
            )
    if box is not None:
        box = tuple(float(v) for v in box)
        if len(box) != 4 or not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            raise MaskEditError(
                f"the box {box} is empty or leaves the {width}x{height} frame; give x0,y0,x1,y1 with "
                f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
            )
    if points.shape[0] == 0 and box is None:
        raise MaskEditError("no clicks given: click at least once on the object to edit (a positive point)")
    order = list(dict.fromkeys(ids.tolist())) or [1]
    objects = {}
    for index, object_id in enumerate(order):
        pick = ids == object_id
        prompt = ObjectPrompt(int(object_id), points[pick], labels[pick], box if index == 0 else None)
        if not (prompt.labels == INCLUDE).any() and prompt.box is None:
            raise MaskEditError(
                f"object {object_id} has only negative clicks (label 0); add at least one positive click "
                "(label 1) on the object itself"
            )
        objects[int(object_id)] = prompt
    return objects


# ----- checks


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Raise MaskEditError unless `frames` is uint8 (F, H, W, 3) with F >= 1; returns it."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise MaskEditError(f"expected frames of shape (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    return frames


def check_frame_index(frame_index: int, num_frames: int) -> int:
    """The prompted frame as an int in 0..num_frames-1, else MaskEditError."""
    if not 0 <= int(frame_index) < num_frames:
        raise MaskEditError(
            f"the clicks are on frame {frame_index}, but the clip has frames 0..{num_frames - 1}; "
            "give a frame index in that range"
        )
    return int(frame_index)


