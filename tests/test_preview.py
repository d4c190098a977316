"""The fast preview (maskedit.workflow.preview) on the tiny models: same edit LoRA and condition as the full
render, the speed LoRA only for the preview, the full render afterwards unchanged bit for bit."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import make_synthetic_clip
from test_speed import random_lora
from maskedit.workflow import generate, prepare
from maskedit.errors import MaskEditError
from maskedit.method.experts import EXPERTS, expert_module, save_expert_loras
from maskedit.method.lora import ADAPTER_NAME, lora_state_dict, to_comfyui_keys
from maskedit.models.loading import build_tiny_pipeline, build_tiny_two_expert_pipeline
from maskedit.models.presets import get_preset
from maskedit.workflow.preview import (
    NO_SPEED_LORA, SPEED_LORA_ENV, PreviewSettings, generate_preview, preview_settings,
)
from maskedit.models.speed import SPEED_ADAPTER, has_speed_lora
from maskedit.media.video import Clip



def speed_file(folder, pipe_builder, expert=None, seed=7):
    """A random LoRA in ComfyUI keys standing in for a distilled speed LoRA."""
    other = pipe_builder()
    module = other.transformer if expert is None else expert_module(other, expert)
    random_lora(module, rank=8, seed=seed)
    path = folder / f"speed_{expert or 'wan21'}.safetensors"
    save_file(to_comfyui_keys(lora_state_dict(module), 8.0), str(path))
    return path


@pytest.fixture
def prepared():
    frames, region = make_synthetic_clip()
    return prepare.PreparedClip(Clip(frames, 8.0), region), frames[0][::-1].copy()


class Spy:
    """Records the condition channels and the active adapters of every transformer call."""

    def __init__(self, modules):
        self.calls = []
        self.handles = [m.register_forward_pre_hook(self.hook, with_kwargs=True) for m in modules]

    def hook(self, module, args, kwargs):
        self.calls.append((kwargs["hidden_states"][:, 16:].clone(), tuple(module.active_adapters())))

    def close(self):
        for handle in self.handles:
            handle.remove()


def test_preview_uses_the_edit_lora_and_condition_and_leaves_the_full_render_bit_identical(tmp_path, prepared):
    clip, edited = prepared
    pipe = build_tiny_pipeline()
    random_lora(pipe.transformer, rank=4, seed=1)
    speed = speed_file(tmp_path, build_tiny_pipeline)

    spy = Spy([pipe.transformer])
    full = generate.generate_edit(pipe, clip, edited, "a box", steps=3)
    full_calls, spy.calls = spy.calls, []
    settings = PreviewSettings(str(speed))
    preview = generate_preview(pipe, clip, edited, "a box", settings)
    preview_calls, spy.calls = spy.calls, []
    again = generate.generate_edit(pipe, clip, edited, "a box", steps=3)
    spy.close()

    assert len(full_calls) == 6 and len(preview_calls) == 4  # CFG 5: two passes per step; preview: CFG 1
    condition = full_calls[0][0]
    assert all(torch.equal(c, condition) for c, _ in full_calls + preview_calls)  # same mask + condition latents
    assert all(adapters == (ADAPTER_NAME,) for _, adapters in full_calls)
    assert all(set(adapters) == {ADAPTER_NAME, SPEED_ADAPTER} for _, adapters in preview_calls)
    assert preview.shape == full.shape and not np.array_equal(preview, full)
    assert not has_speed_lora(pipe) and np.array_equal(again, full)  # speed LoRA gone: the full render, bit for bit


def test_two_expert_preview_stacks_a_speed_pair_and_restores_the_full_render(tmp_path, prepared):
    clip, edited = prepared
    pipe = build_tiny_two_expert_pipeline()
    for offset, expert in enumerate(EXPERTS):
        random_lora(expert_module(pipe, expert), rank=4, seed=1 + offset)
    save_expert_loras(pipe, tmp_path / "edit", {"base_model": "tiny-wan2.2"})
    high, low = (speed_file(tmp_path, build_tiny_two_expert_pipeline, e, seed=7 + i) for i, e in enumerate(EXPERTS))

    full = generate.generate_edit(pipe, clip, edited, "a box", steps=4)
    spy = Spy([pipe.transformer, pipe.transformer_2])
    preview = generate_preview(pipe, clip, edited, "a box", PreviewSettings(f"{high},{low}"))
    spy.close()
    assert len(spy.calls) == 4 and all(set(a) == {ADAPTER_NAME, SPEED_ADAPTER} for _, a in spy.calls)
    assert not np.array_equal(preview, full)
    for expert in EXPERTS:
        assert SPEED_ADAPTER not in expert_module(pipe, expert).peft_config
    assert np.array_equal(generate.generate_edit(pipe, clip, edited, "a box", steps=4), full)

    one = generate_preview(pipe, clip, edited, "a box", PreviewSettings(str(high)))  # one file for both experts
    assert one.shape == full.shape


def test_settings_come_from_the_option_the_environment_or_the_preset(monkeypatch):
    monkeypatch.delenv(SPEED_LORA_ENV, raising=False)
    with pytest.raises(MaskEditError, match="--speed-lora") as error:
        preview_settings(get_preset("full"))
    assert str(error.value) == NO_SPEED_LORA and SPEED_LORA_ENV in NO_SPEED_LORA
    zerogpu = get_preset("zerogpu")
    settings = preview_settings(zerogpu)
    assert (settings.speed_lora, settings.steps, settings.guidance_scale, settings.flow_shift) == (
        zerogpu.speed_lora, 4, 1.0, 5.0)
    assert "4 steps, CFG 1" in settings.describe()
    monkeypatch.setenv(SPEED_LORA_ENV, "/loras/speed.safetensors")
    assert preview_settings(get_preset("full")).speed_lora == "/loras/speed.safetensors"
    assert preview_settings(None, speed_lora="x.safetensors", steps=6).steps == 6
    with pytest.raises(MaskEditError, match="at least 1 step"):
        PreviewSettings("x.safetensors", steps=0)


def test_bad_speed_loras_are_clear_errors_and_leave_the_pipe_as_it_was(tmp_path, prepared):
    clip, edited = prepared
    pipe = build_tiny_pipeline()
    random_lora(pipe.transformer, rank=4, seed=1)
    with pytest.raises(MaskEditError, match="no speed LoRA at"):
        generate_preview(pipe, clip, edited, "a box", PreviewSettings(str(tmp_path / "missing.safetensors")))
    with pytest.raises(MaskEditError, match="one transformer"):
        generate_preview(pipe, clip, edited, "a box", PreviewSettings("a.safetensors,b.safetensors"))
    assert not has_speed_lora(pipe) and pipe.transformer.active_adapters() == [ADAPTER_NAME]
