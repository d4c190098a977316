"""Named settings of a whole edit (training + generation), one place for the CLI and the app.

    preset = get_preset("low-cost")
    print(preset.describe())                      # every setting, one per line
    config = preset.train_config(seed=3)          # a training.TrainConfig with the preset's settings

Presets (METHOD.md §4, §6, §7; memory/time figures are targets until benchmarks/RESULTS.md has
GPU measurements):
- `full`: METHOD.md's settings: whole 49-frame 832x480 clip, 100 steps, rank 16, 30 steps at CFG 5.
- `24gb`: the same edit on a 24 GB card: 32 of 40 blocks streamed from CPU, checkpointed activations offloaded,
  the encoders in CPU memory while idle, VAE tiling (the reference code's 49-frame setting: 21.5 GB on an
  RTX 4090; planner: 21.3 GB, the training step; 27.6 GB with the encoders left on the GPU).
- `low-cost`: 9-frame windows (stride 4) + 38 of 40 blocks swapped + fp8 base weights + checkpointed
  activations offloaded to CPU + the encoders in CPU memory while idle; target peak ≤ 8 GB (the paper measured
  7.6 GB for training; planner: 7.0 GB training step, 8.05 GB for the untiled condition VAE encode).
- `offload_encoders` (24gb, low-cost, zerogpu): umT5, CLIP and the VAE stay in CPU memory and come to the GPU
  only while they run (umT5 and CLIP one layer at a time; `offload.EncoderOffload`); results are bitwise the
  same. Off in `full` (an 80 GB card holds them).
- `zerogpu`: 33 frames at 640x368, 9-frame windows, 60 steps, a step/CFG-distilled speed LoRA for
  4-step generation at CFG 1, fp8 base weights and the encoders in CPU memory while idle, so that every call
  fits ZeroGPU's `large` size (half a card: `maskedit.models.zerogpu`) on Wan2.1-480P/720P and Wan2.2-A14B
  with its margin (planner: ≈ 23 GB on Wan2.1, ≈ 36 GB on Wan2.2, whose two experts' bf16 weights alone would
  not fit); `xlarge` would cost each call twice the quota. fp8 changes no FLOP count (the cast is
  memory traffic), so the planner's time is the same with or without it; memory decides. Target: the whole
  edit within a few GPU-minutes.
- `window_frames`: a clip longer than this is edited window by window (METHOD.md §7b): 81 (the base's length) for
  `full`, 49 where an 81-frame window would not fit the preset's memory target (`24gb`, `low-cost`), 33 for
  `zerogpu` (one window per GPU call).

Field names are part of the API (the app reads them): add fields, do not rename them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..defaults import (DEFAULT_NEGATIVE_PROMPT, DEFAULT_SAMPLER, DEFAULT_STEP_CACHE, DEFAULT_WINDOW_FRAMES,
                        DEFAULT_WINDOW_STRIDE, FP8_SCALINGS, OPTIMIZERS, SAMPLERS, STEP_CACHES, TIMESTEP_SAMPLERS,
                        negative_prompt_name)
from ..errors import MaskEditError
from ..limits import check_settings, shown_value
from ..method.composite import COMPOSITE_REGIONS, DEFAULT_FEATHER, DEFAULT_MASK_MARGIN

NUM_BLOCKS_14B = 40
"""Transformer blocks of Wan2.1-I2V-14B; `blocks_to_swap` counts out of these."""

DEFAULT_SPEED_LORA = "lightx2v/Wan2.1-Distill-Loras/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors"
"""A step- and CFG-distilled Wan2.1-I2V-14B LoRA (4 steps, CFG 1) as `owner/repo/file.safetensors`; any
local .safetensors file or folder works as well (maskedit.models.speed.resolve_speed_lora)."""


GENERATION_METHODS = ("mask-lora", "no-lora", "feature-blend", "naive-lora")
"""The paper's method (mask condition + LoRA) and the baselines: stock I2V, feature-level blending, naive LoRA."""

NAIVE_LORA_METHODS = ("naive-lora", "feature-blend")
"""Methods that run with the naive baseline's LoRA (trained with the stock condition; paper §3.1, App. B.1)."""


def check_generation_choices(sampler: str, step_cache: str, negative_prompt: str) -> None:
    """MaskEditError for a sampler or step cache that is not offered, or a negative prompt that is not text."""
    if sampler not in SAMPLERS:
        raise MaskEditError(f"the sampler {sampler!r} is unknown; use one of {', '.join(SAMPLERS)}")
    if step_cache not in STEP_CACHES:
        raise MaskEditError(f"the step cache {step_cache!r} is unknown; use one of {', '.join(STEP_CACHES)}")
    if not isinstance(negative_prompt, str):
        raise MaskEditError(f"the negative prompt must be text (\"reference\", \"wan\" or the prompt itself), got "
                            f"{type(negative_prompt).__name__}")


