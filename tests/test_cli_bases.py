"""The CLI with another base (--model tiny-wan2.2: the two-expert layout of Wan2.2-I2V-A14B) and the
fast preview (`generate --preview`), in-process on the tiny models."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from maskedit.interfaces.cli import main as cli
from maskedit.media import video
from maskedit.method.experts import EXPERTS, expert_comfyui_name, expert_module, expert_weight_name
from maskedit.method.lora import add_lora, lora_state_dict, to_comfyui_keys
from maskedit.models.loading import TINY_WAN22, build_tiny_pipeline
from maskedit.workflow.preview import SPEED_LORA_ENV

from test_cli import BOX, SIZE, write_inputs


def run(capsys, *args):
    code = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    """`prepare`, then `train --model tiny-wan2.2` (4 steps: 2 per expert): (inputs, prepared, LoRA folder)."""
    root = tmp_path_factory.mktemp("wan22")
    inputs = write_inputs(root / "inputs")
    prepared, lora = root / "prepared", root / "lora"
    assert cli.main(["prepare", "--video", str(inputs["clip"]), "--box", BOX, *SIZE, "--out", str(prepared)]) == 0
    assert cli.main(["train", "--prepared", str(prepared), "--train-prompt", "a box", "--steps", "4", "--model", TINY_WAN22,
                     "--out", str(lora), "--no-cache"]) == 0
    return inputs, prepared, lora


def test_train_on_a_two_expert_base_writes_one_lora_per_expert(wan22):
    _, _, lora = wan22
    for expert in EXPERTS:
        assert (lora / expert_weight_name(expert)).is_file() and (lora / expert_comfyui_name(expert)).is_file()
    assert not (lora / "lora.safetensors").exists()
    meta = json.loads((lora / "lora.json").read_text())
    assert meta["base_model"] == TINY_WAN22 and set(meta["experts"]) == set(EXPERTS)


def test_generate_on_a_two_expert_base_names_the_base_and_loads_both_experts(capsys, tmp_path, wan22):
    inputs, prepared, lora = wan22
    out = tmp_path / "result"
    code, stdout, stderr = run(capsys, "generate", "--prepared", prepared, "--edited-frame", inputs["edited"],
                               "--edit-prompt", "a blue box", "--lora", lora, "--steps", "4", "--out", out)
    assert code == 0, stderr
    assert "base: built-in tiny two-expert model" in stdout and "two experts (boundary 0.9)" in stdout
    frames = video.read_video(out / "edited.mp4").frames
    assert frames.shape == (9, 64, 64, 3)
    # a two-expert LoRA on a one-transformer model is refused clearly
    code, _, stderr = run(capsys, "generate", "--prepared", prepared, "--edited-frame", inputs["edited"],
                          "--edit-prompt", "a blue box", "--lora", lora, "--model", "tiny", "--out", tmp_path / "x")
    assert code == 2 and "two-expert" in stderr and "Traceback" not in stderr


def speed_lora_file(folder):
    pipe = build_tiny_pipeline()
    add_lora(pipe.transformer, rank=4, alpha=4.0, seed=5)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    path = folder / "speed.safetensors"
    save_file(to_comfyui_keys(lora_state_dict(pipe.transformer), 4.0), str(path))
    return path


def test_generate_preview_then_full_render(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(SPEED_LORA_ENV, raising=False)
    inputs = write_inputs(tmp_path / "inputs")
    prepared, lora = tmp_path / "prepared", tmp_path / "lora"
    assert cli.main(["prepare", "--video", str(inputs["clip"]), "--box", BOX, *SIZE, "--out", str(prepared)]) == 0
    assert cli.main(["train", "--prepared", str(prepared), "--train-prompt", "a box", "--steps", "2", "--model", "tiny",
                     "--out", str(lora), "--no-cache"]) == 0
    capsys.readouterr()
    common = ["generate", "--prepared", prepared, "--edited-frame", inputs["edited"], "--edit-prompt", "a blue box",
              "--lora", lora, "--model", "tiny", "--steps", "3"]

    code, stdout, stderr = run(capsys, *common, "--preview", "--out", tmp_path / "none")
    assert code == 2 and "--speed-lora" in stderr and SPEED_LORA_ENV in stderr
    assert "loading model" not in stdout  # refused before any work

    speed = speed_lora_file(tmp_path)
    code, stdout, stderr = run(capsys, *common, "--preview", "--speed-lora", speed, "--out", tmp_path / "preview")
    assert code == 0, stderr
    assert "4 steps, CFG 1" in stdout and "without --preview for the full render" in stdout
    code, stdout, stderr = run(capsys, *common, "--out", tmp_path / "full")
    assert code == 0, stderr
    code, stdout, stderr = run(capsys, *common, "--out", tmp_path / "full_again")
    preview = video.read_video(tmp_path / "preview" / "edited.mp4").frames
    full = video.read_video(tmp_path / "full" / "edited.mp4").frames
    assert preview.shape == full.shape and not np.array_equal(preview, full)
    assert np.array_equal(video.read_video(tmp_path / "full_again" / "edited.mp4").frames, full)


def test_stage_two_continues_both_experts(capsys, tmp_path, wan22):
    inputs, prepared, _ = wan22
    lora = tmp_path / "lora2"
    code, stdout, stderr = run(capsys, "train", "--prepared", prepared, "--train-prompt", "a box", "--steps", "2",
                               "--model", TINY_WAN22, "--edited-later", f"4={inputs['edited4']}", "--later-prompt", "4=a box, recoloured",
                               "--stage2-epochs", "1",
                               "--out", lora, "--no-cache")
    assert code == 0, stderr
    meta = json.loads((lora / "lora.json").read_text())
    assert meta["stage2_steps"] == 10 and meta["stage2_frames"] == [4]
    for stage, steps in (("stage1", 1), ("stage2", 5)):  # each expert takes half of each stage's steps
        for expert in EXPERTS:
            state = json.loads((lora / "checkpoints" / stage / expert / "checkpoint.json").read_text())
            assert state["step"] == steps, (stage, expert)


def test_a_two_expert_lora_is_cached_and_reused(capsys, tmp_path, wan22):
    _, prepared, _ = wan22
    train = ["train", "--prepared", prepared, "--train-prompt", "a box", "--steps", "2", "--model", TINY_WAN22]
    code, _, stderr = run(capsys, *train, "--out", tmp_path / "a")
    assert code == 0, stderr
    code, stdout, stderr = run(capsys, *train, "--out", tmp_path / "b")
    assert code == 0, stderr
    assert "reusing cached LoRA" in stdout and "stage 1: encoding" not in stdout  # no training ran
    for name in (expert_weight_name(e) for e in EXPERTS):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()


def test_a_speed_lora_pair_on_a_two_expert_base(capsys, tmp_path, wan22):
    from maskedit.models.loading import build_tiny_two_expert_pipeline

    inputs, prepared, lora = wan22
    pipe = build_tiny_two_expert_pipeline()
    paths = []
    for seed, expert in enumerate(EXPERTS):
        module = expert_module(pipe, expert)
        add_lora(module, rank=4, alpha=4.0, seed=seed)
        path = tmp_path / f"speed_{expert}.safetensors"
        save_file(to_comfyui_keys(lora_state_dict(module), 4.0), str(path))
        paths.append(str(path))
    code, stdout, stderr = run(capsys, "generate", "--prepared", prepared, "--edited-frame", inputs["edited"],
                               "--edit-prompt", "a blue box", "--lora", lora, "--speed-lora", ",".join(paths), "--steps", "2",
                               "--cfg", "1", "--out", tmp_path / "out")
    assert code == 0, stderr
    assert (tmp_path / "out" / "edited.mp4").is_file()


def test_guidance_scale_2_on_generate_and_edit(capsys, tmp_path, wan22):
    inputs, prepared, lora = wan22
    common = ["generate", "--prepared", prepared, "--edited-frame", inputs["edited"], "--edit-prompt", "a blue box",
              "--lora", lora, "--steps", "4"]
    code, _, stderr = run(capsys, *common, "--out", tmp_path / "same")
    assert code == 0, stderr
    code, _, stderr = run(capsys, *common, "--guidance-scale-2", "1.5", "--out", tmp_path / "low")
    assert code == 0, stderr
    same = video.read_video(tmp_path / "same" / "edited.mp4").frames
    assert not np.array_equal(video.read_video(tmp_path / "low" / "edited.mp4").frames, same)
    code, _, stderr = run(capsys, *common, "--guidance-scale-2", "0.5", "--out", tmp_path / "bad")
    assert code == 2 and "(--guidance-scale-2) is 0.5; it must be a finite number, at least 1" in stderr
    # a one-transformer base: refused before the model loads (known by name) and before any training (edit)
    code, stdout, stderr = run(capsys, "generate", "--prepared", prepared, "--edited-frame", inputs["edited"],
                               "--edit-prompt", "a blue box", "--method", "no-lora", "--model", "tiny",
                               "--guidance-scale-2", "3", "--out", tmp_path / "one")
    assert code == 2 and "one transformer" in stderr and "--guidance-scale-2" in stderr
    assert "loading model" not in stdout and "Traceback" not in stderr
    code, stdout, stderr = run(capsys, "edit", "--video", inputs["clip"], "--box", BOX, *SIZE, "--edited-frame",
                               inputs["edited"], "--edit-prompt", "a blue box", "--train-prompt", "a box", "--steps", "2",
                               "--model", "tiny", "--guidance-scale-2", "3", "--out", tmp_path / "edit")
    assert code == 2 and "one transformer" in stderr and "training stage" not in stdout + stderr


def test_generate_takes_the_two_files_of_a_two_expert_lora_in_either_order(capsys, tmp_path, wan22):
    inputs, prepared, lora = wan22
    common = ["generate", "--prepared", prepared, "--edited-frame", inputs["edited"], "--edit-prompt", "a blue box",
              "--steps", "2"]
    code, _, stderr = run(capsys, *common, "--lora", lora, "--out", tmp_path / "folder")
    assert code == 0, stderr
    own = tmp_path / "mine"
    own.mkdir()
    high, low = own / "car_edit_HIGH_NOISE.safetensors", own / "car_edit-low-noise.safetensors"
    high.write_bytes((lora / expert_weight_name(EXPERTS[0])).read_bytes())
    low.write_bytes((lora / expert_weight_name(EXPERTS[1])).read_bytes())
    code, stdout, stderr = run(capsys, *common, "--lora", low, high, "--model", TINY_WAN22, "--out", tmp_path / "pair")
    assert code == 0, stderr
    assert f"LoRA: {high} + {low}" in stdout
    expected = video.read_video(tmp_path / "folder" / "edited.mp4").frames
    assert np.array_equal(video.read_video(tmp_path / "pair" / "edited.mp4").frames, expected)
    # two files that do not name their experts, a pair for a one-transformer base
    code, _, stderr = run(capsys, *common, "--lora", high, high, "--model", TINY_WAN22, "--out", tmp_path / "twice")
    assert code == 2 and "2 high_noise files" in stderr and "named …high_noise… and …low_noise…" in stderr
    unnamed = own / "edit.safetensors"
    unnamed.write_bytes(low.read_bytes())
    code, _, stderr = run(capsys, *common, "--lora", high, unnamed, "--model", TINY_WAN22, "--out", tmp_path / "unnamed")
    assert code == 2 and "edit.safetensors: the name does not say which expert" in stderr
    code, _, stderr = run(capsys, *common, "--lora", high, low, "--model", "tiny", "--out", tmp_path / "one")
    assert code == 2 and "needs a two-expert base" in stderr and "Traceback" not in stderr
