"""The LoRA trainer of METHOD.md §4–§5: encode once, then flow-matching steps on the cached tensors.

    trainer = LoraTrainer(pipe, [TrainItem(stage1_sample(...))], TrainConfig(steps=100), checkpoint_dir)
    for event in trainer.run():          # one StepEvent per step; trainer.stop() ends it between steps
        print(event.step, event.loss)

Flow matching (METHOD.md §4): x1 = target latents, x0 ~ N(0, I), t ~ U(0, 1) by default,
x_t = (1 − t)·x1 + t·x0, the transformer sees cat([x_t, mask(4), condition latents(16)]) and 1000·t and
must predict v = x0 − x1; plain MSE over the whole latent. A checkpoint holds LoRA weights, AdamW state,
the noise generator's state and the step, so a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterator, Sequence

import PIL.Image
import torch
import torch.nn.functional as F

from .conditioning import (
    IMAGE_VIEWS, METHOD_IMAGE_VIEW, ConditionSample, frames_to_tensor, naive_sample, stage1_sample, stage2_sample,
    window_samples, window_starts,
)
from ..defaults import DEFAULT_STAGE2_EPOCHS, DEFAULT_WINDOW_STRIDE, FP8_SCALINGS, OPTIMIZERS, TIMESTEP_SAMPLERS
from .windows import DEFAULT_HANDOVER_FRAMES, DEFAULT_WINDOW_FRAMES, check_window_settings
from ..errors import MaskEditError
from ..media.files import display_path
from ..limits import check, check_settings
from .lora import ADAPTER_NAME, add_lora, lora_parameters
from ..memory.offload import enable_encoder_offload, encoder_offload, release_offloaded_encoders
from .pipeline import TEXT_TOKENS

MASK_CONDITION, STOCK_CONDITION = "mask", "stock"
CHECKPOINTS_FOLDER = "checkpoints"  # a run folder's checkpoints/stage1, checkpoints/stage2 (`workflow.train`)
CONDITIONS = (MASK_CONDITION, STOCK_CONDITION)
CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
STAGE2_REPEATS = 9
"""Draws per epoch of each edited later frame beside one clip (METHOD.md §5, the reference code)."""
CLIP_SLOT = "clip"
"""The slot that a stage-2 clip's temporal windows share (`stage2_items`)."""


