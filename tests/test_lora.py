"""LoRA files: stock diffusers loads what we save (both key formats) and gets the trained model's output."""

import json

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from safetensors.torch import load_file, save_file

from maskedit.method.conditioning import inference_condition, stage1_sample
from maskedit.errors import MaskEditError
from maskedit.method.lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME, load_lora, read_metadata, save_lora
from maskedit.models.loading import build_tiny_pipeline
from maskedit.method.training import LoraTrainer, TrainConfig, TrainItem
from test_training import moving_box_clip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pipeline with a few training steps in its adapter (alpha ≠ rank on purpose), and its files."""
    frames, region = moving_box_clip()
    pipe = build_tiny_pipeline(seed=0)
    LoraTrainer(pipe, [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))],
                TrainConfig(steps=3, learning_rate=1e-2, rank=4, alpha=8.0, checkpoint_every=0)).train()
    folder = tmp_path_factory.mktemp("lora")
    save_lora(pipe, folder, {"base_model": "tiny", "steps": 3, "trigger": "p3rs0n", "caption": "a box"})
    return pipe, folder, (frames, region)


def generate(pipe, clip):
    frames, region = clip
    sample = inference_condition(frames, region, 255 - frames[0], "p3rs0n, a box")
    return pipe(prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask,
                num_inference_steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
                output_type="latent").frames


def test_files_and_metadata(trained):
    _, folder, _ = trained
    assert {p.name for p in folder.iterdir()} == {LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME}
    meta = read_metadata(folder / LORA_WEIGHT_NAME)
    assert meta["rank"] == 4 and meta["alpha"] == 8.0 and meta["caption"] == "a box" and meta["steps"] == 3
    assert json.loads((folder / METADATA_NAME).read_text()) == meta


def test_stock_diffusers_loads_our_file_and_reproduces_the_trained_output(trained):
    pipe, folder, clip = trained
    expected = generate(pipe, clip)
    fresh = build_tiny_pipeline(seed=0)  # same base weights, no adapter
    untrained = generate(fresh, clip)
    WanImageToVideoPipeline.load_lora_weights(fresh, str(folder), weight_name=LORA_WEIGHT_NAME)
    assert not torch.equal(untrained, expected)
    assert torch.equal(generate(fresh, clip), expected)


def test_comfyui_export_has_wan_names_and_loads_to_the_same_output(trained):
    pipe, folder, clip = trained
    keys = load_file(str(folder / COMFYUI_WEIGHT_NAME))
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in keys
    assert "diffusion_model.blocks.1.cross_attn.o.lora_up.weight" in keys
    assert "diffusion_model.blocks.0.ffn.0.alpha" in keys and keys["diffusion_model.blocks.0.ffn.0.alpha"].item() == 8.0
    assert not any("k_img" in k or "v_img" in k for k in keys)
    expected = generate(pipe, clip)
    fresh = build_tiny_pipeline(seed=0)
    load_lora(fresh, folder / COMFYUI_WEIGHT_NAME)
    assert torch.allclose(generate(fresh, clip), expected, atol=1e-5)


def test_load_lora_scale_zero_restores_the_base(trained):
    _, folder, clip = trained
    fresh = build_tiny_pipeline(seed=0)
    base = generate(fresh, clip)
    load_lora(fresh, folder, scale=0.0)
    assert torch.equal(generate(fresh, clip), base)
    load_lora(fresh, folder, scale=1.0)  # loading again replaces the adapter
    assert not torch.equal(generate(fresh, clip), base)


def test_load_lora_refuses_other_formats_and_foreign_files(tmp_path):
    pipe = build_tiny_pipeline()
    pickle = tmp_path / "lora.pt"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(MaskEditError, match="only safetensors"):
        load_lora(pipe, pickle)
    with pytest.raises(MaskEditError, match="no LoRA file"):
        load_lora(pipe, tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 999),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(999, 4)}, str(foreign))
    with pytest.raises(MaskEditError, match="does not fit this model"):
        load_lora(pipe, foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(MaskEditError, match="garbage.safetensors is not a LoRA file or is damaged"):
        load_lora(pipe, garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(MaskEditError, match=r"not a LoRA file or is damaged \(it is empty \(0 bytes\)\)"):
        load_lora(pipe, empty)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(foreign.read_bytes()[:-100])
    with pytest.raises(MaskEditError, match="cut.safetensors is not a LoRA file or is damaged"):
        load_lora(pipe, cut)
    diverged = tmp_path / "nan.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.full((4, 32), float("nan")),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(diverged))
    with pytest.raises(MaskEditError, match="holds NaN or infinite weights"):
        load_lora(pipe, diverged)
    assert not getattr(pipe.transformer, "peft_config", None)  # nothing half-loaded is left behind
