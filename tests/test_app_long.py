"""A clip longer than one window through the Gradio app (gradio_client, the tiny model): /set_windows, /load_video with
all frames, training on windows, /generate window by window with the windows done and the video so far shown
as it goes, and /edit with the session's windows (/set_windows) (METHOD.md §7b)."""

import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

from maskedit.media.video import probe_video, write_image, write_video  # noqa: E402
from conftest import make_synthetic_clip  # noqa: E402
from test_app import client, running_app  # noqa: E402

FRAMES, FPS = 101, 12.0


@pytest.fixture(scope="module")
def long_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long_app")
    frames, _ = make_synthetic_clip(FRAMES, 32, 32, box=10, step=1)
    write_video(folder / "clip.mp4", frames, FPS)
    write_image(folder / "edited.png", frames[0][:, ::-1].copy())
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app("tiny", tmp_path_factory.mktemp("sessions")) as url:
        yield url, None


def test_a_long_clip_through_the_api_window_by_window(server, long_inputs):
    c = client(server)
    assert "Windows of 41 frames" in c.predict(41, 1, api_name="/set_windows")
    preview, notes, *_ = c.predict(handle_file(str(long_inputs / "clip.mp4")), 0, "32x32", 0, api_name="/load_video")
    assert probe_video(preview).num_frames == FRAMES and "3 windows of up to 41 frames" in notes
    c.predict(None, "4,4,20,20", 0.1, False, api_name="/use_mask")
    c.predict(handle_file(str(long_inputs / "edited.png")), False, api_name="/set_edited_frame")
    job = c.submit("a box", "p3rs0n", "full", 2, 1e-4, 4, 0, 0, False, False, 110, api_name="/train")
    assert "done" in job.result()[1]
    job = c.submit(prompt_text="a flipped box", edited_file=None, method_name="mask-lora", steps=1, cfg_value=1.0,
                   shift_value=5.0, seed=0, lora_scale=1.0, fit=False, api_name="/generate")
    edited, side_by_side, report, info = job.result()
    assert probe_video(edited).num_frames == FRAMES and probe_video(edited).fps == pytest.approx(FPS)
    assert info["windows"] == 3 and len(info["seams"]["background_psnr"]) == 3 and "| seams |" in report
    shown = [o[2] for o in job.outputs() if o[2] and "done" in str(o[2])]
    assert any("Window 1 of 3 done" in text for text in shown)  # the windows done and the estimate, as it goes
    assert any(o[0] for o in job.outputs()[:-1])                # the video so far, before the end

    c.predict(25, 1, api_name="/set_windows")  # the session's windows: /edit uses them too
    edited, _, _, _, info = c.predict(
        video=handle_file(str(long_inputs / "clip.mp4")), points_json="", mask_video=None, box="4,4,20,20",
        edited_first=handle_file(str(long_inputs / "edited.png")), later_files=[], later_indices="",
        train_caption="a box", prompt_text="a flipped box", trigger_text="p3rs0n", num_frames=49, size="32x32",
        start_s=0, margin_value=0.1, preset_name="full", train_steps=1, gen_steps_value=1, cfg_value=1.0,
        shift_value=5.0, seed=0, lora_scale=1.0, fit=False, api_name="/edit")
    assert probe_video(edited).num_frames == 49 and info["windows"] == 2
