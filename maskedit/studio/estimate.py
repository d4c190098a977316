"""The Train tab's memory estimate, the warning before a run that will not fit the GPU, the ZeroGPU size each GPU
call takes and the seconds it asks for — all from the planner's precomputed table (`maskedit.models.estimates`),
never a live dry run (one takes tens of seconds on a CPU), and ZeroGPU's hardware (`maskedit.models.zerogpu`).

    studio.estimate_line("24gb")           # "**Estimate** — 24gb on Wan2.1-I2V-14B-480P (49 frames, 832x480): …"
    studio.memory_warning(inputs)          # None, or "the full preset needs ≈ 74.3 GB … the 24gb preset … fits"
    sizer = CallSizer(model, placement="zerogpu")
    sizer.size("training", "zerogpu")      # "large": the plan's peak fits half a card with the margin
    training_step_seconds(model, "zerogpu", "large", frames=33, width=640, height=368)
    generation_call_seconds(model, prepared_dir, settings, "large")   # the `duration` one render asks for

A warning never blocks: the figures are estimates (not yet measured on a GPU) and the user may know better
(memory another process is about to free, settings of their own), so the run goes on, the warning stays on
the status line, and the preset that fits is named for the next try. A real out-of-memory error is caught and
explained by the app anyway. On ZeroGPU a call no size can hold is refused before it is scheduled.

Seconds: what a call needs (its FLOPs at `estimates.UTILISATION` of its share of the card, plus overheads) is
what ZeroGPU must schedule; the `duration` asked of spaces is that divided by spaces' factor for the size
(`zerogpu.asked_seconds`: spaces schedules a `large` call for 1.5x what it asks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dataclasses import dataclass

from ..models import estimates, zerogpu
from ..errors import MaskEditError
from ..models.presets import get_preset

PLAN_MODEL_ENV = "MASKEDIT_PLAN_MODEL"
"""A real base (hub id) whose plan sizes the GPU calls of an app running the tiny model: the ZeroGPU tests run
the tiny model, and with this its calls take the sizes the real base's Space would (training with `full`:
xlarge; with `zerogpu`: large). Sizes only: durations stay the tiny model's."""
PERCEPTION_WORK_BYTES = 4e9
"""GPU bytes allowed for the work of a segmentation or caption call besides the weights (which are counted as
loaded): SAM2.1-Hiera-L's features of an 81-frame clip at its 1024x1024 input and the clip itself are ≈ 3 GB,
Florence-2's captioning far less. An allowance, not planned."""
PERCEPTION_SECONDS = {"image_mask": 20, "segment_clip": 120, "caption": 40}
"""Seconds a segmentation (one frame's mask; a whole clip) or caption call needs: allowances, not planned."""

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
    CUDA outside a call) a `large` call's memory, the size a call takes unless its plan needs more; (None,
    "no GPU") on a CPU."""
    if os.environ.get("SPACES_ZERO_GPU"):
        large, xlarge = zerogpu.SIZES["large"], zerogpu.SIZES["xlarge"]
        return large.memory_gb, (f"ZeroGPU: {large.memory_gb:g} GB per call ({xlarge.memory_gb:g} GB, at "
                                 f"{xlarge.quota_factor}x the quota, when a call's plan needs a whole card)")
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        memory_gb = props.total_memory / estimates.GB
        return memory_gb, f"{props.name}, {memory_gb:.0f} GB"
    return None, "no GPU on this machine (training runs on the CPU: only the tiny model is practical)"


CALL_KINDS = ("training", "generation", "preview", "segmentation", "caption")


@dataclass(frozen=True)
class CallSizer:
    """The ZeroGPU size of each GPU call, from the plan of the work it will do.

    model: the loaded model's name (a model the table lacks — the tiny one — has no plan: every call is
    "large", unless PLAN_MODEL_ENV names a stand-in). placement: the preset whose memory settings the weights
    were placed with once at start-up (ZeroGPU: `runtime.place_for_zerogpu`), None when each run places them;
    with a placement every call is planned with it (its weights are what every call holds). extra_bytes: the
    weights of other models moved to the GPU at start-up (segmenter, captioner): in every call too.
    default_preset: the preset of a call that names none (segmentation, captions, a render without one): the
    app's default where it runs (`zerogpu` on ZeroGPU, else `presets.DEFAULT_PRESET`)."""

    model: str | None
    placement: str | None = None
    extra_bytes: int = 0
    default_preset: str | None = None

    @property
    def plan_model(self) -> str | None:
        """The table's model whose plans size the calls (the stand-in for the tiny model; None: no plan)."""
        own = table_model(self.model)
        if own is None and str(self.model or "").startswith("tiny") and os.environ.get(PLAN_MODEL_ENV):
            return table_model(os.environ[PLAN_MODEL_ENV])
        return own

    def plan_preset(self, preset) -> str:
        """The preset whose plan a call of `preset` follows: the placement's when the weights were placed at
        start-up, else `preset` (else `default_preset`)."""
        from ..models.presets import DEFAULT_PRESET

        preset = getattr(preset, "name", preset)  # a `presets.Preset` or its name
        return self.placement or get_preset(preset or self.default_preset or DEFAULT_PRESET).name

    def peak_bytes(self, kind: str, preset: str | None = None) -> int | None:
        """Planned peak GPU bytes of one call of `kind` (CALL_KINDS) with `preset`; None without a plan."""
        if kind not in CALL_KINDS:
            raise MaskEditError(f"unknown GPU call kind {kind!r}; one of {', '.join(CALL_KINDS)}")
        model = self.plan_model
        entry = estimates.lookup(model, self.plan_preset(preset)) if model else None
        if entry is None:
            return None
        if kind in ("segmentation", "caption"):
            own = estimates.resident_bytes(entry) + PERCEPTION_WORK_BYTES
        else:
            own = estimates.call_peak_bytes(entry, "training" if kind == "training" else "generation",
                                            preview=kind == "preview")
        return int(own + self.extra_bytes)

    def size(self, kind: str, preset: str | None = None) -> str:
        """"large" when the call's planned peak fits half a card with `zerogpu.MEMORY_MARGIN`, else "xlarge";
        MaskEditError before any GPU time when not even a whole card holds it, naming the preset that fits.
        "large" without a plan (the tiny model)."""
        peak = self.peak_bytes(kind, preset)
        if peak is None:
            return "large"
        size = zerogpu.size_for_peak(peak)
        if size is not None:
            return size
        raise MaskEditError(
            f"this {kind} call needs ≈ {peak / estimates.GB:.1f} GB of GPU memory ({estimates.ESTIMATE_NOTE}), more "
            f"than a ZeroGPU call holds: at most {zerogpu.describe('xlarge')}; {self._fitting_advice(kind)}")

    def _fitting_advice(self, kind: str) -> str:
        """"the <preset> preset needs ≈ <peak> GB and fits a large call", or why none does."""
        model = self.plan_model
        for size in zerogpu.GPU_SIZES:
            for name in estimates.PRESET_ORDER:
                entry = estimates.lookup(model, name)
                if entry is None:
                    continue
                peak = CallSizer(self.model, name, self.extra_bytes, name).peak_bytes(kind, name)
                if zerogpu.size_for_peak(peak) == size:
                    placed = (f" (this Space placed its weights for the {self.placement} preset at start-up: run "
                              "it with that placement)") if self.placement and self.placement != name else ""
                    return f"the {name} preset needs ≈ {peak / estimates.GB:.1f} GB and fits a {size} call{placed}"
        return "no preset fits it: use a smaller clip"


