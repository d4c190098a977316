"""Image and video metrics over masked regions: PSNR, SSIM, temporal consistency, and an edit's scores.

Videos are uint8 (or float in 0..255) arrays (F, H, W, 3); single frames (H, W, 3) or grey (H, W) work too.
Masks are bool with the frames' leading shape ((F, H, W) or (H, W)), True = pixels that count.

- `psnr`: 10·log10(255² / MSE) over the masked pixels (all channels); inf when they are equal there.
- `ssim`: the mean of the SSIM map (Wang et al. 2004: Gaussian window σ = 1.5, 11x11, K1 = 0.01,
  K2 = 0.03, per channel then averaged) over the masked pixels. The map is computed on whole frames
  (reflect padding) after completing the first image with the reference outside the mask, so only
  differences inside the mask count. 1.0 when equal there.
- `temporal_psnr`: PSNR between the frame-to-frame differences of a video and of a reference (tPSNR):
  high when the video changes from frame to frame as the reference does (no flicker, the right motion).
- `score_edit`: what the method benchmark reports for one generated edit (see `EditScores`).
An empty mask gives nan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MaskEditError

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_float(video) -> np.ndarray:
    return np.asarray(video, dtype=np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> None:
    if a.shape != b.shape:
        raise MaskEditError(f"cannot compare arrays of shapes {a.shape} and {b.shape}; they must match")
    if mask is not None:
        spatial = a.shape[:-1] if a.ndim >= 3 and a.shape[-1] == 3 else a.shape
        if mask.shape != spatial:
            raise MaskEditError(f"the mask is {mask.shape} but the frames are {spatial}; they must match")


def _pixel_mask(a: np.ndarray, mask) -> np.ndarray | None:
    """The mask broadcast over channels (or None)."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if a.ndim >= 3 and a.shape[-1] == 3:
        mask = np.broadcast_to(mask[..., None], a.shape)
    return mask


def mse(a, b, mask=None) -> float:
    """Mean squared error over the masked pixels (all channels); nan for an empty mask."""
    a, b = _as_float(a), _as_float(b)
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    _check_pair(a, b, mask)
    error = (a - b) ** 2
    full = _pixel_mask(a, mask)
    if full is not None:
        error = error[full]
    return float(error.mean()) if error.size else float("nan")


def psnr_from_mse(value: float, data_range: float = DATA_RANGE) -> float:
    if math.isnan(value):
        return float("nan")
    return float("inf") if value == 0 else float(10.0 * math.log10(data_range ** 2 / value))


def psnr(a, b, mask=None, data_range: float = DATA_RANGE) -> float:
    """PSNR in dB of `a` against `b` over the masked pixels; inf when equal there, nan for an empty mask."""
    return psnr_from_mse(mse(a, b, mask), data_range)


def _gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return window / window.sum()


def _filter(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) float64 with reflect padding (replicate for tiny frames)."""
    radius = window.numel() // 2
    height, width = images.shape[-2:]
    mode = "reflect" if min(height, width) > radius else "replicate"
    padded = F.pad(images, (radius, radius, radius, radius), mode=mode)
    out = F.conv2d(padded, window.view(1, 1, 1, -1))
    return F.conv2d(out, window.view(1, 1, -1, 1))


def ssim_map(a, b, data_range: float = DATA_RANGE) -> np.ndarray:
    """Per-pixel SSIM of `a` against `b`, averaged over colour channels: shape = frames' leading shape."""
    a, b = _as_float(a), _as_float(b)
    _check_pair(a, b, None)
    color = a.ndim >= 3 and a.shape[-1] == 3
    spatial = a.shape[:-1] if color else a.shape
    if len(spatial) < 2:
        raise MaskEditError(f"SSIM needs images of shape (..., H, W[, 3]), got {a.shape}")
    height, width = spatial[-2:]
    channels = 3 if color else 1

    def to_torch(x):
        x = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, height, width, channels)
        return x.permute(0, 3, 1, 2).reshape(-1, 1, height, width)

    x, y = to_torch(a), to_torch(b)
    window = _gaussian_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    xx, yy, xy = _filter(x * x, window), _filter(y * y, window), _filter(x * y, window)
    sigma_x, sigma_y, sigma_xy = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2))
    value = value.reshape(-1, channels, height, width).mean(dim=1)
    return value.reshape(spatial).numpy()


