"""`python -m maskedit` on clips longer than one window (METHOD.md §7b), in-process with the tiny model: an `edit`
three windows long at 832x480 (frame count, frame rate, hand-over placement), the long-clip options and checks."""

import json

import numpy as np
import pytest

from maskedit.media import video
from maskedit.method.pipeline import MaskEditPipeline

from conftest import make_synthetic_clip
from test_cli import run

FPS = 12.0


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    """13 frames at 832x480 (three 5-frame windows with one hand-over frame) and an edited first frame."""
    folder = tmp_path_factory.mktemp("wide")
    frames, region = make_synthetic_clip(13, 480, 832, box=120, step=16)
    video.write_video(folder / "clip.mp4", frames, FPS)
    edited = frames[0].copy()
    edited[region[0]] = (30, 60, 240)
    video.write_image(folder / "edited.png", edited)
    return folder


def test_edit_of_a_clip_three_windows_long_at_832x480(wide_clip, tmp_path, capsys, monkeypatch):
    """The whole CLI path (prepare → train on windows → generate window by window → assemble) at the size users
    use; every later window's condition starts with the previous window's last generated frame, exactly."""
    conditions = []
    original = MaskEditPipeline.__call__

    def recording(self, *args, **kwargs):
        conditions.append((np.array(kwargs["condition_video"]), np.array(kwargs["condition_mask"])))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MaskEditPipeline, "__call__", recording)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "edit", "--model", "tiny", "--video", wide_clip / "clip.mp4",
                            "--box", "100,60,420,300", "--frames", "all", "--window-frames", 5,
                            "--edited-frame", wide_clip / "edited.png", "--steps", 1, "--gen-steps", 1, "--cfg", 1,
                            "--train-prompt", "a box", "--prompt", "a blue box", "--out", out)
    assert code == 0, err
    assert "long clip: 3 windows of up to 5 frames" in stdout and "seams (3 windows" in stdout
    info = video.probe_video(out / "edited.mp4")
    assert (info.num_frames, info.width, info.height) == (13, 832, 480) and info.fps == pytest.approx(FPS)
    assert video.probe_video(out / "side_by_side.mp4").width == 2 * 832
    state = json.loads((out / "windows.json").read_text())
    assert state["windows"] == [[0, 5, 0], [4, 9, 1], [8, 13, 1]] and state["done"] == 3
    assert len(conditions) == 3
    for j in (1, 2):  # window j keeps window j-1's last generated frame (clip frame 4j), whole
        previous = np.load(out / "windows" / f"{j - 1:05d}.npy")
        np.testing.assert_array_equal(conditions[j][0][0], previous[-1])
        assert conditions[j][1][0].min() == 1.0 and conditions[j][1][1:].min() == 0.0
    lora = json.loads((out / "lora.json").read_text())
    assert lora["windows"] == 3 and lora["window_frames"] == 5 and lora["frames"] == 13
    seams = json.loads((out / "seams.json").read_text())
    assert seams["seam_frames"] == [5, 9] and len(seams["background_psnr"]) == 3


def test_long_clip_options_are_checked_before_any_model_loads(wide_clip, tmp_path, capsys, monkeypatch):
    """A hand-over the LoRA never learnt, and windows that are not 4k+1, are refused before the model loads; `train`
    of a long clip without --steps takes the preset's steps per window."""
    from maskedit.interfaces.cli import main as cli
    from maskedit.method.lora import METADATA_NAME

    prepared, lora = tmp_path / "prepared", tmp_path / "lora"
    assert run(capsys, "prepare", "--video", wide_clip / "clip.mp4", "--box", "4,4,40,40", "--width", 64,
               "--height", 64, "--frames", 13, "--out", prepared)[0] == 0
    lora.mkdir()
    (lora / "lora.safetensors").write_bytes(b"")
    (lora / METADATA_NAME).write_text(json.dumps({"trainer": "maskedit", "base_model": "tiny"}))
    monkeypatch.setattr(cli, "_load_model", lambda *a, **k: pytest.fail("the model must not load"))
    code, _, err = run(capsys, "generate", "--prepared", prepared, "--edited-frame", wide_clip / "edited.png", "--fit",
                       "--prompt", "a blue box", "--lora", lora, "--window-frames", 9, "--handover-frames", 5,
                       "--out", tmp_path / "out")
    assert code == 2 and "trained without kept prefixes; train with --handover-frames 5" in err
    code, _, err = run(capsys, "edit", "--model", "tiny", "--video", wide_clip / "clip.mp4", "--box", "1,1,9,9",
                       "--edited-frame", wide_clip / "edited.png", "--prompt", "x", "--window-frames", 7,
                       "--out", tmp_path / "e")
    assert code == 2 and "frames per generation window (--window-frames) is 7" in err
    args = cli.build_parser().parse_args(["train", "--prepared", str(prepared), "--out", str(lora),
                                          "--window-frames", "5"])
    cli._apply_preset(args)
    assert cli._train_config(args, 13).steps == 300 and args.window_frames == 5
    assert "100 per window" in capsys.readouterr().out
