"""The planner's figures without the planner: peak GPU memory per preset and model, the preset that fits a
card, and the seconds a GPU call needs, read from `maskedit/models/plans.json` (torch-free, so the app shows them
at once and `--help` stays light).

    lookup("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "24gb")["peak_gpu_gib"]
    summary_line(model, "24gb", memory_gb=24)   # "needs ≈ 19.8 GB of GPU memory (planner estimate, …);
                                                 #  fits your 24 GB card"
    cheapest_fitting(model, memory_gb=24)        # "24gb", or None when no preset fits
    step_seconds(entry, "training step", zerogpu.SIZES["large"].card)   # seconds of one step on a ZeroGPU call
    call_peak_bytes(entry, "generation")         # what one generation call needs on the GPU

The table holds one `planner.Plan.to_dict()` per model and preset, at the preset's frames and size on that
model (`scripts/write_plans.py` writes it; `tests/test_estimates.py` proves it is not stale). Its figures are
the dry run's: estimates, not measurements on a GPU. Memory is compared with a card in decimal GB, as cards
are sold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .cards import CARDS, Card
from .zerogpu import CARD as ZEROGPU_CARD
from ..defaults import DEFAULT_MODEL_ID, TINY

PLANS_FILE = Path(__file__).with_name("plans.json")
TABLE_FORMAT = 1
GB = 1e9
GIB = 1024**3
PRESET_ORDER = ("full", "24gb", "zerogpu", "low-cost")
"""Quickest first: the order `cheapest_fitting` tries (as `planner.cheapest_fitting_preset`)."""
ESTIMATE_NOTE = "planner estimate, not yet measured on a GPU"


@dataclass(frozen=True)
class Calibration:
    """A published, measured step time of a setting the planner can dry-run: the utilisation it implies is
    the planner's FLOPs for that step / (the measured seconds x the card's dense bf16 peak)."""

    source: str
    card: str  # a key of cards.CARDS
    setting: str
    seconds_per_step: float
    num_frames: int
    width: int
    height: int
    guidance_scale: float
    planner_flops: int  # the planner's "denoising step" (CFG: two passes) at that setting (tests/test_estimates.py)

    @property
    def utilisation(self) -> float:
        return self.planner_flops / (self.seconds_per_step * CARDS[self.card].bf16_tflops * 1e12)


CALIBRATION = Calibration(
    source="ModelTC/LightX2V README, \"Cross-Framework Performance Comparison (H100)\" (updated 2025-12-01), "
           "row Diffusers: 9.77 s/it",
    card="h100", setting="Wan2.1-I2V-14B-480P, 81 frames at 832x480, 40 steps with CFG, diffusers in bf16",
    seconds_per_step=9.77, num_frames=81, width=832, height=480, guidance_scale=5.0,
    planner_flops=3_381_109_793_751_040,
)
UTILISATION = round(CALIBRATION.utilisation, 2)
"""Fraction of a card's dense bf16 peak a step reaches (0.35): the utilisation implied by the measured step
time closest to how MaskEdit runs Wan — diffusers' own transformer, SDPA, bf16, one GPU — against the planner's
FLOPs for that step (`CALIBRATION`; benchmarks/RESULTS.md compares every published figure found: other stacks
reach 0.37-0.65 with fused or int8/fp8 attention). Measured on an H100 and for inference: taking it for
training steps, fp8 storage and a Blackwell card is an assumption until a GPU run of ours measures them."""


@lru_cache(maxsize=1)
def load_table() -> dict:
    """The whole table: {"format", "generated_by", "plans": {model: {preset: entry}}}; empty plans if missing."""
    try:
        table = json.loads(PLANS_FILE.read_text())
    except FileNotFoundError:
        return {"format": TABLE_FORMAT, "plans": {}}
    if table.get("format") != TABLE_FORMAT:
        raise ValueError(f"{PLANS_FILE.name} has format {table.get('format')!r}, expected {TABLE_FORMAT}; "
                         "run scripts/write_plans.py")
    return table


def table_entry(plan) -> dict:
    """The table's entry for a `planner.Plan`: its `to_dict()` as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(plan.to_dict(), ensure_ascii=False))


def models() -> list[str]:
    """The models the table holds (hub ids)."""
    return list(load_table()["plans"])


def lookup(model: str, preset: str) -> dict | None:
    """The entry for `model` (a hub id in the table) and `preset` (a name), or None when the table has none."""
    return load_table()["plans"].get(str(model), {}).get(str(preset))


def peak_gb(entry: dict) -> float:
    """An entry's peak GPU memory in decimal GB (as cards are sold)."""
    return entry["peak_gpu_gib"] * GIB / GB


def fits(entry: dict, memory_gb: float) -> bool:
    """True when the entry's largest phase fits `memory_gb` decimal GB (as `planner.Plan.fits`)."""
    return entry["peak_gpu_gib"] * GIB <= memory_gb * GB


def cheapest_fitting(model: str, memory_gb: float) -> str | None:
    """The quickest preset (PRESET_ORDER) whose table peak fits `memory_gb` on `model`; None if none does."""
    for name in PRESET_ORDER:
        entry = lookup(model, name)
        if entry is not None and fits(entry, memory_gb):
            return name
    return None


