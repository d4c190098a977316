"""What the session service takes and gives: the GPU calls it is handed, the Train tab's values, what a
training view and a generation return, and two readers of a run folder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from ..method import training
from ..defaults import DEFAULT_TRIGGER
from ..errors import MaskEditError
from ..limits import check, value_or_default
from ..models.presets import GenerateSettings
from .runs import ChunkRequest


@dataclass
class GpuCalls:
    """The GPU work the service needs; the app passes `@spaces.GPU` wrappers, tests plain functions.

    train_chunk(ChunkRequest) → iterator of `studio.progress` events (one call's worth of training);
    generate(prepared_dir, edited_frame, caption, out_dir, settings, **options) → iterator of generation dicts
    (`studio.generation.run_generation` without the pipe); image_mask(frame, points, labels) → bool (H, W);
    segment_clip(frames, points, labels, margin) → `segmentation.Segmentation`; caption(image) → str."""

    train_chunk: Callable[[ChunkRequest], Iterator]
    generate: Callable[..., Iterator[dict]]
    image_mask: Callable
    segment_clip: Callable
    caption: Callable


@dataclass
class TrainInputs:
    """The Train tab's values: the caption of the ORIGINAL first frame ("" = captioned automatically when
    training starts, `Studio.training_captions`), the trigger, the preset and what the user changed of it
    (None: the preset's), the seed, the seconds per GPU call (None: the app's) and the caption of the EDITED
    first frame when known (recorded in lora.json; never trained on)."""

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

    def cleaned(self) -> "TrainInputs":
        """Captions and trigger stripped (an empty caption stays empty: it is made automatically)."""
        caption = str(self.caption or "").strip()
        edit_caption = str(self.edit_caption or "").strip() or None
        trigger = DEFAULT_TRIGGER if self.trigger is None else str(self.trigger).strip()
        return replace(self, caption=caption, trigger=trigger, edit_caption=edit_caption)


def generate_settings(steps=None, guidance_scale=None, flow_shift=None, lora_scale=None, seed=None,
                      method=None, sampler=None, guidance_scale_2=None) -> GenerateSettings:
    """`GenerateSettings` from a form's raw values (numbers as the UI or an API client sent them; None: the
    default): each held to its range (`maskedit.limits`) before any conversion, so NaN, 2**70 or 0 steps are a
    MaskEditError naming the setting, never a ValueError or OverflowError from int(). guidance_scale_2 None or
    "" (an empty form field): the same as guidance_scale."""
    defaults = GenerateSettings()
    given = guidance_scale_2 is not None and guidance_scale_2 != ""
    low_noise = float(check("guidance_scale_2", guidance_scale_2)) if given else None
    return GenerateSettings(
        guidance_scale_2=low_noise,
        steps=value_or_default("generation_steps", steps, defaults.steps),
        guidance_scale=float(value_or_default("guidance_scale", guidance_scale, defaults.guidance_scale)),
        flow_shift=float(value_or_default("flow_shift", flow_shift, defaults.flow_shift)),
        lora_scale=float(value_or_default("lora_scale", lora_scale, defaults.lora_scale)),
        seed=value_or_default("seed", seed, defaults.seed),
        method=method or defaults.method, sampler=sampler or defaults.sampler)


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
