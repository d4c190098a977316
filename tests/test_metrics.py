"""Metrics over masked regions: PSNR, SSIM, tPSNR, true boxes and an edit's scores."""

import math

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.media.metrics import (
    EditScores, box_hull, mean_scores, mse, psnr, score_edit, ssim, ssim_map, temporal_psnr,
)


def video(seed=0, frames=5, size=32):
    rng = np.random.default_rng(seed)
    return (rng.random((frames, size, size, 3)) * 255).astype(np.uint8)


def test_a_clip_against_itself_is_perfect():
    v = video()
    assert psnr(v, v) == math.inf
    assert ssim(v, v) == 1.0
    assert temporal_psnr(v, v) == math.inf
    mask = np.zeros(v.shape[:3], bool)
    mask[:, 4:20, 8:30] = True
    assert psnr(v, v, mask) == math.inf and ssim(v, v, mask) == 1.0 and temporal_psnr(v, v, mask) == math.inf


def test_psnr_known_values():
    a = np.zeros((4, 8, 8, 3), np.uint8)
    b = a + 1
    assert mse(a, b) == 1.0
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2))  # 48.13 dB
    b = a.copy()
    b[:, :4] = 16  # MSE 256 on half the pixels
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 128))
    top = np.zeros(a.shape[:3], bool)
    top[:, :4] = True
    assert psnr(a, b, top) == pytest.approx(10 * math.log10(255 ** 2 / 256))
    assert psnr(a, b, ~top) == math.inf
    assert math.isnan(psnr(a, b, np.zeros_like(top)))


def test_ssim_of_flat_images_follows_the_formula():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1)  # no variance: the luminance term alone
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert ssim_map(a, b).shape == (16, 16)
    assert ssim_map(a[..., 0], b[..., 0]).shape == (16, 16)  # grey images too


def test_ssim_falls_with_noise_and_is_bounded():
    v = video(1)
    rng = np.random.default_rng(2)
    scores = []
    for amount in (0, 5, 20, 60):
        noisy = np.clip(v.astype(int) + rng.integers(-amount, amount + 1, v.shape), 0, 255).astype(np.uint8)
        scores.append(ssim(noisy, v))
    assert scores[0] == 1.0 and all(x > y for x, y in zip(scores, scores[1:]))
    assert -1.0 <= scores[-1] <= 1.0


def test_masked_ssim_ignores_changes_outside_the_mask():
    v = video(3)
    changed = v.copy()
    changed[:, :, 16:] = 255 - changed[:, :, 16:]  # right half changed
    left = np.zeros(v.shape[:3], bool)
    left[:, :, :16] = True
    assert ssim(changed, v, left) == 1.0  # even next to the boundary
    assert psnr(changed, v, left) == math.inf
    assert ssim(changed, v, ~left) < 0.5


def test_temporal_psnr_measures_change_not_level():
    v = video(4).astype(np.int16)
    brighter = np.clip(v + 10, 0, 255)  # clipping aside, the same frame-to-frame changes
    static = np.repeat(v[:1], v.shape[0], axis=0)
    shifted = np.clip(v, 0, 245) + 10
    assert temporal_psnr(shifted, np.clip(v, 0, 245)) == math.inf
    assert temporal_psnr(static, v) < temporal_psnr(brighter, v)
    with pytest.raises(MaskEditError):
        temporal_psnr(v[:1], v[:1])


def test_box_hull():
    region = np.zeros((3, 10, 12), bool)
    region[0, 2, 3] = region[0, 6, 8] = True  # two specks: one box around both
    region[2, 4:6, 0:2] = True
    hull = box_hull(region)
    expected = np.zeros_like(region)
    expected[0, 2:7, 3:9] = True
    expected[2, 4:6, 0:2] = True
    assert np.array_equal(hull, expected)  # frame 1 stays empty
    assert np.array_equal(box_hull(region[0]), expected[0])


def test_score_edit_reference_rows():
    source = video(5, frames=5)
    target = source.copy()
    region = np.zeros(source.shape[:3], bool)
    region[:, 8:16, 8:16] = True
    target[region] = 255 - target[region]
    truth = score_edit(target, source, target, region)
    assert truth == EditScores(math.inf, 1.0, math.inf, 1.0, math.inf)
    unedited = score_edit(source, source, target, region)
    assert unedited.background_psnr == math.inf and unedited.edit_psnr < 20 and unedited.temporal_psnr < math.inf
    # Frame 0 is the user's own edit: it does not count unless asked.
    spoiled = target.copy()
    spoiled[0] = 0
    assert score_edit(spoiled, source, target, region).background_psnr == math.inf
    assert score_edit(spoiled, source, target, region, include_first_frame=True).background_psnr < 20


def test_score_edit_uses_the_true_box_not_the_mask():
    source = video(6, frames=5)
    target = source.copy()
    region = np.zeros(source.shape[:3], bool)
    region[:, 10, 10] = region[:, 14, 14] = True  # the box spans 10..14
    target[region] = 0
    generated = target.copy()
    generated[:, 12, 12] = 0  # inside the box, outside the mask: an edit-box error, not a background one
    scores = score_edit(generated, source, target, region)
    assert scores.background_psnr == math.inf and scores.edit_psnr < math.inf


def test_mean_scores_skips_nan():
    a = EditScores(10.0, 0.5, float("nan"), 0.2, math.inf)
    b = EditScores(20.0, 0.7, 30.0, 0.4, 10.0)
    m = mean_scores([a, b])
    assert m.background_psnr == 15.0 and m.edit_psnr == 30.0 and m.temporal_psnr == math.inf
    assert m.background_ssim == pytest.approx(0.6)
    with pytest.raises(MaskEditError):
        mean_scores([])


def test_shape_mismatches_are_refused():
    v = video()
    with pytest.raises(MaskEditError):
        psnr(v, v[:2])
    with pytest.raises(MaskEditError):
        ssim(v, v, np.ones((5, 16, 16), bool))
    with pytest.raises(MaskEditError):
        score_edit(v, v, v, np.ones((4, 32, 32), bool))
