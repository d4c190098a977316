"""Generation window by window (METHOD.md §7b): every window's condition, the hand-over frames placed exactly, the
output's frame count and rate, resuming after a stop, the seams measured, and one window unchanged."""

import json

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.media import video
from maskedit.media.seams import SeamMeter, delta_e, rgb_to_lab
from maskedit.method.windows import plan_windows
from maskedit.workflow import generate, long_clip
from maskedit.workflow.generate import GenerationStopped
from maskedit.workflow.prepare import PreparedClip
from conftest import make_synthetic_clip


def _prepared(num_frames=29, size=32):
    frames, region = make_synthetic_clip(num_frames, size, size, box=10, step=1)
    return PreparedClip(video.Clip(frames, 12.0), region)


class KnownTarget:
    """Stands in for the denoiser: window `call` returns frames whose every pixel is `marker(call, local frame)`, and
    records each condition it was given."""

    def __init__(self):
        self.conditions = []

    @staticmethod
    def marker(call: int, local: int) -> int:
        return (10 + 30 * call + local) % 256

    def __call__(self, pipe, condition, **settings):
        call = len(self.conditions)
        self.conditions.append(condition)
        values = np.array([self.marker(call, k) for k in range(condition.num_frames)], np.uint8)
        return np.broadcast_to(values[:, None, None, None], condition.condition_video.shape).copy()


EDITED = np.full((32, 32, 3), 250, np.uint8)


@pytest.fixture
def known_target(monkeypatch) -> KnownTarget:
    """The denoiser of `long_clip` replaced by a `KnownTarget` (and its setting checks skipped: no model)."""
    fake = KnownTarget()
    monkeypatch.setattr(long_clip, "render_condition", fake)
    monkeypatch.setattr(long_clip, "check_generation", lambda *a, **k: None)
    return fake


@pytest.mark.parametrize("handover", [1, 5])
def test_every_windows_kept_frames_land_where_they_should(tmp_path, known_target, handover):
    prepared, fake, edited = _prepared(29), known_target, EDITED
    events = list(long_clip.generate_long_edit(None, prepared, edited, "a box", tmp_path, window_frames=9,
                                               handover_frames=handover, trained_handover=handover))
    windows = plan_windows(29, 9, handover)
    assert len(fake.conditions) == len(windows) > 2
    run = long_clip.LongEditRun(tmp_path, windows, "")
    output = run.frames(range(29))
    owner = {i: w for w in windows for i in w.new_frames}
    for i in range(29):  # each clip frame is its window's output at the right offset
        assert output[i].min() == output[i].max() == KnownTarget.marker(owner[i].index, i - owner[i].start)
    for w in windows[1:]:  # each later window keeps the clip's last generated frames before it, whole
        condition = fake.conditions[w.index]
        for t in range(handover):
            clip_index = w.start + t  # = the previous window's last frames (when O <= W - O, its own new ones)
            expected = KnownTarget.marker(owner[clip_index].index, clip_index - owner[clip_index].start)
            assert condition.condition_video[t].min() == condition.condition_video[t].max() == expected
        if 2 * handover <= 9:
            assert owner[w.start].index == w.index - 1
        assert condition.keep_mask[:handover].min() == 1.0
        np.testing.assert_array_equal(condition.keep_mask[handover:], (~prepared.region[w.start + handover:w.stop]))
        np.testing.assert_array_equal(condition.condition_video[handover:], prepared.frames[w.start + handover:w.stop])
        assert condition.image is edited
    first = fake.conditions[0]
    np.testing.assert_array_equal(first.condition_video[0], edited)
    done = events[-1]
    assert isinstance(done, long_clip.LongEditDone)
    info = video.probe_video(done.outputs.edited)
    assert info.num_frames == 29 and info.fps == pytest.approx(12.0)
    assert video.probe_video(done.outputs.side_by_side).width == 64
    seams = json.loads((tmp_path / long_clip.SEAMS_JSON).read_text())
    assert seams["seam_frames"] == [w.start + handover for w in windows[1:]]
    assert [e.window for e in events if isinstance(e, long_clip.WindowDone)] == list(range(len(windows)))


