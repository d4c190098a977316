"""Every clip size and frame count the CLI and the app offer runs on the tiny model, or is refused clearly
before any work starts (the tiny transformer has the real model's rotary table: 1024 rows per axis)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from maskedit.interfaces.cli import main as cli
from maskedit.media import video
from maskedit.method.conditioning import inference_condition
from maskedit.errors import MaskEditError
from maskedit.models.loading import REAL_TRANSFORMER_14B, TINY, TINY_TRANSFORMER, build_tiny_pipeline, check_clip_size
from maskedit.models.presets import FRAME_CHOICES, SIZE_CHOICES


def menu_sizes() -> list[tuple[int, int]]:
    sizes = []
    for label in SIZE_CHOICES:
        match = re.match(r"(\d+)x(\d+)", label)
        if match:
            sizes.append((int(match.group(1)), int(match.group(2))))
    return sizes


def test_the_app_menu_is_the_one_in_presets():
    """The app builds its size menu (the Video tab) from presets.SIZE_CHOICES (the list every test here runs) and no
    page module keeps a copy."""
    ui = Path(__file__).resolve().parents[1] / "maskedit" / "interfaces" / "ui"
    for module in [*ui.glob("*.py"), ui.parents[2] / "app.py"]:
        source = module.read_text()
        assert "SIZE_CHOICES = " not in source and "FRAME_CHOICES = " not in source, module
    source = (ui / "video_tab.py").read_text()
    assert re.search(r"from \.\.\.models\.presets import [^\n]*\bSIZE_CHOICES\b", source)
    assert "size_choices(page.runtime.model, SIZE_CHOICES)" in source


def test_tiny_transformer_has_the_real_rope_length():
    assert TINY_TRANSFORMER["rope_max_seq_len"] == REAL_TRANSFORMER_14B["rope_max_seq_len"]


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


@pytest.mark.parametrize("size", [s for s in menu_sizes() if s != (832, 480)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_menu_size_generates_on_the_tiny_model(pipe, size):
    """832x480 runs end to end through the CLI below (training included)."""
    width, height = size
    check_clip_size(TINY, 81, width, height)  # the largest frame count of the menu at this size: servable
    frames = np.full((1, height, width, 3), 120, np.uint8)
    region = np.zeros(frames.shape[:3], bool)
    region[:, height // 4 : height // 2, width // 4 : width // 2] = True
    sample = inference_condition(frames, region, frames[0], "p3rs0n, a box")
    out = pipe(prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask,
               height=height, width=width, num_frames=1, num_inference_steps=1,
               generator=torch.Generator().manual_seed(0), output_type="np").frames
    assert out.shape == (1, 1, height, width, 3) and np.isfinite(out).all()


def test_every_menu_frame_count_is_servable_at_every_menu_size():
    for _, frames in FRAME_CHOICES:
        for width, height in menu_sizes():
            check_clip_size(TINY, frames or 81, width, height)


@pytest.mark.parametrize("frames, width, height, phrase", [
    (4101, 64, 64, "4101 frames gives 1026 latent frames"),
    (5, 16400, 64, "width 16400 gives 1025 patch columns"),
    (5, 64, 16400, "height 16400 gives 1025 patch rows"),
])
def test_a_size_the_model_cannot_serve_is_refused_clearly(frames, width, height, phrase):
    with pytest.raises(MaskEditError, match=phrase):
        check_clip_size(TINY, frames, width, height)


def test_cli_refuses_an_unservable_clip_before_loading_the_model(tmp_path, capsys, monkeypatch):
    frames = np.full((5, 64, 64, 3), 100, np.uint8)
    video.write_video(tmp_path / "clip.mp4", frames, 16)
    video.write_image(tmp_path / "edited.png", frames[0])
    monkeypatch.setattr(cli, "_load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr("maskedit.models.loading.check_clip_size", lambda *a: (_ for _ in ()).throw(MaskEditError("too big for it")))
    code = cli.main(["edit", "--model", "tiny", "--video", str(tmp_path / "clip.mp4"), "--box", "4,4,40,40",
                     "--edited-frame", str(tmp_path / "edited.png"), "--edit-prompt", "a box", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "error: too big for it" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "edited.mp4").exists()


def test_cli_edit_end_to_end_at_the_default_832x480(tmp_path, capsys):
    """The issue's crash: `edit` on an 832x480 clip with no --width/--height died in the rotary embedding."""
    frames = np.zeros((17, 480, 832, 3), np.uint8)
    frames[:] = (90, 120, 90)
    for i in range(17):
        frames[i, 100:200, 100 + 10 * i : 300 + 10 * i] = (0, 200, 0)
    video.write_video(tmp_path / "clip.mp4", frames, 16)
    video.write_image(tmp_path / "edited.png", frames[0])
    out = tmp_path / "out"
    code = cli.main(["edit", "--model", "tiny", "--video", str(tmp_path / "clip.mp4"), "--box", "44,36,537,300",
                     "--edited-frame", str(tmp_path / "edited.png"), "--edit-prompt", "a green box moves",
                     "--train-prompt", "a green box on black", "--frames", "5",
                     "--frame-mode", "first", "--steps", "1", "--gen-steps", "1", "--no-cache", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    clip = video.read_video(out / "edited.mp4")
    assert clip.frames.shape == (5, 480, 832, 3) and clip.fps == pytest.approx(16)