@dataclass
class TrainConfig:
    """Settings of one training run; defaults are METHOD.md §4's."""

    steps: int = 100
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    rank: int = 16
    alpha: float = 16.0
    seed: int = 0
    timestep_sampler: str = "uniform"  # "uniform" (METHOD.md), "logit_normal", "shifted" (t' = s·t / (1 + (s−1)·t))
    timestep_shift: float = 1.0
    optimizer: str = "adamw"  # "adamw": torch's, fp32 state; "adamw8bit": bitsandbytes' 8-bit state (`make_optimizer`)
    checkpoint_every: int = 25  # steps between checkpoints (0: only when stopped or done)
    gradient_checkpointing: bool = False
    activation_offload: bool = False  # keep checkpointed block inputs in CPU memory (implies checkpointing)
    blocks_to_swap: int = 0  # transformer blocks streamed from CPU memory (maskedit.memory.offload; implies checkpointing)
    fp8: bool = False  # frozen block weights stored in float8 e4m3 + per-row scale (implies checkpointing)
    fp8_scaling: str = "row"  # "row": float32 scale per output row; "none": a plain e4m3 cast (the reference's)
    offload_encoders: bool = False  # VAE, text and image encoders in CPU memory, on the GPU only while they run
    batch_size: int = 1  # samples per process per step (data-parallel: the global batch is this × processes)
    image_view: str = METHOD_IMAGE_VIEW  # CLIP view of the samples' images ("full" / "crop"); generate with the same
    # what is trained on (`plan_stages`)
    window: int = 0  # frames per temporal training window (4k+1); 0 = the whole clip (METHOD.md §7)
    window_stride: int = DEFAULT_WINDOW_STRIDE  # frames between window starts
    condition: str = "mask"  # "mask" (the method) or "stock" (the naive-LoRA baseline, METHOD.md §8)
    stage2_epochs: int = DEFAULT_STAGE2_EPOCHS  # when edited later frames are given (METHOD.md §5)
    # clips longer than one window (METHOD.md §7b, `long_training`)
    window_frames: int = DEFAULT_WINDOW_FRAMES  # frames of one generation window; a longer clip trains on windows
    handover_frames: int = DEFAULT_HANDOVER_FRAMES  # O > 1 also trains samples with a kept prefix of 1+4m frames

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise MaskEditError for a setting out of its range (the one place these checks live)."""
        for value, choices, what in ((self.timestep_sampler, TIMESTEP_SAMPLERS, "timestep_sampler"),
                                     (self.optimizer, OPTIMIZERS, "optimizer"),
                                     (self.fp8_scaling, FP8_SCALINGS, "fp8_scaling")):
            if value not in choices:
                raise MaskEditError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
        check_settings({"train_steps": "steps"}, train_steps=self.steps, learning_rate=self.learning_rate,
                       rank=self.rank, alpha=self.alpha, seed=self.seed, timestep_shift=self.timestep_shift,
                       batch_size=self.batch_size, max_grad_norm=self.max_grad_norm, weight_decay=self.weight_decay,
                       window=self.window, window_stride=self.window_stride, stage2_epochs=self.stage2_epochs)
        check_window_settings(self.window_frames, self.handover_frames)
        for beta in self.betas:
            check("beta", beta, "betas")
        if self.blocks_to_swap < 0:
            raise MaskEditError(f"blocks_to_swap must be 0 or more, got {self.blocks_to_swap}")
        if self.image_view not in IMAGE_VIEWS:
            raise MaskEditError(f"image_view must be one of {IMAGE_VIEWS}, got {self.image_view!r}")
        if self.condition not in CONDITIONS:
            raise MaskEditError(f"the training condition must be one of {CONDITIONS}, got {self.condition!r}")

    @property
    def naive(self) -> bool:
        """True for the naive-LoRA baseline (stock I2V condition, METHOD.md §8)."""
        return self.condition == STOCK_CONDITION

    def is_long(self, num_frames: int) -> bool:
        """True when a clip of `num_frames` frames is longer than one window (`long_training` trains it)."""
        return num_frames > self.window_frames

    def window_for(self, num_frames: int) -> int:
        """The window used on a clip of `num_frames` frames: 0 (whole clip) when none is set or it is not
        shorter than the clip."""
        return self.window if self.window and self.window < num_frames else 0

    @classmethod
    def from_dict(cls, settings: dict) -> "TrainConfig":
        """A config from `asdict(config)` or lora.json's "settings" (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in settings.items() if k in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    @property
    def checkpointing(self) -> bool:
        """Gradient checkpointing is on when asked for and whenever swapping, fp8 or activation offload is:
        without it autograd keeps every block's materialised weights until backward (gradients are
        bitwise the same either way)."""
        return self.gradient_checkpointing or self.activation_offload or self.fp8 or self.blocks_to_swap > 0


class TrainingDiverged(MaskEditError):
    """The loss, the gradients or the LoRA weights became NaN or infinite; nothing of the bad step was saved."""


@contextmanager
def interrupts_between_steps():
    """Hold Ctrl-C (SIGINT) while the block runs and raise it as KeyboardInterrupt when the block ends, so an
    interrupt lands between training steps: the state then saved is exactly that of the last completed step
    (weights, optimizer and noise generator alike). A second Ctrl-C raises at once (the step is then
    abandoned half done). Does nothing outside the main thread or when SIGINT has a handler of its own."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pending = []

    def hold(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def all_finite(tensors) -> bool:
    """True when no tensor holds NaN or ±inf (one device sync for the lot). Tensors on the meta device hold no
    values (the planner's dry run): nothing there can be non-finite."""
    tensors = [t for t in tensors if not t.is_meta]
    peaks = [t.detach().abs().amax().float() for t in tensors if t.is_floating_point() and t.numel()]
    return not peaks or bool(torch.isfinite(torch.stack([p.to(peaks[0].device) for p in peaks])).all())


@dataclass
class TrainItem:
    """A training sample and how often it appears per epoch (stage-2 frames: 9, METHOD.md §5).

    slot: items with the same slot take turns in it: the slot gets `repeats` draws per epoch in all, filled
    by its members in rotation (a stage-2 clip's windows share one clip's place, `stage2_items`).
    """

    sample: ConditionSample
    repeats: int = 1
    slot: str | None = None


@dataclass
class EncodedSample:
    """A sample as the transformer sees it, computed once (shapes for B = 1, T latent frames, h×w latents).

    latents: (1, 16, T, h, w) normalised target latents. condition: (1, 20, T, h, w) = packed mask (4) +
    condition latents (16). prompt_embeds: (1, 512, text_dim). image_embeds: (1, tokens, image_dim).
    """

    latents: torch.Tensor
    condition: torch.Tensor
    prompt_embeds: torch.Tensor
    image_embeds: torch.Tensor | None
    repeats: int = 1
    slot: str | None = None


@dataclass
class StepEvent:
    """Reported after every optimiser step (step counts from 1)."""

    step: int
    total_steps: int
    loss: float
    seconds: float  # this step's wall time
    elapsed: float  # wall time since this run (or resume) started
    checkpoint: str | None = None  # set when a checkpoint was written after this step


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)


