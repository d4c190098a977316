"""The offline fallback segmenter: colour models and optical flow, no model weights (OpenCV only).

Used when SAM2 cannot be loaded (no network, no GPU). It is *approximate*: good on clear objects (an
object whose colours differ from the background around it), weak where SAM2 is strong: objects sharing
the background's colours (e.g. white parts on a pale background), touching objects of similar colours,
occlusions, a single click on one element of a bold pattern (click each part, or add negative clicks).
UIs must say so (`approximate` is True).

On the prompted frame, per object:
1. Grow the region from the positive clicks by colour: the background's colours are sampled on the
   frame's border strip (the background usually reaches the edges) and at the negative clicks; the
   object's colours are those of the region so far (first a disc around each click) or any colour the
   background lacks (a patterned object's other colours). The posterior P(object | colour), smoothed
   over a few pixels so that a texture counts as one region, is thresholded at 0.5 and kept connected
   to the clicks; repeated until the region settles. With a box, GrabCut starts from the box instead.
2. Refine the edge with GrabCut around the grown region (clicks as hard seeds; pixels of clearly
   background colours may not join), then once more like a tracking step (4.) on the same frame.
A negative click on another object makes that object a *rival*: segmented the same way and tracked
along, so that the object does not grow into it where the two touch or cross.
Then frame by frame (forward from the prompted frame, then backward when it is not frame 0):
3. Predict: move each mask with its object's motion, a similarity transform fitted (RANSAC) to dense
   optical flow (DIS) inside it; pixels predicted for a rival are not the object's.
4. Re-fit: the colour posterior near the prediction picks the object's pixels (found again by colour,
   nearest and of a similar size, when the prediction drifted); GrabCut refines the edge; the colour
   models adapt slowly.

Everything runs on a copy of each frame scaled to at most `work_size` pixels on its long side; masks
come back at the clip's size. Deterministic for the same input (OpenCV's RNG is seeded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import MaskEditError

WORK_SIZE = 512  # long side of the working copy of each frame, pixels
HIST_BINS = (8, 16, 16)  # Lab histogram bins: lightness coarser than colour
SEED_RADIUS = 0.06  # radius of the first colour sample around a click, fraction of the frame's short side
SMOOTH_SIGMA = 0.01  # smoothing of the colour posterior, fraction of the short side (textures → one region)
MODEL_ADAPTATION = 0.1  # how fast the colour models follow the object's look from frame to frame
MAX_SHARE = 0.9  # a result covering more of the frame than this is not an object
BORDER_STRIP = 0.03  # width of the frame-edge strip sampled as background, fraction of the short side
BORDER_CLEARANCE = 0.15  # border pixels this close to a click (fraction of the short side) are not sampled
OBJECT_WEIGHT = 0.5  # object colour model: this much the clicked region's colours, the rest any new colour
RIVAL_MAX_SHARE = 0.3  # a negative click's region larger than this share of the frame is background, not a rival
SURE_BACKGROUND = 0.25  # GrabCut may not give the object pixels whose colour posterior is below this


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a requirement
        raise MaskEditError(
            "the offline segmenter needs OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2


# ----- colour models


def _bin_index(lab: np.ndarray) -> np.ndarray:
    """Histogram bin of every pixel of a uint8 Lab image (H, W, 3) → int (H, W)."""
    l_bin = (lab[..., 0].astype(np.int32) * HIST_BINS[0]) >> 8
    a_bin = (lab[..., 1].astype(np.int32) * HIST_BINS[1]) >> 8
    b_bin = (lab[..., 2].astype(np.int32) * HIST_BINS[2]) >> 8
    return (l_bin * HIST_BINS[1] + a_bin) * HIST_BINS[2] + b_bin


def _histogram(bins: np.ndarray) -> np.ndarray:
    """Normalised, smoothed (3x3x3 box in bin space) histogram of bin indices."""
    count = np.bincount(bins.ravel(), minlength=int(np.prod(HIST_BINS))).astype(np.float32).reshape(HIST_BINS)
    padded = np.pad(count, 1)
    smooth = np.zeros_like(count)
    for dl in range(3):
        for da in range(3):
            for db in range(3):
                smooth += padded[dl:dl + HIST_BINS[0], da:da + HIST_BINS[1], db:db + HIST_BINS[2]]
    total = smooth.sum()
    return (smooth / total).ravel() if total > 0 else smooth.ravel()


class _ColourModel:
    """P(object | colour) of a tracked object: its histogram against the rest of the frame's."""

    def __init__(self, bins: np.ndarray, region: np.ndarray):
        self.object = _histogram(bins[region])
        self.background = _histogram(bins[~region])

    def posterior(self, bins: np.ndarray, sigma: float) -> np.ndarray:
        """P(object | colour) per pixel (equal priors), smoothed over `sigma` pixels."""
        cv2 = _cv2()
        table = self.object / (self.object + self.background + 1e-9)
        return cv2.GaussianBlur(table[bins].astype(np.float32), (0, 0), sigma)

    def adapt(self, bins: np.ndarray, region: np.ndarray, rate: float = MODEL_ADAPTATION) -> None:
        if region.any() and not region.all():
            self.object = (1 - rate) * self.object + rate * _histogram(bins[region])
            self.background = (1 - rate) * self.background + rate * _histogram(bins[~region])


