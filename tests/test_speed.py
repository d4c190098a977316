"""Fast generation options (maskedit.models.speed): a speed LoRA stacked with the edit LoRA, attention backend,
compile, VAE tiling, on the tiny model."""

import numpy as np
import pytest
import torch

from maskedit.errors import MaskEditError
from maskedit.method.lora import ADAPTER_NAME, add_lora, load_lora, lora_state_dict, save_lora, to_comfyui_keys
from maskedit.models.loading import TINY_TRANSFORMER, build_tiny_pipeline
from maskedit.models.presets import get_preset
from maskedit.models.speed import (
    SPEED_ADAPTER, apply_generation_options, available_attention_backends, compile_blocks, enable_vae_tiling,
    has_speed_lora, load_speed_lora, resolve_speed_lora, set_attention_backend, set_lora_weights, unload_speed_lora,
)


def random_lora(transformer, rank, seed):
    add_lora(transformer, rank=rank, alpha=rank, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    """An edit LoRA folder (diffusers format) and a speed LoRA file in original-Wan/ComfyUI keys."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("loras")
    pipe = build_tiny_pipeline()
    random_lora(pipe.transformer, rank=4, seed=1)
    save_lora(pipe, folder / "edit", {"trigger": "p3rs0n"})
    other = build_tiny_pipeline()
    random_lora(other.transformer, rank=8, seed=2)
    speed = folder / "speed_comfyui.safetensors"
    save_file(to_comfyui_keys(lora_state_dict(other.transformer), 8.0), str(speed))
    return folder / "edit", speed


def transformer_output(pipe):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return pipe.transformer(
            hidden_states=torch.randn(1, 36, 3, 8, 8, generator=g), timestep=torch.tensor([700.0]),
            encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
            encoder_hidden_states_image=torch.randn(1, 17, 16, generator=g), return_dict=False,
        )[0]


def scalings(pipe, adapter):
    layer = pipe.transformer.blocks[0].attn1.to_q
    return layer.scaling.get(adapter) if adapter in layer.active_adapters else None


def test_speed_lora_stacks_with_the_edit_lora_and_removing_it_restores_edit_only(lora_files):
    edit, speed = lora_files
    pipe = build_tiny_pipeline()
    base = transformer_output(pipe)
    load_lora(pipe, edit, scale=0.8)
    edit_only = transformer_output(pipe)
    assert not torch.equal(edit_only, base)

    load_speed_lora(pipe, speed, weight=0.5, edit_weight=0.8)
    assert has_speed_lora(pipe)
    assert set(pipe.transformer.active_adapters()) == {ADAPTER_NAME, SPEED_ADAPTER}
    assert scalings(pipe, ADAPTER_NAME) == pytest.approx(0.8)  # alpha/r = 1, times its weight
    assert scalings(pipe, SPEED_ADAPTER) == pytest.approx(0.5)
    both = transformer_output(pipe)
    assert not torch.equal(both, edit_only)

    set_lora_weights(pipe, edit=0.8, speed=1.0)
    stronger = transformer_output(pipe)
    assert scalings(pipe, SPEED_ADAPTER) == pytest.approx(1.0) and not torch.equal(stronger, both)
    set_lora_weights(pipe, edit=0.8, speed=0.0)
    assert torch.equal(transformer_output(pipe), edit_only)  # weight 0: the speed LoRA adds exactly nothing

    unload_speed_lora(pipe, edit_weight=0.8)
    assert not has_speed_lora(pipe) and pipe.transformer.active_adapters() == [ADAPTER_NAME]
    assert torch.equal(transformer_output(pipe), edit_only)  # edit-only output, bit for bit


def test_speed_lora_without_an_edit_lora_and_the_preset_path(lora_files):
    _, speed = lora_files
    pipe = build_tiny_pipeline()
    base = transformer_output(pipe)
    preset = get_preset("zerogpu").with_overrides(speed_lora=str(speed), speed_lora_weight=0.7)
    notes = apply_generation_options(pipe, preset)
    assert any("speed LoRA" in n for n in notes) and scalings(pipe, SPEED_ADAPTER) == pytest.approx(0.7)
    assert not torch.equal(transformer_output(pipe), base)
    assert apply_generation_options(pipe, preset) == []  # already loaded: nothing to do again
    notes = apply_generation_options(pipe, get_preset("full"))
    assert notes == ["speed LoRA removed"] and torch.equal(transformer_output(pipe), base)


def test_speed_lora_sources(tmp_path):
    with pytest.raises(MaskEditError, match="no speed LoRA"):
        resolve_speed_lora(tmp_path / "missing.safetensors")
    with pytest.raises(MaskEditError, match="hub"):  # HF_HUB_OFFLINE in tests: not cached
        resolve_speed_lora("someone/not-cached/file.safetensors")
    (tmp_path / "x.safetensors").write_bytes(b"")
    assert resolve_speed_lora(tmp_path / "x.safetensors") == tmp_path / "x.safetensors"


def test_attention_backend_choice():
    pipe = build_tiny_pipeline()
    assert "native" in available_attention_backends()
    reference = transformer_output(pipe)
    assert set_attention_backend(pipe.transformer, None) == "native"
    assert torch.equal(transformer_output(pipe), reference)
    with pytest.raises(MaskEditError, match="unknown attention backend"):
        set_attention_backend(pipe.transformer, "warp-speed")
    missing = [b for b in ("flash", "sage", "xformers") if b not in available_attention_backends()]
    if missing:
        with pytest.raises(MaskEditError, match="not installed"):
            set_attention_backend(pipe.transformer, missing[0])


def test_compile_blocks_keeps_the_output():
    pipe = build_tiny_pipeline()
    reference = transformer_output(pipe)
    assert compile_blocks(pipe.transformer, backend="eager") == 2
    assert torch.allclose(transformer_output(pipe), reference, atol=1e-6)
    torch._dynamo.reset()


def test_compile_with_block_swapping_compiles_inside_the_blocks():
    from maskedit.memory.offload import BlockStreamer

    pipe = build_tiny_pipeline()
    reference = transformer_output(pipe)
    BlockStreamer(pipe.transformer, "cpu", blocks_to_swap=1)
    assert compile_blocks(pipe.transformer, backend="eager") == 1 + 3  # block 0 whole; attn1/attn2/ffn of the swapped, hooked block 1
    assert torch.allclose(transformer_output(pipe), reference, atol=1e-6)
    torch._dynamo.reset()


def test_vae_tiling_generates_the_same_clip_size():
    from conftest import make_synthetic_clip
    from maskedit.method.conditioning import inference_condition

    frames, region = make_synthetic_clip()
    condition = inference_condition(frames, region, frames[0], "p3rs0n, a box")
    pipe = build_tiny_pipeline()
    enable_vae_tiling(pipe)
    assert pipe.vae.use_tiling
    pipe.vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32,
                           tile_sample_stride_height=16, tile_sample_stride_width=16)  # tiles smaller than 64x64
    video = pipe(condition_video=condition.condition_video, condition_mask=condition.keep_mask, prompt=condition.prompt,
                 num_inference_steps=1, guidance_scale=1.0, generator=torch.Generator().manual_seed(0),
                 output_type="np").frames[0]
    assert video.shape == (9, 64, 64, 3) and np.isfinite(video).all()
    enable_vae_tiling(pipe, False)
    assert not pipe.vae.use_tiling


def test_benchmarks_run_on_cpu_as_a_smoke_test():
    """benchmarks/run_all.py (train_step --quick + generate) on the tiny model; prints the tables, writes nothing."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    results = root / "benchmarks" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "run_all.py"), "--threads", "1", "--device", "cpu"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for header in ("## Training step (benchmarks/train_step.py)", "## Generation (benchmarks/generate.py)",
                   "## Summary (benchmarks/run_all.py)", "not yet measured on a GPU"):
        assert header in out
    assert out.rstrip().endswith("not yet measured on a GPU.** The values above are the CPU smoke run on the tiny model.")
    for row in ("| window 5f, 38/40 swapped", "| low-cost preset", "| ours (mask condition), CFG 5 |",
                "| ours + edit + speed LoRA, CFG 1", "| zerogpu generation call"):
        assert row in out, row
    assert (results.read_bytes() if results.exists() else None) == before


def test_benchmark_flop_count_and_random_model_builder():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from train_step import random_transformer, step_flops, tokens

    from maskedit.models.loading import REAL_TRANSFORMER_14B

    assert tokens(REAL_TRANSFORMER_14B, 49, 832, 480) == (13, 60, 104, 20280)
    assert tokens(REAL_TRANSFORMER_14B, 9, 832, 480)[3] == 4680
    forward, step = step_flops(REAL_TRANSFORMER_14B, 20280)
    # ≈ 2 · 16.2e9 block weights · 20,280 tokens + attention: 0.8–0.9 PFLOP forward; a step ≈ 2.4x that
    assert 7.5e14 < forward < 9.5e14 and 2.2 < step / forward < 2.6
    model = random_transformer(dict(TINY_TRANSFORMER), "cpu", torch.float32)
    params = dict(model.named_parameters())
    assert all(p.device.type == "cpu" and not p.requires_grad for p in params.values())
    weight = params["blocks.0.ffn.net.0.proj.weight"]
    assert abs(weight.std().item() - weight.shape[1] ** -0.5) < 0.2 * weight.shape[1] ** -0.5
    assert torch.isfinite(model.rope.freqs_cos).all()  # the RoPE tables are real, not meta leftovers
