"""A clip longer than one window in the session service (METHOD.md §7b): loaded memory-mapped, trained on windows
across it, generated one GPU call per window; Cancel keeps the finished windows, Resume continues from the next."""

import json
from pathlib import Path

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.media import clipstore, video
from maskedit.models.presets import GenerateSettings
from maskedit.studio.service import GpuCalls, Studio, TrainInputs
from maskedit.workflow import session
from conftest import make_synthetic_clip
from test_studio import local_gpu

FRAMES = 101  # longer than the lazy threshold (81): the clip is memory-mapped


@pytest.fixture
def long_studio(tmp_path, tiny_pipe):
    frames, _ = make_synthetic_clip(FRAMES, 32, 32, box=10, step=1)
    video.write_video(tmp_path / "clip.mp4", frames, 12.0)
    video.write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    calls = []
    base = local_gpu(tiny_pipe)

    def generate(*args, **kwargs):
        calls.append(kwargs)
        yield from base.generate(*args, **kwargs)

    gpu = GpuCalls(base.train_chunk, generate, base.image_mask, base.segment_clip, base.caption)
    studio = Studio(session.SessionStore(tmp_path / "sessions"), gpu, model_name="tiny", is_tiny=True,
                    allowed_roots=lambda: [tmp_path], cache_root=tmp_path / "cache")
    return studio, tmp_path, calls


def test_a_long_clip_loads_mapped_trains_on_windows_and_generates_one_call_per_window(long_studio):
    studio, files, calls = long_studio
    st = studio.session("long")
    _, notes, first = studio.load_video(st, files / "clip.mp4", 0, "32x32", window_frames=41)
    assert "101 frames" in notes and "3 windows of up to 41 frames" in notes and first.shape == (32, 32, 3)
    clip, _ = session.load_clip(studio.sub(st, session.CLIP_FOLDER))
    assert clipstore.is_mapped(clip.frames) and studio.windows(st) == (41, 1)
    assert studio.set_windows(st, 81) == "Windows of 81 frames, 1 hand-over frame(s): the 101-frame clip is 2 windows."
    with pytest.raises(MaskEditError, match="4k\\+1"):
        studio.set_windows(st, 40)
    studio.set_windows(st, 41)
    studio.use_mask(st, box="4,4,20,20")
    prepared_dir = studio.prepared_dir(st)
    assert (prepared_dir / clipstore.FRAMES_FILE).is_file() and not (prepared_dir / "clip.npz").exists()
    studio.set_edited_frame(st, files / "edited.png")
    config, notes = studio.train_config(TrainInputs("a box"), FRAMES, (41, 1))
    assert config.steps == 300 and any("3 windows" in n and "300 steps (100 per window)" in n for n in notes)
    views = list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    assert "done" in views[-1].status

    studio.stop_generation(st)  # a Cancel before any window: nothing is generated, nothing lost
    events = []
    settings = GenerateSettings(steps=1, guidance_scale=1.0)
    original = studio.gpu.generate

    def cancel_after_first_window(*args, **kwargs):
        for event in original(*args, **kwargs):
            yield event
            if event["kind"] == "window":
                studio.stop_generation(st)

    studio.gpu = GpuCalls(studio.gpu.train_chunk, cancel_after_first_window, studio.gpu.image_mask,
                          studio.gpu.segment_clip, studio.gpu.caption)
    with pytest.raises(MaskEditError, match="finished windows are kept"):
        for kind, value in studio.generate_events(st, "a flipped box", settings):
            events.append((kind, value))
    windows = [value for kind, value in events if kind == "window"]
    assert [w.done for w in windows] == [1] and Path(windows[0].preview).is_file()
    assert "Window 1 of 3 done" in windows[0].markdown() and "for the other 2" in windows[0].markdown()
    studio.gpu = GpuCalls(studio.gpu.train_chunk, original, studio.gpu.image_mask, studio.gpu.segment_clip,
                          studio.gpu.caption)
    calls.clear()
    result = studio.generate(st, "a flipped box", settings)   # Resume: the same inputs continue from window 2
    assert len(calls) == 2 and all(c["max_windows"] == 1 and c["window_frames"] == 41 for c in calls)
    info = video.probe_video(result.edited)
    assert info.num_frames == FRAMES and info.fps == pytest.approx(12.0)
    assert result.report["windows"] == 3 and len(result.report["seams"]["seam_jump"]) == 2
    assert "| seams |" in result.report_markdown and studio.gallery(st)
    state = json.loads((Path(result.edited).parent / "windows.json").read_text())
    assert state["done"] == 3
