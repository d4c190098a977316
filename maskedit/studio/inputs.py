"""What the session service takes and gives: the GPU calls it is handed, the Train tab's values, what a
training view and a generation return, and two readers of a run folder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from ..method import training
from ..method.conditioning import clean_trigger
from ..defaults import DEFAULT_TRIGGER
from ..limits import check, check_choice, check_flag, check_settings, check_text, value_or_default
from ..models.presets import GenerateSettings
from .runs import ChunkRequest


@dataclass
class GpuCalls:
    """The GPU work the service needs; the app passes `@spaces.GPU` wrappers, tests plain functions.

    train_chunk(ChunkRequest) → iterator of `studio.progress` events (one call's worth of training);
    generate(prepared_dir, edited_frame, caption, out_dir, settings, **options) → iterator of generation dicts
    (`studio.generation.run_generation` without the pipe); image_mask(frame, points, labels) → bool (H, W);
    segment_clip(frames, points, labels, margin[, box=]) → `segmentation.Segmentation`; caption(image) → str;
    segment_text(frames, text) → `segmentation.TextSegmentation` (None: the app has no text prompts).
    image_mask and segment_clip get `box=` only when clicks refine an object (its frame-0 box)."""

    train_chunk: Callable[[ChunkRequest], Iterator]
    generate: Callable[..., Iterator[dict]]
    image_mask: Callable
    segment_clip: Callable
    caption: Callable
    segment_text: Callable | None = None


@dataclass
class TrainInputs:
    """The Train tab's values: the caption of the ORIGINAL first frame ("" = captioned automatically when
    training starts, `Studio.training_captions`), the trigger, the preset and what the user changed of it
    (None: the preset's), the seed, the seconds per GPU call (None: the app's), the caption of the EDITED
    first frame when known (recorded in lora.json; never trained on) and the timestep sampler (None: the
    preset's: uniform, or shifted on a two-expert base)."""

    caption: str
    trigger: str = DEFAULT_TRIGGER
    preset: str = "full"
    steps: int | None = None
    learning_rate: float | None = None
    rank: int | None = None
    seed: int = 0
    blocks_to_swap: int = 0
    fp8: bool = False
    gradient_checkpointing: bool = False
    budget_s: float | None = None
    edit_caption: str | None = None
    timestep_sampler: str | None = None  # training's noise levels (None: the preset's; defaults.TIMESTEP_SAMPLERS)

    def cleaned(self) -> "TrainInputs":
        """Every field parsed and held to its range (`maskedit.limits`) as a form or an API client sent it:
        captions and trigger stripped text of bounded length (an empty caption stays empty: it is made
        automatically), a known preset, numbers of the right kind within their ranges (True, 10.5 or "5" steps
        are refused, never rounded; None keeps the preset's value), checkboxes true or false, the chunk budget
        within 5..3600 s. MaskEditError naming the setting, its range and the value otherwise."""
        from ..defaults import TIMESTEP_SAMPLERS
        from ..models.presets import get_preset

        caption = check_text(self.caption, "caption of the ORIGINAL first frame")
        edit_caption = check_text(self.edit_caption, "caption of the EDITED first frame") or None
        trigger = DEFAULT_TRIGGER if self.trigger is None else clean_trigger(check_text(self.trigger, "trigger"))
        preset = get_preset("full" if self.preset is None or self.preset == "" else self.preset).name
        sampler = None if self.timestep_sampler in (None, "") else check_choice(
            self.timestep_sampler, TIMESTEP_SAMPLERS, "timestep sampler")
        numbers = check_settings(train_steps=self.steps, learning_rate=self.learning_rate, rank=self.rank,
                                 seed=0 if self.seed is None else self.seed,
                                 blocks_to_swap=0 if self.blocks_to_swap is None else self.blocks_to_swap,
                                 budget_s=self.budget_s)
        return replace(self, caption=caption, trigger=trigger, edit_caption=edit_caption, preset=preset,
                       timestep_sampler=sampler,
                       steps=numbers.get("train_steps"), learning_rate=numbers.get("learning_rate"),
                       rank=numbers.get("rank"), seed=numbers["seed"], blocks_to_swap=numbers["blocks_to_swap"],
                       budget_s=numbers.get("budget_s"), fp8=check_flag(self.fp8, "fp8 checkbox"),
                       gradient_checkpointing=check_flag(self.gradient_checkpointing,
                                                         "gradient checkpointing checkbox"))


def generate_settings(steps=None, guidance_scale=None, flow_shift=None, lora_scale=None, seed=None,
                      method=None, sampler=None, guidance_scale_2=None, negative_prompt=None, step_cache=None,
                      step_cache_threshold=None, composite=None, feather=None, composite_region=None,
                      composite_margin=None) -> GenerateSettings:
    """`GenerateSettings` from a form's raw values (numbers as the UI or an API client sent them; None: the
    default): each held to its range (`maskedit.limits`) before any conversion, so NaN, 2**70 or 0 steps are a
    MaskEditError naming the setting, never a ValueError or OverflowError from int(); True or 10.5 steps are
    refused, never rounded; the method, sampler and step cache are names from their lists. guidance_scale_2 and
    step_cache_threshold None or "" (an empty form field): the same as guidance_scale / the cache's default.
    negative_prompt: "reference", "wan" or the text itself (None or "": the method's, "reference"). composite: a
    checkbox's value (None: off); composite_region: "boxes" or "mask"; feather / composite_margin: pixels."""
    from ..defaults import SAMPLERS, STEP_CACHES
    from ..method.composite import COMPOSITE_REGIONS
    from ..models.presets import GENERATION_METHODS

    defaults = GenerateSettings()
    method = defaults.method if method is None or method == "" else check_choice(method, GENERATION_METHODS,
                                                                                   "method")
    sampler = defaults.sampler if sampler is None or sampler == "" else check_choice(sampler, SAMPLERS, "sampler")
    step_cache = defaults.step_cache if step_cache is None or step_cache == "" else check_choice(
        step_cache, STEP_CACHES, "step cache")
    negative_prompt = check_text(negative_prompt, "negative prompt") if negative_prompt is not None else ""
    composite = check_flag(composite, "composite checkbox")
    region = defaults.composite_region if composite_region in (None, "") else check_choice(
        composite_region, COMPOSITE_REGIONS, "compositing region")

    def optional(name, value):
        return float(check(name, value)) if value is not None and value != "" else None

    return GenerateSettings(
        composite=composite, composite_region=region,
        feather=value_or_default("feather", feather, defaults.feather),
        composite_margin=value_or_default("composite_margin", composite_margin, defaults.composite_margin),
        guidance_scale_2=optional("guidance_scale_2", guidance_scale_2),
        step_cache_threshold=optional("step_cache_threshold", step_cache_threshold),
        negative_prompt=negative_prompt or defaults.negative_prompt, step_cache=step_cache,
        steps=value_or_default("generation_steps", steps, defaults.steps),
        guidance_scale=float(value_or_default("guidance_scale", guidance_scale, defaults.guidance_scale)),
        flow_shift=float(value_or_default("flow_shift", flow_shift, defaults.flow_shift)),
        lora_scale=float(value_or_default("lora_scale", lora_scale, defaults.lora_scale)),
        seed=value_or_default("seed", seed, defaults.seed),
        method=method, sampler=sampler)


@dataclass
class TrainView:
    """What the Train tab shows after each event: loss rows (raw + smoothed), a Markdown status (the phase and its
    progress), the raw loss points {"step", "loss"}, the LoRA files once there are some (else None), the phase and,
    while steps run, (step, steps) for a progress bar."""

    rows: list
    status: str
    points: dict
    files: list | None = None
    phase: str = "done"  # `progress.TrainProgress.phase`: starting, encoding, training, saving, checkpoint, done, stopped
    done_of: tuple[int, int] | None = None  # (steps done, of steps) once the run's steps are known


@dataclass
class GenerateResult:
    edited: str
    side_by_side: str
    report_markdown: str
    report: dict


def lora_files(folder) -> list[str]:
    """The LoRA files of a run folder (diffusers, ComfyUI, lora.json; a two-expert run's per-expert files) that
    exist."""
    from ..method.experts import expert_file_names
    from ..method.lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME

    folder = Path(folder)
    names = (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME, *expert_file_names())
    return [str(folder / n) for n in names if (folder / n).is_file()]


def checkpoint_losses(run_dir, stage: int) -> list:
    """The losses a run's stage checkpoint holds ([] when none)."""
    import json

    from ..method.training import CHECKPOINT_STATE

    path = Path(run_dir) / training.CHECKPOINTS_FOLDER / f"stage{stage}" / CHECKPOINT_STATE
    try:
        return [float(v) for v in json.loads(path.read_text()).get("losses", [])]
    except (OSError, ValueError):
        return []