class Estimates:
    """The Studio's estimate methods (mixed into `studio.service.Studio`; uses `model_name`, `is_tiny` and
    `sizer`)."""

    def preset(self, name: str):
        """The preset `name` adapted to the loaded base (`bases.adapt_preset`: sizes on a 720P base, resident
        blocks per expert on Wan2.2-A14B): what the Train tab shows and starts from."""
        from ..models.bases import adapt_preset, base_for_name

        return adapt_preset(get_preset(name), base_for_name(self.model_name))

    model_name: str
    is_tiny: bool
    sizer: CallSizer

    def estimate_line(self, preset_name: str) -> str:
        """Markdown for the Train tab: the selected preset's estimated peak GPU memory on the loaded model and
        whether it fits this machine's GPU; on ZeroGPU the size its training calls and renders take."""
        memory_gb, gpu_words = gpu_memory()
        model = table_model(self.model_name)
        if self.is_tiny or model is None:
            line = estimates.summary_line(estimates.TINY if self.is_tiny else self.model_name, preset_name)
            return f"**Estimate** — {line}. GPU: {gpu_words}."
        entry = estimates.lookup(model, preset_name)
        where = f" ({entry['frames']} frames, {entry['size']})" if entry else ""
        if os.environ.get("SPACES_ZERO_GPU"):
            line = self.zerogpu_line(preset_name)
        else:
            line = estimates.summary_line(model, preset_name, memory_gb)
        return f"**Estimate** — {preset_name} on {estimates.short_name(model)}{where}: {line}. GPU: {gpu_words}."

    def zerogpu_line(self, preset_name: str) -> str:
        """"training calls: large (≈ <peak> of <usable> GB planned at most); renders: …" for the Train tab."""
        parts = []
        for kind, words in (("training", "training calls"), ("generation", "renders")):
            try:
                size = self.sizer.size(kind, preset_name)
            except MaskEditError as error:
                return str(error)
            peak = self.sizer.peak_bytes(kind, preset_name)
            parts.append(f"{words}: {size} (≈ {peak / estimates.GB:.1f} of "
                         f"{zerogpu.usable_bytes(size) / estimates.GB:.1f} GB planned at most)")
        return "; ".join(parts) + f" ({estimates.ESTIMATE_NOTE})"

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
    return estimates.step_seconds(entry, "training step", zerogpu.SIZES[gpu_size].card, num_frames=num_frames,
                                  width=width, height=height)