@torch.no_grad()
def encode_samples(pipe, items: list[TrainItem], device=None, image_view: str = METHOD_IMAGE_VIEW) -> list[EncodedSample]:
    """VAE, text and image encoders run once per sample; the trainer only needs the results. The condition
    comes from `pipe.condition_latents` and the image tokens from `pipe.encode_image(view=image_view)`, the
    very code generation uses."""
    device = device or pipe._execution_device
    return [encode_sample(pipe, item, device, image_view) for item in items]


@torch.no_grad()
def encode_sample(pipe, item: TrainItem, device, image_view: str = METHOD_IMAGE_VIEW,
                  prompt_embeds: torch.Tensor | None = None) -> EncodedSample:
    """One item as the transformer sees it (`encode_samples`' code; prompt_embeds: the prompt's, when already
    encoded)."""
    sample = item.sample
    if sample.target_video is None:
        raise MaskEditError("a training sample needs a target video")
    latents = pipe.encode_video_latents(frames_to_tensor(sample.target_video), device)
    condition = pipe.condition_latents(sample.condition_video, sample.keep_mask, device)
    if prompt_embeds is None:
        prompt_embeds, _ = pipe.encode_prompt(
            sample.prompt, do_classifier_free_guidance=False, max_sequence_length=TEXT_TOKENS, device=device
        )
    image_embeds = None
    if pipe.transformer.config.image_dim is not None:
        image_embeds = pipe.encode_image(PIL.Image.fromarray(sample.image), device, view=image_view)
    return EncodedSample(latents, condition, prompt_embeds, image_embeds, item.repeats, item.slot)


def sample_schedule(samples) -> tuple[list[int], list[str | None]]:
    """(repeats, slots) of a trainer's samples: a list of `EncodedSample`, or a lazy sequence with `schedule()`
    (`long_training.EncodedStore`) whose samples are not read for it."""
    if hasattr(samples, "schedule"):
        return samples.schedule()
    return [s.repeats for s in samples], [s.slot for s in samples]


def as_samples(encoded) -> Sequence:
    """A trainer's samples: a lazy sequence (with `schedule()`) as it is, anything else as a list."""
    return encoded if hasattr(encoded, "schedule") else list(encoded)