def check_training_choices(optimizer: str, fp8_scaling: str, timestep_sampler: str) -> None:
    """MaskEditError for an optimizer, fp8 storage or timestep sampler that is not offered."""
    for value, choices, what in ((optimizer, OPTIMIZERS, "optimizer"), (fp8_scaling, FP8_SCALINGS, "fp8 scaling"),
                                 (timestep_sampler, TIMESTEP_SAMPLERS, "timestep sampler")):
        if value not in choices:
            raise MaskEditError(f"the {what} {value!r} is unknown; use one of {', '.join(choices)}")


@dataclass(frozen=True)
class GenerateSettings:
    """How an edit is generated (METHOD.md §6); the defaults are the one place of 30 steps, CFG 5, shift 5.

    steps: denoising steps; guidance_scale: 1 = no classifier-free guidance; flow_shift; lora_scale: weight
    of the edit LoRA (0..2 useful); seed: the noise seed (ranges: `maskedit.limits.LIMITS`); method: one of
    GENERATION_METHODS; sampler: one of SAMPLERS ("euler", the reference code's, by default).
    guidance_scale_2: the low-noise expert's guidance scale on a two-expert base (Wan2.2-A14B: steps below
    its boundary); None = `guidance_scale`, as diffusers does. A one-expert base refuses a given value
    (`workflow.generate.generate_edit`). negative_prompt: "reference" (the reference code's English list, the
    method's), "wan" (Wan's Chinese default) or the text itself (`defaults.negative_prompt_text`).
    step_cache: one of STEP_CACHES ("off": exact; `models.step_cache`); step_cache_threshold: None = the
    cache's default (MagCache 0.12, TeaCache 0.275).
    composite: after decoding, put the generated region onto the source clip (`method.composite`): the
    background is then the source bit for bit; off (the default) writes the decoded output as it is.
    feather: pixels of blend inside the region's border; composite_region: "boxes" (the method's loose boxes)
    or "mask" (the tight mask grown by composite_margin pixels; needs a clip whose region came from a mask)."""

    steps: int = 30
    guidance_scale: float = 5.0
    flow_shift: float = 5.0
    lora_scale: float = 1.0
    seed: int = 0
    method: str = "mask-lora"
    sampler: str = DEFAULT_SAMPLER
    guidance_scale_2: float | None = None
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    step_cache: str = DEFAULT_STEP_CACHE
    step_cache_threshold: float | None = None
    composite: bool = False
    feather: int = DEFAULT_FEATHER
    composite_region: str = "boxes"
    composite_margin: int = DEFAULT_MASK_MARGIN

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise MaskEditError for a setting out of its range (the one place these checks live)."""
        check_settings({"generation_steps": "steps"}, generation_steps=self.steps, guidance_scale=self.guidance_scale,
                       flow_shift=self.flow_shift, lora_scale=self.lora_scale, seed=self.seed,
                       guidance_scale_2=self.guidance_scale_2, step_cache_threshold=self.step_cache_threshold,
                       feather=self.feather, composite_margin=self.composite_margin)
        check_generation_choices(self.sampler, self.step_cache, self.negative_prompt)
        if not isinstance(self.composite, bool):
            raise MaskEditError(f"composite must be true or false, got {self.composite!r}")
        if self.composite_region not in COMPOSITE_REGIONS:
            raise MaskEditError(f"the compositing region {self.composite_region!r} is unknown; use one of "
                                f"{', '.join(COMPOSITE_REGIONS)}")
        if self.method not in GENERATION_METHODS:
            raise MaskEditError(f"the method {self.method!r} is unknown; use one of {', '.join(GENERATION_METHODS)}")

    def check_base(self, two_experts: bool) -> None:
        """Refuse guidance_scale_2 for a base without a low-noise expert (one transformer, e.g. Wan2.1)."""
        if self.guidance_scale_2 is not None and not two_experts:
            raise MaskEditError(
                f"guidance_scale_2 ({self.guidance_scale_2:g}) sets the low-noise expert's guidance of a two-expert "
                "base (Wan2.2-A14B); this model has one transformer: leave it out and set guidance_scale only"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """Every setting of an edit. Sizes are pixels; `window = 0` trains on the whole clip."""

    name: str
    summary: str
    # clip
    num_frames: int = 49
    width: int = 832
    height: int = 480
    # training (METHOD.md §4)
    train_steps: int = 100
    learning_rate: float = 1e-4
    rank: int = 16
    alpha: float = 16.0
    window: int = 0  # frames per temporal training window (4k+1); 0 = whole clip (METHOD.md §7)
    window_stride: int = DEFAULT_WINDOW_STRIDE
    timestep_sampler: str = "uniform"  # METHOD.md §4 (the reference's); two-expert bases: "shifted" (bases.adapt_preset)
    timestep_shift: float | None = None  # the "shifted" sampler's shift; None: the preset's flow shift
    optimizer: str = "adamw"  # "adamw" (fp32 state) or "adamw8bit" (bitsandbytes; the reference's fp8 recipe)
    # clips longer than one window (METHOD.md §7b): frames of one window, the base's length unless memory says less
    window_frames: int = DEFAULT_WINDOW_FRAMES
    # memory (training and generation)
    blocks_to_swap: int = 0  # of the 40 transformer blocks, streamed from pinned CPU memory
    fp8: bool = False  # frozen base weights stored in float8 (e4m3), computed in bf16; LoRA stays bf16/fp32
    fp8_scaling: str = "row"  # "row": a float32 scale per output row (ours); "none": a plain cast (the reference's)
    gradient_checkpointing: bool = False
    activation_offload: bool = False  # checkpointed block inputs kept in CPU memory (needs checkpointing)
    offload_encoders: bool = False  # VAE, umT5 and CLIP in CPU memory, on the GPU only while they run (bitwise equal)
    # generation (METHOD.md §6)
    generation_steps: int = GenerateSettings.steps
    guidance_scale: float = GenerateSettings.guidance_scale
    flow_shift: float = GenerateSettings.flow_shift
    lora_scale: float = GenerateSettings.lora_scale
    speed_lora: str | None = None  # a distilled LoRA stacked with the edit LoRA (path or owner/repo/file)
    speed_lora_weight: float = 1.0
    sampler: str = GenerateSettings.sampler  # "euler": the reference code's flow-matching Euler (its schedule); "unipc": Wan's default
    guidance_scale_2: float | None = None  # the low-noise expert's CFG on a two-expert base (None: guidance_scale)
    negative_prompt: str = GenerateSettings.negative_prompt  # "reference" (the method's), "wan", or the text itself
    step_cache: str = GenerateSettings.step_cache  # "off" (exact), "magcache", "teacache" (models.step_cache)
    step_cache_threshold: float | None = None  # None: the cache's default
    # speed options
    attention_backend: str | None = None  # diffusers attention backend ("flash", "sage", …); None = default
    compile: bool = False  # torch.compile of the transformer blocks (never on ZeroGPU)
    vae_tiling: bool = False
    # budget and targets (not measurements)
    gpu_seconds: int | None = None  # per-call GPU budget (ZeroGPU `duration`); None = unlimited
    target_peak_gb: float | None = None  # the peak memory this preset is designed for

    def __post_init__(self):
        problems = []
        try:  # each setting's range: maskedit.limits
            check_settings(num_frames=self.num_frames, width=self.width, height=self.height,
                           train_steps=self.train_steps, learning_rate=self.learning_rate, rank=self.rank,
                           alpha=self.alpha, window=self.window, window_stride=self.window_stride,
                           generation_steps=self.generation_steps, guidance_scale=self.guidance_scale,
                           flow_shift=self.flow_shift, lora_scale=self.lora_scale,
                           speed_lora_weight=self.speed_lora_weight, guidance_scale_2=self.guidance_scale_2,
                           step_cache_threshold=self.step_cache_threshold, timestep_shift=self.timestep_shift,
                           window_frames=self.window_frames)
            check_generation_choices(self.sampler, self.step_cache, self.negative_prompt)
            check_training_choices(self.optimizer, self.fp8_scaling, self.timestep_sampler)
        except MaskEditError as error:
            problems.append(str(error))
        if self.window > self.num_frames:
            problems.append(f"window must be at most num_frames, got {self.window}")
        if not 0 <= self.blocks_to_swap < NUM_BLOCKS_14B:
            problems.append(f"blocks_to_swap must be in 0..{NUM_BLOCKS_14B - 1}, got {self.blocks_to_swap}")
        if self.activation_offload and not self.gradient_checkpointing:
            problems.append("activation_offload needs gradient_checkpointing")
        if problems:
            raise MaskEditError(f"preset {self.name!r}: " + "; ".join(problems))

    @property
    def blocks_resident(self) -> int:
        """Blocks of the 14B transformer kept on the GPU."""
        return NUM_BLOCKS_14B - self.blocks_to_swap

    @property
    def cfg_distilled(self) -> bool:
        """True when the preset generates at CFG 1 with a speed LoRA (one transformer pass per step)."""
        return self.speed_lora is not None and self.guidance_scale <= 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **changes) -> "Preset":
        """A copy with some settings changed (checked like a preset); None values are ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise MaskEditError(f"unknown preset settings: {', '.join(unknown)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def train_config(self, **overrides):
        """A `training.TrainConfig` holding this preset's training, window and memory settings (overrides:
        TrainConfig fields to set otherwise)."""
        from ..method.training import TrainConfig

        settings = dict(
            steps=self.train_steps, learning_rate=self.learning_rate, rank=self.rank, alpha=self.alpha,
            gradient_checkpointing=self.gradient_checkpointing, activation_offload=self.activation_offload,
            blocks_to_swap=self.blocks_to_swap, fp8=self.fp8, window=self.window, window_stride=self.window_stride,
            offload_encoders=self.offload_encoders, timestep_sampler=self.timestep_sampler,
            timestep_shift=self.timestep_shift, optimizer=self.optimizer, fp8_scaling=self.fp8_scaling,
        )
        settings.update(overrides)
        if settings.get("timestep_shift") is None:  # the shifted sampler takes the flow shift the base samples with
            settings["timestep_shift"] = self.flow_shift if settings.get("timestep_sampler") == "shifted" else 1.0
        return TrainConfig(**settings)

    def generate_settings(self, **overrides) -> "GenerateSettings":
        """The preset's `GenerateSettings` (overrides: fields to set otherwise; None values are ignored)."""
        settings = dict(steps=self.generation_steps, guidance_scale=self.guidance_scale, flow_shift=self.flow_shift,
                        lora_scale=self.lora_scale, sampler=self.sampler, guidance_scale_2=self.guidance_scale_2,
                        negative_prompt=self.negative_prompt, step_cache=self.step_cache,
                        step_cache_threshold=self.step_cache_threshold)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return GenerateSettings(**settings)

    def describe(self) -> str:
        """Every setting, grouped, one line each (for --help, the app and logs)."""
        window = f"{self.window} frames, stride {self.window_stride}" if self.window else "whole clip"
        speed = f"{self.speed_lora} (weight {self.speed_lora_weight:g})" if self.speed_lora else "none"
        checkpointing = "on" if self.gradient_checkpointing else "off"
        if self.activation_offload:
            checkpointing += ", activations offloaded to CPU"
        lines = [
            f"preset {self.name}: {self.summary}",
            f"  clip: {self.num_frames} frames at {self.width}x{self.height}",
            f"  training: {self.train_steps} steps, lr {self.learning_rate:g}, LoRA rank {self.rank} alpha {self.alpha:g}, "
            f"window {window}; optimizer {self.optimizer}; timesteps {self.timestep_sampler}"
            + (f" (shift {self.timestep_shift if self.timestep_shift is not None else self.flow_shift:g})"
               if self.timestep_sampler == "shifted" else ""),
            f"  longer clips: windows of {self.window_frames} frames, trained across the clip ({self.train_steps} steps "
            "per window) and generated one after another",
            f"  memory: {self.blocks_resident} of {NUM_BLOCKS_14B} blocks resident, {self.blocks_to_swap} swapped; "
            f"fp8 base weights {('on, scaled per row' if self.fp8_scaling == 'row' else 'on, unscaled') if self.fp8 else 'off'}; "
            f"gradient checkpointing {checkpointing}; "
            f"encoders {'in CPU memory while idle' if self.offload_encoders else 'on the GPU'}",
            f"  generation: {self.generation_steps} steps, CFG {self.guidance_scale:g}"
            + (f" / low-noise {self.guidance_scale_2:g}" if self.guidance_scale_2 is not None else "")
            + f", flow shift {self.flow_shift:g}, edit LoRA scale {self.lora_scale:g}, speed LoRA {speed}; "
            f"negative prompt {negative_prompt_name(self.negative_prompt)}",
            f"  sampler: {self.sampler}" + (" (flow-matching Euler, the reference code's: its results were sampled so, "
                                           "and Euler keeps no history, so feature blending holds exactly)"
                                           if self.sampler == "euler" else ""),
            f"  speed: attention {self.attention_backend or 'default'}, compile {'on' if self.compile else 'off'}, "
            f"VAE tiling {'on' if self.vae_tiling else 'off'}, step cache {self.step_cache}"
            + (f" (threshold {self.step_cache_threshold:g})" if self.step_cache_threshold is not None else ""),
        ]
        targets = []
        if self.target_peak_gb is not None:
            targets.append(f"peak ≤ {self.target_peak_gb:g} GB")
        if self.gpu_seconds is not None:
            targets.append(f"GPU budget {self.gpu_seconds} s per call")
        if targets:
            lines.append(f"  targets (not yet measured on a GPU): {', '.join(targets)}")
        return "\n".join(lines)


FULL = Preset(
    name="full",
    summary="the paper's settings on one large GPU (≥ 80 GB): whole clip, 100 steps, 30 steps at CFG 5",
    gradient_checkpointing=True,  # bit-identical gradients; a 20,280-token clip's activations need it
)

GPU_24GB = Preset(
    name="24gb",
    summary="the full-quality edit on a 24 GB card: 32 blocks streamed from CPU, checkpointing with activations "
            "offloaded, VAE tiling",
    blocks_to_swap=32,
    gradient_checkpointing=True,
    activation_offload=True,  # the reference code's 21.5 GB setting; without it the planner counts 29 GB at 49 frames
    offload_encoders=True,  # umT5 (10.6 GiB), CLIP and the VAE beside the transformer made encode/denoise need 25.7 GiB
    vae_tiling=True,
    step_cache="magcache",  # each evaluation streams 32 blocks: a skipped one saves their copies too (13 of 30 run)
    target_peak_gb=22.0,
    window_frames=49,  # an 81-frame window's training step needs ≈ 28 GB here (planner); 49 frames fit 24 GB
)

LOW_COST = Preset(
    name="low-cost",
    summary="smallest memory: 9-frame windows, 38 blocks swapped, fp8 base, activations offloaded",
    window=9,
    blocks_to_swap=38,
    fp8=True,
    gradient_checkpointing=True,
    activation_offload=True,
    offload_encoders=True,  # the encoders' 12.3 GiB would be most of its peak outside the training step
    vae_tiling=True,
    step_cache="magcache",  # 38 streamed blocks per evaluation: the skipped ones are never copied
    target_peak_gb=8.0,  # the paper measured 7.6 GB for these settings (Table 4, 38 swapped); planner 7.0 GB
    window_frames=49,  # the untiled condition encode of a longer window would pass the 8 GB target
)

ZEROGPU = Preset(
    name="zerogpu",
    summary="a quick edit on ZeroGPU's `large` call size: 33 frames at 640x368, 9-frame windows, fp8 base weights, "
            "encoders off the GPU while idle, 4-step distilled generation",
    num_frames=33,
    width=640,
    height=368,
    train_steps=60,
    window=9,
    fp8=True,  # 14B base weights in float8 (half the bytes): Wan2.2's two experts fit a `large` call so
    gradient_checkpointing=True,
    offload_encoders=True,  # umT5 (10.6 GiB), CLIP and the VAE on the GPU only while they run
    generation_steps=4,
    guidance_scale=1.0,
    flow_shift=5.0,
    speed_lora=DEFAULT_SPEED_LORA,
    speed_lora_weight=1.0,
    compile=False,  # not supported on ZeroGPU
    gpu_seconds=180,
    window_frames=33,  # one window per GPU call, the size this preset's call is planned for
)

PRESETS: dict[str, Preset] = {p.name: p for p in (FULL, GPU_24GB, LOW_COST, ZEROGPU)}

# The app's clip menus (labels as shown; `session.parse_size` reads "WxH" off the front). Here so that tests
# and the planner see the sizes the app offers without importing gradio.
FRAME_CHOICES = [("all (up to 81)", 0), ("5", 5), ("9", 9), ("17", 17), ("33", 33), ("49", 49), ("81", 81)]
SIZE_CHOICES = ["auto", "832x480 (landscape 480p)", "480x832 (portrait 480p)", "640x368 (ZeroGPU quick)",
                "368x640 (portrait quick)", "320x192 (small)", "64x64 (tiny test)"]
DEFAULT_PRESET = "full"


def get_preset(name: str) -> Preset:
    """The preset called `name` (`full`, `24gb`, `low-cost`, `zerogpu`); MaskEditError for others (and for a
    value that is not a name)."""
    if not isinstance(name, str) or len(name) > 100:
        raise MaskEditError(f"unknown preset {shown_value(name)}; choose one of {', '.join(PRESETS)}")
    key = name.strip().lower().replace("_", "-")
    if key in ("lowcost", "low"):
        key = "low-cost"
    if key not in PRESETS:
        raise MaskEditError(f"unknown preset {shown_value(name)}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]
