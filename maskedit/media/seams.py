"""How seamless a clip generated window by window is (METHOD.md §7b), measured on the CPU, frame by frame.

Three figures, all computed in one pass over the output (never the whole clip in memory):
- **seam jump**: the mean |frame difference| across a seam (the last frame of window j → the first frame window j+1
  generated) ÷ the median mean |frame difference| between neighbouring frames inside windows. 1.0 is seamless; a
  flash or a colour step at the seam shows as a jump well above 1. The source clip's own ratio at the same frames is
  reported beside it (its natural motion there).
- **colour drift**: ΔE (CIE76, Euclidean in CIELAB, sRGB D65) between the mean Lab colour of the edit region in
  window 0 and in window j — the creep of the edited object's colour from window to window.
- **background PSNR per window**: PSNR against the source outside the boxes over each window's new frames (frame 0,
  the user's edit, left out), as the single-window report computes it over the whole clip.

    meter = SeamMeter(seams=[81, 161], window_of=window_index_per_frame)
    for index, (frame, source, region) in enumerate(zip(...)):
        meter.add(index, frame, source, region)
    report = meter.report()     # SeamReport: jumps, drift, PSNR per window, as a dict with .to_dict()
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .metrics import DATA_RANGE, psnr_from_mse

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb) -> np.ndarray:
    """sRGB uint8 (or 0..255 floats) (..., 3) → CIELAB (..., 3) float64 (L 0..100), D65 white."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1)


def delta_e(lab_a, lab_b) -> float:
    """CIE76 colour difference of two Lab colours (2.3 is about the smallest difference people see)."""
    return float(np.linalg.norm(np.asarray(lab_a, dtype=np.float64) - np.asarray(lab_b, dtype=np.float64)))


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a − b| over every pixel and channel of two uint8 frames (0..255)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@dataclass
class SeamReport:
    """The seam figures of one long generation (see the module docstring). Lists are per seam (jumps, between window
    j and j+1) or per window (colour, PSNR); nan where there is nothing to measure (no region pixels, no seam)."""

    seam_frames: list[int]
    seam_jump: list[float]
    source_seam_jump: list[float]
    inside_median: float
    colour_drift: list[float]
    background_psnr: list[float]
    region_lab: list[list[float]] = field(default_factory=list)

    @property
    def max_seam_jump(self) -> float:
        return max(self.seam_jump) if self.seam_jump else float("nan")

    @property
    def max_colour_drift(self) -> float:
        return max(self.colour_drift) if self.colour_drift else float("nan")

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(max_seam_jump=self.max_seam_jump, max_colour_drift=self.max_colour_drift)
        return data

    def lines(self) -> list[str]:
        """One line per window for a report: seam jump (and the source's), colour drift, background PSNR."""
        rows = []
        for j, psnr in enumerate(self.background_psnr):
            jump = f"seam jump {self.seam_jump[j - 1]:.2f} (source {self.source_seam_jump[j - 1]:.2f})" if j else \
                "first window"
            rows.append(f"window {j}: {jump}, colour drift ΔE {self.colour_drift[j]:.2f}, "
                        f"background PSNR {format_db(psnr)}")
        return rows


def format_db(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "∞ dB" if value == float("inf") else f"{value:.2f} dB"


class SeamMeter:
    """Accumulates a clip's seam figures frame by frame (frames added in order, index 0 first).

    seams: clip indices of the first frame each later window generated (window j ≥ 1: its start + hand-over).
    window_of: the window of every clip index (a list or array of ints, len = frames).
    """

    def __init__(self, seams: list[int], window_of) -> None:
        self.seams = [int(s) for s in seams]
        self.window_of = np.asarray(window_of, dtype=np.int64)
        windows = int(self.window_of.max()) + 1 if len(self.window_of) else 0
        self.inside: list[float] = []
        self.jumps: dict[int, float] = {}
        self.source_jumps: dict[int, float] = {}
        self.source_inside: list[float] = []
        self.squared = np.zeros(windows)
        self.counted = np.zeros(windows)
        self.lab_sum = np.zeros((windows, 3))
        self.lab_count = np.zeros(windows)
        self.previous: tuple[np.ndarray, np.ndarray] | None = None
        self.next_index = 0

    def add(self, index: int, frame: np.ndarray, source: np.ndarray, region: np.ndarray) -> None:
        """Clip frame `index`: the output (H, W, 3) uint8, the source frame, the boxes (H, W) bool (True = edit)."""
        if index != self.next_index:
            raise ValueError(f"frames must be added in order: expected {self.next_index}, got {index}")
        self.next_index += 1
        if self.previous is not None:
            jump, source_jump = mean_abs_difference(frame, self.previous[0]), \
                mean_abs_difference(source, self.previous[1])
            if index in self.seams:
                self.jumps[index], self.source_jumps[index] = jump, source_jump
            else:
                self.inside.append(jump)
                self.source_inside.append(source_jump)
        self.previous = (frame, source)
        if index == 0:
            return  # the user's edit: neither background PSNR nor the region's colour of the generated frames
        window = self.window_of[index]
        region = np.asarray(region, dtype=bool)
        background = ~region
        if background.any():
            difference = frame[background].astype(np.float64) - source[background].astype(np.float64)
            self.squared[window] += float((difference ** 2).sum())
            self.counted[window] += difference.size
        if region.any():
            self.lab_sum[window] += rgb_to_lab(frame[region]).sum(axis=0)
            self.lab_count[window] += int(region.sum())

    def overall_psnr(self) -> float:
        """Background PSNR over every frame added after frame 0 (the single-window report's figure)."""
        counted = float(self.counted.sum())
        return psnr_from_mse(float(self.squared.sum()) / counted, DATA_RANGE) if counted else float("nan")

    def report(self) -> SeamReport:
        median = float(np.median(self.inside)) if self.inside else float("nan")
        source_median = float(np.median(self.source_inside)) if self.source_inside else float("nan")
        jumps = [self.jumps.get(s, float("nan")) / median if median else float("nan") for s in self.seams]
        source = [self.source_jumps.get(s, float("nan")) / source_median if source_median else float("nan")
                  for s in self.seams]
        with np.errstate(invalid="ignore", divide="ignore"):
            labs = self.lab_sum / self.lab_count[:, None]
        drift = [delta_e(lab, labs[0]) if self.lab_count[j] and self.lab_count[0] else float("nan")
                 for j, lab in enumerate(labs)]
        psnrs = [psnr_from_mse(self.squared[j] / self.counted[j], DATA_RANGE) if self.counted[j] else float("nan")
                 for j in range(len(self.counted))]
        return SeamReport(self.seams, jumps, source, median, drift, psnrs, labs.round(4).tolist())