def release_encoders(pipe) -> None:
    """Move the VAE and the text/image encoders off the GPU while training (no-op on CPU; the planner's
    meta-device GPU moves them too). Encoders kept in CPU memory (`offload.EncoderOffload`) are only
    made to leave the device: their weights are already in CPU memory."""
    if release_offloaded_encoders(pipe):
        return
    device = pipe._execution_device
    if device.type == "cpu":
        return
    for name in ("vae", "text_encoder", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()


BITSANDBYTES_MISSING = (
    "the adamw8bit optimizer (the reference code's fp8 recipe) needs bitsandbytes, an optional package: "
    "pip install \"bitsandbytes>=0.45,<1\" (see requirements.txt), or train with the adamw optimizer (--optimizer adamw)"
)
MIN_8BIT_SIZE = 0
"""Parameters of at least this many elements keep 8-bit optimizer state. bitsandbytes' default (4096) would give
the tiny model's LoRA factors fp32 state while every factor of the 14B model (rank 16 × 5120 = 81,920) gets 8-bit
state; 0 makes the small models train as the real one does."""


def check_optimizer(config: TrainConfig) -> None:
    """MaskEditError, before any work, when the config's optimizer needs a package that is not installed."""
    import importlib.util

    if config.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise MaskEditError(BITSANDBYTES_MISSING)


def make_optimizer(params: list, config: TrainConfig):
    """The LoRA optimizer of `config.optimizer`: torch's AdamW (fp32 state), or bitsandbytes' AdamW8bit (blockwise
    8-bit state, the reference code's fp8 recipe — it adds Kahan summation for its bf16 LoRA weights, which ours,
    trained in float32, do not need). Same lr, betas and weight decay either way."""
    settings = dict(lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **settings)
    check_optimizer(config)
    import bitsandbytes

    return bitsandbytes.optim.AdamW8bit(params, min_8bit_size=MIN_8BIT_SIZE, **settings)


def sample_timesteps(config: TrainConfig, generator: torch.Generator, count: int = 1) -> torch.Tensor:
    """t in (0, 1) drawn on the CPU from `generator`; shape (count,)."""
    if config.timestep_sampler == "logit_normal":
        return torch.sigmoid(torch.randn(count, generator=generator))
    t = torch.rand(count, generator=generator)
    if config.timestep_sampler == "shifted":
        s = config.timestep_shift
        t = s * t / (1 + (s - 1) * t)
    return t


def epoch_order(repeats: Sequence[int], epoch: int, seed: int, slots: Sequence[str | None] | None = None) -> list[int]:
    """Sample indices of one epoch, shuffled from (seed, epoch) alone (a resumed run needs no extra state).

    Item i appears `repeats[i]` times, except items sharing a slot (`slots[i]` not None): such a slot gets
    `repeats` draws per epoch in all (its members must agree on it), its members taking turns in an order
    reshuffled every full round. Without slots this is each item `repeats` times, shuffled.
    """
    slots = list(slots) if slots is not None else [None] * len(repeats)
    order, shared = [], {}
    for index, (count, slot) in enumerate(zip(repeats, slots)):
        if slot is None:
            order += [index] * count
        else:
            shared.setdefault(slot, []).append(index)
    for slot, members in shared.items():
        counts = {repeats[i] for i in members}
        if len(counts) != 1:
            raise MaskEditError(f"the items of slot {slot!r} have different repeats {sorted(counts)}")
        count = counts.pop()
        for position in range(epoch * count, (epoch + 1) * count):
            round_, place = divmod(position, len(members))
            turn = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed * 7_919 + round_ + 1))
            order.append(members[turn[place]])
    if len(order) == 1:
        return order
    perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return [order[i] for i in perm.tolist()]


def stage2_items(clip_list: list[TrainItem], frame_samples: list[ConditionSample],
                 repeats: int = STAGE2_REPEATS) -> list[TrainItem]:
    """Stage 2's schedule (METHOD.md §5): the clip once per epoch beside each edited later frame `repeats` (9)
    times, as the reference mixes them (90% edited-frame draws with one frame). The clip's temporal windows,
    when it has them, share the clip's one place per epoch and take turns in it, so the proportion is the
    same whatever the windowing (and one pass of the windows counts as one clip)."""
    shared = [TrainItem(item.sample, 1, CLIP_SLOT) for item in clip_list] if len(clip_list) > 1 else list(clip_list)
    return shared + [TrainItem(sample, repeats) for sample in frame_samples]


def clip_items(frames, edit_region, prompt: str, window: int = 0, stride: int = 4) -> list[TrainItem]:
    """Stage-1 training items of a clip: the whole clip (`window=0`, METHOD.md §4) or overlapping
    `window`-frame windows every `stride` frames, each packed like a clip (METHOD.md §7)."""
    if not window or window >= frames.shape[0]:
        return [TrainItem(stage1_sample(frames, edit_region, prompt))]
    return [TrainItem(sample) for sample in window_samples(frames, edit_region, prompt, window, stride)]


