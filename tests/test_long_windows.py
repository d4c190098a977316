"""Window arithmetic and each window's condition for clips of any length (METHOD.md §7b)."""

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.method import windows
from maskedit.method.conditioning import inference_condition, stage1_sample
from maskedit.method.windows import Window, plan_windows


@pytest.mark.parametrize("num_frames, window, handover, expected", [
    (81, 81, 1, [(0, 81)]),
    (49, 81, 1, [(0, 49)]),
    (241, 81, 1, [(0, 81), (80, 161), (160, 241)]),
    (245, 81, 1, [(0, 81), (80, 161), (160, 241), (240, 245)]),
    (25, 9, 1, [(0, 9), (8, 17), (16, 25)]),
    (29, 9, 5, [(0, 9), (4, 13), (8, 17), (12, 21), (16, 25), (20, 29)]),
    (33, 17, 5, [(0, 17), (12, 29), (24, 33)]),
])
def test_windows_cover_the_clip_and_share_exactly_the_handover(num_frames, window, handover, expected):
    planned = plan_windows(num_frames, window, handover)
    assert [(w.start, w.stop) for w in planned] == expected
    covered = []
    for w in planned:
        assert w.num_frames <= window and (w.num_frames - 1) % 4 == 0
        assert w.handover == (handover if w.index else 0)
        covered += list(w.new_frames)
    assert covered == list(range(num_frames))  # every frame added once, in order
    for before, after in zip(planned, planned[1:]):
        assert after.start == before.stop - handover


@pytest.mark.parametrize("num_frames, window, handover, words", [
    (83, 81, 1, "4k\\+1"), (241, 80, 1, "4k\\+1"), (241, 81, 2, "4k\\+1"), (241, 9, 9, "leaves no frame"),
    (241, 165, 1, "at most 161"), (241, 81, 0, "at least 1"),
])
def test_bad_window_settings_are_refused_with_what_to_give(num_frames, window, handover, words):
    with pytest.raises(MaskEditError, match=words):
        plan_windows(num_frames, window, handover)


def _clip(num_frames=25, size=16):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
    region = np.zeros((num_frames, size, size), bool)
    region[:, 4:10, 5:12] = True
    return frames, region


def test_window_zero_is_todays_condition_and_later_windows_keep_the_handover_whole():
    frames, region = _clip()
    edited = np.full(frames.shape[1:], 200, np.uint8)
    planned = plan_windows(25, 9, 1)
    first = windows.window_condition(frames, region, planned[0], edited, "p")
    today = inference_condition(frames[:9], region[:9], edited, "p")
    for a, b in ((first.condition_video, today.condition_video), (first.keep_mask, today.keep_mask)):
        np.testing.assert_array_equal(a, b)
    tail = np.full((1, *frames.shape[1:]), 77, np.uint8)
    later = windows.window_condition(frames, region, planned[2], edited, "p", handover_frames=tail)
    np.testing.assert_array_equal(later.condition_video[0], tail[0])           # the generated frame, whole
    np.testing.assert_array_equal(later.condition_video[1:], frames[17:25])   # then the source frames
    assert later.keep_mask[0].min() == 1.0
    np.testing.assert_array_equal(later.keep_mask[1:], (~region[17:25]).astype(np.float32))
    assert later.image is edited and later.prompt == "p"                      # the anchor in every window
    with pytest.raises(MaskEditError, match="generate the windows in order"):
        windows.window_condition(frames, region, planned[1], edited, "p")
    with pytest.raises(MaskEditError, match="expected uint8"):
        windows.window_condition(frames, region, planned[1], edited, "p", handover_frames=tail[:, :8])


def test_stock_window_condition_keeps_only_the_handover():
    edited = np.full((16, 16, 3), 9, np.uint8)
    window = Window(1, 8, 17, 5)
    tail = np.full((5, 16, 16, 3), 50, np.uint8)
    sample = windows.stock_window_condition(window, edited, "p", tail)
    assert sample.num_frames == 9 and sample.keep_mask[:5].min() == 1 and sample.keep_mask[5:].max() == 0
    np.testing.assert_array_equal(sample.condition_video[:5], tail)


def test_prefix_samples_keep_a_prefix_of_1_plus_4m_frames_whole():
    frames, region = _clip(9)
    plain = stage1_sample(frames, region, "p")
    sample = windows.prefix_sample(frames, region, "p", 5)
    assert sample.keep_mask[:5].min() == 1.0
    np.testing.assert_array_equal(sample.keep_mask[5:], plain.keep_mask[5:])
    np.testing.assert_array_equal(windows.prefix_sample(frames, region, "p", 1).keep_mask, plain.keep_mask)
    with pytest.raises(MaskEditError, match="1\\+4m"):
        windows.prefix_sample(frames, region, "p", 3)
    assert set(windows.prefix_lengths(9, 50, 0)) == {5, 9}
    assert windows.prefix_lengths(1, 3, 0) == [1, 1, 1]


def test_long_clip_training_windows_leave_no_frame_out_and_the_default_steps_grow_per_window():
    starts = windows.training_window_starts(245, 81)
    assert starts == [0, 80, 160, 240]  # the last window ends with the clip (5 frames, 4k+1)
    assert windows.long_clip_steps(100, 3) == 300 and windows.long_clip_steps(100, 200) == 10_000