def ssim(a, b, mask=None, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM of `a` against the reference `b` over the masked pixels (1.0 where they are equal there,
    nan for an empty mask).

    With a mask, `a` is first completed with `b` outside it, so only differences *inside* the mask count:
    a background pixel next to an edited box is not penalised for the box's change, yet every window keeps
    its true surroundings.
    """
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    a, b = _as_float(a), _as_float(b)
    _check_pair(a, b, mask)
    if mask is not None:
        a = np.where(_pixel_mask(a, mask), a, b)
    values = ssim_map(a, b, data_range)
    if mask is not None:
        values = values[mask]
    return float(values.mean()) if values.size else float("nan")


def temporal_psnr(video, reference, mask=None, data_range: float = DATA_RANGE) -> float:
    """tPSNR (dB): PSNR between `video[f] − video[f−1]` and `reference[f] − reference[f−1]` for f = 1..F−1.

    video, reference: (F, H, W, 3), F ≥ 2. mask: (F, H, W) bool; frame f's mask selects the pixels of the
    difference ending at f (mask[0] is not used). inf when the two videos change identically.
    """
    video, reference = _as_float(video), _as_float(reference)
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    _check_pair(video, reference, mask)
    if video.shape[0] < 2:
        raise MaskEditError("temporal consistency needs at least 2 frames")
    return psnr(np.diff(video, axis=0), np.diff(reference, axis=0), None if mask is None else mask[1:], data_range)


def box_hull(region) -> np.ndarray:
    """Per frame, the bounding box of all True pixels of a bool (F, H, W) or (H, W) region, filled: same
    shape, bool. A frame with no True pixel stays empty. (Unlike `masks.loose_boxes` nothing is grown or
    dropped: this is the region's true box.)"""
    region = np.asarray(region, dtype=bool)
    if region.ndim == 2:
        return box_hull(region[None])[0]
    if region.ndim != 3:
        raise MaskEditError(f"expected a region of shape (F, H, W), got {region.shape}")
    hull = np.zeros_like(region)
    rows, cols = region.any(axis=2), region.any(axis=1)
    for f in range(region.shape[0]):
        ys, xs = np.nonzero(rows[f])[0], np.nonzero(cols[f])[0]
        if ys.size:
            hull[f, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = True
    return hull


@dataclass
class EditScores:
    """One generated edit against the ground truth (dB for PSNRs; SSIM in [−1, 1]).

    background_psnr, background_ssim: generated vs the *source* clip outside the true box of the edit
    region, frames 1..F−1 (frame 0 is the given edited frame). edit_psnr, edit_ssim: generated vs the
    *ground-truth edited* clip inside the true box, frames 1..F−1. temporal_psnr: tPSNR of the whole
    generated clip against the ground-truth edited clip.
    """

    background_psnr: float
    background_ssim: float
    edit_psnr: float
    edit_ssim: float
    temporal_psnr: float

    def as_dict(self) -> dict:
        return asdict(self)


def score_edit(generated, source, target, region, include_first_frame: bool = False) -> EditScores:
    """Score a generated edited clip. generated, source, target: (F, H, W, 3); region: (F, H, W) bool,
    every pixel the edit may change (e.g. `ToyEdit.region`); its per-frame bounding box (`box_hull`) splits
    the frame into edit box and background. Frame 0 is left out of the PSNR/SSIM figures unless
    `include_first_frame` (it is the user's own edited frame, given to every method)."""
    generated, source, target = (np.asarray(v) for v in (generated, source, target))
    region = np.asarray(region, dtype=bool)
    if not (generated.shape == source.shape == target.shape) or region.shape != generated.shape[:3]:
        raise MaskEditError(
            f"cannot score videos of shapes {generated.shape}, {source.shape}, {target.shape} with a region "
            f"of shape {region.shape}"
        )
    box = box_hull(region)
    frames = slice(None) if include_first_frame or generated.shape[0] == 1 else slice(1, None)
    g, s, t, inside = generated[frames], source[frames], target[frames], box[frames]
    return EditScores(
        background_psnr=psnr(g, s, ~inside),
        background_ssim=ssim(g, s, ~inside),
        edit_psnr=psnr(g, t, inside),
        edit_ssim=ssim(g, t, inside),
        temporal_psnr=temporal_psnr(generated, target) if generated.shape[0] > 1 else float("nan"),
    )


def mean_scores(scores: list[EditScores]) -> EditScores:
    """Field-wise mean over several edits (nan entries skipped; inf stays inf)."""
    if not scores:
        raise MaskEditError("no scores to average")
    fields = scores[0].as_dict().keys()
    out = {}
    for name in fields:
        values = [getattr(s, name) for s in scores if not math.isnan(getattr(s, name))]
        out[name] = float(np.mean(values)) if values else float("nan")
    return EditScores(**out)


# ----- the paper's Table 1 measures (CLIP features come from the method: `method.clip_features`)

CLIP_NOTE = ("cosine similarity of pooled CLIP image embeddings from the base's own image encoder, frames 1..; the "
             "paper's figures (Table 1) come from its own CLIP, so compare these between methods here, not with it")


def cosine_similarities(a, b) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) and (N, D) or (1, D) features → float64 (N,), each in [-1, 1]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"features of shapes {a.shape} and {b.shape} cannot be compared row by row")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def clip_measures(generated, edited_first, source) -> dict:
    """The paper's CLIP score and input similarity (Table 1) from CLIP features: `generated` (F, D) of the
    generated frames, `edited_first` (1, D) of the edited first frame, `source` (F, D) of the source frames.
    clip_score: mean similarity of each generated frame to the edited first frame; input_similarity: mean
    similarity of each generated frame to its source frame; both over frames 1..F−1 (frame 0 is the user's edit;
    a 1-frame clip uses its frame). Returns {"clip_score", "input_similarity"} (floats in [-1, 1])."""
    generated, source = np.asarray(generated), np.asarray(source)
    if generated.shape != source.shape:
        raise ValueError(f"generated features {generated.shape} and source features {source.shape} differ")
    judged = slice(1, None) if len(generated) > 1 else slice(None)
    return {"clip_score": float(cosine_similarities(generated[judged], edited_first).mean()),
            "input_similarity": float(cosine_similarities(generated[judged], source[judged]).mean())}