class LoraTrainer:
    """Trains the edit LoRA of `pipe.transformer` in place on a few samples.

    If the transformer already has the edit adapter (stage 2 continues stage 1), training continues it;
    otherwise a fresh one is added. `checkpoint_dir`, when given, receives checkpoints and is where
    `resume()` reads from. Memory options of the config (block swapping, fp8, activation offload) are
    applied after the adapter is in place and stay in effect for generation with the same pipeline
    (`self.memory.remove(transformer)` undoes them).

    distributed: a `maskedit.memory.distributed.DistributedContext` for data-parallel training. Every process
    draws the noise of the whole global batch from the same generator and trains on its own share;
    LoRA gradients (and the reported loss) are summed over processes, each sample's loss weighted
    1 / global batch, so a step equals one process's step on the whole batch with the averaged loss.
    Only the main process writes checkpoints.

    encoded: samples encoded beforehand (instead of `items`); the pipeline's encoders are then not used.
    """

    def __init__(self, pipe, items: list[TrainItem] | None, config: TrainConfig, checkpoint_dir=None, device=None,
                 distributed=None, encoded: list[EncodedSample] | None = None):
        if not items and not encoded:
            raise MaskEditError("nothing to train on: give at least one sample")
        self.pipe = pipe
        self.config = config
        self.distributed = distributed
        self.rank = distributed.rank if distributed is not None else 0
        self.world_size = distributed.world_size if distributed is not None else 1
        self.device = torch.device(device) if device else pipe._execution_device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.transformer = pipe.transformer
        if encoded is not None:  # already encoded (benchmarks, long clips; only `pipe.transformer` is used then)
            self.samples = as_samples(encoded)
        else:
            if config.offload_encoders:
                enable_encoder_offload(pipe, self.device)
            self.samples = encode_samples(pipe, items, self.device, config.image_view)
            release_encoders(pipe)

        if ADAPTER_NAME in (getattr(self.transformer, "peft_config", None) or {}):
            self.transformer.set_adapter(ADAPTER_NAME)
            self.params = lora_parameters(self.transformer)
        else:
            self.params = add_lora(self.transformer, config.rank, config.alpha, config.seed)
        for param in self.params:  # LoRA weights train in float32 whatever the base dtype
            param.data = param.data.float()
        from ..memory.offload import apply_memory_options, memory_setup

        self.memory = None
        if config.blocks_to_swap or config.fp8 or config.activation_offload:
            self.memory = apply_memory_options(
                self.transformer, self.device, config.blocks_to_swap, config.fp8,
                gradient_checkpointing=True, activation_offload=config.activation_offload,
                fp8_scaling=config.fp8_scaling,
            )
        else:
            if memory_setup(self.transformer) is not None:  # left by an earlier run with other settings
                memory_setup(self.transformer).remove(self.transformer)
            if config.gradient_checkpointing:
                self.transformer.enable_gradient_checkpointing()
        self.optimizer = make_optimizer(self.params, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.state = TrainState()
        self.schedule = sample_schedule(self.samples)  # (repeats, slots): read once, never by loading samples
        self._stop = False
        self._mid_step = False  # a step was abandoned half done (a second Ctrl-C): its state is not saved
        self.diverged = False  # a step went non-finite: no checkpoint is written from this trainer any more

    # -- the schedule ---------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[int]:
        """Sample indices of one epoch (`epoch_order` of the samples' repeats and slots)."""
        repeats, slots = self.schedule
        return epoch_order(repeats, epoch, self.config.seed, slots)

    def sample_for_step(self, step: int) -> EncodedSample:
        """The sample of position `step` of the schedule (with a global batch G, step s uses positions
        s·G … s·G + G − 1)."""
        per_epoch = len(self.epoch_order(0))
        return self.samples[self.epoch_order(step // per_epoch)[step % per_epoch]]

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.world_size

    # -- the loss -----------------------------------------------------------------------------
    def flow_matching_loss(self, sample: EncodedSample, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """MSE between the transformer's prediction and v = x0 − x1 at x_t = (1 − t)·x1 + t·x0.

        t: (1,) in [0, 1] on any device; noise: like sample.latents. Returns a float32 scalar.
        """
        x1 = sample.latents
        t = t.to(self.device, x1.dtype)
        noise = noise.to(self.device, x1.dtype)
        sigma = t.view(-1, 1, 1, 1, 1)
        noisy = (1.0 - sigma) * x1 + sigma * noise
        dtype = self.transformer.dtype
        image = sample.image_embeds.to(dtype) if sample.image_embeds is not None else None
        prediction = self.transformer(
            hidden_states=torch.cat([noisy, sample.condition], dim=1).to(dtype),
            timestep=t * 1000.0,
            encoder_hidden_states=sample.prompt_embeds.to(dtype),
            encoder_hidden_states_image=image,
            return_dict=False,
        )[0]
        return F.mse_loss(prediction.float(), (noise - x1).float())

    @torch.no_grad()
    def fixed_loss(self, pairs: int = 8, seed: int = 1234) -> float:
        """Mean loss over a fixed set of (sample, t, noise) draws: a yardstick that does not move with
        the training noise. Uses its own generator; the training stream is untouched."""
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for i in range(pairs):
            sample = self.samples[i % len(self.samples)]
            t = torch.rand(1, generator=generator)
            noise = torch.randn(sample.latents.shape, generator=generator)
            losses.append(self.flow_matching_loss(sample, t, noise).item())
        return sum(losses) / len(losses)

    # -- the loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end after the current step (a checkpoint is written if a folder was given)."""
        self._stop = True

    def draw_timestep(self) -> torch.Tensor:
        """t of the next draw, shape (1,), from the training generator (an expert's trainer narrows it)."""
        return sample_timesteps(self.config, self.generator)

    def train_step(self) -> float:
        """One optimiser step on the next sample(s) of the schedule; returns the (global mean) loss.

        Whatever stops a step before the optimizer runs (an exception, a non-finite loss or gradient) leaves the
        state exactly that of the last completed step: the noise generator is restored, the weights untouched.
        """
        batch = self.global_batch
        generator_state = self.generator.get_state()
        try:
            total = self._forward_backward(batch)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
            for what, value in (("loss", total / batch), ("gradient norm", grad_norm)):
                if not math.isfinite(value):  # caught before the optimizer: the weights are still the last step's
                    self._diverge(f"the {what} became {value}")
        except BaseException:
            self.optimizer.zero_grad(set_to_none=True)
            self.generator.set_state(generator_state)
            raise
        self._mid_step = True  # from here until the step is counted, an exception leaves a half-done state
        self.optimizer.step()
        if not all_finite(self.params):
            self._diverge("the LoRA weights became NaN or infinite")
        self.state.step += 1
        value = total / batch
        self.state.losses.append(value)
        self._mid_step = False
        return value

    def _forward_backward(self, batch: int) -> float:
        """Draw the step's noise, run forward and backward; returns the summed loss of the global batch."""
        draws = []  # every process draws the whole global batch so that generators stay in step
        for slot in range(batch):
            sample = self.sample_for_step(self.state.step * batch + slot)
            t = self.draw_timestep()
            noise = torch.randn(sample.latents.shape, generator=self.generator)
            draws.append((sample, t, noise))
        mine = draws[self.rank * self.config.batch_size : (self.rank + 1) * self.config.batch_size]
        if not self.transformer.training:  # .train() walks every module: ~7% of a tiny step
            self.transformer.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for sample, t, noise in mine:
            loss = self.flow_matching_loss(sample, t, noise)
            (loss if batch == 1 else loss / batch).backward()
            total += loss.item()
        if self.world_size > 1:
            total = self.distributed.all_reduce_sum_([p.grad for p in self.params], total)
        return total

    def run(self, should_stop=None) -> Iterator[StepEvent]:
        """Train up to `config.steps`, yielding a StepEvent per step. Ends early when `stop()` was called or
        `should_stop()` returns True; a checkpoint is then written (when a folder was given)."""
        self._stop = False
        started = time.perf_counter()
        try:
            while self.state.step < self.config.steps:
                if self._stop or (should_stop is not None and should_stop()):
                    break
                with interrupts_between_steps():  # Ctrl-C takes effect after the step and its checkpoint
                    step_started = time.perf_counter()
                    loss = self.train_step()
                    now = time.perf_counter()
                    checkpoint = None
                    every = self.config.checkpoint_every
                    if self.writes_checkpoints and (self.state.step == self.config.steps or (every and self.state.step % every == 0)):
                        checkpoint = str(self.save_checkpoint())
                yield StepEvent(self.state.step, self.config.steps, loss, now - step_started, now - started, checkpoint)
        finally:
            self.transformer.eval()
            if self.writes_checkpoints and self.state.step and self.state.step < self.config.steps \
                    and not self._mid_step and not self.diverged:
                self.save_checkpoint()

    def _diverge(self, cause: str) -> None:
        """Stop the run: `cause` at the coming step; say what to change and what was kept."""
        self.diverged = True
        self._mid_step = False
        folder = self.checkpoint_dir
        kept = "nothing of this run was saved"
        if folder is not None and (folder / CHECKPOINT_STATE).is_file():
            step = json.loads((folder / CHECKPOINT_STATE).read_text()).get("step")
            kept = f"the last good checkpoint (step {step}) is kept"
        lr, alpha = self.config.learning_rate, self.config.alpha
        raise TrainingDiverged(
            f"training diverged: {cause} at step {self.state.step + 1} of {self.config.steps}; lower the learning "
            f"rate (now {lr:g}; e.g. {lr / 10:g}) or the LoRA alpha (now {alpha:g}; e.g. the rank, "
            f"{self.config.rank}); {kept}"
        )

    def train(self, should_stop=None) -> TrainState:
        """Run to the end (or the stop), discarding events; returns the state."""
        for _ in self.run(should_stop):
            pass
        return self.state

    # -- checkpoints --------------------------------------------------------------------------------
    @property
    def writes_checkpoints(self) -> bool:
        return self.checkpoint_dir is not None and self.rank == 0

    def save_checkpoint(self, folder=None) -> Path:
        """Write LoRA weights, AdamW state and the generator's state (safetensors) and the step (JSON)."""
        from safetensors.torch import save_file

        folder = Path(folder or self.checkpoint_dir)
        tensors = {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(self.params)}
        optimizer_state = self.optimizer.state_dict()
        for index, entry in optimizer_state["state"].items():
            for key, value in entry.items():  # bitsandbytes nests its 8-bit state one level down
                for name, item in (value.items() if isinstance(value, dict) else [(None, value)]):
                    full = key if name is None else f"{key}.{name}"
                    tensor = torch.as_tensor(item).detach().cpu().contiguous()
                    # bitsandbytes' quantisation maps are one tensor shared by every parameter: a copy each
                    tensors[f"optimizer.{index}.{full}"] = tensor if name is None else tensor.clone()
        if self.diverged or not all_finite(tensors.values()) or not all(math.isfinite(x) for x in self.state.losses):
            raise TrainingDiverged("the training state holds NaN or infinite values; no checkpoint was written "
                                   "(the last good one is kept); lower the learning rate or the LoRA alpha")
        folder.mkdir(parents=True, exist_ok=True)
        tensors["generator"] = self.generator.get_state()
        state = {
            "step": self.state.step, "losses": self.state.losses, "config": asdict(self.config),
            "param_groups": optimizer_state["param_groups"], "num_params": len(self.params),
        }
        weights_tmp, state_tmp = folder / (CHECKPOINT_WEIGHTS + ".tmp"), folder / (CHECKPOINT_STATE + ".tmp")
        save_file(tensors, str(weights_tmp))
        state_tmp.write_text(json.dumps(state))
        os.replace(weights_tmp, folder / CHECKPOINT_WEIGHTS)
        os.replace(state_tmp, folder / CHECKPOINT_STATE)
        return folder

    def resume(self, folder=None) -> bool:
        """Restore the last checkpoint in `folder` (default: checkpoint_dir); False when there is none."""
        from safetensors.torch import load_file

        folder = Path(folder or self.checkpoint_dir)
        if not (folder / CHECKPOINT_STATE).exists() or not (folder / CHECKPOINT_WEIGHTS).exists():
            return False
        state = json.loads((folder / CHECKPOINT_STATE).read_text())
        if state["num_params"] != len(self.params) or state["config"]["rank"] != self.config.rank:
            raise MaskEditError(f"the checkpoint in {display_path(folder)} was made with other LoRA settings; delete it "
                                "or match them")
        tensors = load_file(str(folder / CHECKPOINT_WEIGHTS))
        if not all_finite(tensors.values()) or not all(math.isfinite(x) for x in state.get("losses", [])):
            raise MaskEditError(
                f"the checkpoint in {display_path(folder)} holds NaN or infinite values: the run that wrote it "
                "diverged, so it is not resumed; start afresh (--no-resume, or delete the folder) with a lower "
                "learning rate or LoRA alpha"
            )
        with torch.no_grad():
            for i, param in enumerate(self.params):
                param.copy_(tensors[f"param.{i}"])
        optimizer_state = {"state": {}, "param_groups": state["param_groups"]}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                entry = optimizer_state["state"].setdefault(int(index), {})
                if name == "step":  # torch keeps a CPU tensor, bitsandbytes an int
                    entry[name] = value if self.config.optimizer == "adamw" else int(value.item())
                elif "." in name:  # bitsandbytes' nested 8-bit state
                    outer, inner = name.split(".", 1)
                    entry.setdefault(outer, {})[inner] = value.to(self.device)
                else:
                    entry[name] = value.to(self.device)
        self.optimizer.load_state_dict(optimizer_state)
        self.generator.set_state(tensors["generator"])
        self.state = TrainState(state["step"], list(state["losses"]))
        return True


# ----- the stage plan (METHOD.md §4–§5, §7, §8)

PLAN_FIELDS = ("window", "window_stride", "condition", "stage2_epochs", "window_frames", "handover_frames")
"""TrainConfig fields that choose the samples; keys and fingerprints hold them as their own parts."""


def run_settings(config: TrainConfig) -> dict:
    """The settings a run's result depends on, JSON-able: `asdict(config)` without how often checkpoints are
    written and the memory options that give bitwise-equal gradients (block swapping, activation offload,
    encoder offload), and without the sample choice (PLAN_FIELDS, recorded beside it)."""
    settings = asdict(config)
    for name in ("checkpoint_every", "blocks_to_swap", "activation_offload", "offload_encoders", *PLAN_FIELDS):
        settings.pop(name, None)
    return settings


def stage2_steps(num_edited: int, epochs: int = DEFAULT_STAGE2_EPOCHS) -> int:
    """Stage-2 steps: each epoch is the clip once plus every edited later frame 9 times."""
    return epochs * (1 + STAGE2_REPEATS * num_edited)


@dataclass
class Stage:
    """One stage of a run: its number (1 clip, 2 clip + edited later frames), samples, config (steps) and the
    fingerprint its checkpoints are marked with (a checkpoint of other inputs is never resumed)."""

    number: int
    items: list[TrainItem]
    config: TrainConfig
    fingerprint: str


def plan_stages(frames, region, prompt: str, config: TrainConfig, base_model: str,
                later: list[tuple[int, object, str]] = ()) -> list[Stage]:
    """The stages of a run. frames: uint8 (F, H, W, 3); region: bool (F, H, W), True = edit; prompt: the
    composed training prompt; later: (index K, edited uint8 (H, W, 3), composed prompt) per edited later frame.

    Stage 1 trains on the clip (or its windows) with the mask condition, or with the stock condition for the
    naive baseline (boxes unused, never stage 2). Stage 2 adds every edited later frame 9 times per epoch beside
    one clip (its windows share the clip's place, `stage2_items`) for `stage2_steps(len(later),
    config.stage2_epochs)` steps."""
    from ..media.hashing import array_digest, json_digest

    window = config.window_for(frames.shape[0])
    window_part = {"window": [window, config.window_stride]} if window else {}
    if config.naive:
        if later:
            raise MaskEditError("the naive-LoRA baseline trains on the clip alone (stock condition, no stage 2); "
                                "leave out the edited later frames")
        starts = window_starts(frames.shape[0], window, config.window_stride) if window else [0]
        clip_list = [TrainItem(naive_sample(frames[s:s + window] if window else frames, prompt)) for s in starts]
        stage1_print = json_digest(dict(condition=STOCK_CONDITION, base=base_model, clip=array_digest(frames),
                                        prompt=prompt, config=run_settings(config), **window_part))
    else:
        clip_list = clip_items(frames, region, prompt, window, config.window_stride)
        stage1_print = json_digest(dict(base=base_model, clip=array_digest(frames), region=array_digest(region),
                                        prompt=prompt, config=run_settings(config), **window_part))
    stages = [Stage(1, clip_list, config, stage1_print)]
    if later:
        items = stage2_items(clip_list, [stage2_sample(frames[k], frame, region[k], text) for k, frame, text in later])
        config2 = replace(config, steps=stage2_steps(len(later), config.stage2_epochs))
        stage2_print = json_digest(dict(
            stage1=stage1_print, frames={str(k): array_digest(frame) for k, frame, _ in later},
            prompts=[text for _, _, text in later], config=run_settings(config2),
            **({"windows_share_clip": True} if len(clip_list) > 1 else {})))
        stages.append(Stage(2, items, config2, stage2_print))
    return stages


def restore_encoders(pipe) -> None:
    """Undo `release_encoders`: bring the VAE and encoders back beside the transformer (the pipeline's execution
    device follows its text encoder, so they must move back before anything is encoded again)."""
    device = next(pipe.transformer.parameters()).device
    if device.type == "cpu" or encoder_offload(pipe) is not None:  # offloaded encoders come when they run
        return
    for name in ("vae", "text_encoder", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(device)


def with_plan(config: TrainConfig, *, window: int | None = None, window_stride: int | None = None,
              naive: bool | None = None, stage2_epochs: int | None = None) -> TrainConfig:
    """`config` with the sample-choice fields that are given (None: keep the config's)."""
    changes = check_settings(window=window, window_stride=window_stride, stage2_epochs=stage2_epochs)
    if naive is not None:
        changes["condition"] = STOCK_CONDITION if naive else MASK_CONDITION
    return replace(config, **changes) if changes else config
