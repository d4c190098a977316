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
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..workflow.train import EditTrainingDone, EditTrainingNote, EditTrainingStage, EditTrainingStopped
from ..workflow.lora_cache import CacheNote
from ..method.training import StepEvent

SMOOTHING = 0.9  # exponential moving average of the loss curve


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


EVENT_TYPES = {cls.__name__: cls for cls in (CacheNote, EditTrainingNote, EditTrainingStage, StepEvent,
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
    """Rows for a line plot: {"step", "loss", "series": "raw" | "smoothed"}."""
    rows = [{"step": int(s), "loss": float(v), "series": "raw"} for s, v in zip(steps, losses)]
    rows += [{"step": int(s), "loss": float(v), "series": "smoothed"} for s, v in zip(steps, smoothed(losses))]
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
            if isinstance(event, (EditTrainingNote, CacheNote)):
                self.messages.append(event.message)
            elif isinstance(event, EditTrainingStage):
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
            elif isinstance(event, ChunkStarted):
                self.chunks = event.index + 1
                if event.index:
                    self.messages.append(f"GPU call {event.index + 1} (resuming the checkpoint)")
            elif isinstance(event, UserStopped):
                self.partial, self.stopped_at = event.partial, event.step
            elif isinstance(event, EditTrainingDone):
                self.lora = event.lora_path

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

    def line(self, head: str, last_messages: int = 4) -> str:
        """"**head** — step 3 / 10 · 0.52 s/step · ETA 4s" and the latest messages (Markdown)."""
        per_step = self.seconds_per_step
        text = (f"**{head}** — step {self.step} / {self.total}" + (f" · {per_step:.2f} s/step" if per_step else "")
                + f" · ETA {format_eta(self.eta_s)}")
        return text + "".join(f"  \n{m}" for m in self.messages[-last_messages:])
