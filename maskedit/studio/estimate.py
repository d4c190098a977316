"""The Train tab's memory estimate, the warning before a run that will not fit the GPU, and the seconds a
ZeroGPU call asks for — all from the planner's precomputed table (`maskedit.models.estimates`), never a live dry run
(one takes tens of seconds on a CPU).

    studio.estimate_line("24gb")           # "**Estimate** — 24gb on Wan2.1-I2V-14B-480P (49 frames, 832x480): …"
    studio.memory_warning(inputs)          # None, or "the full preset needs ≈ 74.3 GB … the 24gb preset … fits"
    training_step_seconds(model, "zerogpu", "large", frames=33, width=640, height=368)
    generation_call_seconds(model, prepared_dir, settings)   # ZeroGPU duration of one render (raises if over the limit)

A warning never blocks: the figures are estimates (not yet measured on a GPU) and the user may know better
(memory another process is about to free, settings of their own), so the run goes on, the warning stays on
the status line, and the preset that fits is named for the next try. A real out-of-memory error is caught and
explained by the app anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..models import estimates
from ..errors import MaskEditError
from ..models.presets import get_preset

TRAIN_CALL_OVERHEAD_S = 40
"""Seconds of a training call besides its steps: the model's transfer to the GPU and the clip's encoding (the
allowance `ChunkRequest.duration_s` has always added)."""
GENERATION_CALL_OVERHEAD_S = 30
"""Seconds of a generation call besides its FLOPs: model transfer, loading the LoRA, writing the video."""
FIRST_STEP_MARGIN = 1.5
"""A call must hold its first step with room to spare: the chunk itself stops 1.5 steps before its budget."""
TINY_SECONDS_PER_STEP = 6
"""Generation seconds per step asked for a model the table lacks (the tiny model): what the app always asked."""


def table_model(model_name: str | None) -> str | None:
    """The table's model for a loaded model's name: itself when the table has it, else the hub id of the base
    its name stands for (`bases.base_for_name`: a local Wan2.1-720P folder → the 720P hub id); None for the
    tiny models, bases the table lacks and None (no model loaded)."""
    from ..models.bases import base_for_name
    from ..defaults import TINY

    if model_name is None:
        return None
    if model_name in estimates.models():
        return model_name
    if model_name == TINY or str(model_name).startswith("tiny"):
        return None
    hub_id = base_for_name(model_name).hub_id
    return hub_id if hub_id in estimates.models() else None


def free_gpu_bytes() -> int | None:
    """Free memory on the CUDA GPU now (`torch.cuda.mem_get_info`), or None without CUDA and on ZeroGPU (where
    CUDA must not be touched outside a call, and each call gets a card of a known size: `gpu_memory`)."""
    if os.environ.get("SPACES_ZERO_GPU"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return int(free)


def gpu_memory() -> tuple[float | None, str]:
    """(decimal GB of the GPU this app trains on, words for it): the CUDA card's total memory; on ZeroGPU (no
    CUDA outside a call) the size of the card a call gets; (None, "no GPU") on a CPU."""
    if os.environ.get("SPACES_ZERO_GPU"):
        large, xlarge = estimates.ZEROGPU_MEMORY_GB["large"], estimates.ZEROGPU_MEMORY_GB["xlarge"]
        return large, f"ZeroGPU: {large:g} GB per call ({xlarge:g} GB when a preset needs a whole card)"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        memory_gb = props.total_memory / estimates.GB
        return memory_gb, f"{props.name}, {memory_gb:.0f} GB"
    return None, "no GPU on this machine (training runs on the CPU: only the tiny model is practical)"


def zerogpu_size(preset_name: str, is_tiny: bool) -> str:
    """The ZeroGPU size a preset's training call takes (as `Studio.gpu_size`): half a card ("large") unless
    the 14B model trains with every block resident in bf16 ("xlarge")."""
    preset = get_preset(preset_name)
    return zerogpu_size_for(preset.blocks_to_swap, preset.fp8, is_tiny)


def zerogpu_size_for(blocks_to_swap: int, fp8: bool, is_tiny: bool) -> str:
    """"xlarge" (a whole card) for the 14B model with every block resident in bf16; "large" (half a card) for
    the tiny model and when blocks are swapped or stored in fp8."""
    return "large" if is_tiny or blocks_to_swap or fp8 else "xlarge"


class Estimates:
    """The Studio's estimate methods (mixed into `studio.service.Studio`; uses `model_name` and `is_tiny`)."""

    def preset(self, name: str):
        """The preset `name` adapted to the loaded base (`bases.adapt_preset`: sizes on a 720P base, resident
        blocks per expert on Wan2.2-A14B): what the Train tab shows and starts from."""
        from ..models.bases import adapt_preset, base_for_name

        return adapt_preset(get_preset(name), base_for_name(self.model_name))

    model_name: str
    is_tiny: bool

    def estimate_line(self, preset_name: str) -> str:
        """Markdown for the Train tab: the selected preset's estimated peak GPU memory on the loaded model and
        whether it fits this machine's GPU."""
        memory_gb, gpu_words = gpu_memory()
        if os.environ.get("SPACES_ZERO_GPU"):
            memory_gb = estimates.ZEROGPU_MEMORY_GB[zerogpu_size(preset_name, self.is_tiny)]
        model = table_model(self.model_name)
        if self.is_tiny or model is None:
            line = estimates.summary_line(estimates.TINY if self.is_tiny else self.model_name, preset_name)
            return f"**Estimate** — {line}. GPU: {gpu_words}."
        entry = estimates.lookup(model, preset_name)
        where = f" ({entry['frames']} frames, {entry['size']})" if entry else ""
        line = estimates.summary_line(model, preset_name, memory_gb)
        return f"**Estimate** — {preset_name} on {estimates.short_name(model)}{where}: {line}. GPU: {gpu_words}."

    def memory_warning(self, preset_name: str, blocks_to_swap: int | None = None,
                       fp8: bool | None = None) -> str | None:
        """With a CUDA GPU, before a training run: None when the preset's estimated peak fits the memory free
        now, else a warning naming the preset that fits. None on the tiny model, without CUDA, and when the
        user's memory settings (blocks swapped, fp8) are not the preset's (the table has no figure for them)."""
        model = None if self.is_tiny else table_model(self.model_name)
        if model is None:
            return None
        preset = self.preset(preset_name)  # adapted to the base, as the Train tab shows it
        if (blocks_to_swap is not None and int(blocks_to_swap) != preset.blocks_to_swap) or \
                (fp8 is not None and bool(fp8) != preset.fp8):
            return None
        free = free_gpu_bytes()
        if free is None:
            return None
        warning = estimates.fit_warning(model, preset_name, free)
        if warning is None:
            return None
        return f"⚠️ {warning}. Training anyway: stop it and pick that preset if it runs out of memory."