def test_a_stopped_run_keeps_its_windows_and_continues_from_the_next(tmp_path, known_target, monkeypatch):
    prepared, fake, edited = _prepared(25), known_target, EDITED
    first = list(long_clip.generate_long_edit(None, prepared, edited, "a box", tmp_path, window_frames=9,
                                              max_windows=1))
    assert [type(e).__name__ for e in first] == ["WindowDone"] and (tmp_path / long_clip.PREVIEW_VIDEO).is_file()
    rest = list(long_clip.generate_long_edit(None, prepared, edited, "a box", tmp_path, window_frames=9))
    assert [e.window for e in rest if isinstance(e, long_clip.WindowDone)] == [1, 2]
    assert len(fake.conditions) == 3  # window 0 was not generated again
    other = list(long_clip.generate_long_edit(None, prepared, edited, "another caption", tmp_path, window_frames=9))
    assert [e.window for e in other if isinstance(e, long_clip.WindowDone)] == [0, 1, 2]  # other inputs: afresh

    fake.conditions.clear()

    def stop_in_window_two(pipe, condition, should_stop=None, **settings):
        if len(fake.conditions) == 1:
            raise GenerationStopped("stopped")
        return fake(pipe, condition, **settings)

    monkeypatch.setattr(long_clip, "render_condition", stop_in_window_two)
    with pytest.raises(GenerationStopped, match="stopped in window 2 of 3; windows 1..1 of 3 are kept"):
        list(long_clip.generate_long_edit(None, prepared, edited, "a third caption", tmp_path, window_frames=9))
    assert long_clip.LongEditRun(tmp_path, plan_windows(25, 9), "x").done() == 0  # another run's fingerprint


def test_a_handover_the_lora_never_learnt_is_refused_before_any_work():
    with pytest.raises(MaskEditError, match="trained without kept prefixes; train with --handover-frames 5"):
        long_clip.check_handover(5, "mask-lora", 1)
    with pytest.raises(MaskEditError, match="up to 5 frames"):
        long_clip.check_handover(9, "mask-lora", 5)
    with pytest.raises(MaskEditError, match="only the mask-aware LoRA"):
        long_clip.check_handover(5, "no-lora", 5)
    long_clip.check_handover(5, "mask-lora", 9)
    long_clip.check_handover(1, "no-lora", None)


def test_seam_meter_sees_a_flash_at_a_seam_and_a_colour_step():
    frames = np.zeros((9, 8, 8, 3), np.uint8)
    for t in range(9):
        frames[t] = 4 * t  # a steady ramp: every neighbouring difference is 4
    frames[5:] += 20        # a step at the seam (frame 5) and a colour shift in window 1
    region = np.zeros((9, 8, 8), bool)
    region[:, :4] = True
    meter = SeamMeter([5], [0] * 5 + [1] * 4)
    source = np.zeros_like(frames)
    for t in range(9):
        source[t] = 4 * t
        meter.add(t, frames[t], source[t], region[t])
    report = meter.report()
    assert report.seam_jump == [pytest.approx(24 / 4)] and report.source_seam_jump == [pytest.approx(1.0)]
    assert report.background_psnr[0] == float("inf") and report.background_psnr[1] < 30
    lab = rgb_to_lab(np.array([[0, 0, 0], [255, 255, 255]]))
    assert lab[0] == pytest.approx([0, 0, 0], abs=1e-6) and lab[1] == pytest.approx([100, 0, 0], abs=1e-3)
    assert report.colour_drift[0] == 0 and report.colour_drift[1] > 5
    assert delta_e([50, 0, 0], [53, 4, 0]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="in order"):
        meter.add(3, frames[0], source[0], region[0])


