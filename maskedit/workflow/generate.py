"""Generating the edited clip (METHOD.md §6, and the baselines of §8) and writing its results.

    frames = generate_edit(pipe, prepared, edited_first, "a red car on a road")
    result = composite_edit(prepared, edited_first, frames, settings)      # off (the default): frames as they are
    outputs = write_edit_outputs("work/out", prepared, result.frames, result.record)   # + edited.json

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

from ..defaults import DEFAULT_NEGATIVE_PROMPT, DEFAULT_STEP_CACHE, DEFAULT_TRIGGER, negative_prompt_name, negative_prompt_text
from ..errors import MaskEditError
from ..limits import check_settings
from ..media.video import check_image_size, write_video
from ..method import masks
from ..method.composite import RING_WIDTH, composite, grow_region, ring
from ..method.conditioning import METHOD_IMAGE_VIEW, compose_prompt, inference_condition, stock_condition
from ..method.experts import is_two_expert
from ..method.lora import ADAPTER_NAME
from ..method.pipeline import DEFAULT_SAMPLER, reference_sigmas, use_sampler
from ..method.training import STOCK_CONDITION
from ..models.presets import NAIVE_LORA_METHODS, GenerateSettings
from .prepare import PreparedClip

EDITED_VIDEO = "edited.mp4"
SIDE_BY_SIDE_VIDEO = "side_by_side.mp4"
EDITED_JSON = "edited.json"  # beside edited.mp4: how it was made (compositing) and its background figures
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
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    callback: Callable[[GenerationStep], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    speed_lora_weight: float = 1.0,
    sampler: str = DEFAULT_SAMPLER,
    image_view: str = METHOD_IMAGE_VIEW,
    guidance_scale_2: float | None = None,
    step_cache: str = DEFAULT_STEP_CACHE,
    step_cache_threshold: float | None = None,
    info: dict | None = None,
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
    negative_prompt: "reference" (the reference code's English list: the method's default), "wan" (Wan's
    Chinese default) or the text itself (`defaults.negative_prompt_text`). step_cache: "off" (exact), "magcache"
    or "teacache" (`models.step_cache`; a two-expert base refuses a cache before any work), with
    `step_cache_threshold` (None: the cache's default); the cache lives for this call only. info: a dict that
    receives what the run used and did — "negative_prompt" (its name) and the step cache's counts
    (`StepCacheStats.as_dict`: evaluations, full_evaluations, skipped_evaluations).
    The prompt is `compose_prompt(caption, trigger)`. callback receives a GenerationStep after each
    denoising step; should_stop() True stops after the current step (GenerationStopped). on_phase(name) is called
    as each phase begins: GENERATION_PHASES, "encoding" (prompt, image and the condition's VAE encode) at the start,
    "denoising" when the transformer first runs, "decoding" (the VAE decode) after the last step.
    A speed LoRA loaded on the pipe (`maskedit.models.speed.load_speed_lora`) stays active beside the edit
    LoRA with `speed_lora_weight`.
    """
    check_generation(pipe, prepared.width, prepared.height, edited_first_frame, steps=steps,
                     guidance_scale=guidance_scale, flow_shift=flow_shift, lora_scale=lora_scale, seed=seed,
                     method=method, sampler=sampler, guidance_scale_2=guidance_scale_2,
                     speed_lora_weight=speed_lora_weight, negative_prompt=negative_prompt, step_cache=step_cache,
                     step_cache_threshold=step_cache_threshold)
    prompt = edit_prompt(caption, trigger, method)
    if method == "mask-lora":
        condition = inference_condition(prepared.frames, prepared.region, edited_first_frame, prompt)
    else:
        condition = stock_condition(edited_first_frame, prepared.num_frames, prompt)
    blend = None
    if method == "feature-blend":
        blend = (prepared.frames, masks.keep_mask_from_region(prepared.region))
    return render_condition(pipe, condition, steps=steps, guidance_scale=guidance_scale, flow_shift=flow_shift,
                            seed=seed, lora_scale=lora_scale, method=method, negative_prompt=negative_prompt,
                            callback=callback, should_stop=should_stop, speed_lora_weight=speed_lora_weight,
                            sampler=sampler, image_view=image_view, guidance_scale_2=guidance_scale_2, blend=blend,
                            step_cache=step_cache, step_cache_threshold=step_cache_threshold, info=info,
                            source=prepared.frames, on_phase=on_phase)