def training_step_seconds(model_name: str, preset_name: str, gpu_size: str, num_frames: int | None = None,
                          width: int | None = None, height: int | None = None) -> float | None:
    """Estimated seconds of one training step of `preset_name` on a ZeroGPU call of `gpu_size`, from the
    table's FLOPs (scaled to the clip; `estimates.step_seconds`); None when the table lacks the model."""
    model = table_model(model_name)
    entry = estimates.lookup(model, preset_name) if model else None
    if entry is None:
        return None
    return estimates.step_seconds(entry, "training step", estimates.ZEROGPU_CARD,
                                  estimates.ZEROGPU_COMPUTE_SHARE[gpu_size], num_frames=num_frames, width=width,
                                  height=height)


def training_call_seconds(budget_s: float, step_s: float | None) -> int:
    """The ZeroGPU duration of one training call: its time budget plus TRAIN_CALL_OVERHEAD_S; when the
    planner's figure says one step is longer than the budget, long enough for one step (the chunk always
    makes one). Raises MaskEditError when one step cannot fit a call (`estimates.ZEROGPU_CALL_LIMIT_S`)."""
    seconds = float(budget_s)
    if step_s is not None:
        needed = FIRST_STEP_MARGIN * step_s
        if TRAIN_CALL_OVERHEAD_S + needed > estimates.ZEROGPU_CALL_LIMIT_S:
            raise MaskEditError(
                f"one training step of this preset needs ≈ {step_s:.0f} s of GPU (planner estimate), more than one "
                f"ZeroGPU call allows ({estimates.ZEROGPU_CALL_LIMIT_S} s); use the zerogpu preset or a shorter clip")
        seconds = max(seconds, needed)
    return int(seconds + TRAIN_CALL_OVERHEAD_S)