def summary_line(model: str, preset: str, memory_gb: float | None = None) -> str:
    """"needs ≈ 19.8 GB of GPU memory (planner estimate, not yet measured on a GPU); fits your 24 GB card".

    The tiny model needs no plan: the line says so and what the default real model would need. A model the
    table lacks (a local folder) gets a line saying there is no estimate."""
    if model == TINY:
        real = DEFAULT_MODEL_ID if DEFAULT_MODEL_ID in models() else next(iter(models()), None)
        entry = lookup(real, preset) if real else None
        if entry is None:
            return "the tiny model needs no plan (it runs anywhere)"
        return (f"the tiny model needs no plan; the real {short_name(real)} would need ≈ {peak_gb(entry):.1f} GB "
                f"of GPU memory with this preset ({ESTIMATE_NOTE})")
    entry = lookup(model, preset)
    if entry is None:
        return f"no memory estimate for {short_name(model)} with the {preset} preset (the planner's table lacks it)"
    text = f"needs ≈ {peak_gb(entry):.1f} GB of GPU memory ({ESTIMATE_NOTE})"
    if memory_gb is None:
        return text
    if fits(entry, memory_gb):
        return f"{text}; fits your {memory_gb:g} GB card"
    better = cheapest_fitting(model, memory_gb)
    advice = f"the {better} preset fits" if better else "no preset fits it at the default size"
    return f"{text}; does not fit your {memory_gb:g} GB card ({advice})"


def fit_warning(model: str, preset: str, free_bytes: int) -> str | None:
    """None when `preset` on `model` fits `free_bytes` of free GPU memory (or the table has no figure), else
    a warning naming the quickest preset that fits, as `planner.check_cuda_fits` says it."""
    entry = lookup(model, preset)
    if entry is None or entry["peak_gpu_gib"] * GIB <= free_bytes:
        return None
    free_gb = free_bytes / GB
    better = cheapest_fitting(model, free_gb)
    advice = (f"the {better} preset needs ≈ {peak_gb(lookup(model, better)):.1f} GB and fits" if better else
              "no preset fits: use fewer frames or a smaller size")
    return (f"the {preset} preset needs ≈ {peak_gb(entry):.1f} GB of GPU memory ({ESTIMATE_NOTE}) but "
            f"{free_gb:.1f} GB are free on the GPU; {advice}")


# ----- seconds of GPU work


def latent_tokens(num_frames: int, width: int, height: int) -> int:
    """Transformer tokens of a clip: latent frames ((F − 1)/4 + 1) × (H/16) × (W/16) (Wan: 8x VAE, 2x2 patches)."""
    return ((int(num_frames) - 1) // 4 + 1) * (int(height) // 16) * (int(width) // 16)


def step_flops(entry: dict, phase: str, num_frames: int | None = None, width: int | None = None,
               height: int | None = None) -> float:
    """FLOPs of one step of `phase` ("training step" or "denoising step") for a clip of num_frames x width x
    height, from the entry's figure at its own size scaled by the tokens one step sees (a training window's
    frames where the preset trains on windows). Linear in tokens: attention grows faster, so a clip much
    larger than the entry's is underestimated (the table's sizes are the ones the presets use)."""
    flops = entry["phase_details"][phase]["flops"]
    if num_frames is None and width is None and height is None:
        return float(flops)
    own_w, own_h = (int(v) for v in entry["size"].split("x"))
    frames = int(num_frames or entry["frames"])
    window = entry["settings"].get("window") or 0
    if phase == "training step" and window:
        frames, own_frames = min(frames, window), min(entry["frames"], window)
    else:
        own_frames = entry["frames"]
    ratio = latent_tokens(frames, width or own_w, height or own_h) / latent_tokens(own_frames, own_w, own_h)
    return flops * ratio


def step_seconds(entry: dict, phase: str, card: Card = ZEROGPU_CARD, **clip) -> float:
    """Seconds of one step of `phase` on `card` (a ZeroGPU call size is a card: `zerogpu.SIZES[size].card`):
    FLOPs / (its dense bf16 peak × UTILISATION). clip: num_frames / width / height when not the entry's."""
    return step_flops(entry, phase, **clip) / flops_per_second(card)


def flops_per_second(card: Card) -> float:
    """The rate the estimates assume on `card`: its dense bf16 peak × UTILISATION."""
    return card.bf16_tflops * 1e12 * UTILISATION


# ----- what one GPU call holds

CALL_PHASES = {
    "training": ("encode prompts/images", "VAE encode", "training step"),
    "generation": ("encode prompts/images", "VAE encode", "denoising step", "VAE decode"),
}
"""The planner's phases one call of each kind runs: a training chunk encodes its samples, then trains; a
render (or a preview) encodes the prompt, image and condition, denoises and decodes."""


def call_peak_bytes(entry: dict, kind: str, preview: bool = False) -> int:
    """Peak GPU bytes of one call of `kind` ("training" | "generation") by `entry`'s plan: its largest phase.
    A preview stacks a speed LoRA: its factors are added when the entry's preset stacks none."""
    if kind not in CALL_PHASES:
        raise ValueError(f"unknown call kind {kind!r}; one of {', '.join(CALL_PHASES)}")
    phases = entry["phase_details"]
    peak = max(phases[name]["peak_gpu_gib"] for name in CALL_PHASES[kind] if name in phases) * GIB
    if preview and not entry["settings"].get("speed_lora"):
        peak += entry["checks"].get("speed_lora_gpu_bytes", 0)
    return int(peak)


def resident_bytes(entry: dict) -> int:
    """GPU bytes the entry's model holds once placed with its preset's memory settings, before any work (what
    ZeroGPU moves to the GPU at the start of every call when the model was placed so at start-up)."""
    return int(entry["checks"]["resident_gpu_bytes"])


def short_name(model: str) -> str:
    """A hub id without its owner and "-Diffusers": "Wan2.1-I2V-14B-480P"."""
    return str(model).rsplit("/", 1)[-1].removesuffix("-Diffusers")
