"""Clips of any length (METHOD.md §7b): window arithmetic and each window's condition.

A clip longer than one window of the base (81 frames for Wan) is edited window by window. Windows are W = 4k+1
frames; window j+1 starts where window j's last O ("hand-over") frames begin, so consecutive windows share O
frames (O = 1 + 4m: 1 by default). With a 4k+1 clip and O = 1 + 4m every window is 4k+1 frames too; the last one
is shorter when the clip does not end on a window's end.

    windows = plan_windows(num_frames=241, window=81, handover=1)   # [0, 81), [80, 161), [160, 241)
    condition = window_condition(frames, region, windows[1], edited_first, prompt, handover_frames=tail)

Generation (METHOD.md §7b): window 0 is today's edit (`conditioning.inference_condition`: the edited first
frame kept, later frames boxed). Window j+1's V_cond is the source frames of that window with the boxes emptied,
except its first O frames, which are the last O *generated* frames of window j, kept whole (mask 1). The image
embedding and the prompt stay those of the edited first frame in every window (the identity anchor). Window j+1's
output frames 0..O-1 are that window's re-render of the hand-over frames: the clip keeps window j's frames there, so
window j+1 adds clip frames `stop_j ..` (`Window.new_frames`).

Training (METHOD.md §7b): stage-1 samples of a long clip are windows drawn across the whole clip, each packed like a
stage-1 sample (`conditioning.stage1_sample`: its frame 0 kept, later frames boxed). O > 1 is a condition stage 1
never sees: it is offered only when training also kept a prefix of 1+4m frames whole in some samples
(`prefix_sample`), which the LoRA's lora.json records (`handover_frames`).

Everything here is pure numpy on (F, H, W, 3) uint8 frames and (F, H, W) bool regions (memory-mapped arrays work
as they are: only the window's frames are read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..defaults import DEFAULT_HANDOVER_FRAMES, DEFAULT_WINDOW_FRAMES  # noqa: F401  (one definition, torch-free)
from ..errors import MaskEditError
from ..limits import check
from .conditioning import ConditionSample, inference_condition, stage1_sample, stock_condition
from .masks import keep_mask_from_region

TEMPORAL_STRIDE = 4  # Wan's VAE: 4k+1 frames; a hand-over of 1+4m frames keeps every window 4k+1


@dataclass(frozen=True)
class Window:
    """Window `index` of a clip: clip frames start..stop-1 (stop exclusive).

    handover: how many leading frames come from the previous window's output (0 for window 0, else O).
    """

    index: int
    start: int
    stop: int
    handover: int

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    @property
    def new_frames(self) -> range:
        """Clip indices this window adds to the output (all of window 0; after the hand-over for the others)."""
        return range(self.start + self.handover, self.stop)

    @property
    def frames(self) -> slice:
        return slice(self.start, self.stop)


def check_window_settings(window: int, handover: int = DEFAULT_HANDOVER_FRAMES) -> tuple[int, int]:
    """(window, handover) checked: W 4k+1 within `limits.LIMITS["window_frames"]`, O = 1+4m with O + 4 <= W.

    Raises MaskEditError naming the setting and what to give."""
    window = check("window_frames", window, "--window-frames")
    handover = check("handover_frames", handover, "--handover-frames")
    if handover + TEMPORAL_STRIDE > window:
        raise MaskEditError(f"the hand-over ({handover} frames, --handover-frames) leaves no frame to generate in a "
                            f"{window}-frame window; use at most {window - TEMPORAL_STRIDE} hand-over frames or "
                            "longer windows")
    return window, handover


def plan_windows(num_frames: int, window: int = DEFAULT_WINDOW_FRAMES,
                 handover: int = DEFAULT_HANDOVER_FRAMES) -> list[Window]:
    """The windows of a clip of `num_frames` (4k+1) frames: one window when the clip fits in `window` frames,
    else windows every `window - handover` frames, the last one ending with the clip (4k+1 frames, shorter
    than the others when the clip ends between window ends). Consecutive windows share `handover` frames."""
    window, handover = check_window_settings(window, handover)
    if num_frames < 1 or (num_frames - 1) % TEMPORAL_STRIDE:
        raise MaskEditError(f"a clip edited in windows needs 4k+1 frames, got {num_frames}")
    if num_frames <= window:
        return [Window(0, 0, num_frames, 0)]
    step = window - handover
    count = 1 + math.ceil((num_frames - window) / step)
    windows = []
    for index in range(count):
        start = index * step
        windows.append(Window(index, start, min(start + window, num_frames), handover if index else 0))
    return windows


def is_long(num_frames: int, window: int = DEFAULT_WINDOW_FRAMES) -> bool:
    """True when a clip needs more than one window."""
    return num_frames > window


def window_condition(frames: np.ndarray, region: np.ndarray, window: Window, edited_first_frame: np.ndarray,
                     prompt: str, handover_frames: np.ndarray | None = None) -> ConditionSample:
    """The mask-aware condition of `window` (METHOD.md §7b).

    frames: the source clip (F, H, W, 3) uint8; region: its boxes (F, H, W) bool (True = edit). Window 0 is
    `inference_condition` of its frames (the edited first frame kept). A later window's V_cond is its source
    frames with the boxes emptied, except its first O frames = `handover_frames` ((O, H, W, 3) uint8, the previous
    window's last O generated frames), kept whole. The image (CLIP) and the prompt are the edited first frame's.
    """
    source, boxes = np.asarray(frames[window.frames]), np.asarray(region[window.frames], dtype=bool)
    if window.handover == 0:
        return inference_condition(source, boxes, edited_first_frame, prompt)
    handover = _check_handover(handover_frames, window, source)
    condition = source.copy()
    condition[: window.handover] = handover
    keep = keep_mask_from_region(boxes)
    keep[: window.handover] = 1.0
    return ConditionSample(condition, keep, edited_first_frame, prompt)


def stock_window_condition(window: Window, edited_first_frame: np.ndarray, prompt: str,
                           handover_frames: np.ndarray | None = None) -> ConditionSample:
    """The stock I2V condition of `window` for the baselines (no boxes): window 0 is `stock_condition` from the
    edited first frame; a later window keeps its O hand-over frames and generates the rest. The CLIP image stays
    the edited first frame."""
    if window.handover == 0:
        return stock_condition(edited_first_frame, window.num_frames, prompt)
    shape = (window.num_frames, *edited_first_frame.shape)
    handover = _check_handover(handover_frames, window, np.zeros((1, *edited_first_frame.shape), np.uint8))
    video = np.zeros(shape, np.uint8)
    video[: window.handover] = handover
    keep = np.zeros(shape[:3], np.float32)
    keep[: window.handover] = 1.0
    return ConditionSample(video, keep, edited_first_frame, prompt)


def _check_handover(handover_frames, window: Window, source: np.ndarray) -> np.ndarray:
    if handover_frames is None:
        raise MaskEditError(f"window {window.index} needs the last {window.handover} generated frame(s) of window "
                            f"{window.index - 1}; generate the windows in order")
    handover = np.asarray(handover_frames)
    expected = (window.handover, *source.shape[1:])
    if handover.shape != expected or handover.dtype != np.uint8:
        raise MaskEditError(f"the hand-over frames of window {window.index} are {handover.shape} {handover.dtype}; "
                            f"expected uint8 {expected}")
    return handover


def prefix_sample(frames: np.ndarray, edit_region: np.ndarray, prompt: str, prefix: int) -> ConditionSample:
    """A stage-1 sample whose first `prefix` frames (1 + 4m) are kept whole: the condition a later window sees
    with a hand-over of `prefix` frames (METHOD.md §7b). prefix 1 is `stage1_sample` itself."""
    sample = stage1_sample(frames, edit_region, prompt)
    if prefix < 1 or (prefix - 1) % TEMPORAL_STRIDE or prefix >= sample.num_frames:
        raise MaskEditError(f"a kept prefix must be 1+4m frames and shorter than the {sample.num_frames}-frame sample, "
                            f"got {prefix}")
    sample.keep_mask[:prefix] = 1.0
    return sample


def prefix_lengths(handover: int, count: int, seed: int) -> list[int]:
    """A kept-prefix length 1+4m (m >= 1, at most `handover`) for each of `count` prefixed samples, drawn from
    `seed`: training for a hand-over of O frames keeps random prefixes up to O whole."""
    if handover <= 1:
        return [1] * count
    choices = np.arange(1 + TEMPORAL_STRIDE, handover + 1, TEMPORAL_STRIDE)
    return [int(v) for v in np.random.default_rng(seed).choice(choices, size=count)]


def training_window_starts(num_frames: int, window: int) -> list[int]:
    """Starts of the stage-1 windows of a long clip: the generation windows' tiling with a hand-over of one frame
    (consecutive windows share one frame, so every pair of neighbouring frames is inside some window and no range
    of the clip is left out); the last window ends with the clip."""
    return [w.start for w in plan_windows(num_frames, window, 1)]


def long_clip_steps(base_steps: int, num_windows: int, limit: int = 10_000) -> int:
    """The default stage-1 steps for a clip of `num_windows` windows: `base_steps` per window (the paper's 100 steps
    learn one clip's motion, and to the model each window is such a clip; a step costs the same whatever the clip's
    length, so training time grows with the clip as generation does), at most `limit` (`limits` train_steps)."""
    return int(min(limit, base_steps * max(1, num_windows)))