# ----- small mask tools


def _components(mask: np.ndarray):
    cv2 = _cv2()
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return count, labels


def _keep_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The connected components of `mask` that share a pixel with `anchor`."""
    count, labels = _components(mask)
    hits = np.unique(labels[anchor & mask])
    hits = hits[hits > 0]
    return np.isin(labels, hits) if hits.size else np.zeros_like(mask)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _grow(box, height: int, width: int, fraction: float, minimum: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    pad_x = max(minimum, int(fraction * (x1 - x0)))
    pad_y = max(minimum, int(fraction * (y1 - y0)))
    return max(0, x0 - pad_x), max(0, y0 - pad_y), min(width, x1 + pad_x), min(height, y1 + pad_y)


def _discs(height: int, width: int, points: np.ndarray, radius: int) -> np.ndarray:
    cv2 = _cv2()
    canvas = np.zeros((height, width), np.uint8)
    for x, y in points:
        cv2.circle(canvas, (int(round(x)), int(round(y))), int(radius), 1, -1)
    return canvas.astype(bool)


def _grabcut(image: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray | None:
    """GrabCut on an RGB crop with a GC_* label mask; returns the foreground or None when it cannot run."""
    cv2 = _cv2()
    labels = init.copy()
    has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
    has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).sum() >= 10
    if not (has_fg and has_bg) or min(labels.shape) < 3:
        return None
    cv2.setRNGSeed(0)
    background_model = np.zeros((1, 65), np.float64)
    foreground_model = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, None, background_model, foreground_model,
                    iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _mark_crop_edges(labels: np.ndarray, crop, height: int, width: int, value: int) -> None:
    """Set the crop's edge rows/columns that lie inside the frame (not on its border) to `value`."""
    x0, y0, x1, y1 = crop
    if y0 > 0:
        labels[0, :] = value
    if y1 < height:
        labels[-1, :] = value
    if x0 > 0:
        labels[:, 0] = value
    if x1 < width:
        labels[:, -1] = value


# ----- one working frame


@dataclass
class _WorkFrame:
    rgb: np.ndarray  # (h, w, 3) uint8, the frame at working size
    grey: np.ndarray  # (h, w) uint8
    bins: np.ndarray  # (h, w) int, Lab histogram bins


