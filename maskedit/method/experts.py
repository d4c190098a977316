"""Two-expert bases (Wan2.2-I2V-A14B): which expert serves which timestep, training one LoRA per expert,
and the per-expert LoRA files.

How Wan2.2 denoises (diffusers' `WanImageToVideoPipeline` with `transformer_2` and `boundary_ratio` b):
a step at timestep τ (0–1000, the scheduler's already-shifted noise level σ·1000) runs `transformer`
(the high-noise expert, `guidance_scale`) when τ ≥ b·1000, else `transformer_2` (the low-noise expert,
`guidance_scale_2`). For I2V b = 0.9: the high-noise expert sees σ ∈ [0.9, 1].

How MaskEdit trains it (our choice, like ai-toolkit's alternating mode): one edit LoRA per expert. A
training step trains one expert only, with t drawn from the run's timestep sampler restricted to that
expert's σ range (exactly: inverse-CDF sampling of the truncated distribution), so each expert's LoRA
gets gradients only from the noise levels at which the pipeline will call it. The experts alternate
(high, low, high, … or in blocks of `switch_every` steps); `steps` counts both, so an edit costs as many
14B forward/backward passes as on Wan2.1. On a GPU the expert not being trained is moved to the CPU
(both 14B experts' weights exist, one is resident at a time). Stage 2 continues both LoRAs the same way.

Files: `lora_high_noise.safetensors` / `lora_low_noise.safetensors` (diffusers keys; stock diffusers loads
the low-noise one with `load_lora_weights(..., load_into_transformer_2=True)`), the ComfyUI-style
`lora_comfyui_high_noise.safetensors` / `lora_comfyui_low_noise.safetensors` (no image K/V keys: Wan2.2
has no image cross-attention), and `lora.json` naming the base and each expert's file and range.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from ..errors import MaskEditError
from .lora import ADAPTER_NAME, LORA_WEIGHT_NAME, METADATA_NAME, lora_state_dict, to_comfyui_keys
from .training import (
    EncodedSample, LoraTrainer, StepEvent, TrainConfig, TrainItem, TrainState, as_samples, encode_samples,
    release_encoders,
)

HIGH_NOISE = "high_noise"
LOW_NOISE = "low_noise"
EXPERTS = (HIGH_NOISE, LOW_NOISE)
EXPERT_COMPONENTS = {HIGH_NOISE: "transformer", LOW_NOISE: "transformer_2"}
"""Which pipeline component each expert is (diffusers' names)."""


def is_two_expert(pipe) -> bool:
    """True for a Wan2.2-A14B-style pipeline: a second transformer and a boundary ratio."""
    return getattr(pipe, "transformer_2", None) is not None and pipe.config.boundary_ratio is not None


def expert_module(pipe, expert: str):
    """The transformer of `expert` ("high_noise" → `pipe.transformer`, "low_noise" → `pipe.transformer_2`)."""
    if expert not in EXPERT_COMPONENTS:
        raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
    return getattr(pipe, EXPERT_COMPONENTS[expert])


def boundary_timestep(pipe) -> float:
    """The timestep (0–1000) at and above which the high-noise expert runs."""
    return pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps


def expert_for_timestep(pipe, timestep) -> str:
    """The expert diffusers' denoising loop calls at `timestep` (its rule: τ ≥ boundary → high noise)."""
    return HIGH_NOISE if timestep >= boundary_timestep(pipe) else LOW_NOISE


def expert_sigma_range(boundary_ratio: float, expert: str) -> tuple[float, float]:
    """(low, high) of σ = t ∈ [0, 1] that `expert` serves: high noise [b, 1], low noise [0, b)."""
    if not 0.0 < boundary_ratio < 1.0:
        raise ValueError(f"boundary_ratio must be in (0, 1), got {boundary_ratio}")
    return (boundary_ratio, 1.0) if expert == HIGH_NOISE else (0.0, boundary_ratio)


def _cdf(config: TrainConfig, t: float) -> float:
    """CDF of the trainer's timestep distribution (`training.sample_timesteps`) at t ∈ [0, 1]."""
    if config.timestep_sampler == "logit_normal":
        if t <= 0.0 or t >= 1.0:
            return float(t >= 1.0)
        return 0.5 * (1.0 + math.erf(math.log(t / (1.0 - t)) / math.sqrt(2.0)))
    if config.timestep_sampler == "shifted":
        s = config.timestep_shift
        return t / (s - (s - 1.0) * t)  # inverse of t' = s·u / (1 + (s − 1)·u)
    return t


def _inverse_cdf(config: TrainConfig, p: torch.Tensor) -> torch.Tensor:
    if config.timestep_sampler == "logit_normal":
        return torch.sigmoid(torch.special.ndtri(p.double())).float()
    if config.timestep_sampler == "shifted":
        s = config.timestep_shift
        return s * p / (1 + (s - 1) * p)
    return p


def sample_in_range(config: TrainConfig, generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    """t ∈ [low, high), shape (1,): the trainer's sampler (uniform, shifted, logit-normal) conditioned on
    that interval, by inverse-CDF sampling of one uniform draw from `generator`."""
    u = torch.rand(1, generator=generator)
    p_low, p_high = _cdf(config, low), _cdf(config, high)
    return _inverse_cdf(config, p_low + u * (p_high - p_low)).clamp(low, high)


class _ExpertView:
    """What `LoraTrainer` needs of a pipeline, with one expert as its transformer."""

    def __init__(self, pipe, expert: str):
        self.transformer = expert_module(pipe, expert)
        self._execution_device = pipe._execution_device


class ExpertTrainer(LoraTrainer):
    """A `LoraTrainer` of one expert whose timesteps stay in that expert's range: every t it draws is
    one at which the pipeline calls this expert (`t·1000` compared with the boundary in float32, as the
    loss computes it)."""

    def __init__(self, pipe, expert: str, samples: list[EncodedSample], config: TrainConfig, checkpoint_dir=None,
                 device=None):
        self.expert = expert
        self.t_range = expert_sigma_range(pipe.config.boundary_ratio, expert)
        self.boundary = torch.tensor(boundary_timestep(pipe), dtype=torch.float32, device="cpu")  # t is drawn there
        super().__init__(_ExpertView(pipe, expert), None, config, checkpoint_dir, device=device, encoded=samples)

    def draw_timestep(self) -> torch.Tensor:
        t = sample_in_range(self.config, self.generator, *self.t_range)
        high = self.expert == HIGH_NOISE
        while bool(t.float() * 1000.0 >= self.boundary) != high:  # a draw on the boundary's rounding edge
            t = torch.nextafter(t.float(), torch.tensor([2.0 if high else -1.0]))
        return t


@dataclass
class ExpertStepEvent(StepEvent):
    """A StepEvent of a two-expert run: `step` counts both experts; `expert` trained this step."""

    expert: str = HIGH_NOISE
    expert_step: int = 0


class TwoExpertTrainer:
    """Trains one edit LoRA per expert of a two-expert pipeline (see the module docstring).

    Same use as `LoraTrainer`: `run()` yields an ExpertStepEvent per step, `stop()`, `resume()`,
    `state.step` (both experts' steps) out of `config.steps`. The high-noise expert gets ⌈steps/2⌉ steps
    and seed `config.seed`, the low-noise one ⌊steps/2⌋ and seed `config.seed + 1`. Checkpoints go to
    `checkpoint_dir/high_noise` and `checkpoint_dir/low_noise`.
    """

    def __init__(self, pipe, items: list[TrainItem] | None, config: TrainConfig, checkpoint_dir=None, device=None,
                 distributed=None, encoded: list[EncodedSample] | None = None, switch_every: int = 1):
        if not is_two_expert(pipe):
            raise MaskEditError("this model has one transformer; train it with LoraTrainer")
        if distributed is not None and distributed.world_size > 1:
            raise MaskEditError("data-parallel training of a two-expert model is not supported; run one process")
        if config.steps < 2:
            raise MaskEditError("a two-expert model needs at least 2 training steps (one per expert)")
        if switch_every < 1:
            raise MaskEditError(f"switch_every must be at least 1, got {switch_every}")
        if not items and not encoded:
            raise MaskEditError("nothing to train on: give at least one sample")
        self.pipe = pipe
        self.config = config
        self.switch_every = switch_every
        self.device = torch.device(device) if device else pipe._execution_device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        if encoded is None:
            encoded = encode_samples(pipe, items, self.device)
            release_encoders(pipe)
        self.samples = as_samples(encoded)
        counts = {HIGH_NOISE: (config.steps + 1) // 2, LOW_NOISE: config.steps // 2}
        self.trainers: dict[str, ExpertTrainer] = {}
        for offset, expert in enumerate(EXPERTS):
            expert_config = replace(config, steps=counts[expert], seed=config.seed + offset)
            folder = self.checkpoint_dir / expert if self.checkpoint_dir else None
            self.trainers[expert] = ExpertTrainer(pipe, expert, self.samples, expert_config, folder, self.device)
        self.losses: list[float] = []
        self._stop = False
        self._resident: str | None = None

    @property
    def state(self) -> TrainState:
        high, low = self.trainers[HIGH_NOISE].state, self.trainers[LOW_NOISE].state
        return TrainState(high.step + low.step, list(self.losses))

    def next_expert(self) -> str | None:
        """The expert the next step trains (None when both are done): blocks of `switch_every` steps,
        high noise first; derived from the step counts alone, so a resumed run continues the same order."""
        high, low = self.trainers[HIGH_NOISE], self.trainers[LOW_NOISE]
        high_left = high.state.step < high.config.steps
        low_left = low.state.step < low.config.steps
        if high_left and low_left:
            k = self.switch_every
            return HIGH_NOISE if high.state.step // k <= low.state.step // k else LOW_NOISE
        return HIGH_NOISE if high_left else LOW_NOISE if low_left else None

    def make_resident(self, expert: str) -> None:
        """On a GPU (or the planner's meta device), move `expert`'s transformer to the device and the other
        one to the CPU (no-op on CPU and when a trainer streams blocks itself)."""
        from ..memory.offload import move_module

        if self.device.type not in ("cuda", "meta") or self._resident == expert:
            return
        if any(t.memory is not None for t in self.trainers.values()):
            return  # block swapping / fp8 place the weights themselves
        other = LOW_NOISE if expert == HIGH_NOISE else HIGH_NOISE
        expert_module(self.pipe, other).to("cpu")
        move_module(expert_module(self.pipe, expert), self.device)
        torch.cuda.empty_cache()
        self._resident = expert

    def restore_placement(self) -> None:
        """Put both experts back on the device (generation calls both) after `make_resident` moved one."""
        if self._resident is None:
            return
        from ..memory.offload import move_module

        for expert in EXPERTS:
            move_module(expert_module(self.pipe, expert), self.device)
        self._resident = None

    def stop(self) -> None:
        self._stop = True

    def train_step(self) -> tuple[str, float]:
        expert = self.next_expert()
        if expert is None:
            raise MaskEditError("both experts have finished training")
        self.make_resident(expert)
        loss = self.trainers[expert].train_step()
        self.losses.append(loss)
        return expert, loss

    def run(self, should_stop=None) -> Iterator[ExpertStepEvent]:
        """Train to `config.steps` (both experts), yielding an ExpertStepEvent per step; a stop ends it
        between steps and writes both checkpoints (when a folder was given)."""
        self._stop = False
        started = time.perf_counter()
        every = self.config.checkpoint_every
        try:
            while self.next_expert() is not None:
                if self._stop or (should_stop is not None and should_stop()):
                    break
                step_started = time.perf_counter()
                expert, loss = self.train_step()
                now = time.perf_counter()
                step = self.state.step
                checkpoint = None
                if self.checkpoint_dir is not None and (step == self.config.steps or (every and step % every == 0)):
                    checkpoint = str(self.save_checkpoint())
                if not math.isfinite(loss):
                    raise MaskEditError(f"the loss became {loss} at step {step} ({expert} expert); lower the learning rate")
                yield ExpertStepEvent(step, self.config.steps, loss, now - step_started, now - started, checkpoint,
                                      expert=expert, expert_step=self.trainers[expert].state.step)
        finally:
            for trainer in self.trainers.values():
                trainer.transformer.eval()
            self.restore_placement()
            if self.checkpoint_dir is not None and 0 < self.state.step < self.config.steps:
                self.save_checkpoint()

    def train(self, should_stop=None) -> TrainState:
        for _ in self.run(should_stop):
            pass
        return self.state

    def save_checkpoint(self) -> Path:
        """Both experts' checkpoints, and the combined loss history (`losses.json`)."""
        for trainer in self.trainers.values():
            trainer.save_checkpoint()
        (self.checkpoint_dir / "losses.json").write_text(json.dumps(self.losses))
        return self.checkpoint_dir

    def resume(self) -> bool:
        """Restore both experts' checkpoints; False when there is none."""
        resumed = [trainer.resume() for trainer in self.trainers.values()]
        losses = self.checkpoint_dir / "losses.json" if self.checkpoint_dir else None
        if any(resumed) and losses is not None and losses.exists():
            self.losses = json.loads(losses.read_text())
        return any(resumed)


def make_trainer(pipe, items, config: TrainConfig, checkpoint_dir=None, device=None, distributed=None, encoded=None):
    """The trainer for this pipeline: `TwoExpertTrainer` for a two-expert base, else `LoraTrainer` (encoded: samples
    encoded beforehand instead of `items`, e.g. a long clip's `long_training.EncodedStore`)."""
    if is_two_expert(pipe):
        return TwoExpertTrainer(pipe, items, config, checkpoint_dir, device=device, distributed=distributed,
                                encoded=encoded)
    return LoraTrainer(pipe, items, config, checkpoint_dir, device=device, distributed=distributed, encoded=encoded)


# ----- LoRA files, one per expert


def expert_weight_name(expert: str) -> str:
    """`lora_high_noise.safetensors` / `lora_low_noise.safetensors` (diffusers keys)."""
    return f"lora_{expert}.safetensors"


def expert_comfyui_name(expert: str) -> str:
    """`lora_comfyui_high_noise.safetensors` / `lora_comfyui_low_noise.safetensors` (original-Wan keys)."""
    return f"lora_comfyui_{expert}.safetensors"


def save_expert_loras(pipe, folder: str | os.PathLike, metadata: dict) -> dict[str, Path]:
    """Write each expert's edit adapter (diffusers and ComfyUI files) and `lora.json`; returns
    {expert: diffusers file}. Written under temporary names and renamed last, `lora.json` last of all."""
    from safetensors.torch import save_file

    folder = Path(folder)
    staging = folder / ".saving"
    staging.mkdir(parents=True, exist_ok=True)
    experts_meta, names = {}, []
    ratio = pipe.config.boundary_ratio
    for expert in EXPERTS:
        transformer = expert_module(pipe, expert)
        config = transformer.peft_config[ADAPTER_NAME]
        state_dict = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(transformer).items()}
        pipe.save_lora_weights(
            str(staging), transformer_lora_layers=state_dict, weight_name=expert_weight_name(expert),
            safe_serialization=True, transformer_lora_adapter_metadata=config.to_dict(),
        )
        save_file(to_comfyui_keys(state_dict, config.lora_alpha), str(staging / expert_comfyui_name(expert)))
        low, high = expert_sigma_range(ratio, expert)
        experts_meta[expert] = {
            "file": expert_weight_name(expert), "comfyui_file": expert_comfyui_name(expert),
            "component": EXPERT_COMPONENTS[expert], "timesteps": [low * 1000, high * 1000],
            "rank": config.r, "alpha": config.lora_alpha,
        }
        names += [expert_weight_name(expert), expert_comfyui_name(expert)]
    metadata = {**metadata, "experts": experts_meta, "boundary_ratio": ratio, "format": "diffusers"}
    (staging / METADATA_NAME).write_text(json.dumps(metadata, indent=2, default=str))
    for name in names + [METADATA_NAME]:
        os.replace(staging / name, folder / name)
    staging.rmdir()
    return {expert: folder / expert_weight_name(expert) for expert in EXPERTS}


def expert_file_names() -> list[str]:
    """Every file name `save_expert_loras` writes besides lora.json."""
    return [name for expert in EXPERTS for name in (expert_weight_name(expert), expert_comfyui_name(expert))]


def load_edit_lora(pipe, path, scale: float = 1.0) -> None:
    """Load an edit LoRA whatever the base: per-expert files into a two-expert pipeline (`path` = the
    folder or one of its files, or a list of the two files, `expert_pair`), else `lora.load_lora`. A
    two-expert LoRA given to a one-transformer model (or the reverse) is a clear error."""
    from .lora import load_lora

    if isinstance(path, (list, tuple)):  # two files named …high_noise… / …low_noise…
        load_expert_lora_files(pipe, expert_pair(path), scale)
        return
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if is_two_expert(pipe):
        load_expert_loras(pipe, folder, scale)
    elif has_expert_loras(folder) and (path.is_dir() or path.name in expert_file_names()):
        raise MaskEditError(f"{folder} holds a two-expert (Wan2.2-A14B) LoRA but this model has one transformer")
    else:
        load_lora(pipe, path, scale)


def has_expert_loras(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return all((folder / expert_weight_name(expert)).is_file() for expert in EXPERTS)


def load_expert_loras(pipe, folder: str | os.PathLike, scale: float = 1.0, adapter_name: str = ADAPTER_NAME) -> None:
    """Load `lora_high_noise.safetensors` into `transformer` and `lora_low_noise.safetensors` into
    `transformer_2` (the way stock diffusers does) as `adapter_name`, both active with `scale`.
    Replaces adapters of that name; MaskEditError when a file is missing or does not fit."""
    folder = Path(folder)
    if not is_two_expert(pipe):
        raise MaskEditError(f"{folder} holds a two-expert (Wan2.2) LoRA but this model has one transformer")
    missing = [expert_weight_name(e) for e in EXPERTS if not (folder / expert_weight_name(e)).is_file()]
    if missing:
        raise MaskEditError(f"no {' or '.join(missing)} in {folder}: a two-expert LoRA has one file per expert")
    load_expert_lora_files(pipe, {e: folder / expert_weight_name(e) for e in EXPERTS}, scale, adapter_name)


def load_expert_lora_files(pipe, files: dict, scale: float = 1.0, adapter_name: str = ADAPTER_NAME) -> None:
    """Load `files[HIGH_NOISE]` into `transformer` and `files[LOW_NOISE]` into `transformer_2` (any file
    names, e.g. from `expert_pair`) as `adapter_name`, both active with `scale`. Replaces adapters of that
    name; on any failure neither expert keeps one (MaskEditError)."""
    if not is_two_expert(pipe):
        raise MaskEditError("a LoRA pair (high noise + low noise) needs a two-expert base (Wan2.2-A14B); this model "
                            "has one transformer: give one LoRA file")
    files = {expert: Path(files[expert]) for expert in EXPERTS}
    unload_expert_loras(pipe, adapter_name)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute")
            for expert in EXPERTS:
                pipe.load_lora_weights(str(files[expert].parent), weight_name=files[expert].name,
                                       adapter_name=adapter_name, load_into_transformer_2=expert == LOW_NOISE)
    except Exception as error:  # diffusers/peft/safetensors raise many types for a foreign or broken file
        unload_expert_loras(pipe, adapter_name)
        names = " and ".join(files[e].name for e in EXPERTS)
        raise MaskEditError(
            f"the LoRA files {names} do not fit this model ({type(error).__name__}: {str(error)[:300]})"
        ) from None
    for expert in EXPERTS:
        if adapter_name not in (getattr(expert_module(pipe, expert), "peft_config", None) or {}):
            unload_expert_loras(pipe, adapter_name)
            raise MaskEditError(f"{files[expert].name} holds no LoRA weights for the {expert} expert")
    pipe.set_adapters([adapter_name], adapter_weights=[scale])


PAIR_HELP = ("a two-expert (Wan2.2-A14B) LoRA is two .safetensors files, one per expert, named …high_noise… and "
             "…low_noise… (MaskEdit writes lora_high_noise.safetensors and lora_low_noise.safetensors)")


def expert_of_file(path: str | os.PathLike) -> str | None:
    """HIGH_NOISE / LOW_NOISE when the file name says which expert it is for (`high_noise` / `low_noise`,
    also spelled with a hyphen, any case), else None."""
    name = Path(path).name.lower().replace("-", "_")
    found = [expert for expert in EXPERTS if expert in name]
    return found[0] if len(found) == 1 else None


def expert_pair(paths) -> dict[str, Path]:
    """{expert: file} of two LoRA files given in either order, told apart by their names (`expert_of_file`).
    Where MaskEdit's ComfyUI exports come along (a whole folder uploaded), the diffusers files are taken.
    MaskEditError saying what to give otherwise."""
    paths = [Path(p) for p in paths]
    if any(p.name in (expert_comfyui_name(e) for e in EXPERTS) for p in paths) and \
            all(any(p.name == expert_weight_name(e) for p in paths) for e in EXPERTS):
        paths = [p for p in paths if p.name not in (expert_comfyui_name(e) for e in EXPERTS)]
    pair: dict[str, list[Path]] = {expert: [] for expert in EXPERTS}
    unnamed = []
    for path in paths:
        expert = expert_of_file(path)
        (pair[expert] if expert else unnamed).append(path)
    if unnamed:
        raise MaskEditError(f"{', '.join(p.name for p in unnamed)}: the name does not say which expert the file is "
                            f"for; {PAIR_HELP}")
    for expert in EXPERTS:
        if len(pair[expert]) != 1:
            count = "no" if not pair[expert] else f"{len(pair[expert])}"
            raise MaskEditError(f"{count} {expert} file{'s' if len(pair[expert]) > 1 else ''} among "
                                f"{', '.join(p.name for p in paths)}; {PAIR_HELP}")
    return {expert: pair[expert][0] for expert in EXPERTS}


def unload_expert_loras(pipe, adapter_name: str = ADAPTER_NAME) -> None:
    """Remove `adapter_name` from both experts where present."""
    for expert in EXPERTS:
        module = expert_module(pipe, expert)
        if adapter_name in (getattr(module, "peft_config", None) or {}):
            module.delete_adapters([adapter_name])


def resolve_lora_path(path: str | os.PathLike) -> Path:
    """The LoRA file for a file or folder path (a folder means its lora.safetensors); checked to exist
    and to be safetensors, so a wrong path fails before a model is loaded."""
    path = Path(path)
    if path.is_dir() and has_expert_loras(path):  # a two-expert (Wan2.2) LoRA: the folder is the LoRA
        return path
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
        if not path.is_file():
            raise MaskEditError(
                f"the folder {path.parent} holds no {LORA_WEIGHT_NAME}; give the folder `train` wrote, or the file itself"
            )
    if path.suffix != ".safetensors":
        raise MaskEditError(f"{path.name} is not a .safetensors file; only safetensors LoRA files are loaded")
    if not path.is_file():
        raise MaskEditError(f"no LoRA file at {path}; give the folder `train` wrote, or its lora.safetensors")
    return path
