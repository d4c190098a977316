"""The two fp8 training recipes: ours (per-row-scaled e4m3 base, fp32 AdamW, lr 1e-4) and the reference code's
(a plain e4m3 cast, an 8-bit AdamW from bitsandbytes, lr 1e-3). bitsandbytes is optional: asking for its optimizer
without it is a clear error before any work; where it is installed the 8-bit run trains and resumes exactly."""

import sys

import numpy as np
import pytest
import torch

from maskedit.errors import MaskEditError
from maskedit.interfaces.cli import main as cli
from maskedit.media.video import Clip
from maskedit.memory.offload import FP8_DTYPE, dequantize_fp8, quantize_fp8
from maskedit.method.training import LoraTrainer, TrainConfig, TrainItem, check_optimizer
from maskedit.method.conditioning import stage1_sample
from maskedit.models.presets import PRESETS, get_preset
from maskedit.workflow import train
from maskedit.workflow.prepare import PreparedClip

from conftest import make_synthetic_clip


@pytest.fixture
def no_bitsandbytes(monkeypatch):
    """bitsandbytes cannot be imported (as on a machine without it), whether or not it is installed here."""
    import importlib.util

    original = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "bitsandbytes" else original(name, *a, **k))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)


def items():
    frames, region = make_synthetic_clip()
    return [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))]


def test_settings_are_checked():
    for bad in (dict(optimizer="sgd"), dict(fp8_scaling="tensor")):
        with pytest.raises(MaskEditError, match="must be one of"):
            TrainConfig(**bad)
    with pytest.raises(MaskEditError, match="optimizer 'sgd' is unknown"):
        get_preset("full").with_overrides(optimizer="sgd")
    assert TrainConfig().optimizer == "adamw" and TrainConfig().fp8_scaling == "row"
    assert all(p.optimizer == "adamw" and p.fp8_scaling == "row" for p in PRESETS.values())  # measured: ours


def test_the_unscaled_cast_is_a_plain_e4m3_cast():
    weight = torch.randn(8, 16) * 0.02  # the scale of real weights: many fall below e4m3's normal range (2^-6)
    values, scale = quantize_fp8(weight, "none")
    assert values.dtype == FP8_DTYPE and torch.equal(scale, torch.ones(8, 1))
    assert torch.equal(values, weight.to(FP8_DTYPE))
    row_values, row_scale = quantize_fp8(weight, "row")
    error_none = (dequantize_fp8(values, scale, torch.float32) - weight).abs().mean()
    error_row = (dequantize_fp8(row_values, row_scale, torch.float32) - weight).abs().mean()
    assert error_row < error_none  # the per-row scale keeps more bits of small weights
    with pytest.raises(MaskEditError, match="fp8 scaling"):
        quantize_fp8(weight, "block")


def test_training_with_the_unscaled_fp8_base(tiny_pipe):
    config = TrainConfig(steps=2, rank=4, alpha=4.0, fp8=True, fp8_scaling="none", checkpoint_every=0)
    trainer = LoraTrainer(tiny_pipe, items(), config)
    assert trainer.memory.streamer.fp8_scaling == "none" and "unscaled" in trainer.memory.streamer.describe()
    state = trainer.train()
    assert state.step == 2 and all(np.isfinite(state.losses))
    trainer.memory.remove(tiny_pipe.transformer)


def test_the_8bit_optimizer_without_bitsandbytes_is_refused_before_any_work(no_bitsandbytes, tiny_pipe, tmp_path,
                                                                           step_counter):
    config = TrainConfig(steps=2, rank=4, alpha=4.0, optimizer="adamw8bit")
    with pytest.raises(MaskEditError, match=r'pip install "bitsandbytes>=0.45,<1"'):
        check_optimizer(config)
    frames, region = make_synthetic_clip()
    prepared = PreparedClip(Clip(frames, 8.0), region)
    encoded = []
    original = tiny_pipe.encode_prompt
    tiny_pipe.encode_prompt = lambda *a, **k: encoded.append(1) or original(*a, **k)
    with pytest.raises(MaskEditError, match="bitsandbytes"):
        list(train.train_edit_lora(tiny_pipe, prepared, "a box", config, tmp_path / "lora"))
    assert encoded == [] and step_counter == []
    args = cli.build_parser().parse_args(["train", "--prepared", "p", "--prompt", "x", "--out", "o",
                                          "--optimizer", "adamw8bit"])
    cli._apply_preset(args)
    with pytest.raises(MaskEditError, match="--optimizer adamw"):
        cli._train_config(args)


def test_the_8bit_optimizer_trains_and_resumes_exactly(tiny_pipe, tmp_path):
    pytest.importorskip("bitsandbytes")
    import copy

    config = TrainConfig(steps=4, rank=4, alpha=4.0, optimizer="adamw8bit", learning_rate=1e-3, checkpoint_every=0)
    start = copy.deepcopy(tiny_pipe)
    whole = LoraTrainer(tiny_pipe, items(), config)
    assert type(whole.optimizer).__name__ == "AdamW8bit"
    whole.train()
    state = whole.optimizer.state[whole.params[0]]
    assert state["state1"].dtype == torch.uint8  # 8-bit state even for the tiny model's small factors
    stopped = LoraTrainer(copy.deepcopy(start), items(), config, checkpoint_dir=tmp_path)
    stopped.train(should_stop=lambda: stopped.state.step >= 2)
    resumed = LoraTrainer(copy.deepcopy(start), items(), config, checkpoint_dir=tmp_path)
    assert resumed.resume() and resumed.state.step == 2
    resumed.train()
    assert resumed.state.losses == whole.state.losses
    for a, b in zip(resumed.params, whole.params):
        assert torch.equal(a, b)
