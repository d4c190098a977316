"""Training in calls of bounded length (ZeroGPU allows a few minutes per GPU call), through the LoRA cache.

    request = ChunkRequest(prepared_dir, cache_root, caption, config, trigger="p3rs0n", base_model="tiny")
    for event in train_in_chunks(lambda again: run_training_chunk(pipe, replace(request, resume=again))):
        progress.add(event)

Each call (`run_training_chunk`) goes through `workflow.train.train_cached` — the path the CLI takes too — so it
resumes the entry's checkpoint, trains until its time budget or step limit is near, and leaves the
checkpoint (bit-exact resume) for the next call; `train_in_chunks` chains calls until the LoRA is saved or
the user stops. Events are `studio.progress`'s typed events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import MaskEditError
from ..models.zerogpu import GPU_SIZES, asked_seconds
from .progress import ChunkEnded, ChunkStarted, UserStopped

DEFAULT_CHUNK_SECONDS = 110.0
"""Per-call GPU budget of one training chunk (ZeroGPU calls should stay under ~2 minutes)."""
PARTIAL_FOLDER = "partial"


@dataclass
class ChunkRequest:
    """One training call: the prepared clip folder, the cache it trains in, the caption, the TrainConfig
    (windows, condition and stage-2 epochs included), edited later frames {K: PNG path}, the time budget
    (seconds of wall time; the next step must be expected to end within it), a step limit (tests), the file
    whose existence is the user's stop, whether to resume the entry's checkpoint, and the ZeroGPU size
    ("large" | "xlarge") the call needs, the edited later frames' captions {K: text} and the edited first
    frame's caption (lora.json; `train.train_edit_lora`), and the planner's seconds per step on the call's
    GPU (`studio.estimate.training_step_seconds`; None for the tiny model). Pickle-friendly: it crosses into a
    ZeroGPU worker."""

    prepared_dir: str
    cache_root: str
    caption: str
    config: object  # training.TrainConfig
    trigger: str
    base_model: str
    later_frames: dict = field(default_factory=dict)
    cache_bytes: int | None = None
    budget_s: float = DEFAULT_CHUNK_SECONDS
    max_steps: int | None = None
    stop_file: str | None = None
    resume: bool = True
    save_partial: bool = True
    gpu_size: str = "large"
    later_captions: dict = field(default_factory=dict)
    edit_caption: str | None = None
    step_s: float | None = None  # the planner's seconds per training step on this call's GPU (None: unknown)

    def __post_init__(self):
        if self.gpu_size not in GPU_SIZES:
            raise MaskEditError(f"the GPU size must be one of {GPU_SIZES}, got {self.gpu_size!r}")

    @property
    def needed_s(self) -> int:
        """The GPU time the call needs: the budget plus model transfer and sample encoding, and at least one
        step by the planner's figure (`studio.estimate.training_call_seconds`; MaskEditError if no call holds
        one). ZeroGPU schedules this much."""
        from .estimate import training_call_seconds

        return training_call_seconds(self.budget_s, self.step_s)

    @property
    def duration_s(self) -> int:
        """The `duration` to ask of spaces for `needed_s` on this call's size (`zerogpu.asked_seconds`)."""
        return asked_seconds(self.needed_s, self.gpu_size)

    def key(self) -> str:
        """The cache key of this run (`lora_cache.cache_key`)."""
        from ..workflow import prepare
        from ..workflow.lora_cache import cache_key
        from ..workflow.train import stage2_captions

        prepared = prepare.load_prepared(self.prepared_dir)
        later = self._later(prepared)
        return cache_key(prepared, self.caption, self.trigger, self.config, self.base_model, later,
                         stage2_captions(later, self.captions()))

    def captions(self) -> dict:
        """{K: caption} of the edited later frames (int keys)."""
        return {int(k): str(v) for k, v in (self.later_captions or {}).items()}

    def _later(self, prepared) -> dict:
        from ..workflow import prepare

        return {int(k): prepare.load_edited_frame(path, prepared.width, prepared.height, what=f"edited frame {k}")
                for k, path in (self.later_frames or {}).items()}


def run_training_chunk(pipe, request: ChunkRequest) -> Iterator:
    """One call's worth of training: `workflow.train.train_cached` events, with a stop for the budget reported as
    `ChunkEnded` (call again) and the user's stop as `UserStopped` (its partial LoRA saved in
    <entry>/partial when `save_partial`)."""
    from ..method import training
    from ..method.lora import save_lora
    from ..workflow import prepare, train
    from ..workflow.lora_cache import CacheNote, LoraCache
    from ..method.training import StepEvent, TrainingDiverged

    started = time.perf_counter()
    prepared = prepare.load_prepared(request.prepared_dir)
    later = request._later(prepared)
    state = {"steps": 0, "last": 0.0, "user": False}

    def should_stop() -> bool:
        if request.stop_file is not None and Path(request.stop_file).exists():
            state["user"] = True
            return True
        if request.max_steps is not None and state["steps"] >= request.max_steps:
            return True
        elapsed = time.perf_counter() - started
        return state["steps"] > 0 and elapsed + 1.5 * state["last"] > request.budget_s

    cache = LoraCache(request.cache_root, request.cache_bytes)
    events = train.train_cached(pipe, prepared, request.caption, request.config, cache=cache, trigger=request.trigger,
                          base_model=request.base_model, edited_later=later, resume=request.resume,
                          should_stop=should_stop, later_captions=request.captions(),
                          edit_caption=request.edit_caption)
    entry = None
    try:
        for event in events:
            if isinstance(event, CacheNote) and event.path:
                entry = Path(event.path)
            if isinstance(event, StepEvent):
                state["steps"] += 1
                state["last"] = event.seconds
            if isinstance(event, train.EditTrainingStopped):
                if not state["user"]:
                    yield ChunkEnded(event.stage, event.step, event.total_steps)
                    continue
                partial = None
                if request.save_partial and entry is not None:
                    meta = {"partial": True, "stage": event.stage, "step": event.step,
                            "total_steps": event.total_steps, "base_model": request.base_model,
                            "trigger": request.trigger, "caption": request.caption, "frames": prepared.num_frames,
                            "width": prepared.width, "height": prepared.height}
                    if request.config.naive:
                        meta.update(condition=training.STOCK_CONDITION, method="naive-lora")
                    partial = str(save_lora(pipe, entry / PARTIAL_FOLDER, meta))
                yield UserStopped(event.stage, event.step, event.total_steps, partial)
                continue
            if isinstance(event, train.EditTrainingDone) and entry is not None:
                import shutil

                shutil.rmtree(entry / PARTIAL_FOLDER, ignore_errors=True)
            yield event
    except TrainingDiverged:
        from ..method.lora import unload_lora

        unload_lora(pipe)  # its weights are not finite: nothing may generate with this adapter
        raise
    finally:
        events.close()


def train_in_chunks(call_chunk: Callable[[bool], Iterator], max_chunks: int = 10_000) -> Iterator:
    """Chain training calls until the LoRA is saved or the user stops. call_chunk(again) runs one chunk
    (again: False for the first call only). Yields a `ChunkStarted` before each call, then its events."""
    from ..workflow.train import EditTrainingDone

    for index in range(max_chunks):
        yield ChunkStarted(index)
        last = None
        for event in call_chunk(index > 0):
            last = event
            yield event
            if isinstance(event, (EditTrainingDone, UserStopped)):
                return
        if not isinstance(last, ChunkEnded):
            raise MaskEditError("training ended without saving a LoRA or a checkpoint; see the server log")
    raise MaskEditError(f"training did not finish in {max_chunks} calls")
