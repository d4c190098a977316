"""Tests for `python -m maskedit` (maskedit.interfaces.cli.main), in-process with the tiny model, plus one real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from maskedit.interfaces.cli import main as cli
from maskedit.media import video
from maskedit.method.masks import write_mask_video

from conftest import CLIP_FPS, make_synthetic_clip

REPO = Path(__file__).resolve().parents[1]
BOX = "4,8,54,42"  # covers the synthetic box's whole path, in 64x64 pixels
SIZE = ["--width", "64", "--height", "64"]
FAST_TRAIN = ["--steps", "3"]
LORA_FILES = ("lora.safetensors", "lora_comfyui.safetensors", "lora.json")


def write_inputs(folder: Path) -> dict:
    """The synthetic clip, its mask and edited frames (the box painted blue) in `folder`."""
    frames, region = make_synthetic_clip()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"clip": folder / "clip.mp4", "mask": folder / "mask.mp4", "edited": folder / "edited.png",
             "edited4": folder / "edited4.png", "small": folder / "small.png"}
    video.write_video(paths["clip"], frames, CLIP_FPS)
    write_mask_video(paths["mask"], region, CLIP_FPS)
    for name, index in (("edited", 0), ("edited4", 4)):
        edited = frames[index].copy()
        edited[region[index]] = (30, 60, 240)
        video.write_image(paths[name], edited)
    video.write_image(paths["small"], frames[0][:48, :40])
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, inputs):
    """`prepare` then `train` once for the module: returns (prepared folder, LoRA folder)."""
    root = tmp_path_factory.mktemp("trained")
    prepared, lora = root / "prepared", root / "lora"
    assert cli.main(["prepare", "--video", str(inputs["clip"]), "--box", BOX, *SIZE, "--out", str(prepared)]) == 0
    assert cli.main(["train", "--prepared", str(prepared), "--train-prompt", "a box", *FAST_TRAIN, "--model", "tiny",
                     "--out", str(lora)]) == 0
    return prepared, lora


def run(capsys, *args):
    code = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_video(path, frames=9, width=64, height=64, fps=CLIP_FPS):
    clip = video.read_video(path)
    assert clip.frames.shape == (frames, height, width, 3)
    assert clip.fps == pytest.approx(fps)
    return clip.frames


def assert_user_error(code, err, out_dir, *phrases):
    assert code == 2, err
    assert "error: " in err and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name in ("edited.mp4", "side_by_side.mp4", "lora.safetensors"):
            assert not (out_dir / name).exists(), name


# ----- the whole workflow


def test_edit_end_to_end(capsys, tmp_path, inputs, trained):
    out = tmp_path / "edit"
    code, stdout, err = run(capsys, "edit", "--train-prompt", "a box", "--video", inputs["clip"], "--box", BOX, "--edited-frame", inputs["edited"],
                            "--edit-prompt", "a box", *SIZE, *FAST_TRAIN, "--gen-steps", "2", "--out", out)
    assert code == 0, err
    assert "model: built-in tiny model (random weights" in stdout
    assert "Traceback" not in err and "training stage 1" in err and "denoising" in err  # progress bars
    # the phases around the steps say what runs and how long it took: the encodings and the decode
    assert "encoding 1 sample(s)" in stdout and "encoded in " in stdout
    assert "encoding the prompt, the edited frame and the condition ..." in stdout
    assert "decoding the video (VAE) ..." in stdout and stdout.count("  done in ") == 2
    assert "s_per_step" not in err  # one time per step: the bar's own
    edited = assert_video(out / "edited.mp4")
    assert_video(out / "side_by_side.mp4", width=128)
    for name in LORA_FILES:
        assert (out / name).is_file()
    assert (out / "prepared" / "prepared.json").is_file()
    meta = json.loads((out / "lora.json").read_text())
    assert meta["base_model"] == "tiny" and meta["steps"] == 3 and meta["frames"] == 9

    # prepare → train → generate with the same settings gives the same video as edit
    prepared, lora = trained
    result = tmp_path / "generate"
    code, stdout, err = run(capsys, "generate", "--prepared", prepared, "--edited-frame", inputs["edited"],
                            "--edit-prompt", "a box", "--lora", lora, "--steps", "2", "--out", result)
    assert code == 0, err
    assert "model: built-in tiny model" in stdout  # taken from the LoRA's lora.json
    np.testing.assert_array_equal(assert_video(result / "edited.mp4"), edited)
    assert_video(result / "side_by_side.mp4", width=128)

    # --lora also takes the file itself
    code, _, err = run(capsys, "generate", "--prepared", prepared, "--edited-frame", inputs["edited"],
                       "--edit-prompt", "a box", "--lora", lora / "lora.safetensors", "--steps", "2", "--seed", "1",
                       "--out", tmp_path / "generate_file")
    assert code == 0, err
    assert_video(tmp_path / "generate_file" / "edited.mp4")


def test_prepare_train_generate_outputs(capsys, trained, inputs):
    prepared, lora = trained
    info = json.loads((prepared / "prepared.json").read_text())
    assert (info["frames"], info["width"], info["height"]) == (9, 64, 64) and info["fps"] == pytest.approx(CLIP_FPS)
    assert_video(prepared / "clip.mp4")
    assert_video(prepared / "boxes.mp4")
    assert video.read_image(prepared / "first_frame.png").shape == (64, 64, 3)
    for name in LORA_FILES:
        assert (lora / name).is_file()
    assert (lora / "checkpoints" / "stage1" / "checkpoint.json").is_file()


def test_edit_with_an_edited_later_frame(capsys, tmp_path, inputs):
    out = tmp_path / "edit"
    code, _, err = run(capsys, "edit", "--train-prompt", "a box", "--video", inputs["clip"], "--mask-video", inputs["mask"],
                       "--edited-frame", inputs["edited"], "--edited-later", f"4={inputs['edited4']}",
                       "--stage2-epochs", "1", "--edit-prompt", "a blue box", "--later-prompt", "4=a blue box later",
                       *SIZE, "--steps", "2", "--gen-steps", "2", "--out", out)
    assert code == 0, err
    assert "training stage 2" in err
    assert_video(out / "edited.mp4")
    meta = json.loads((out / "lora.json").read_text())
    assert meta["stage2_frames"] == [4] and meta["stage2_steps"] == 10
    # stage 1 on the original's caption, stage 2 on the edited frame's own, generation's caption recorded
    assert (meta["caption"], meta["edit_caption"], meta["later_captions"]) == ("a box", "a blue box", {"4": "a blue box later"})


def test_generate_without_lora_and_fit(capsys, tmp_path, trained, inputs):
    prepared, _ = trained
    args = ["generate", "--prepared", prepared, "--edit-prompt", "a box", "--steps", "2", "--model", "tiny"]
    out = tmp_path / "no-lora"
    code, _, err = run(capsys, *args, "--edited-frame", inputs["small"], "--method", "no-lora", "--out", out)
    assert_user_error(code, err, out, "40x48", "--fit")
    code, _, err = run(capsys, *args, "--edited-frame", inputs["small"], "--method", "no-lora", "--fit", "--out", out)
    assert code == 0, err
    assert_video(out / "edited.mp4")
    code, _, err = run(capsys, *args, "--edited-frame", inputs["edited"], "--out", tmp_path / "missing")
    assert_user_error(code, err, tmp_path / "missing", "--lora")


def test_interrupted_training_keeps_its_checkpoint_and_resumes(capsys, tmp_path, trained, monkeypatch):
    from maskedit.method.training import LoraTrainer

    prepared, _ = trained
    original = LoraTrainer.train_step
    calls = [0]

    def interrupt_third_step(self):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(LoraTrainer, "train_step", interrupt_third_step)
    out = tmp_path / "lora"
    args = ["train", "--prepared", prepared, "--train-prompt", "a box", "--steps", "4", "--model", "tiny", "--out", out]
    code, _, err = run(capsys, *args)
    assert code == 130
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert json.loads((out / "checkpoints" / "stage1" / "checkpoint.json").read_text())["step"] == 2
    assert not (out / "lora.safetensors").exists()

    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert "resumed from the checkpoint at step 2 of 4" in stdout + err
    assert (out / "lora.safetensors").is_file()


# ----- help


@pytest.mark.parametrize("command, expected", [
    ([], ["prepare", "train", "generate", "edit", "first_frame.png"]),
    (["prepare"], ["--video", "--mask-video", "--box", "--frames", "--width", "--height", "--start", "--frame-mode",
                   "--margin", "--min-area", "--fit", "--out", "CONFORMED", "example", "--box-in"]),
    (["train"], ["--prepared", "--train-prompt", "--trigger", "--edited-later", "--model", "--steps", "--lr", "--rank",
                 "--seed", "--no-resume", "--out", "example", "--naive", "--method naive-lora"]),
    (["generate"], ["--prepared", "--edited-frame", "--edit-prompt", "--lora", "--model", "--steps", "--cfg", "--shift",
                    "--seed", "--lora-scale", "--method", "mask-lora", "no-lora", "feature-blend", "naive-lora",
                    "train --naive", "--fit", "--out"]),
    (["edit"], ["--video", "--mask-video", "--box", "--edited-frame", "--edited-later", "--edit-prompt", "--model",
                "--steps", "--gen-steps", "--frames", "--width", "--height", "--fit", "--seed", "--out", "example",
                "--method", "naive-lora", "naive_lora/"]),
])
def test_help(capsys, command, expected):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    for word in expected:
        assert word in out, word


def test_the_old_prompt_flag_still_works_and_says_which_caption_it_is(capsys):
    """--prompt meant the ORIGINAL frame's caption in `train` but the EDITED frame's in `generate` and `edit`: each
    now has its own name, and the old spelling maps to it with a note saying which caption it is."""
    args = cli.build_parser().parse_args(["train", "--prepared", "p", "--prompt", "a box", "--out", "o"])
    err = capsys.readouterr().err
    assert args.train_prompt == "a box" and "--prompt is deprecated" in err
    assert "ORIGINAL first frame" in err and "--train-prompt" in err
    for command in (["generate", "--prepared", "p", "--edited-frame", "e.png"],
                    ["edit", "--video", "v.mp4", "--box", "0,0,8,8", "--edited-frame", "e.png"]):
        args = cli.build_parser().parse_args([*command, "--prompt", "a blue box", "--out", "o"])
        err = capsys.readouterr().err
        assert args.edit_prompt == "a blue box" and "EDITED first frame" in err and "--edit-prompt" in err
        code, _, err = run(capsys, *command, "--prompt", "a", "--edit-prompt", "b", "--out", "o")
        assert code == 2 and "not allowed with" in err  # one caption, given once


def test_a_box_says_its_pixel_grid(capsys, tmp_path):
    """A 256x128 source conformed to 64x64 (scaled to 128x64, 32 columns cropped each side): --box is in the
    conformed clip's pixels unless --box-in source; a source-pixel box that leaves the clip is refused with that hint,
    and one given with --box-in source marks the region the user meant."""
    from maskedit.workflow.prepare import load_prepared

    frames, _ = make_synthetic_clip(height=128, width=256, box=40)
    video.write_video(tmp_path / "wide.mp4", frames, CLIP_FPS)
    base = ["prepare", "--video", tmp_path / "wide.mp4", "--width", "64", "--height", "64", "--frames", "9"]
    code, _, err = run(capsys, *base, "--box", "80,20,160,100", "--out", tmp_path / "a")
    assert_user_error(code, err, None, "leaves the 64x64 conformed clip", "--box-in source")
    code, out, err = run(capsys, *base, "--box", "80,20,160,100", "--box-in", "source", "--out", tmp_path / "b")
    assert code == 0, err
    assert "box 80,20,160,100 in pixels of the 256x128 source = 8,10,48,50 on the 64x64 clip" in out
    region = load_prepared(tmp_path / "b").region
    assert region[0, 10:50, 8:48].all() and region[0].sum() == 40 * 40
    code, out, err = run(capsys, *base, "--box", "8,10,48,50", "--out", tmp_path / "c")
    assert code == 0, err
    assert "in pixels of the 64x64 conformed clip (the source is 256x128; --box-in source takes its pixels)" in out
    np.testing.assert_array_equal(load_prepared(tmp_path / "c").region, region)
    code, _, err = run(capsys, *base, "--box", "0,0,30,30", "--box-in", "source", "--out", tmp_path / "d")
    assert_user_error(code, err, None, "lies outside what the 64x64 clip keeps")


def test_no_command_and_argparse_errors(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage" in err
    code, _, err = run(capsys, "prepare", "--video", "x.mp4", "--box", BOX, "--mask-video", "m.mp4", "--out", "o")
    assert code == 2 and "not allowed with" in err
    code, _, err = run(capsys, "edit", "--video", "x.mp4")
    assert code == 2 and "required" in err


# ----- bad inputs: exit 2, a message that says what to do, no traceback, no result files


def bad_video(folder: Path) -> Path:
    path = folder / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def short_video(folder: Path) -> Path:
    path = folder / "short.mp4"
    video.write_video(path, make_synthetic_clip(num_frames=3)[0], CLIP_FPS)
    return path


def wide_mask(folder: Path) -> Path:
    path = folder / "wide_mask.mp4"
    write_mask_video(path, np.repeat(make_synthetic_clip()[1], 2, axis=2), CLIP_FPS)  # 128x64 for a 64x64 clip
    return path


EDIT_CASES = {
    "corrupt video": (lambda f, i: ["--video", bad_video(f), "--box", BOX], ["could not be read as a video"]),
    "too few frames": (lambda f, i: ["--video", short_video(f), "--box", BOX], ["3 frame(s)", "at least 5"]),
    "edited frame of the wrong size": (lambda f, i: ["--video", i["clip"], "--box", BOX, "--edited-frame", i["small"]],
                                       ["40x48", "--fit"]),
    "mask video of the wrong size": (lambda f, i: ["--video", i["clip"], "--mask-video", wide_mask(f)], ["--fit"]),
    "box covering everything": (lambda f, i: ["--video", i["clip"], "--box", "0,0,64,64"], ["whole frame"]),
    "empty box": (lambda f, i: ["--video", i["clip"], "--box", "10,10,10,30"], ["x0 < x1"]),
    "box outside the frame": (lambda f, i: ["--video", i["clip"], "--box", "40,40,90,90"], ["leaves the 64x64 frame"]),
    "box that is not numbers": (lambda f, i: ["--video", i["clip"], "--box", "a,b,c,d"], ["x0,y0,x1,y1"]),
    "frames not 4k+1": (lambda f, i: ["--video", i["clip"], "--box", BOX, "--frames", "10"], ["4k+1"]),
    "edited later frame 0": (lambda f, i: ["--video", i["clip"], "--box", BOX, "--edited-later", f"0={i['edited']}"],
                             ["frame 0"]),
    "edited later frame out of range": (lambda f, i: ["--video", i["clip"], "--box", BOX,
                                                      "--edited-later", f"9={i['edited']}"], ["1..8"]),
    "missing edited frame": (lambda f, i: ["--video", i["clip"], "--box", BOX, "--edited-frame", f / "nope.png"],
                             ["does not exist"]),
}


@pytest.mark.parametrize("case", list(EDIT_CASES))
def test_edit_bad_inputs(capsys, tmp_path, inputs, case):
    make_args, phrases = EDIT_CASES[case]
    args = make_args(tmp_path, inputs)
    if "--edited-frame" not in args:
        args += ["--edited-frame", inputs["edited"]]
    out = tmp_path / "out"
    code, _, err = run(capsys, "edit", "--train-prompt", "a box", *args, "--edit-prompt", "a box", *SIZE, *FAST_TRAIN, "--gen-steps", "2",
                       "--model", "tiny", "--out", out)
    assert_user_error(code, err, out, *phrases)


def test_prepare_bad_inputs_and_fit(capsys, tmp_path, inputs):
    out = tmp_path / "prepared"
    code, _, err = run(capsys, "prepare", "--video", bad_video(tmp_path), "--box", BOX, "--out", out)
    assert_user_error(code, err, None, "could not be read as a video")
    code, _, err = run(capsys, "prepare", "--video", inputs["clip"], "--mask-video", wide_mask(tmp_path), *SIZE,
                       "--out", out)
    assert_user_error(code, err, None, "--fit")
    assert not (out / "prepared.json").exists()
    code, stdout, err = run(capsys, "prepare", "--video", inputs["clip"], "--mask-video", wide_mask(tmp_path), *SIZE,
                            "--fit", "--export-frames", "--out", out)
    assert code == 0, err
    assert "next:" in stdout and (out / "prepared.json").is_file() and (out / "frames" / "008.png").is_file()
    code, _, err = run(capsys, "prepare", "--video", inputs["clip"], "--box", BOX, "--width", "64", "--out", out)
    assert_user_error(code, err, None, "both width and height")
    code, _, err = run(capsys, "train", "--prepared", tmp_path, "--train-prompt", "a box", "--out", tmp_path / "lora")
    assert_user_error(code, err, tmp_path / "lora", "not a prepared clip folder")


def test_generate_bad_loras(capsys, tmp_path, trained, inputs):
    prepared, _ = trained
    args = ["generate", "--prepared", prepared, "--edited-frame", inputs["edited"], "--edit-prompt", "a box",
            "--steps", "2", "--model", "tiny"]
    not_safetensors = tmp_path / "lora.bin"
    not_safetensors.write_bytes(b"\0" * 64)
    random_keys = tmp_path / "random.safetensors"
    save_file({"foo.weight": torch.randn(3, 4), "bar.lora_A.weight": torch.randn(2, 5)}, str(random_keys))
    wrong_shapes = tmp_path / "shapes.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 999),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(32, 4)}, str(wrong_shapes))
    other_part = tmp_path / "text.safetensors"
    save_file({"text_encoder.foo.lora_A.weight": torch.randn(4, 32),
               "text_encoder.foo.lora_B.weight": torch.randn(32, 4)}, str(other_part))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(256))
    cases = [(not_safetensors, "not a .safetensors file"), (tmp_path / "none.safetensors", "no LoRA file"),
             (tmp_path, "holds no lora.safetensors"), (random_keys, "is not a LoRA for this model"),
             (wrong_shapes, "does not fit this model"), (other_part, "no LoRA weights for this model"),
             (garbage, "is not a LoRA file or is damaged")]
    for lora, phrase in cases:
        out = tmp_path / f"out_{lora.stem}"
        code, _, err = run(capsys, *args, "--lora", lora, "--out", out)
        assert_user_error(code, err, out, phrase)


def test_train_bad_inputs(capsys, tmp_path, trained, inputs):
    prepared, _ = trained
    out = tmp_path / "lora"
    base = ["train", "--prepared", prepared, "--train-prompt", "a box", "--model", "tiny", "--out", out]
    for extra, phrase in ((["--edited-later", f"4={inputs['small']}"], "--fit"),
                          (["--edited-later", "4"], "K=PATH"),
                          (["--edited-later", f"x={inputs['edited4']}"], "whole number"),
                          (["--edited-later", f"4={inputs['edited4']}", "--edited-later", f"4={inputs['edited4']}"],
                           "twice"),
                          (["--steps", "0"], "at least 1"),
                          (["--lr", "0"], "learning rate"),
                          (["--model", str(tmp_path / "no_model")], "could not load the model")):
        code, _, err = run(capsys, *base, *extra)
        assert_user_error(code, err, out, phrase)


# ----- the real entry point


def test_python_dash_m_maskedit(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "maskedit", "edit", "--video", str(bad_video(tmp_path)), "--box", BOX,
         "--edited-frame", str(tmp_path / "edited.png"), "--edit-prompt", "a box", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "could not be read as a video" in result.stderr
    assert "Traceback" not in result.stderr and "warn" not in result.stderr.lower()
    assert not out.exists()


# ----- the LoRA cache (issue 8)


@pytest.fixture
def count_steps(monkeypatch):
    """Counts LoraTrainer.train_step calls; returns a one-item list."""
    from maskedit.method.training import LoraTrainer

    original, calls = LoraTrainer.train_step, [0]

    def counting(self):
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(LoraTrainer, "train_step", counting)
    return calls


def test_train_reuses_the_cached_lora(capsys, tmp_path, trained, count_steps, _lora_cache_dir):
    prepared, _ = trained
    base = ["train", "--prepared", prepared, "--model", "tiny"]
    code, stdout, err = run(capsys, *base, "--train-prompt", "a box", *FAST_TRAIN, "--out", tmp_path / "a")
    assert code == 0, err
    assert count_steps[0] == 3 and "reusing cached LoRA" not in stdout
    assert "cached the finished run" in stdout
    assert any(_lora_cache_dir.iterdir())

    count_steps[0] = 0
    code, stdout, err = run(capsys, *base, "--train-prompt", "a box", *FAST_TRAIN, "--out", tmp_path / "b")
    assert code == 0, err
    assert count_steps[0] == 0
    assert "reusing cached LoRA" in stdout and "(trained " in stdout
    for name in LORA_FILES:
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()

    for changed in (["--train-prompt", "a red box", *FAST_TRAIN], ["--train-prompt", "a box", "--steps", "2"]):
        count_steps[0] = 0
        code, stdout, err = run(capsys, *base, *changed, "--out", tmp_path / "c")
        assert code == 0, err
        assert count_steps[0] > 0 and "reusing cached LoRA" not in stdout, changed

    count_steps[0] = 0
    code, stdout, err = run(capsys, *base, "--train-prompt", "a box", *FAST_TRAIN, "--no-cache", "--out", tmp_path / "d")
    assert code == 0, err
    assert count_steps[0] == 3 and "reusing cached LoRA" not in stdout and "cached the" not in stdout

    # --cache-dir points elsewhere: an empty cache there, so it trains (and stores there)
    other = tmp_path / "other_cache"
    count_steps[0] = 0
    code, stdout, err = run(capsys, *base, "--train-prompt", "a box", *FAST_TRAIN, "--cache-dir", other,
                            "--out", tmp_path / "e")
    assert code == 0, err
    assert count_steps[0] == 3 and any(other.iterdir())


def test_interrupted_run_resumes_from_the_cache_in_another_folder(capsys, tmp_path, trained, monkeypatch):
    from maskedit.method.training import LoraTrainer

    prepared, _ = trained
    original, calls = LoraTrainer.train_step, [0]

    def interrupt_third_step(self):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(LoraTrainer, "train_step", interrupt_third_step)
    args = ["train", "--prepared", prepared, "--train-prompt", "a box", "--steps", "4", "--model", "tiny"]
    code, _, err = run(capsys, *args, "--out", tmp_path / "first")
    assert code == 130, err
    calls[0] = 10  # no more interrupts
    code, stdout, err = run(capsys, *args, "--out", tmp_path / "second")
    assert code == 0, err
    assert "resuming cached run" in stdout and "step 2 of 4" in stdout
    assert "resumed from the checkpoint at step 2 of 4" in stdout + err
    assert calls[0] == 12  # steps 3 and 4 only
    assert (tmp_path / "second" / "lora.safetensors").is_file()


def test_edit_after_train_reuses_the_lora(capsys, tmp_path, inputs, count_steps):
    prepared = tmp_path / "prepared"
    assert run(capsys, "prepare", "--video", inputs["clip"], "--box", BOX, *SIZE, "--out", prepared)[0] == 0
    code, _, err = run(capsys, "train", "--prepared", prepared, "--train-prompt", "a box", *FAST_TRAIN, "--model", "tiny",
                       "--out", tmp_path / "lora")
    assert code == 0, err
    assert count_steps[0] == 3

    count_steps[0] = 0
    out = tmp_path / "edit"
    code, stdout, err = run(capsys, "edit", "--train-prompt", "a box", "--video", inputs["clip"], "--box", BOX, "--edited-frame",
                            inputs["edited"], "--edit-prompt", "a box", *SIZE, *FAST_TRAIN, "--gen-steps", "2",
                            "--model", "tiny", "--out", out)
    assert code == 0, err
    assert count_steps[0] == 0 and "reusing cached LoRA" in stdout
    assert_video(out / "edited.mp4")
    for name in LORA_FILES[:2]:
        assert (out / name).read_bytes() == (tmp_path / "lora" / name).read_bytes()
    # the same lora.json, plus the negative prompt this edit generated with (`train` alone generates nothing)
    edit_meta, train_meta = (json.loads((folder / "lora.json").read_text()) for folder in (out, tmp_path / "lora"))
    assert edit_meta.pop("negative_prompt") == "reference" and edit_meta.pop("negative_prompt_text")
    assert edit_meta == train_meta


# ----- the naive-LoRA baseline (METHOD.md §8)


def test_train_naive_then_generate_naive_lora(capsys, tmp_path, trained, inputs):
    prepared, mask_lora = trained
    naive = tmp_path / "naive"
    code, stdout, err = run(capsys, "train", "--naive", "--prepared", prepared, "--train-prompt", "a box", *FAST_TRAIN,
                            "--model", "tiny", "--out", naive)
    assert code == 0, err
    assert "--method naive-lora" in stdout  # the next step it suggests
    meta = json.loads((naive / "lora.json").read_text())
    assert meta["condition"] == "stock" and meta["steps"] == 3
    assert (mask_lora / "lora.safetensors").read_bytes() != (naive / "lora.safetensors").read_bytes()
    args = ["generate", "--prepared", prepared, "--edited-frame", inputs["edited"], "--edit-prompt", "a box",
            "--steps", "2"]
    code, _, err = run(capsys, *args, "--method", "naive-lora", "--lora", naive, "--out", tmp_path / "out")
    assert code == 0, err
    naive_frames = assert_video(tmp_path / "out" / "edited.mp4")
    assert_video(tmp_path / "out" / "side_by_side.mp4", width=128)
    code, _, err = run(capsys, *args, "--method", "no-lora", "--out", tmp_path / "no_lora")
    assert code == 0, err
    assert not np.array_equal(assert_video(tmp_path / "no_lora" / "edited.mp4"), naive_frames)

    # a LoRA of the other kind, or none, is refused with what to do
    code, _, err = run(capsys, *args, "--method", "naive-lora", "--out", tmp_path / "none")
    assert_user_error(code, err, tmp_path / "none", "--lora", "train --naive")
    code, _, err = run(capsys, *args, "--method", "naive-lora", "--lora", mask_lora, "--out", tmp_path / "mixed")
    assert_user_error(code, err, tmp_path / "mixed", "mask-aware", "train --naive")
    code, _, err = run(capsys, *args, "--lora", naive, "--out", tmp_path / "mixed2")
    assert_user_error(code, err, tmp_path / "mixed2", "naive-lora")
    code, _, err = run(capsys, "train", "--naive", "--prepared", prepared, "--train-prompt", "a box", *FAST_TRAIN,
                       "--edited-later", f"4={inputs['edited4']}", "--model", "tiny", "--out", tmp_path / "bad")
    assert_user_error(code, err, tmp_path / "bad", "--edited-later")


def test_edit_with_the_naive_method(capsys, tmp_path, inputs, count_steps):
    out = tmp_path / "edit"
    code, _, err = run(capsys, "edit", "--train-prompt", "a box", "--method", "naive-lora", "--video", inputs["clip"], "--box", BOX,
                       "--edited-frame", inputs["edited"], "--edit-prompt", "a box", *SIZE, *FAST_TRAIN,
                       "--gen-steps", "2", "--out", out)
    assert code == 0, err
    assert count_steps[0] == 3
    assert_video(out / "edited.mp4")
    assert json.loads((out / "naive_lora" / "lora.json").read_text())["condition"] == "stock"
    assert not (out / "lora.safetensors").exists()  # the mask-aware LoRA's place stays free


# ----- the caption rule (issue 11): train on the ORIGINAL first frame's caption, never the edit's


def test_edit_without_a_training_caption_stops_before_any_work(capsys, tmp_path, inputs, count_steps):
    out = tmp_path / "edit"
    code, stdout, err = run(capsys, "edit", "--video", inputs["clip"], "--box", BOX, "--edited-frame", inputs["edited"],
                            "--edit-prompt", "a blue box", *SIZE, *FAST_TRAIN, "--gen-steps", "2",
                            "--caption-model", tmp_path / "no_such_florence", "--out", out)
    assert_user_error(code, err, out, "caption of the ORIGINAL first frame", "--train-prompt")
    assert count_steps[0] == 0 and "loading model" not in stdout


def test_edit_captions_the_original_first_frame(capsys, tmp_path, inputs, count_steps):
    from maskedit.perception.captioning import load_captioner, save_tiny_florence2
    from maskedit.workflow.prepare import load_prepared

    florence = save_tiny_florence2(tmp_path / "florence")
    out = tmp_path / "edit"
    code, stdout, err = run(capsys, "edit", "--video", inputs["clip"], "--box", BOX, "--edited-frame", inputs["edited"],
                            "--edited-later", f"4={inputs['edited4']}", "--stage2-epochs", "1",
                            "--edit-prompt", "a blue box", *SIZE, "--steps", "2", "--gen-steps", "2",
                            "--caption-model", florence, "--out", out)
    assert code == 0, err
    prepared = load_prepared(out / "prepared")
    captioner = load_captioner(florence, device="cpu")
    expected_first = captioner.describe(prepared.frames[0])
    expected_later = captioner.describe(video.read_image(inputs["edited4"]))
    meta = json.loads((out / "lora.json").read_text())
    assert meta["caption"] == expected_first and meta["caption"] != "a blue box"
    assert meta["later_captions"] == {"4": expected_later} and meta["edit_caption"] == "a blue box"
    assert "caption of the original first frame" in stdout


def test_later_prompt_needs_its_frame(capsys, tmp_path, trained, inputs):
    prepared, _ = trained
    code, _, err = run(capsys, "train", "--prepared", prepared, "--train-prompt", "a box", "--later-prompt", "4=a box",
                       *FAST_TRAIN, "--model", "tiny", "--out", tmp_path / "bad")
    assert_user_error(code, err, tmp_path / "bad", "frame(s) 4", "not among the edited later frames")


# ----- the blending baseline and the sampler (issue 11)


def test_edit_with_feature_blending_trains_the_naive_lora(capsys, tmp_path, inputs, count_steps):
    out = tmp_path / "edit"
    code, _, err = run(capsys, "edit", "--method", "feature-blend", "--train-prompt", "a box", "--video", inputs["clip"],
                       "--box", BOX, "--edited-frame", inputs["edited"], "--edit-prompt", "a box", *SIZE, *FAST_TRAIN,
                       "--gen-steps", "2", "--out", out)
    assert code == 0, err
    assert count_steps[0] == 3
    assert_video(out / "edited.mp4")
    assert json.loads((out / "naive_lora" / "lora.json").read_text())["condition"] == "stock"
    # a mask-aware LoRA is refused for the blending baseline
    code, _, err = run(capsys, "generate", "--method", "feature-blend", "--prepared", out / "prepared",
                       "--edited-frame", inputs["edited"], "--edit-prompt", "a box", "--lora", _mask_aware_lora(tmp_path),
                       "--out", tmp_path / "bad")
    assert_user_error(code, err, tmp_path / "bad", "mask-aware LoRA", "--method feature-blend")


def _mask_aware_lora(tmp_path) -> Path:
    from maskedit.method.lora import add_lora, save_lora
    from maskedit.models.loading import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    add_lora(pipe.transformer, 4, 4.0)
    return save_lora(pipe, tmp_path / "mask_lora", {"trainer": "maskedit", "base_model": "tiny"}).parent


@pytest.mark.parametrize("given, expected", [([], "euler"), (["--sampler", "unipc"], "unipc")])
def test_sampler_comes_from_the_preset_or_the_flag(given, expected):
    args = cli.build_parser().parse_args(["generate", "--prepared", "p", "--edited-frame", "e.png", "--edit-prompt", "x",
                                          "--out", "o", *given])
    cli._apply_preset(args)
    assert args.sampler == expected


def test_unknown_sampler_is_refused(capsys):
    code, _, err = run(capsys, "generate", "--prepared", "p", "--edited-frame", "e.png", "--edit-prompt", "x",
                       "--sampler", "ddim", "--out", "o")
    assert code == 2 and "invalid choice: 'ddim'" in err
