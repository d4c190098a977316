"""Loading pipelines: the tiny factory, a saved diffusers folder through the real loading code, and errors."""

import os

import numpy as np
import pytest
import torch

from maskedit.method.conditioning import inference_condition
from maskedit.errors import MaskEditError
from maskedit.models.loading import TINY, TINY_TRANSFORMER, build_tiny_pipeline, load_pipeline, save_tiny_pipeline
from maskedit.method.pipeline import MaskEditPipeline

REAL_WEIGHTS = os.environ.get("MASKEDIT_WAN_PATH")


def run(pipe, size=64, frames=9):
    rng = np.random.default_rng(0)
    video = (rng.random((frames, size, size, 3)) * 255).astype(np.uint8)
    region = np.zeros(video.shape[:3], bool)
    region[:, size // 4 : size // 2, size // 4 : size // 2] = True
    sample = inference_condition(video, region, video[0], "p3rs0n, a box")
    return pipe(prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask,
                num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").frames


def test_tiny_pipeline_has_the_real_layout():
    pipe = build_tiny_pipeline()
    assert isinstance(pipe, MaskEditPipeline)
    attn2 = pipe.transformer.blocks[0].attn2
    assert attn2.add_k_proj is not None and attn2.add_v_proj is not None  # image K/V like Wan2.1-I2V-14B
    assert pipe.transformer.config.in_channels == 36 and pipe.vae.config.z_dim == 16
    assert not pipe.text_encoder.training
    names = {n for n, _ in pipe.transformer.named_modules()}
    assert {"blocks.0.attn1.to_q", "blocks.0.attn2.to_out.0", "blocks.1.ffn.net.0.proj", "blocks.1.ffn.net.2"} <= names


def test_tiny_factory_is_deterministic():
    a, b = build_tiny_pipeline(seed=0), build_tiny_pipeline(seed=0)
    for (name, x), (_, y) in zip(a.transformer.state_dict().items(), b.transformer.state_dict().items()):
        assert torch.equal(x, y), name
    c = build_tiny_pipeline(seed=1)
    assert not torch.equal(c.transformer.blocks[0].attn1.to_q.weight, a.transformer.blocks[0].attn1.to_q.weight)


def test_saved_folder_loads_through_the_real_loading_code(tmp_path):
    save_tiny_pipeline(tmp_path / "tiny-wan")
    loaded = load_pipeline(str(tmp_path / "tiny-wan"), device="cpu")
    assert isinstance(loaded.pipe, MaskEditPipeline) and not loaded.pipe.transformer.training
    assert loaded.pipe.vae.dtype == torch.float32 and loaded.pipe.image_encoder.dtype == torch.float32
    assert loaded.pipe.transformer.config.num_layers == TINY_TRANSFORMER["num_layers"]
    expected = run(build_tiny_pipeline())
    got = run(loaded.pipe)
    assert got.shape == expected.shape == (1, 9, 64, 64, 3)
    assert np.allclose(got, expected, atol=1e-4)  # a save/load round trip is exact to ~1e-6, not bitwise


def test_tiny_by_name():
    loaded = load_pipeline(TINY, device="cpu")
    assert loaded.is_tiny and "random" in loaded.description


@pytest.mark.parametrize("name", ["/nonexistent/folder/of/wan", "someone/not-a-real-wan-model", "garbage"])
def test_unloadable_model_is_a_clear_error(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MaskEditError, match="--model tiny"):
        load_pipeline(name, device="cpu")


@pytest.mark.skipif(not REAL_WEIGHTS, reason="set MASKEDIT_WAN_PATH to a local Wan2.1-I2V diffusers folder to run")
def test_real_weights_generate_a_short_clip():
    loaded = load_pipeline(REAL_WEIGHTS)
    assert loaded.pipe.transformer.config.added_kv_proj_dim is not None
    frames = run(loaded.pipe, size=256, frames=5)
    assert frames.shape == (1, 5, 256, 256, 3) and np.isfinite(frames).all()
