"""The base models MaskEdit edits with, what each offers (sizes, experts) and how presets adapt to it.

    base = base_for_pipeline(loaded.pipe, loaded.name)   # or base_for_name("Wan-AI/Wan2.2-I2V-A14B-Diffusers")
    sizes_for_base(base)                                  # [(1280, 720), (720, 1280), ...] for the size menu
    preset = adapt_preset(get_preset("full"), base)       # 832x480 → 1280x720 on a 720P base

| base | transformer | image encoder | how MaskEdit trains it |
|---|---|---|---|
| Wan2.1-I2V-14B-480P | one 14B | CLIP | one LoRA, t ~ U(0, 1) (METHOD.md §4) |
| Wan2.1-I2V-14B-720P | one 14B (same layout) | CLIP | the same, at 1280x720 |
| Wan2.2-I2V-A14B | two 14B experts, boundary 0.9 | none | one LoRA per expert, each on its own t range of the shifted distribution; CFG 3.5 / 3.5 (`maskedit.method.experts`) |

Wan2.2-TI2V-5B is refused at load time (`models.check_supported_layout`): it has no mask channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from .loading import DEFAULT_MODEL_ID, TINY, TINY_WAN22, WAN21_720P_MODEL_ID, WAN22_BOUNDARY_RATIO, WAN22_I2V_MODEL_ID
from .presets import NUM_BLOCKS_14B, Preset

SIZES_480P = ((832, 480), (480, 832))
SIZES_720P = ((1280, 720), (720, 1280))
DEFAULT_480P_SIZE = (832, 480)


@dataclass(frozen=True)
class Base:
    """What MaskEdit knows of a base model. Sizes are (width, height) in pixels, landscape first."""

    key: str
    label: str
    hub_id: str | None
    sizes: tuple[tuple[int, int], ...]
    native_size: tuple[int, int]  # the size presets use in place of 832x480
    two_experts: bool = False
    boundary_ratio: float | None = None
    training: str = "one LoRA on the whole timestep range (METHOD.md §4)"

    def banner(self) -> str:
        """One line naming the base for banners and logs."""
        experts = f", two experts (boundary {self.boundary_ratio:g})" if self.two_experts else ""
        return f"base: {self.label}{experts}; sizes {', '.join(f'{w}x{h}' for w, h in self.sizes)}"


WAN21_480P = Base("wan2.1-480p", "Wan2.1-I2V-14B-480P", DEFAULT_MODEL_ID, SIZES_480P, DEFAULT_480P_SIZE)
WAN21_720P = Base(
    "wan2.1-720p", "Wan2.1-I2V-14B-720P", WAN21_720P_MODEL_ID, SIZES_720P + SIZES_480P, (1280, 720),
)
EXPERT_TRAINING = (
    "one LoRA per expert (files _high_noise / _low_noise), each trained only on its own timestep range, "
    "alternating step by step, the inactive expert offloaded (maskedit.method.experts)"
)
WAN22_A14B = Base(
    "wan2.2-a14b", "Wan2.2-I2V-A14B", WAN22_I2V_MODEL_ID, SIZES_480P + SIZES_720P, DEFAULT_480P_SIZE,
    two_experts=True, boundary_ratio=WAN22_BOUNDARY_RATIO, training=EXPERT_TRAINING,
)
TINY_BASE = Base("tiny", "built-in tiny model (random weights)", None, ((64, 64),), DEFAULT_480P_SIZE)
TINY_WAN22_BASE = Base(
    "tiny-wan2.2", "built-in tiny two-expert model (random weights)", None, ((64, 64),), DEFAULT_480P_SIZE,
    two_experts=True, boundary_ratio=WAN22_BOUNDARY_RATIO, training=EXPERT_TRAINING,
)
BASES: dict[str, Base] = {b.key: b for b in (WAN21_480P, WAN21_720P, WAN22_A14B, TINY_BASE, TINY_WAN22_BASE)}


def base_for_name(name: str) -> Base:
    """The base a model name (hub id, folder name, `tiny`, `tiny-wan2.2`) stands for, judged by its name;
    a name that says nothing (a plain folder) is taken as Wan2.1-480P — `base_for_pipeline` looks inside."""
    if name == TINY:
        return TINY_BASE
    if name == TINY_WAN22:
        return TINY_WAN22_BASE
    lowered = str(name).lower()
    if "wan2.2" in lowered or "wan2_2" in lowered or "a14b" in lowered:
        return WAN22_A14B
    if "720p" in lowered:
        return WAN21_720P
    return WAN21_480P


def base_for_pipeline(pipe, name: str = "") -> Base:
    """The base of a loaded pipeline: two experts (`transformer_2` and `boundary_ratio`) mean Wan2.2-A14B
    (or the tiny two-expert model); otherwise the name tells 720P from 480P."""
    two_experts = getattr(pipe, "transformer_2", None) is not None and pipe.config.boundary_ratio is not None
    by_name = base_for_name(name)
    if two_experts:
        return by_name if by_name.two_experts else WAN22_A14B
    return by_name if not by_name.two_experts else WAN21_480P


def sizes_for_base(base: Base) -> list[tuple[int, int]]:
    """(width, height) choices for the size menu of this base, landscape first."""
    return list(base.sizes)


WAN22_GUIDANCE = 3.5
"""Wan2.2-I2V-A14B's own guidance scale for both experts (its repository's `sample_guide_scale` (3.5, 3.5))."""


def two_expert_defaults(preset: Preset) -> Preset:
    """Wan2.2's own settings on a two-expert base: each expert trains on the shifted timestep distribution (the
    base's flow shift) restricted to its σ range, as musubi-tuner (`--preserve_distribution_shape`) and
    diffusion-pipe do (`method.experts.sample_in_range`: inverse CDF); CFG 3.5 / 3.5 where the preset uses CFG
    (a CFG-distilled preset keeps CFG 1); no step cache (its calibrations are Wan2.1's). A preset already set
    otherwise (a sampler other than the method's uniform, a guidance_scale_2) keeps what it has."""
    changes = dict(step_cache="off", step_cache_threshold=None)
    if preset.timestep_sampler == "uniform":
        changes.update(timestep_sampler="shifted")  # its shift: the preset's flow shift (`Preset.train_config`)
    if preset.guidance_scale > 1.0 and preset.guidance_scale_2 is None:
        changes.update(guidance_scale=WAN22_GUIDANCE, guidance_scale_2=WAN22_GUIDANCE)
    return preset.with_overrides(**changes)


def adapt_preset(preset: Preset, base: Base) -> Preset:
    """The preset with its clip size adapted to the base: where the preset uses the 480P size (832x480 or
    480x832) a base with another native size gets that size in the same orientation; smaller sizes chosen
    for a budget (zerogpu's 640x368) stay as they are. On a two-expert base (Wan2.2-A14B, and its tiny stand-in)
    the preset takes Wan2.2's own training distribution and guidance (`two_expert_defaults`), and one that swaps
    blocks keeps half as many resident per expert, since each expert's streamer keeps its own resident blocks
    on the GPU. Tiny bases keep their size."""
    if base.two_experts:
        preset = two_expert_defaults(preset)
    if base.two_experts and preset.blocks_to_swap and base not in (TINY_BASE, TINY_WAN22_BASE):
        # both experts' resident blocks stay on the GPU (each streams its own): half as many each keeps the
        # preset's memory plan (24gb: 8 resident blocks → 4 per expert; planner: benchmarks/RESULTS.md)
        resident = max(1, preset.blocks_resident // 2)
        preset = preset.with_overrides(blocks_to_swap=NUM_BLOCKS_14B - resident)
    if base in (TINY_BASE, TINY_WAN22_BASE) or base.native_size == DEFAULT_480P_SIZE:
        return preset
    width, height = base.native_size
    if (preset.width, preset.height) == DEFAULT_480P_SIZE:
        return preset.with_overrides(width=width, height=height)
    if (preset.height, preset.width) == DEFAULT_480P_SIZE:
        return preset.with_overrides(width=height, height=width)
    return preset
