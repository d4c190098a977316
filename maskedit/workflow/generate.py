"""Generating the edited clip (METHOD.md §6, and the baselines of §8) and writing its results.

    frames = generate_edit(pipe, prepared, edited_first, "a red car on a road")
    outputs = write_edit_outputs("work/out", prepared, frames)             # edited.mp4, side_by_side.mp4

Generation reports through a callback per denoising step and stops between steps (`should_stop`). Videos are
written under temporary names and renamed when complete, so a failed run never leaves an `edited.mp4`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..defaults import DEFAULT_TRIGGER, WAN_NEGATIVE_PROMPT
from ..errors import MaskEditError
from ..limits import check_settings
from ..media.video import check_image_size, write_video
from ..method import masks
from ..method.conditioning import METHOD_IMAGE_VIEW, compose_prompt, inference_condition, stock_condition
from ..method.experts import is_two_expert
from ..method.lora import ADAPTER_NAME
from ..method.pipeline import DEFAULT_SAMPLER, reference_sigmas, use_sampler
from ..method.training import STOCK_CONDITION
from ..models.presets import NAIVE_LORA_METHODS, GenerateSettings
from .prepare import PreparedClip

EDITED_VIDEO = "edited.mp4"
SIDE_BY_SIDE_VIDEO = "side_by_side.mp4"
DEFAULT_GENERATION_STEPS = GenerateSettings.steps
DEFAULT_GUIDANCE_SCALE = GenerateSettings.guidance_scale
DEFAULT_FLOW_SHIFT = GenerateSettings.flow_shift


@dataclass
class GenerationStep:
    """Reported after every denoising step (step counts from 1)."""

    step: int
    total_steps: int
    seconds: float
    elapsed: float


GENERATION_PHASES = ("encoding", "denoising", "decoding")
"""The phases of one render, in order (`generate_edit`'s on_phase)."""


class GenerationStopped(MaskEditError):
    """Generation was stopped (should_stop) before it finished; nothing was produced."""


def has_edit_lora(pipe) -> bool:
    """True when the pipe's transformer carries the edit adapter (trained or loaded)."""
    return ADAPTER_NAME in (getattr(pipe.transformer, "peft_config", None) or {})


def is_naive_lora(metadata: dict) -> bool:
    """True when a LoRA's lora.json (`lora.read_metadata`) says it is a naive-baseline LoRA (stock condition)."""
    return (metadata or {}).get("condition") == STOCK_CONDITION


def set_flow_shift(pipe, shift: float) -> None:
    """Rebuild the pipe's scheduler from its config with another flow shift (`flow_shift` or `shift`)."""
    scheduler = pipe.scheduler
    config = scheduler.config
    if "flow_shift" in config:
        pipe.scheduler = type(scheduler).from_config(config, flow_shift=shift)
    elif "shift" in config:
        pipe.scheduler = type(scheduler).from_config(config, shift=shift)
    else:
        raise MaskEditError(f"the scheduler {type(scheduler).__name__} has no flow shift to set")


def check_guidance_scale_2(pipe, guidance_scale_2: float | None) -> None:
    """Refuse a low-noise guidance scale for a base without a low-noise expert (Wan2.1: one transformer)."""
    GenerateSettings(guidance_scale_2=guidance_scale_2).check_base(is_two_expert(pipe))


def generate_edit(
    pipe,
    prepared: PreparedClip,
    edited_first_frame: np.ndarray,
    caption: str,
    steps: int = DEFAULT_GENERATION_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    flow_shift: float = DEFAULT_FLOW_SHIFT,
    seed: int = 0,
    lora_scale: float = 1.0,
    method: str = "mask-lora",
    trigger: str = DEFAULT_TRIGGER,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    callback: Callable[[GenerationStep], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    speed_lora_weight: float = 1.0,
    sampler: str = DEFAULT_SAMPLER,
    image_view: str = METHOD_IMAGE_VIEW,
    guidance_scale_2: float | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Generate the edited clip (METHOD.md §6); returns uint8 (F, H, W, 3).

    method "mask-lora": the edit LoRA on the pipe (trained or loaded; required) with the mask condition —
    the clip with boxes emptied and frame 0 = the edited frame. "no-lora": stock I2V from the edited first
    frame, adapter disabled, prompt without the trigger. "feature-blend": the paper's blending baseline (App.
    B.1) — stock I2V condition plus feature-level blending of the source clip outside the boxes (Eq. 3, held
    at every step whatever the sampler), with the naive baseline's LoRA. "naive-lora": the naive baseline
    (METHOD.md §8) — stock I2V from the edited first frame. Both `NAIVE_LORA_METHODS` need the adapter on the
    pipe to be a LoRA trained with the stock condition (`train_edit_lora(naive=True)`, loaded by the caller:
    this function cannot tell the two apart; `is_naive_lora(lora.json)` can).
    sampler: "euler" (the reference code's flow-matching Euler with its schedule, `pipeline.reference_sigmas`)
    or "unipc" (Wan's default); flow_shift applies to both. image_view: the CLIP view ("full" = the method's,
    as in training; "crop" = diffusers'). guidance_scale_2: the low-noise expert's CFG on a two-expert base
    (None: `guidance_scale`); a one-expert base refuses it before any work.
    The prompt is `compose_prompt(caption, trigger)`. callback receives a GenerationStep after each
    denoising step; should_stop() True stops after the current step (GenerationStopped). on_phase(name) is called
    as each phase begins: GENERATION_PHASES, "encoding" (prompt, image and the condition's VAE encode) at the start,
    "denoising" when the transformer first runs, "decoding" (the VAE decode) after the last step.
    A speed LoRA loaded on the pipe (`maskedit.models.speed.load_speed_lora`) stays active beside the edit
    LoRA with `speed_lora_weight`.
    """
    import PIL.Image
    import torch

    from ..runtime import quiet_transformers

    GenerateSettings(steps=steps, guidance_scale=guidance_scale, flow_shift=flow_shift, lora_scale=lora_scale,
                     seed=seed, method=method, sampler=sampler,
                     guidance_scale_2=guidance_scale_2)  # checks every setting before any work
    check_settings(speed_lora_weight=speed_lora_weight)
    check_guidance_scale_2(pipe, guidance_scale_2)
    check_image_size(edited_first_frame, prepared.width, prepared.height, "edited first frame")
    has_lora = has_edit_lora(pipe)
    if method == "mask-lora" and not has_lora:
        raise MaskEditError(
            "the mask-lora method needs the edit LoRA: train one first, or load one (--lora FOLDER); "
            "use the no-lora method to generate without one"
        )
    if method in NAIVE_LORA_METHODS and not has_lora:
        raise MaskEditError(
            f"the {method} method needs the naive baseline's LoRA (trained with the stock condition): train one "
            "(`train --naive`) and load it (--lora FOLDER); use the no-lora method to generate without one"
        )
    if method == "no-lora":
        prompt = compose_prompt(caption, "")
        condition = stock_condition(edited_first_frame, prepared.num_frames, prompt)
    else:
        prompt = compose_prompt(caption, trigger)
        if method == "mask-lora":
            condition = inference_condition(prepared.frames, prepared.region, edited_first_frame, prompt)
        else:
            condition = stock_condition(edited_first_frame, prepared.num_frames, prompt)
    extra = {}
    if method == "feature-blend":
        extra = dict(blend_source_video=prepared.frames, blend_keep_mask=masks.keep_mask_from_region(prepared.region))

    started = time.perf_counter()
    last = [started]
    phase = on_phase or (lambda name: None)

    def first_forward(module, args):
        for handle in hooks:
            handle.remove()  # once: the encoders are done, the denoising begins
        hooks.clear()
        last[0] = time.perf_counter()  # step 1's time is its own, not the encoding's
        phase("denoising")

    def on_step(pipeline, step, timestep, callback_kwargs):
        now = time.perf_counter()
        if callback is not None:
            callback(GenerationStep(step + 1, steps, now - last[0], now - started))
        last[0] = now
        if step + 1 == steps:
            phase("decoding")
        if should_stop is not None and step + 1 < steps and should_stop():
            raise GenerationStopped("generation was stopped before it finished; nothing was written")
        return callback_kwargs

    use_sampler(pipe, sampler, flow_shift)
    if sampler == "euler":
        extra["sigmas"] = reference_sigmas(steps)
    if has_lora:
        if method == "no-lora":
            pipe.disable_lora()
        else:
            from ..models.speed import set_lora_weights

            set_lora_weights(pipe, edit=float(lora_scale), speed=float(speed_lora_weight))
    hooks = [module.register_forward_pre_hook(first_forward)
             for module in (pipe.transformer, getattr(pipe, "transformer_2", None)) if module is not None]
    phase("encoding")
    try:
        with quiet_transformers():
            output = pipe(
                image=PIL.Image.fromarray(condition.image),
                prompt=prompt,
                negative_prompt=negative_prompt,
                condition_video=condition.condition_video,
                condition_mask=condition.keep_mask,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                guidance_scale_2=guidance_scale_2,
                generator=torch.Generator(device="cpu").manual_seed(int(seed)),
                output_type="np",
                callback_on_step_end=on_step,
                image_view=image_view,
                **extra,
            )
    finally:
        for handle in hooks:
            handle.remove()
        if has_lora and method == "no-lora":
            pipe.enable_lora()
    video = np.asarray(output.frames[0], dtype=np.float32)
    return np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)


# ----- results


def side_by_side(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """(F, H, W1, 3) and (F, H, W2, 3) uint8 → (F, H, W1 + W2, 3): original on the left, edit on the right."""
    original, edited = np.asarray(original), np.asarray(edited)
    if original.shape[:2] != edited.shape[:2]:
        raise MaskEditError(
            f"cannot put {original.shape[0]} frames of height {original.shape[1]} beside {edited.shape[0]} frames "
            f"of height {edited.shape[1]}; they need the same frame count and height"
        )
    return np.concatenate([original, edited], axis=2)


@dataclass
class EditOutputs:
    """The files of a finished edit and its background PSNR (dB; `metrics.psnr` outside the boxes, frames 1..:
    inf when identical there, nan when the boxes cover everything)."""

    edited: Path
    side_by_side: Path
    background_psnr: float


def remove_edit_outputs(out_dir: str | os.PathLike) -> None:
    """Delete edited.mp4 and side_by_side.mp4 of an earlier run (before a new one starts)."""
    for name in (EDITED_VIDEO, SIDE_BY_SIDE_VIDEO):
        (Path(out_dir) / name).unlink(missing_ok=True)


def write_edit_outputs(out_dir: str | os.PathLike, prepared: PreparedClip, edited: np.ndarray) -> EditOutputs:
    """Write side_by_side.mp4, then edited.mp4 (at the clip's fps) to out_dir."""
    out_dir = Path(out_dir)
    if edited.shape != prepared.frames.shape:
        raise MaskEditError(f"the edited video is {edited.shape} but the clip is {prepared.frames.shape}")
    write_video(out_dir / SIDE_BY_SIDE_VIDEO, side_by_side(prepared.frames, edited), prepared.fps)
    write_video(out_dir / EDITED_VIDEO, edited, prepared.fps)
    from ..media.metrics import psnr

    judged = slice(1, None) if prepared.num_frames > 1 else slice(None)  # frame 0 is the user's edit
    return EditOutputs(out_dir / EDITED_VIDEO, out_dir / SIDE_BY_SIDE_VIDEO,
                       psnr(edited[judged], prepared.frames[judged], ~prepared.region[judged]))
