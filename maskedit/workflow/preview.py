"""A fast preview of an edit: the edit LoRA stacked with a step-distilled "speed" LoRA, 4 steps at CFG 1.

    settings = preview_settings(speed_lora="lightx2v/…/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors")
    frames = generate_preview(pipe, prepared, edited_first_frame, caption, settings)   # seconds, not minutes
    frames = generate.generate_edit(pipe, prepared, edited_first_frame, caption)         # the full render

The preview uses the same edit LoRA, condition, prompt and seed as the full render; only the speed LoRA,
the step count, the guidance and the flow shift differ. The speed LoRA is loaded for the preview and
removed afterwards, so the full render after a preview is bit for bit the one without it.

Two-expert bases (Wan2.2-A14B): a speed LoRA comes as a pair, one per expert: give "HIGH,LOW" (two files
or hub paths; the high-noise one first) or one file that both experts take.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..defaults import DEFAULT_SAMPLER
from ..errors import MaskEditError
from ..method.experts import EXPERTS, LOW_NOISE, expert_module, is_two_expert
from ..method.lora import ADAPTER_NAME
from ..models.speed import SPEED_ADAPTER, has_speed_lora, load_speed_lora, resolve_speed_lora, unload_speed_lora

PREVIEW_STEPS = 4
PREVIEW_GUIDANCE = 1.0
PREVIEW_FLOW_SHIFT = 5.0
"""4 steps, CFG 1, flow shift 5: the settings of the 4-step distilled Wan I2V LoRAs (lightx2v's), also
those of the `zerogpu` preset."""
PREVIEW_SAMPLER = DEFAULT_SAMPLER
"""The preview's sampler, whatever the full render's: Euler with the reference schedule (`pipeline.reference_sigmas`),
which at 4 steps and shift 5 gives LightX2V's distilled timesteps."""
SPEED_LORA_ENV = "MASKEDIT_SPEED_LORA"

NO_SPEED_LORA = (
    "the preview needs a step-distilled speed LoRA and none is set: pass --speed-lora FILE|owner/repo/file.safetensors "
    f"(or set {SPEED_LORA_ENV}), or use a preset that has one (zerogpu). For Wan2.1-I2V-14B: "
    "lightx2v/Wan2.1-Distill-Loras/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors; for Wan2.2-I2V-A14B give the "
    "high-noise and low-noise files as HIGH,LOW"
)


@dataclass(frozen=True)
class PreviewSettings:
    """How a preview generates. speed_lora: a path, folder or owner/repo/file.safetensors ("HIGH,LOW" for
    two experts); steps ≥ 1; guidance_scale ≥ 1 (1 = no CFG: one transformer pass per step). The sampler is
    always flow-matching Euler (the distilled LoRAs' schedule: LightX2V's 4 steps [1000, 937.5, 833.3, 625]); no
    step cache runs (4 distilled steps leave nothing to skip)."""

    speed_lora: str
    steps: int = PREVIEW_STEPS
    guidance_scale: float = PREVIEW_GUIDANCE
    flow_shift: float = PREVIEW_FLOW_SHIFT
    speed_lora_weight: float = 1.0

    @property
    def sampler(self) -> str:
        """The sampler every preview runs (PREVIEW_SAMPLER), whatever the full render's settings say."""
        return PREVIEW_SAMPLER

    def __post_init__(self):
        if not self.speed_lora:
            raise MaskEditError(NO_SPEED_LORA)
        if self.steps < 1:
            raise MaskEditError(f"the preview needs at least 1 step, got {self.steps}")
        if self.guidance_scale < 1.0 or self.flow_shift <= 0:
            raise MaskEditError("the preview's guidance scale must be ≥ 1 and its flow shift > 0")

    def describe(self) -> str:
        return (f"preview: speed LoRA {self.speed_lora} (weight {self.speed_lora_weight:g}), {self.steps} steps, "
                f"CFG {self.guidance_scale:g}, flow shift {self.flow_shift:g}, {self.sampler} sampler")


def preview_settings(preset=None, speed_lora: str | None = None, **changes) -> PreviewSettings:
    """Preview settings from (first found) `speed_lora`, $MASKEDIT_SPEED_LORA, or the preset's speed LoRA —
    with the preset's steps/CFG/shift when it generates with its speed LoRA at CFG 1, else 4 steps, CFG 1,
    shift 5. MaskEditError saying what to set when there is no speed LoRA."""
    spec = speed_lora or os.environ.get(SPEED_LORA_ENV) or (preset.speed_lora if preset is not None else None)
    if not spec:
        raise MaskEditError(NO_SPEED_LORA)
    settings = dict(speed_lora=str(spec))
    if preset is not None and preset.speed_lora and preset.cfg_distilled:
        settings.update(steps=preset.generation_steps, guidance_scale=preset.guidance_scale,
                        flow_shift=preset.flow_shift, speed_lora_weight=preset.speed_lora_weight)
    settings.update({k: v for k, v in changes.items() if v is not None})
    return PreviewSettings(**settings)


def load_preview_lora(pipe, settings: PreviewSettings, edit_weight: float = 1.0) -> None:
    """Load the preview's speed LoRA beside the edit adapter (`stack_speed_lora`)."""
    stack_speed_lora(pipe, settings.speed_lora, settings.speed_lora_weight, edit_weight)


def stack_speed_lora(pipe, spec: str, weight: float = 1.0, edit_weight: float = 1.0) -> None:
    """Load a speed LoRA as the `speed` adapter beside the edit adapter, whatever the base: one file
    (`maskedit.models.speed.load_speed_lora`), or on a two-expert base "HIGH,LOW" (or one file for both experts)."""
    if not is_two_expert(pipe):
        if "," in spec:
            raise MaskEditError("this model has one transformer: give one speed LoRA, not a HIGH,LOW pair")
        load_speed_lora(pipe, spec, weight, edit_weight)
        return
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) not in (1, 2) or not all(specs):
        raise MaskEditError(f"give one speed LoRA or a HIGH,LOW pair, got {spec!r}")
    paths = [resolve_speed_lora(s) for s in (specs * 2)[:2]]
    _unload_expert_speed(pipe)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute")
            for expert, path in zip(EXPERTS, paths):
                path = path / "lora.safetensors" if path.is_dir() else path
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=SPEED_ADAPTER,
                                       load_into_transformer_2=expert == LOW_NOISE)
    except Exception as error:  # many types for a foreign or broken file
        _unload_expert_speed(pipe)
        raise MaskEditError(f"the speed LoRA {spec!r} does not fit this model "
                            f"({type(error).__name__}: {str(error)[:300]})") from None
    names = [n for n in (ADAPTER_NAME, SPEED_ADAPTER) if n in (pipe.transformer.peft_config or {})]
    weights = [edit_weight if n == ADAPTER_NAME else weight for n in names]
    pipe.set_adapters(names, adapter_weights=weights)


