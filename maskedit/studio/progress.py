"""Training progress: the one event vocabulary, its wire form, and the one accumulator.

Every training report is a small dataclass — `lora_cache.CacheNote`, `train.EditTrainingNote`,
`train.EditTrainingStage`, `training.StepEvent`, `train.EditTrainingStopped`, `train.EditTrainingDone`
— plus two of the chunked runner (`ChunkEnded`: the call's time budget is used up; `UserStopped`: the user's
stop, with the loadable LoRA of the steps so far). They cross a ZeroGPU call as plain dicts (`to_wire`
in the GPU worker, `from_wire` in the app), nowhere else. `TrainProgress` turns a stream of them into
what the UI shows (steps and losses on one axis across stages, s/step, ETA, messages, the LoRA).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..workflow.train import (EditTrainingDone, EditTrainingEncoding, EditTrainingNote, EditTrainingStage,
                              EditTrainingStopped)
from ..workflow.lora_cache import CacheNote
from ..method.training import StepEvent

SMOOTHING = 0.9  # exponential moving average of the loss curve
RAW, SMOOTHED = "loss at each step", "smoothed (moving average)"
"""The loss plot's two series, as its legend names them."""


@dataclass
class ChunkStarted:
    """A training call begins (index 0 = the first; later ones resume the checkpoint)."""

    index: int


@dataclass
class ChunkEnded:
    """The call's time budget is used up; the checkpoint is saved and the next call resumes it."""

    stage: int
    step: int
    total_steps: int


@dataclass
class UserStopped:
    """The user stopped training: the checkpoint is kept; `partial` is a loadable LoRA of the steps so far."""

    stage: int
    step: int
    total_steps: int
    partial: str | None


EVENT_TYPES = {cls.__name__: cls for cls in (CacheNote, EditTrainingNote, EditTrainingEncoding, EditTrainingStage, StepEvent,
                                             EditTrainingStopped, EditTrainingDone, ChunkStarted, ChunkEnded,
                                             UserStopped)}
ENDING = (EditTrainingDone, UserStopped)


def to_wire(event) -> dict:
    """A training event as a plain dict {"event": its class name, **its fields} (for a ZeroGPU call)."""
    return {"event": type(event).__name__, **asdict(event)}