def training_call_seconds(budget_s: float, step_s: float | None) -> int:
    """The seconds one training call needs on the GPU (what ZeroGPU must schedule): its time budget plus
    TRAIN_CALL_OVERHEAD_S; when the planner's figure says one step is longer than the budget, long enough for
    one step (the chunk always makes one). Raises MaskEditError when one step cannot fit a call
    (`zerogpu.CALL_LIMIT_S`). The `duration` to ask is `zerogpu.asked_seconds` of this."""
    seconds = float(budget_s)
    if step_s is not None:
        needed = FIRST_STEP_MARGIN * step_s
        if TRAIN_CALL_OVERHEAD_S + needed > zerogpu.CALL_LIMIT_S:
            raise MaskEditError(
                f"one training step of this preset needs ≈ {step_s:.0f} s of GPU (planner estimate), more than one "
                f"ZeroGPU call allows ({zerogpu.CALL_LIMIT_S} s); use the zerogpu preset or a shorter clip")
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
                            evaluations: float | None = None, window_frames: int | None = None) -> int:
    """The `duration` one render asks on a ZeroGPU call of `gpu_size` (`zerogpu.asked_seconds` of what it
    needs): GENERATION_CALL_OVERHEAD_S + its FLOPs (steps x the table's denoising step, with or without CFG as
    `settings.guidance_scale` says, plus the encodes and the VAE decode, scaled to the clip) at
    `estimates.UTILISATION` of the call's share of the card. A model the table lacks (the tiny model) needs
    TINY_SECONDS_PER_STEP per step. Raises MaskEditError, before the call, when the render cannot fit one
    call (`zerogpu.CALL_LIMIT_S`): a render is one call, not chunked. evaluations: denoising steps whose
    transformer passes run in full (None: those the settings' step cache runs, `step_cache.full_share`).
    window_frames: a clip longer than this is rendered one window per call (`workflow.long_clip`): a call is one
    window's."""
    from ..models.step_cache import full_share, model_key

    share, _ = full_share(getattr(settings, "step_cache", "off"), int(settings.steps),
                          getattr(settings, "step_cache_threshold", None), model_key(model_name))
    if evaluations is not None:
        share = float(evaluations) / int(settings.steps)
    steps = int(settings.steps) * share  # the steps whose evaluations run in full
    model = table_model(model_name)
    clip = clip_of(prepared_dir)
    if clip and window_frames and clip[0] > window_frames:
        clip = (int(window_frames), *clip[1:])
    entry = _generation_entry(model, float(settings.guidance_scale) > 1.0, clip) if model else None
    if entry is None:
        needed = min(zerogpu.CALL_LIMIT_S, GENERATION_CALL_OVERHEAD_S + steps * TINY_SECONDS_PER_STEP)
        return zerogpu.asked_seconds(needed, gpu_size)
    sizes = dict(zip(("num_frames", "width", "height"), clip)) if clip else {}
    rate = estimates.flops_per_second(zerogpu.SIZES[gpu_size].card)
    per_step = estimates.step_flops(entry, "denoising step", **sizes) / rate
    fixed = sum(estimates.step_flops(entry, phase, **sizes) for phase in ("encode prompts/images", "VAE decode")
                if phase in entry["phase_details"]) / rate
    seconds = GENERATION_CALL_OVERHEAD_S + fixed + steps * per_step
    if seconds > zerogpu.CALL_LIMIT_S:
        fitting = int((zerogpu.CALL_LIMIT_S - GENERATION_CALL_OVERHEAD_S - fixed) // (per_step * share))
        advice = f"use at most {fitting} steps, or " if fitting >= 1 else "use "
        raise MaskEditError(
            f"this render needs ≈ {seconds:.0f} s of GPU (planner estimate), more than one ZeroGPU call allows "
            f"({zerogpu.CALL_LIMIT_S} s); {advice}the zerogpu preset (4 distilled steps without CFG)")
    return zerogpu.asked_seconds(seconds, gpu_size)


def _generation_entry(model: str, cfg: bool, clip) -> dict | None:
    """The table entry whose denoising step matches the render best: same use of CFG (two transformer passes a
    step or one), then the same size when one has it."""
    entries = [estimates.lookup(model, name) for name in estimates.PRESET_ORDER]
    entries = [e for e in entries if e is not None and (e["settings"]["guidance_scale"] > 1.0) == cfg]
    if not entries:
        return None
    size = f"{clip[1]}x{clip[2]}" if clip else None
    return next((e for e in entries if e["size"] == size), entries[0])
