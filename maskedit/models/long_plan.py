"""The planner for clips longer than one window (METHOD.md §7b): one window's dry run, scaled to the clip.

    plan = estimate_long("24gb", num_frames=961)        # a 60 s clip at 16 fps: 12 windows of 81 frames
    plan.peak_gpu_gib, plan.time_floor_s(card), plan.disk_bytes, plan.table(card)

A long clip is trained on windows drawn across it and generated window after window, each window exactly an edit of
one window (`workflow.long_clip`), so the GPU peak of the whole clip is one full window's (`planner.estimate` at
`window_frames`; the last, shorter window needs no more) and host memory is one window's: frames, boxes, encodings
and generated windows stay on disk (`media.clipstore`, `method.long_training.EncodedStore`). What grows with the
clip is time and disk:
- time floor = stage-1 steps × one training step + per window (its training encodes, then its generation: condition
  encode, denoising steps, decode) — every FLOP of the one-window dry run's phases, at the card's peak (a floor);
- disk = the conformed frames (F×H×W×3 bytes) + the boxes (F×H×W) + the encoded training windows (float32 latents,
  condition and CLIP tokens per window, the prompt's once) + the generated windows' frames (F×H×W×3); the mp4 files
  written beside them are a few percent of that and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..defaults import DEFAULT_HANDOVER_FRAMES
from .cards import Card
from .planner import GB, GIB, Plan, estimate

LATENT_CHANNELS, CONDITION_CHANNELS = 16, 20  # the VAE's latents; the packed mask (4) + condition latents (16)
CLIP_TOKENS = 257  # CLIP ViT-H/14 image tokens (Wan2.1's image encoder)
FLOAT32 = 4


@dataclass
class LongPlan:
    """A long clip's plan: `window` is the dry run of one full window; the rest is the clip's arithmetic."""

    window: Plan
    num_frames: int
    window_frames: int
    handover_frames: int
    windows: int
    last_window_frames: int
    train_steps: int
    generation_steps: int

    @property
    def peak_gpu_gib(self) -> float:
        """GPU peak of the whole clip: one full window's (windows run one after another)."""
        return self.window.peak_gpu_gib

    @property
    def peak_host_gib(self) -> float:
        """Host memory peak: one window's (the clip, its encodings and the output stay on disk) plus the window's
        frames, boxes and generated frames in uint8."""
        pixels = self.window_frames * self.window.width * self.window.height
        return self.window.peak_host_gib + pixels * (3 + 1 + 3) / GIB

    def fits(self, memory_gb: float) -> bool:
        return self.window.fits(memory_gb)

    @property
    def disk_bytes(self) -> int:
        """Bytes on disk while the edit runs (see the module docstring)."""
        width, height = self.window.width, self.window.height
        pixels = self.num_frames * width * height
        return pixels * 3 + pixels + self.encoded_bytes + pixels * 3

    @property
    def training_samples(self) -> tuple[int, int]:
        """(stage-1 samples, frames each) of the clip (`long_training.long_window_specs`): every generation window,
        or the preset's short training windows across the clip; with a hand-over > 1 each once more, prefixed."""
        from ..method.long_training import long_window_specs
        from ..method.training import TrainConfig

        preset = self.window.preset
        specs = long_window_specs(self.num_frames, TrainConfig(
            window=preset.window, window_stride=preset.window_stride, window_frames=self.window_frames,
            handover_frames=self.handover_frames))
        return len(specs), max(spec.length for spec in specs)

    @property
    def encoded_bytes(self) -> int:
        """The encoded training samples (float32): latents and condition per sample, CLIP tokens per sample, the
        prompt's embeddings once (512 tokens)."""
        count, frames = self.training_samples
        latent_frames = (frames - 1) // 4 + 1
        area = (self.window.width // 8) * (self.window.height // 8)
        per_sample = (LATENT_CHANNELS + CONDITION_CHANNELS) * latent_frames * area * FLOAT32
        per_sample += CLIP_TOKENS * 1280 * FLOAT32
        return count * per_sample + 512 * 4096 * FLOAT32

    def window_seconds(self, card: Card) -> float:
        """The floor of one window: its training encodes and its generation (every phase but training steps)."""
        return self.window.time_floor_s(card, train_steps=0, generation_steps=self.generation_steps)

    def time_floor_s(self, card: Card) -> float:
        """The whole clip's floor: stage-1 steps plus every window's encodes and generation."""
        step = self.window.phases.get("training step")
        training = self.train_steps * (step.time_floor_s(card) if step else 0.0)
        return training + self.windows * self.window_seconds(card)

    def table(self, card: Card) -> str:
        """Per window and for the clip: GPU peak, host memory, time floor, disk."""
        lines = [f"{self.num_frames} frames: {self.windows} windows of up to {self.window_frames} frames "
                 f"(the last {self.last_window_frames}), {self.handover_frames} hand-over frame(s)",
                 f"per window: GPU peak {self.window.peak_gpu_bytes / GB:.1f} GB, host {self.peak_host_gib:.1f} GiB, "
                 f"time floor {self.window_seconds(card):.0f} s on an {card.name} (encodes, "
                 f"{self.generation_steps} denoising steps, decode)",
                 f"training: {self.train_steps} steps, at least {self.train_steps * self._step_s(card):.0f} s",
                 f"whole clip: at least {self.time_floor_s(card):.0f} s ({self.time_floor_s(card) / 3600:.2f} h) on an "
                 f"{card.name}; disk ≈ {self.disk_bytes / GB:.1f} GB (frames {self.num_frames * self._frame_bytes() / GB:.1f} GB, "
                 f"{self.training_samples[0]} encoded training samples {self.encoded_bytes / GB:.1f} GB, generated frames "
                 f"{self.num_frames * self._frame_bytes() / GB:.1f} GB)"]
        return "\n".join(lines)

    def _step_s(self, card: Card) -> float:
        step = self.window.phases.get("training step")
        return step.time_floor_s(card) if step else 0.0

    def _frame_bytes(self) -> int:
        return self.window.width * self.window.height * 3

    def to_dict(self, card: Card | None = None) -> dict:
        data = {"frames": self.num_frames, "window_frames": self.window_frames,
                "handover_frames": self.handover_frames, "windows": self.windows,
                "last_window_frames": self.last_window_frames, "train_steps": self.train_steps,
                "generation_steps": self.generation_steps, "peak_gpu_gib": round(self.peak_gpu_gib, 3),
                "peak_host_gib": round(self.peak_host_gib, 3), "disk_gb": round(self.disk_bytes / GB, 3),
                "encoded_gb": round(self.encoded_bytes / GB, 3), "training_samples": self.training_samples[0]}
        if card is not None:
            data.update(gpu=card.name, window_time_floor_s=round(self.window_seconds(card), 1),
                        time_floor_s=round(self.time_floor_s(card), 1))
        return data


def estimate_long(preset="full", num_frames: int = 161, size: tuple[int, int] | None = None, model: str | None = None,
                  window_frames: int | None = None, handover_frames: int = DEFAULT_HANDOVER_FRAMES,
                  train_steps: int | None = None, attention: str = "flash", **overrides) -> LongPlan:
    """The plan of a clip of `num_frames` frames edited in windows: `planner.estimate` of one `window_frames`-frame
    window (the preset's settings, `overrides`) and the clip's windows, steps, time and disk. train_steps: the
    stage-1 steps (None: `windows.long_clip_steps` of the preset's). window_frames None: the preset's."""
    from ..method.windows import long_clip_steps, plan_windows
    from .planner import DEFAULT_MODEL_ID
    from .presets import get_preset

    if window_frames is None:
        window_frames = (get_preset(preset) if isinstance(preset, str) else preset).window_frames

    windows = plan_windows(num_frames, window_frames, handover_frames)
    window = estimate(preset, window_frames, size, model or DEFAULT_MODEL_ID, attention=attention, **overrides)
    steps = train_steps if train_steps is not None else \
        long_clip_steps(window.preset.train_steps, len(plan_windows(num_frames, window_frames, 1)))
    return LongPlan(window, num_frames, window_frames, handover_frames, len(windows), windows[-1].num_frames, steps,
                    window.preset.generation_steps)