def from_wire(data: dict):
    """The event `to_wire` made."""
    cls = EVENT_TYPES[data["event"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def smoothed(losses, factor: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average of a loss curve."""
    out, average = [], 0.0
    for index, value in enumerate(losses, start=1):
        average = factor * average + (1 - factor) * float(value)
        out.append(average / (1 - factor ** index))
    return out


def loss_rows(steps, losses) -> list[dict]:
    """Rows for a line plot: {"step", "loss", "series": RAW | SMOOTHED}."""
    rows = [{"step": int(s), "loss": float(v), "series": RAW} for s, v in zip(steps, losses)]
    rows += [{"step": int(s), "loss": float(v), "series": SMOOTHED} for s, v in zip(steps, smoothed(losses))]
    return rows


def format_eta(seconds: float | None) -> str:
    """"1h 02m", "3m 05s", "42s", or "–" when unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{secs}s")


@dataclass
class TrainProgress:
    """What a run reported so far. Steps count on across stages (stage 2's step 1 follows stage 1's last).

    history(stage) → the losses a resumed checkpoint already holds (so the curve starts complete)."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    total: int = 0
    messages: list[str] = field(default_factory=list)
    lora: str | None = None
    partial: str | None = None
    stopped_at: int | None = None
    chunks: int = 0
    history: object = None
    phase: str = "starting"  # "starting" | "encoding" | "training" | "saving" | "checkpoint" | "done" | "stopped"
    encoding: str = ""  # what is being encoded ("stage 1: 1 sample")
    encode_s: float | None = None  # seconds the last encoding took
    _phase_started: float = field(default_factory=time.perf_counter, repr=False)
    _offsets: dict = field(default_factory=lambda: {1: 0})
    _offset: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, event) -> None:
        """Record one event (typed, or its wire dict)."""
        if isinstance(event, dict):
            event = from_wire(event)
        with self._lock:
            if isinstance(event, CacheNote) and event.kind == "resume" and self.chunks > 1:
                return  # a later call of the same run resumes its own checkpoint: nothing new to say
            if isinstance(event, EditTrainingEncoding):
                self._enter("encoding")
                self.encoding = f"stage {event.stage}: {event.samples} sample{'s' if event.samples != 1 else ''}"
            elif isinstance(event, (EditTrainingNote, CacheNote)):
                self.messages.append(event.message)
            elif isinstance(event, EditTrainingStage):
                if self.phase == "encoding":
                    self.encode_s = time.perf_counter() - self._phase_started
                self._enter("training")
                self._offset = self._offsets.get(event.stage, self._offset)
                self.total = self._offset + event.total_steps
                self._offsets[event.stage + 1] = self.total
                if event.start_step and not self.steps and self.history is not None:
                    old = [float(v) for v in self.history(event.stage)][: event.start_step]
                    self.steps.extend(self._offset + i + 1 for i in range(len(old)))
                    self.losses.extend(old)
            elif isinstance(event, StepEvent):
                self.steps.append(self._offset + event.step)
                self.losses.append(float(event.loss))
                self.seconds.append(float(event.seconds))
                if event.step == event.total_steps:  # the stage's last step: its checkpoint, then the LoRA, are saved
                    self._enter("saving")
            elif isinstance(event, ChunkEnded):
                self._enter("checkpoint")
            elif isinstance(event, ChunkStarted):
                self.chunks = event.index + 1
                if event.index:
                    self.messages.append(f"GPU call {event.index + 1} (resuming the checkpoint)")
            elif isinstance(event, UserStopped):
                self.partial, self.stopped_at = event.partial, event.step
                self._enter("stopped")
            elif isinstance(event, EditTrainingDone):
                self.lora = event.lora_path
                self._enter("done")

    def _enter(self, phase: str) -> None:
        self.phase, self._phase_started = phase, time.perf_counter()

    @property
    def step(self) -> int:
        return self.steps[-1] if self.steps else 0

    @property
    def seconds_per_step(self) -> float | None:
        return float(np.mean(self.seconds[-10:])) if self.seconds else None

    @property
    def eta_s(self) -> float | None:
        per_step = self.seconds_per_step
        return max(0, self.total - self.step) * per_step if per_step else None

    def rows(self) -> list[dict]:
        return loss_rows(self.steps, self.losses)

    def points(self) -> dict:
        """{"step": [...], "loss": [...]}: the raw curve as plain lists."""
        with self._lock:
            return {"step": list(self.steps), "loss": list(self.losses)}

    def phase_words(self) -> tuple[str, str]:
        """(what the run does now, its own progress): ("encoding the condition", "stage 1: 1 sample; VAE, text and
        image encoders, once per run · step 0 / 10 next"), ("training", "step 3 / 10 · 0.52 s/step · ETA 4s"),
        ("saving", "step 10 / 10 done; writing the checkpoint and the LoRA files"), …"""
        per_step = self.seconds_per_step
        steps = f"step {self.step} / {self.total}" + (f" · {per_step:.2f} s/step" if per_step else "")
        encoded = f" · encoded in {self.encode_s:.0f} s" if self.encode_s is not None else ""
        return {
            "starting": ("starting", "reading the clip and loading the run"),
            "encoding": ("encoding the condition", f"{self.encoding}; VAE, text and image encoders, once per run · "
                                                   f"step 0 / {self.total} next"),
            "training": ("training", f"{steps} · ETA {format_eta(self.eta_s)}{encoded}"),
            "saving": ("saving", f"{steps} done; writing the checkpoint and the LoRA files"),
            "checkpoint": ("saving the checkpoint", f"{steps}; the next GPU call resumes it"),
            "done": ("done", f"{steps}{encoded}"),
            "stopped": ("stopped", steps),
        }[self.phase]

    def line(self, last_messages: int = 4) -> str:
        """"**phase** — its progress" (`phase_words`) and the latest messages (Markdown)."""
        head, detail = self.phase_words()
        return f"**{head}** — {detail}" + "".join(f"  \n{m}" for m in self.messages[-last_messages:])


RENDER_PHASES = {"starting": "preparing the render", "encoding": "encoding the prompt, the edited frame and the condition",
                 "denoising": "denoising", "decoding": "decoding the video (VAE)",
                 "writing": "writing the videos and the report"}
"""What each phase of a render does, in the page's words (`studio.generation.run_generation`'s phases)."""


@dataclass
class RenderProgress:
    """A render's progress for the page: its phase, step k of n, and an honest time left — the steps still to run
    at the measured seconds per step plus the decode, whose time is known only from an earlier render of the same
    clip size (`known`: {phase: seconds}; until then the estimate says the decode is not counted)."""

    steps: int
    known: dict = field(default_factory=dict)
    phase: str = "starting"
    step: int = 0
    step_seconds: list[float] = field(default_factory=list)

    def add(self, kind: str, value) -> None:
        """A run_generation event: ("phase", name) or ("step", (step, total, seconds))."""
        if kind == "phase":
            self.phase = value
        elif kind == "step":
            self.step, self.steps = int(value[0]), int(value[1])
            if len(value) > 2:
                self.step_seconds.append(float(value[2]))

    def view(self) -> tuple[tuple[int, int], str]:
        """((denoising steps done, of steps); one line saying what runs now and how long is left)."""
        words = RENDER_PHASES.get(self.phase, self.phase)
        decode = self.known.get("decoding")
        if self.phase != "denoising":
            known = self.known.get(self.phase)
            done = self.steps if self.phase in ("decoding", "writing") else self.step
            return (done, self.steps), words + (f" (≈ {format_eta(known)} last time)" if known else "")
        per_step = float(np.mean(self.step_seconds[-5:])) if self.step_seconds else None
        text = f"denoising step {self.step} / {self.steps}"
        if per_step is not None:
            left = (self.steps - self.step) * per_step
            text += f" · {per_step:.1f} s/step · ≈ {format_eta(left + (decode or 0))} left"
            text += f" (decode ≈ {format_eta(decode)})" if decode else " + the decode (not measured yet)"
        return (self.step, self.steps), text