def check_generation(pipe, width: int, height: int, edited_first_frame: np.ndarray, *, steps: int,
                     guidance_scale: float, flow_shift: float, lora_scale: float, seed: int, method: str,
                     sampler: str, guidance_scale_2: float | None, speed_lora_weight: float,
                     negative_prompt: str = DEFAULT_NEGATIVE_PROMPT, step_cache: str = DEFAULT_STEP_CACHE,
                     step_cache_threshold: float | None = None) -> None:
    """Every setting of a generation and the LoRA its method needs, checked before any work (MaskEditError)."""
    from ..models.step_cache import check_step_cache

    GenerateSettings(steps=steps, guidance_scale=guidance_scale, flow_shift=flow_shift, lora_scale=lora_scale,
                     seed=seed, method=method, sampler=sampler, guidance_scale_2=guidance_scale_2,
                     negative_prompt=negative_prompt, step_cache=step_cache,
                     step_cache_threshold=step_cache_threshold)  # checks every setting before any work
    check_settings(speed_lora_weight=speed_lora_weight)
    check_guidance_scale_2(pipe, guidance_scale_2)
    check_step_cache(step_cache, is_two_expert(pipe))
    check_image_size(edited_first_frame, width, height, "edited first frame")
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


def edit_prompt(caption: str, trigger: str, method: str) -> str:
    """The generation prompt: `compose_prompt(caption, trigger)`, without the trigger for the no-lora method."""
    return compose_prompt(caption, "" if method == "no-lora" else trigger)