class FallbackSegmenter:
    """Offline, approximate segmentation from clicks: colour models + GrabCut + optical flow.

    points are (x, y) in pixels of the frame, labels 1 = object, 0 = not the object; object_ids group
    points into objects (default: all one object), whose masks are unioned. A box (x0, y0, x1, y1,
    pixels, x1/y1 exclusive) may replace or add to the clicks of the first object.
    """

    name = "fallback"
    title = "the offline fallback"
    approximate = True
    supports_text = False  # colour clicks only; text prompts need SAM 3
    label = "approximate (offline colour + optical-flow tracker; SAM2 was not used)"

    def __init__(self, work_size: int = WORK_SIZE, note: str | None = None):
        if work_size < 32:
            raise MaskEditError(f"the fallback segmenter's working size is {work_size}; give at least 32 pixels")
        self.work_size = int(work_size)
        self.note = note
        self._cached_key = None
        self._cached_frame: _WorkFrame | None = None

    # -- the interface

    def image_mask(self, frame: np.ndarray, points, labels, *, box=None, object_ids=None) -> np.ndarray:
        """The object's mask on one frame, bool (H, W); for the live overlay while the user clicks.

        The frame's working copy is cached, so repeated calls on the same frame only redo the colour
        model and GrabCut (well under a second at the default working size on a CPU).
        """
        from .segmentation_prompts import check_frames, prompts_by_object

        frame = check_frames(np.asarray(frame)[None])[0]
        height, width = frame.shape[:2]
        objects = prompts_by_object(points, labels, height, width, object_ids=object_ids, box=box)
        work = self._work_frame(frame)
        scale = self._scale(height, width)
        region = np.zeros(work.grey.shape, dtype=bool)
        for prompt in objects.values():
            region |= self._segment_object(work, prompt.scaled(scale))
        return self._to_clip_size(region, height, width)

    def propagate(self, frames: np.ndarray, points, labels, frame_index: int = 0, *, box=None, object_ids=None,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The object's mask on every frame, bool (F, H, W), from clicks on frame `frame_index`.

        Tracks forward from the prompted frame to the end, then backward to frame 0. `progress(done,
        total)` is called after each frame.
        """
        from .segmentation_prompts import check_frame_index, check_frames, prompts_by_object

        frames = check_frames(frames)
        num_frames, height, width = frames.shape[:3]
        frame_index = check_frame_index(frame_index, num_frames)
        objects = prompts_by_object(points, labels, height, width, object_ids=object_ids, box=box)
        scale = self._scale(height, width)
        work = [self._prepare(frame, scale) for frame in frames]
        masks = np.zeros((num_frames,) + work[0].grey.shape, dtype=bool)
        starts = {}
        for object_id, prompt in objects.items():
            starts[object_id] = self._segment_object(work[frame_index], prompt.scaled(scale))
            masks[frame_index] |= starts[object_id]
        rivals = self._rivals(work[frame_index], objects, scale, masks[frame_index])
        done = 1
        if progress:
            progress(done, num_frames)
        order_forward = range(frame_index + 1, num_frames)
        order_backward = range(frame_index - 1, -1, -1)
        for order in (order_forward, order_backward):
            if not len(order):
                continue
            trackers = [_Tracker(work[frame_index], start) for start in starts.values()]
            others = [_Tracker(work[frame_index], rival) for rival in rivals]
            previous = frame_index
            for index in order:
                flow = self._flow(work[previous], work[index])
                everyone = trackers + others
                predictions = [tracker.predict(flow) for tracker in everyone]
                for i, tracker in enumerate(everyone):
                    # Pixels the motion gives to another tracked object, and not to this one, are not this one's.
                    claimed = np.zeros_like(predictions[i])
                    for j, prediction in enumerate(predictions):
                        if j != i:
                            claimed |= prediction
                    result = tracker.refit(work[index], predictions[i], claimed & ~predictions[i])
                    if i < len(trackers):
                        masks[index] |= result
                previous = index
                done += 1
                if progress:
                    progress(done, num_frames)
        return np.stack([self._to_clip_size(mask, height, width) for mask in masks])

    def release(self) -> None:
        """Forget the cached frame (there is no GPU memory to free)."""
        self._cached_key = None
        self._cached_frame = None

    # -- working copies

    def _scale(self, height: int, width: int) -> float:
        return min(1.0, self.work_size / max(height, width))

    def _prepare(self, frame: np.ndarray, scale: float) -> _WorkFrame:
        cv2 = _cv2()
        if scale < 1.0:
            size = (max(1, int(round(frame.shape[1] * scale))), max(1, int(round(frame.shape[0] * scale))))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        frame = np.ascontiguousarray(frame)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        bins = _bin_index(cv2.cvtColor(frame, cv2.COLOR_RGB2LAB))
        return _WorkFrame(frame, grey, bins)

    def _work_frame(self, frame: np.ndarray) -> _WorkFrame:
        import hashlib

        key = (frame.shape, hashlib.blake2b(frame.tobytes(), digest_size=16).digest())
        if key != self._cached_key:
            self._cached_frame = self._prepare(frame, self._scale(*frame.shape[:2]))
            self._cached_key = key
        return self._cached_frame

    @staticmethod
    def _flow(previous: _WorkFrame, current: _WorkFrame) -> np.ndarray:
        cv2 = _cv2()
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(previous.grey, current.grey, None)

    def _rivals(self, work: _WorkFrame, objects: dict, scale: float, taken: np.ndarray) -> list[np.ndarray]:
        """Regions of what the negative clicks point at (another object the user excluded), tracked along
        so that the object does not grow into them when they touch or cross. A negative click on plain
        background gives no rival."""
        from .segmentation_prompts import ObjectPrompt

        rivals = []
        for prompt in objects.values():
            positives = prompt.positive_points
            for point in prompt.negative_points:
                rival = ObjectPrompt(-1, np.concatenate([point[None], positives]),
                                     np.array([1] + [0] * len(positives)))
                try:
                    region = self._from_clicks(work, rival.scaled(scale))
                except MaskEditError:
                    continue
                region &= ~taken
                if 0 < region.mean() < RIVAL_MAX_SHARE and np.count_nonzero(region) >= 20:
                    rivals.append(region)
        return rivals

    @staticmethod
    def _to_clip_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
        cv2 = _cv2()
        if mask.shape == (height, width):
            return mask.copy()
        return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5

    # -- the prompted frame

    def _segment_object(self, work: _WorkFrame, prompt) -> np.ndarray:
        height, width = work.grey.shape
        if prompt.box is not None:
            region = self._from_box(work, prompt)
        else:
            region = self._from_clicks(work, prompt)
            # One tracker re-fit on the same frame: the object's colours against the rest of the frame (not
            # only the border's) settle parts the first colour model was unsure of.
            refit = _Tracker(work, region).refit(work, region)
            clicked = _discs(height, width, prompt.positive_points, 1)
            excluded = _discs(height, width, prompt.negative_points, 1)
            if (refit & clicked).any() and not (refit & excluded).any():
                region = _keep_touching(refit, clicked) | (region & clicked)
        share = region.mean()
        if share > MAX_SHARE:
            raise MaskEditError(
                f"the clicks for object {prompt.object_id} select almost the whole frame ({share:.0%}), so the "
                "offline segmenter cannot tell the object from the rest: add negative clicks (label 0) on the "
                "background, give a box around the object, or use SAM2 (--backend sam2)"
            )
        return region

    def _from_clicks(self, work: _WorkFrame, prompt) -> np.ndarray:
        cv2 = _cv2()
        height, width = work.grey.shape
        short = min(height, width)
        positives = prompt.positive_points
        negatives = prompt.negative_points
        seed_radius = max(2, int(round(SEED_RADIUS * short)))
        core_radius = max(1, seed_radius // 3)
        sigma = max(1.0, SMOOTH_SIGMA * short)
        core = _discs(height, width, positives, core_radius)
        avoid = _discs(height, width, negatives, core_radius) if len(negatives) else np.zeros_like(core)
        negative_sample = _discs(height, width, negatives, seed_radius) if len(negatives) else None

        # Background colours: the frame's border strip (the background usually reaches the frame's edges;
        # the strip near the clicks is left out in case the object does too) and the negative clicks.
        strip = max(2, int(round(BORDER_STRIP * short)))
        border = np.ones((height, width), dtype=bool)
        border[strip:-strip, strip:-strip] = False
        border &= ~_discs(height, width, positives, int(round(BORDER_CLEARANCE * short)))
        background = _histogram(work.bins[border]) if border.any() else np.full(int(np.prod(HIST_BINS)), 1e-9)
        if negative_sample is not None:
            background = 0.5 * background + 0.5 * _histogram(work.bins[negative_sample])
        novelty = 1.0 / float(np.prod(HIST_BINS))

        region = _discs(height, width, positives, seed_radius) & ~avoid
        for _ in range(8):
            # The object's colours: those of the region so far, or any colour the background does not have
            # (a patterned object's other colours, unseen around the first click).
            seen = _histogram(work.bins[region])
            table = (OBJECT_WEIGHT * seen + (1 - OBJECT_WEIGHT) * novelty)
            table = table / (table + background + 1e-9)
            posterior = cv2.GaussianBlur(table[work.bins].astype(np.float32), (0, 0), sigma)
            grown = _keep_touching(posterior > 0.5, core) | core
            grown &= ~avoid
            change = np.count_nonzero(grown ^ region) / max(1, np.count_nonzero(grown))
            region = grown
            if change < 0.02:
                break
        if np.count_nonzero(region) <= 1.5 * np.count_nonzero(core):
            raise MaskEditError(self._not_separable(prompt))

        # GrabCut refines the edge, bounded to a window around the grown region.
        crop = _grow(_bbox(region), height, width, 0.5, 8)
        x0, y0, x1, y1 = crop
        init = np.full((y1 - y0, x1 - x0), cv2.GC_PR_BGD, np.uint8)
        grown_crop = region[y0:y1, x0:x1]
        init[cv2.dilate(grown_crop.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)] = cv2.GC_PR_FGD
        init[posterior[y0:y1, x0:x1] < SURE_BACKGROUND] = cv2.GC_BGD
        init[core[y0:y1, x0:x1]] = cv2.GC_FGD
        init[avoid[y0:y1, x0:x1]] = cv2.GC_BGD
        _mark_crop_edges(init, crop, height, width, cv2.GC_BGD)
        refined = _grabcut(work.rgb[y0:y1, x0:x1], init, 4)
        if refined is not None:
            full = np.zeros_like(region)
            full[y0:y1, x0:x1] = refined
            full = _keep_touching(full | core, core)
            ratio = np.count_nonzero(full) / max(1, np.count_nonzero(region))
            if 0.5 <= ratio <= 2.0:
                region = full
        return region

    def _from_box(self, work: _WorkFrame, prompt) -> np.ndarray:
        cv2 = _cv2()
        height, width = work.grey.shape
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, max(x1, x0 + 1)), min(height, max(y1, y0 + 1))
        short = min(height, width)
        core_radius = max(1, int(round(SEED_RADIUS * short)) // 3)
        init = np.full((height, width), cv2.GC_BGD, np.uint8)
        init[y0:y1, x0:x1] = cv2.GC_PR_FGD
        core = _discs(height, width, prompt.positive_points, core_radius) if len(prompt.positive_points) else None
        if core is not None:
            init[core] = cv2.GC_FGD
        if len(prompt.negative_points):
            init[_discs(height, width, prompt.negative_points, core_radius)] = cv2.GC_BGD
        crop = _grow((x0, y0, x1, y1), height, width, 0.5, 8)
        cx0, cy0, cx1, cy1 = crop
        refined = _grabcut(work.rgb[cy0:cy1, cx0:cx1], init[cy0:cy1, cx0:cx1], 5)
        region = np.zeros((height, width), dtype=bool)
        if refined is None:
            region[y0:y1, x0:x1] = True
            return region
        region[cy0:cy1, cx0:cx1] = refined
        if core is not None and (region & core).any():
            region = _keep_touching(region, core) | core
        else:  # the largest part inside the box
            count, labels = _components(region)
            if count > 1:
                sizes = np.bincount(labels.ravel())
                sizes[0] = 0
                region = labels == int(np.argmax(sizes))
        if not region.any():
            raise MaskEditError(self._not_separable(prompt))
        return region

    @staticmethod
    def _not_separable(prompt) -> str:
        where = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in prompt.original_positive_points) or "the box"
        return (
            f"nothing separable at {where}: the clicked pixels look like their surroundings, so the offline "
            "segmenter cannot find an object there. Click on the middle of the object you want to edit, add "
            "negative clicks (label 0) on the background, give a box around it, or use SAM2 (--backend sam2)"
        )


class _Tracker:
    """Carries one object's mask from frame to frame: flow prediction, colour re-fit, GrabCut edge."""

    def __init__(self, start: _WorkFrame, mask: np.ndarray):
        height, width = mask.shape
        self.mask = mask
        self.last_seen = mask
        self.reference_area = max(1, int(mask.sum()))
        self.sigma = max(1.0, SMOOTH_SIGMA * min(height, width))
        self.colours = _ColourModel(start.bins, mask)
        self.rng = np.random.default_rng(0)

    def predict(self, flow: np.ndarray) -> np.ndarray:
        """The previous mask moved by a similarity transform fitted to the flow inside it."""
        cv2 = _cv2()
        height, width = self.mask.shape
        inner = cv2.erode(self.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if inner.sum() < 20:
            inner = self.mask
        ys, xs = np.nonzero(inner)
        if len(xs) == 0:
            return self.mask
        if len(xs) > 2000:
            pick = self.rng.choice(len(xs), 2000, replace=False)
            ys, xs = ys[pick], xs[pick]
        source = np.stack([xs, ys], axis=1).astype(np.float32)
        target = source + flow[ys, xs]
        matrix = None
        if len(source) >= 6:
            cv2.setRNGSeed(0)
            matrix, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                          ransacReprojThreshold=1.5)
            if matrix is not None:
                scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
                if not 0.8 < scale < 1.25 or inliers is None or inliers.mean() < 0.3:
                    matrix = None
        if matrix is None:
            dx, dy = np.median(target - source, axis=0)
            matrix = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        moved = cv2.warpAffine(self.mask.astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST)
        return moved.astype(bool)

    def refit(self, work: _WorkFrame, predicted: np.ndarray, forbidden: np.ndarray | None = None) -> np.ndarray:
        """The object on the next frame, from its predicted mask (`predict`) and the colours; pixels in
        `forbidden` (predicted for another tracked object) are not taken."""
        cv2 = _cv2()
        height, width = self.mask.shape
        previous = self.mask
        if not previous.any():
            predicted = previous
        posterior = self.colours.posterior(work.bins, self.sigma)
        if forbidden is not None and forbidden.any():
            posterior[forbidden] = 0.0
        area = self.reference_area if not previous.any() else int(previous.sum())

        # Colour candidates in a window around the prediction (and the previous position); a lost object
        # is looked for in a wider window around where it was last seen.
        anchor = predicted | previous
        lost = not anchor.any()
        if lost:
            anchor = self.last_seen
        sx0, sy0, sx1, sy1 = _grow(_bbox(anchor), height, width, 1.0 if lost else 0.5, 12)
        colour = np.zeros_like(previous)
        colour[sy0:sy1, sx0:sx1] = posterior[sy0:sy1, sx0:sx1] > 0.5
        count, labels = _components(colour)
        sizes = np.bincount(labels.ravel(), minlength=count)
        sizes[0] = 0
        overlap = np.bincount(labels[predicted], minlength=count)
        overlap[0] = 0
        chosen = [k for k in range(1, count) if overlap[k] > 0.1 * sizes[k] and sizes[k] >= 0.02 * area]
        region = np.isin(labels, chosen) if chosen else np.zeros_like(previous)
        ratio = region.sum() / max(1, area)
        if not 0.5 < ratio < 2.0:
            # The prediction drifted (or the colour match broke up): take the nearest part of a similar size.
            centre = np.array(np.nonzero(anchor)).mean(axis=1)
            best, best_distance = None, None
            for k in range(1, count):
                if 0.4 * area < sizes[k] < 2.5 * area:
                    distance = float(np.hypot(*(np.array(np.nonzero(labels == k)).mean(axis=1) - centre)))
                    if best_distance is None or distance < best_distance:
                        best, best_distance = k, distance
            region = labels == best if best is not None else predicted
        if not region.any():
            self.mask = region
            return region
        self.last_seen = region

        # GrabCut refines the edge in a window around the region.
        crop = _grow(_bbox(region), height, width, 0.25, 6)
        x0, y0, x1, y1 = crop
        inside = region[y0:y1, x0:x1]
        init = np.full(inside.shape, cv2.GC_PR_BGD, np.uint8)
        init[cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)] = cv2.GC_PR_FGD
        init[posterior[y0:y1, x0:x1] < SURE_BACKGROUND] = cv2.GC_BGD
        core = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        init[core] = cv2.GC_FGD
        _mark_crop_edges(init, crop, height, width, cv2.GC_BGD)
        refined = _grabcut(work.rgb[y0:y1, x0:x1], init, 2) if core.any() else None
        result = region
        if refined is not None:
            full = np.zeros_like(region)
            full[y0:y1, x0:x1] = refined
            full = _keep_touching(full, region)
            if 0.7 < full.sum() / max(1, region.sum()) < 1.4:
                result = full
        self.colours.adapt(work.bins, result)
        self.mask = result
        return result
