"""The planner's figures without the planner: peak GPU memory per preset and model, the preset that fits a
card, and the seconds a GPU call needs, read from `maskedit/models/plans.json` (torch-free, so the app shows them
at once and `--help` stays light).

    lookup("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "24gb")["peak_gpu_gib"]
    summary_line(model, "24gb", memory_gb=24)   # "needs ≈ 19.8 GB of GPU memory (planner estimate, …);
                                                 #  fits your 24 GB card"
    cheapest_fitting(model, memory_gb=24)        # "24gb", or None when no preset fits
    step_seconds(model, "zerogpu", "training step", ZEROGPU_CARD)

The table holds one `planner.Plan.to_dict()` per model and preset, at the preset's frames and size on that
model (`scripts/write_plans.py` writes it; `tests/test_estimates.py` proves it is not stale). Its figures are
the dry run's: estimates, not measurements on a GPU. Memory is compared with a card in decimal GB, as cards
are sold.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .cards import CARDS, Card
from ..defaults import DEFAULT_MODEL_ID, TINY

PLANS_FILE = Path(__file__).with_name("plans.json")
TABLE_FORMAT = 1
GB = 1e9
GIB = 1024**3
PRESET_ORDER = ("full", "24gb", "zerogpu", "low-cost")
"""Quickest first: the order `cheapest_fitting` tries (as `planner.cheapest_fitting_preset`)."""
ESTIMATE_NOTE = "planner estimate, not yet measured on a GPU"

ZEROGPU_CARD = CARDS["h200"]
"""The card behind ZeroGPU calls (REFERENCE.md: an H200; `large` is half of one, `xlarge` all of it)."""
ZEROGPU_MEMORY_GB = {"large": 70.0, "xlarge": 141.0}
"""GPU memory a ZeroGPU call of each size gets (REFERENCE.md), decimal GB."""
ZEROGPU_COMPUTE_SHARE = {"large": 0.5, "xlarge": 1.0}
"""Share of the card's throughput a call of each size gets: an assumption (half a card taken as half its
compute), not a measurement."""
ASSUMED_UTILISATION = 0.3
"""Fraction of the card's dense bf16 peak a step reaches. An ASSUMPTION, not a measurement (no GPU has run
MaskEdit yet): large-model training and inference typically reach 30-50% of peak; block streaming, fp8
casts and small windows lower it, so the low end. Replace it with a measured ratio once a GPU run exists."""
ZEROGPU_CALL_LIMIT_S = 300
"""The most seconds one ZeroGPU call asks for. ZeroGPU documents no per-call maximum (REFERENCE.md: "a few
minutes" in reports; spaces refuses a request above the visitor's quota as an illegal duration), and the
project's ZeroGPU stand-in grants at most this; a render whose estimate is longer is refused before its call."""


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


def step_seconds(entry: dict, phase: str, card: Card = ZEROGPU_CARD, share: float = 1.0, **clip) -> float:
    """Seconds of one step of `phase` on `share` of `card`: FLOPs / (dense bf16 peak × share ×
    ASSUMED_UTILISATION). clip: num_frames / width / height of the clip when not the entry's."""
    return step_flops(entry, phase, **clip) / (card.bf16_tflops * 1e12 * share * ASSUMED_UTILISATION)


def short_name(model: str) -> str:
    """A hub id without its owner and "-Diffusers": "Wan2.1-I2V-14B-480P"."""
    return str(model).rsplit("/", 1)[-1].removesuffix("-Diffusers")