def test_one_window_is_todays_path_bit_for_bit_and_a_long_clip_runs_on_the_tiny_model(tiny_pipe, tmp_path):
    prepared = _prepared(9)
    edited = np.full((32, 32, 3), 200, np.uint8)
    settings = dict(steps=1, guidance_scale=1.0, method="no-lora", seed=3)
    today = generate.generate_edit(tiny_pipe, prepared, edited, "a box", **settings)
    outputs = long_clip.generate_clip(tiny_pipe, prepared, edited, "a box", tmp_path / "one", window_frames=9,
                                      **settings)
    assert isinstance(outputs, generate.EditOutputs)
    np.testing.assert_array_equal(video.read_video(outputs.edited).frames,
                                  video.read_video(_write(tmp_path / "today.mp4", today)).frames)
    long = _prepared(17)
    steps = []
    result = long_clip.generate_clip(tiny_pipe, long, edited, "a box", tmp_path / "long", window_frames=9,
                                     callback=steps.append, **settings)
    assert isinstance(result, long_clip.LongEditOutputs) and result.windows == 2
    assert [(s.window, s.step) for s in steps] == [(0, 1), (1, 1)]
    assert video.probe_video(result.edited).num_frames == 17
    assert len(result.seams.seam_jump) == 1 and len(result.seams.background_psnr) == 2


def _write(path, frames):
    video.write_video(path, frames, 12.0)
    return path


def test_memory_stays_bounded_by_a_window_as_the_clip_grows(tmp_path, monkeypatch):
    """numpy's peak allocation (tracemalloc) while a clip is prepared, its training windows built and the clip generated
    window by window and assembled is the same for 401 and 2001 frames (25 MB of frames), a few windows' worth (the
    run keys hash at most `hashing.DIGEST_CHUNK_BYTES` at once: 64 MB, set to 1 MB here to see it at this size)."""
    import tracemalloc

    from maskedit.media import hashing
    from maskedit.method.long_training import plan_long_stages
    from maskedit.method.training import TrainConfig
    from maskedit.workflow import prepare

    monkeypatch.setattr(hashing, "DIGEST_CHUNK_BYTES", 2**20)
    monkeypatch.setattr(long_clip, "check_generation", lambda *a, **k: None)
    monkeypatch.setattr(long_clip, "render_condition",  # a stand-in denoiser that keeps nothing
                        lambda pipe, condition, **settings: condition.condition_video.copy())

    frames, _ = make_synthetic_clip(9, 64, 64, box=16, step=4)
    with video.video_writer(tmp_path / "long.mp4", 64, 64, 16.0) as send:
        for index in range(2001):
            send(frames[index % 9])
    edited = np.full((64, 64, 3), 250, np.uint8)

    def peaks(num_frames: int) -> list[float]:
        tracemalloc.reset_peak()
        prepared = prepare.prepare_clip(tmp_path / "long.mp4", box="8,8,40,40", num_frames=num_frames, width=64,
                                        height=64, store=tmp_path / str(num_frames))
        prepare.save_prepared(prepared, tmp_path / str(num_frames))
        found = [tracemalloc.get_traced_memory()[1]]
        tracemalloc.reset_peak()
        items = plan_long_stages(prepared.frames, prepared.region, "p", TrainConfig(), "tiny")[0].items
        assert all(items[i].sample.num_frames == 81 for i in (0, len(items) - 1))
        found.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        events = list(long_clip.generate_long_edit(None, prepared, edited, "a box", tmp_path / f"out{num_frames}",
                                                   resume=False))
        found.append(tracemalloc.get_traced_memory()[1])
        assert video.probe_video(events[-1].outputs.edited).num_frames == num_frames
        return found

    peaks(401)  # once untraced: what importing and starting ffmpeg cost the first time is not the clip's
    tracemalloc.start()
    try:
        short, long = peaks(401), peaks(2001)
    finally:
        tracemalloc.stop()
    window_bytes = 81 * 64 * 64 * 3
    assert all(b < a + 2 * window_bytes for a, b in zip(short, long)), (short, long)
    assert max(long) < 2001 * 64 * 64 * 3 / 2, long