def render_condition(pipe, condition, *, steps: int, guidance_scale: float, flow_shift: float, seed: int,
                     lora_scale: float, method: str, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
                     callback: Callable[[GenerationStep], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, speed_lora_weight: float = 1.0,
                     sampler: str = DEFAULT_SAMPLER, image_view: str = METHOD_IMAGE_VIEW,
                     guidance_scale_2: float | None = None, blend: tuple | None = None,
                     step_cache: str = DEFAULT_STEP_CACHE, step_cache_threshold: float | None = None,
                     info: dict | None = None, source: np.ndarray | None = None,
                     on_phase: Callable[[str], None] | None = None) -> np.ndarray:
    """Denoise one `conditioning.ConditionSample` (V_cond, M_cond, image, prompt) into uint8 (F, H, W, 3): the
    sampler and its schedule, the LoRA weights of `method` (disabled for no-lora), the step cache (this call
    only), the callbacks. blend: (source frames, keep mask) for feature-level blending (paper Eq. 3). source: the
    clip's frames of this condition (uint8 (F, H, W, 3)), which `check_generated` compares with (None: the
    condition video). Settings (and on_phase) are `generate_edit`'s, checked by `check_generation` first."""
    import PIL.Image
    import torch

    from ..models.step_cache import step_cache as cached_steps
    from ..runtime import quiet_transformers

    extra = {}
    if blend is not None:
        extra = dict(blend_source_video=blend[0], blend_keep_mask=blend[1])
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
    has_lora = has_edit_lora(pipe)
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
        with quiet_transformers(), cached_steps(pipe, step_cache, steps, step_cache_threshold) as stats:
            output = pipe(
                image=PIL.Image.fromarray(condition.image),
                prompt=condition.prompt,
                negative_prompt=negative_prompt_text(negative_prompt),
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
    if info is not None:
        info.update(negative_prompt=negative_prompt_name(negative_prompt), **stats.as_dict())
    video = np.asarray(output.frames[0], dtype=np.float32)
    check_generated(video, condition.condition_video if source is None else source, method)
    return np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)


SATURATED_SHARE = 0.95
"""A generated video with more than this share of its values pure black or white (the clip: under half) is
refused as saturated."""


def check_generated(video: np.ndarray, source: np.ndarray, method: str = "mask-lora") -> None:
    """Refuse a generated video that cannot be an edit, so that garbage is never reported as a result: values that
    are NaN or infinite, one flat colour everywhere, or (nearly) all pure black / white where the clip is not.
    video: float (F, H, W, 3), 0..1 as the pipeline returns it; source: the clip, uint8 (F, H, W, 3). The
    MaskEditError names the likely cause: a LoRA whose weights or scale are far too large for the model (with
    `method` "no-lora": the model itself)."""
    cause = ("the model's weights are damaged or the settings are extreme (CFG, shift)" if method == "no-lora" else
             "the LoRA's weights (or the LoRA scale) are far too large for this model, or the LoRA was trained on "
             "another base; try the no-LoRA method to check the model, then a lower LoRA scale or another LoRA")
    if not np.isfinite(video).all():
        share = float((~np.isfinite(video)).mean())
        raise MaskEditError(f"the generated video is not usable: {share:.0%} of its values are NaN or infinite, so it "
                            f"was not written; likely cause: {cause}")
    clipped = np.clip(video, 0.0, 1.0)
    if float(clipped.max() - clipped.min()) < 1.0 / 255:
        raise MaskEditError(f"the generated video is not usable: every pixel of every frame has the same value "
                            f"({round(float(clipped.mean()) * 255)}), so it was not written; likely cause: {cause}")
    saturated = float(((clipped <= 0.5 / 255) | (clipped >= 254.5 / 255)).mean())
    source_saturated = float(((source <= 0) | (source >= 255)).mean())
    if saturated > SATURATED_SHARE and source_saturated < 0.5:
        raise MaskEditError(f"the generated video is not usable: {saturated:.0%} of its values are pure black or white "
                            f"(the clip's: {source_saturated:.0%}), so it was not written; likely cause: {cause}")


# ----- compositing (after decoding; `maskedit.method.composite`)

RING_HINT_DB = 3.0
"""The report points at what compositing cut off when the ring just outside the region is this much (dB) worse
than the rest of the background in the generated output."""


@dataclass
class CompositedEdit:
    """The frames to write (uint8 (F, H, W, 3); the generated array itself when compositing is off) and what
    compositing did, as JSON-able `record` for the report and edited.json:

    on, region ("boxes" | "mask"), feather_px, mask_margin_px (None for boxes), ring_px; frame_0 (what frame 0
    is); background_psnr_generated_db (the generated output vs the source outside the boxes, frames 1..: the
    model's own figure, composited or not); ring_psnr_generated_db and ring_mean_abs_diff_generated (the
    generated output vs the source in the `ring_px`-wide ring just outside the region, frames 1..: what
    compositing cuts off); note (a hint when the ring is much worse than the rest of the background, else "")."""

    frames: np.ndarray
    record: dict


def check_composite(prepared: PreparedClip, settings: GenerateSettings) -> None:
    """Refuse compositing on the tight mask for a clip that has none (its region was a box), before any work."""
    if settings.composite and settings.composite_region == "mask" and prepared.tight is None:
        raise MaskEditError(
            "compositing on the tight mask needs the clip's segmentation, but its region was given as a box; "
            "composite on the loose boxes instead, or prepare the clip from a mask video (or clicks)"
        )


def composite_region(prepared: PreparedClip, settings: GenerateSettings) -> np.ndarray:
    """The region compositing keeps generated, bool (F, H, W): the loose boxes, or for "mask" the tight mask
    grown by `settings.composite_margin` pixels."""
    if settings.composite_region == "mask":
        check_composite(prepared, settings)
        return grow_region(prepared.tight, settings.composite_margin)
    return np.asarray(prepared.region, dtype=bool)


def composite_edit(prepared: PreparedClip, edited_first_frame: np.ndarray, generated: np.ndarray,
                   settings: GenerateSettings) -> CompositedEdit:
    """Composite a generated edit onto its source clip when `settings.composite` (else return it unchanged,
    bit for bit), and measure the generated output against the source in either case.

    Frames 1..: outside the region the source pixels, inside the generated ones, feathered across the border
    (`method.composite.composite`). Frame 0: the user's edited first frame exactly as given — it is the edit's
    target there (the generated frame 0 is only its VAE round trip), so the whole frame, not only its region.
    generated: uint8 (F, H, W, 3) of the prepared clip. A long clip: call it once on the assembled clip (frame 0
    of the clip is the edited frame; a window's first frame is not); window by window, call
    `method.composite.composite` on each window's source, generated and region frames (in window 0, the edited
    frame as frame 0's source and an empty region there) — the blend is per frame, so the result is the same.
    """
    settings.validate()
    check_composite(prepared, settings)
    generated = np.asarray(generated)
    if generated.shape != prepared.frames.shape:
        raise MaskEditError(f"the edited video is {generated.shape} but the clip is {prepared.frames.shape}")
    check_image_size(edited_first_frame, prepared.width, prepared.height, "edited first frame")
    region = composite_region(prepared, settings) if settings.composite else np.asarray(prepared.region, bool)
    judged = slice(1, None) if prepared.num_frames > 1 else slice(None)  # frame 0 is the user's edit
    from ..media.metrics import psnr

    source, later = prepared.frames[judged], generated[judged]
    band = ring(region[judged], RING_WIDTH)
    difference = np.abs(later[band].astype(np.int16) - source[band].astype(np.int16))
    background = psnr(later, source, ~np.asarray(prepared.region, bool)[judged])
    ring_psnr = psnr(later, source, band)
    note = ""
    if settings.composite and background - ring_psnr > RING_HINT_DB:
        note = (f"just outside the region the generated video differs from the source more than elsewhere "
                f"(ring {ring_psnr:.1f} dB vs background {background:.1f} dB): the model may have drawn something "
                "there (a shadow, a reflection) that compositing cut off; compare with compositing off")
    record = {
        **composite_settings_record(settings),
        "background_psnr_generated_db": background, "ring_psnr_generated_db": ring_psnr,
        "ring_mean_abs_diff_generated": float(difference.mean()) if difference.size else float("nan"),
        "note": note,
    }
    if not settings.composite:
        return CompositedEdit(generated, record)
    source_frames = prepared.frames.copy()
    source_frames[0] = edited_first_frame
    region = region.copy()
    region[0] = False  # frame 0: the edited frame, whole
    return CompositedEdit(composite(source_frames, generated, region, settings.feather), record)


def composite_settings_record(settings: GenerateSettings) -> dict:
    """What compositing was asked to do, JSON-able (the settings part of `CompositedEdit.record`; a long clip's
    report holds only this: its windows are composited one by one, `long_clip.finish_window`)."""
    return {"on": bool(settings.composite), "region": settings.composite_region, "feather_px": int(settings.feather),
            "mask_margin_px": int(settings.composite_margin) if settings.composite_region == "mask" else None,
            "ring_px": RING_WIDTH,
            "frame_0": "the edited first frame as given" if settings.composite else "generated"}


def describe_composite(record: dict) -> str:
    """One line for the terminal and the mp4's comment: "composited onto the source (loose boxes, feather 4 px)…"
    or "not composited"."""
    if not record.get("on"):
        return "not composited (every pixel generated)"
    where = ("loose boxes" if record["region"] == "boxes"
             else f"tight mask grown by {record['mask_margin_px']} px")
    return (f"composited onto the source ({where}, feather {record['feather_px']} px): outside the region the "
            "source clip exactly (before the mp4 encode), frame 0 the edited first frame")


# ----- results


CLIP_UNAVAILABLE = ("unavailable: this base has no CLIP image encoder (Wan2.2-I2V-A14B conditions on text and the "
                    "first frame's latents only)")


def edit_clip_measures(pipe, prepared: PreparedClip, edited_first_frame: np.ndarray, edited: np.ndarray) -> dict:
    """The paper's Table 1 measures of a generated clip with the base's own CLIP image encoder
    (`method.clip_features`, `media.metrics.clip_measures`): {"clip_score", "input_similarity", "clip_note"};
    both scores None, and the note saying why, on a base without an image encoder (Wan2.2)."""
    from ..media.metrics import CLIP_NOTE, clip_measures
    from ..method.clip_features import clip_image_features, has_image_encoder

    if not has_image_encoder(pipe):
        return {"clip_score": None, "input_similarity": None, "clip_note": CLIP_UNAVAILABLE}
    measures = clip_measures(clip_image_features(pipe, edited), clip_image_features(pipe, edited_first_frame),
                             clip_image_features(pipe, prepared.frames))
    return {**measures, "clip_note": CLIP_NOTE}


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
    """Delete edited.mp4, side_by_side.mp4 and edited.json of an earlier run (before a new one starts)."""
    for name in (EDITED_VIDEO, SIDE_BY_SIDE_VIDEO, EDITED_JSON):
        (Path(out_dir) / name).unlink(missing_ok=True)


def write_edit_outputs(out_dir: str | os.PathLike, prepared: PreparedClip, edited: np.ndarray,
                       composite_record: dict | None = None) -> EditOutputs:
    """Write side_by_side.mp4, then edited.mp4 (at the clip's fps) to out_dir. composite_record: a
    `composite_edit` record; with it, edited.json is written beside them (the record and the background PSNR),
    and a composited edited.mp4 says so in its `comment` metadata tag (not composited: no tag, the same file)."""
    out_dir = Path(out_dir)
    if edited.shape != prepared.frames.shape:
        raise MaskEditError(f"the edited video is {edited.shape} but the clip is {prepared.frames.shape}")
    comment = f"MaskEdit: {describe_composite(composite_record)}" if (composite_record or {}).get("on") else None
    write_video(out_dir / SIDE_BY_SIDE_VIDEO, side_by_side(prepared.frames, edited), prepared.fps)
    write_video(out_dir / EDITED_VIDEO, edited, prepared.fps, comment=comment)
    from ..media.metrics import psnr

    judged = slice(1, None) if prepared.num_frames > 1 else slice(None)  # frame 0 is the user's edit
    outputs = EditOutputs(out_dir / EDITED_VIDEO, out_dir / SIDE_BY_SIDE_VIDEO,
                          psnr(edited[judged], prepared.frames[judged], ~prepared.region[judged]))
    if composite_record is not None:
        import json

        from ..media.files import write_text

        write_text(out_dir / EDITED_JSON, json.dumps(
            {"video": EDITED_VIDEO, "background_psnr_db": outputs.background_psnr, "composite": composite_record},
            indent=2))
    return outputs