def clip_of(prepared_dir) -> tuple[int, int, int] | None:
    """(frames, width, height) of a prepared clip folder from its JSON alone (no arrays read); None if unreadable."""
    from ..workflow.prepare import PREPARED_JSON

    try:
        info = json.loads((Path(prepared_dir) / PREPARED_JSON).read_text())
        return int(info["frames"]), int(info["width"]), int(info["height"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def generation_call_seconds(model_name: str | None, prepared_dir, settings, gpu_size: str = "large",
                            window_frames: int | None = None) -> int:
    """The ZeroGPU duration of one render: GENERATION_CALL_OVERHEAD_S + its FLOPs (steps x the table's
    denoising step, with or without CFG as `settings.guidance_scale` says, plus the encodes and the VAE decode,
    scaled to the clip) at the assumed utilisation of the call's share of the card. A model the table lacks
    (the tiny model) asks TINY_SECONDS_PER_STEP per step as before. Raises MaskEditError, before the call, when
    the render cannot fit one call (`estimates.ZEROGPU_CALL_LIMIT_S`): a render is one call, not chunked.
    window_frames: a clip longer than this is rendered one window per call (`workflow.long_clip`): a call is one
    window's."""
    steps = int(settings.steps)
    model = table_model(model_name)
    clip = clip_of(prepared_dir)
    if clip and window_frames and clip[0] > window_frames:
        clip = (int(window_frames), *clip[1:])
    entry = _generation_entry(model, float(settings.guidance_scale) > 1.0, clip) if model else None
    if entry is None:
        return int(min(estimates.ZEROGPU_CALL_LIMIT_S, GENERATION_CALL_OVERHEAD_S + steps * TINY_SECONDS_PER_STEP))
    sizes = dict(zip(("num_frames", "width", "height"), clip)) if clip else {}
    rate = estimates.ZEROGPU_CARD.bf16_tflops * 1e12 * estimates.ZEROGPU_COMPUTE_SHARE[gpu_size] * \
        estimates.ASSUMED_UTILISATION
    per_step = estimates.step_flops(entry, "denoising step", **sizes) / rate
    fixed = sum(estimates.step_flops(entry, phase, **sizes) for phase in ("encode prompts/images", "VAE decode")
                if phase in entry["phase_details"]) / rate
    seconds = GENERATION_CALL_OVERHEAD_S + fixed + steps * per_step
    if seconds > estimates.ZEROGPU_CALL_LIMIT_S:
        fitting = int((estimates.ZEROGPU_CALL_LIMIT_S - GENERATION_CALL_OVERHEAD_S - fixed) // per_step)
        advice = f"use at most {fitting} steps, or " if fitting >= 1 else "use "
        raise MaskEditError(
            f"this render needs ≈ {seconds:.0f} s of GPU (planner estimate), more than one ZeroGPU call allows "
            f"({estimates.ZEROGPU_CALL_LIMIT_S} s); {advice}the zerogpu preset (4 distilled steps without CFG)")
    return int(seconds) + 1


def _generation_entry(model: str, cfg: bool, clip) -> dict | None:
    """The table entry whose denoising step matches the render best: same use of CFG (two transformer passes a
    step or one), then the same size when one has it."""
    entries = [estimates.lookup(model, name) for name in estimates.PRESET_ORDER]
    entries = [e for e in entries if e is not None and (e["settings"]["guidance_scale"] > 1.0) == cfg]
    if not entries:
        return None
    size = f"{clip[1]}x{clip[2]}" if clip else None
    return next((e for e in entries if e["size"] == size), entries[0])
