"""A training run that goes on while the user does something else (issue 8). Pure Python, no gradio.

A `BackgroundJob` chains training chunks (`studio.runs.run_training_chunk`-style callables yielding
`studio.progress` events) and records what they report in one `TrainProgress` — steps, losses, notes,
the LoRA when done — for any number of readers (`snapshot`). It is driven either by its own thread
(`start`) or, where threads cannot reach the GPU (ZeroGPU: each chunk must be a call made by the user's
session), by the caller (`drive_one`, `drive`). It stops between steps: `request_stop` (the chunk saves a
loadable partial LoRA; the checkpoint stays, a new job resumes it) or `cancel` (its inputs changed: the
run is discarded, `on_discard` runs once it has ended).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import MaskEditError

QUEUED, TRAINING, DONE, STOPPED, CANCELLED, FAILED = "queued", "training", "done", "stopped", "cancelled", "failed"
ENDED = (DONE, STOPPED, CANCELLED, FAILED)


class BackgroundJob:
    """run_chunk(again: bool) → iterator of training events (`studio.progress`); `again` is False for the
    first chunk only. stop_file: the file whose existence stops a chunk between steps (touched by
    request_stop/cancel). history(stage) → the losses of a resumed checkpoint, for the curve."""

    def __init__(self, key: str, run_chunk: Callable[[bool], Iterator] | None, stop_file, resume: bool = True,
                 parts: dict | None = None, history: Callable[[int], list] | None = None):
        from .progress import TrainProgress

        self.key = key
        self.run_chunk = run_chunk
        self.stop_file = Path(stop_file)
        self.resume = resume
        self.parts = parts or {}  # what the key was made of (lora_cache.key_parts), to say what changed
        self.history = history
        self.progress = TrainProgress(history=history)
        self.status = QUEUED
        self.error: str | None = None
        self.chunks = 0
        self.started = time.time()
        self.on_discard: Callable[[], None] | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self._driving = threading.Lock()
        self._ended = threading.Event()
        self.thread: threading.Thread | None = None
        self.stop_file.unlink(missing_ok=True)

    @classmethod
    def finished(cls, key: str, lora: str, message: str, stop_file, parts: dict | None = None) -> "BackgroundJob":
        """A job that needs no training: its LoRA is already there (a cache hit)."""
        job = cls(key, None, stop_file, parts=parts)
        job.progress.lora = lora
        job.progress.messages.append(message)
        job._finish(DONE)
        return job

    def resumed(self) -> "BackgroundJob":
        """A new job on the same run, resuming its checkpoint (after a stop)."""
        return BackgroundJob(self.key, self.run_chunk, self.stop_file, True, self.parts, self.history)

    # -- state
    @property
    def active(self) -> bool:
        return self.status not in ENDED

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def lora(self) -> str | None:
        return self.progress.lora

    @property
    def partial(self) -> str | None:
        return self.progress.partial

    def snapshot(self) -> dict:
        """Plain values: key, status, step, total_steps, steps, losses, seconds_per_step, eta_s, messages,
        lora, partial, error, chunks, phase ((what the run does now, its progress): `TrainProgress.phase_words`)."""
        p = self.progress
        points = p.points()
        return {"key": self.key, "status": self.status, "step": points["step"][-1] if points["step"] else 0,
                "total_steps": p.total, "steps": points["step"], "losses": points["loss"],
                "seconds_per_step": p.seconds_per_step, "eta_s": p.eta_s, "messages": list(p.messages),
                "lora": p.lora, "partial": p.partial, "error": self.error, "chunks": self.chunks,
                "phase": p.phase_words()}

    def wait(self, timeout: float | None = None) -> bool:
        """True when the job has ended (within timeout)."""
        return self._ended.wait(timeout)

    # -- stopping
    def request_stop(self) -> None:
        """End after the current step, keeping the checkpoint (and a partial LoRA)."""
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.touch()
        if self.status == QUEUED and self.thread is None and not self._driving.locked():
            self._finish(STOPPED)

    def cancel(self, on_discard: Callable[[], None] | None = None) -> None:
        """Discard the run (its inputs changed); on_discard() runs once it has ended (maybe right away)."""
        with self._lock:
            self._cancelled = True
            self.on_discard = on_discard
        self.request_stop()
        if not self.active or (self.thread is None and not self._driving.locked()):
            self._finish(CANCELLED)

    # -- driving
    def start(self) -> "BackgroundJob":
        """Run every chunk in a daemon thread."""
        self.thread = threading.Thread(target=self._run_thread, name=f"maskedit-train-{self.key}", daemon=True)
        self.thread.start()
        return self

    def _run_thread(self) -> None:
        for _ in self.drive():
            pass

    def drive(self) -> Iterator[dict]:
        """Drive chunks until the job ends; yields a snapshot after each event (for a caller that streams)."""
        while self.active:
            ran = False
            for snapshot in self.drive_one():
                ran = True
                yield snapshot
            if not ran:
                break

    def drive_one(self) -> Iterator[dict]:
        """Run one chunk (nothing when another caller is driving it or it has ended); yields snapshots."""
        from ..workflow.train import EditTrainingDone
        from .progress import ChunkEnded, UserStopped

        if not self.active or not self._driving.acquire(blocking=False):
            return
        try:
            if self._cancelled:
                self._finish(CANCELLED)
                return
            self.status = TRAINING
            again = self.chunks > 0 or self.resume
            self.chunks += 1
            last = None
            try:
                for event in self.run_chunk(again):
                    last = event
                    self.progress.add(event)
                    yield self.snapshot()
            except Exception as error:  # noqa: BLE001 (reported to the UI; the thread must not die silently)
                self.error = str(error) if isinstance(error, MaskEditError) else f"{type(error).__name__}: {error}"
                self._finish(FAILED)
                yield self.snapshot()
                return
            if isinstance(last, EditTrainingDone):
                self._finish(CANCELLED if self._cancelled else DONE)
            elif isinstance(last, UserStopped) or self._cancelled:
                self._finish(CANCELLED if self._cancelled else STOPPED)
            elif not isinstance(last, ChunkEnded):
                self.error = "training ended without saving a LoRA or a checkpoint; see the server log"
                self._finish(FAILED)
            yield self.snapshot()
        finally:
            self._driving.release()

    def _finish(self, status: str) -> None:
        with self._lock:
            if self._ended.is_set():
                return
            self.status = status
            discard = self.on_discard if status == CANCELLED else None
        self.stop_file.unlink(missing_ok=True)
        if discard is not None:
            try:
                discard()
            except OSError:
                pass
        self._ended.set()