def _unload_expert_speed(pipe) -> None:
    for expert in EXPERTS:
        module = expert_module(pipe, expert)
        if SPEED_ADAPTER in (getattr(module, "peft_config", None) or {}):
            module.delete_adapters([SPEED_ADAPTER])


def unload_preview_lora(pipe, edit_weight: float = 1.0) -> None:
    """Remove the speed adapter (both experts); the edit adapter stays active with `edit_weight`."""
    if not is_two_expert(pipe):
        unload_speed_lora(pipe, edit_weight)
        return
    _unload_expert_speed(pipe)
    if ADAPTER_NAME in (getattr(pipe.transformer, "peft_config", None) or {}):
        pipe.set_adapters([ADAPTER_NAME], adapter_weights=[float(edit_weight)])


def generate_preview(
    pipe,
    prepared,
    edited_first_frame: np.ndarray,
    caption: str,
    settings: PreviewSettings,
    seed: int = 0,
    lora_scale: float = 1.0,
    method: str = "mask-lora",
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    **generate_kwargs,
) -> np.ndarray:
    """The preview of `generate.generate_edit(...)` with the same edit LoRA, condition, prompt and seed,
    and the speed LoRA stacked on it for `settings.steps` steps at `settings.guidance_scale`; returns
    uint8 (F, H, W, 3). The speed LoRA is removed afterwards (also on error or stop) unless it was
    already on the pipe before (then it stays, as it was)."""
    from .generate import generate_edit

    already = has_speed_lora(pipe)
    if not already:
        load_preview_lora(pipe, settings, lora_scale)
    try:
        return generate_edit(
            pipe, prepared, edited_first_frame, caption, steps=settings.steps, guidance_scale=settings.guidance_scale,
            flow_shift=settings.flow_shift, seed=seed, lora_scale=lora_scale, method=method, callback=callback,
            should_stop=should_stop, speed_lora_weight=settings.speed_lora_weight, sampler=settings.sampler,
            **generate_kwargs,
        )
    finally:
        if not already:
            unload_preview_lora(pipe, lora_scale)
