"""Training an edit's LoRA (METHOD.md §4, §5, §7): the events of a run, the run itself (`train_edit_lora`), and
the one trip through the LoRA cache (`train_cached`: look up → reuse, resume or train → store).

    for event in train_edit_lora(pipe, prepared, "a red car on a road", TrainConfig(), "work/lora"):
        ...                                   # EditTrainingStage / StepEvent / EditTrainingNote / ... events
    for event in train_cached(pipe, prepared, caption, config, cache=LoraCache(), trigger="p3rs0n", base_model=...):
        ...                                   # CacheNote, then train_edit_lora's events

Long work reports through events (a generator of small dataclasses) and stops between steps (`should_stop`).
A stopped run keeps its checkpoint; the LoRA files are written only at the end, under temporary names.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..defaults import DEFAULT_TRIGGER, negative_prompt_name, negative_prompt_text
from ..errors import MaskEditError
from ..limits import check_prompt
from ..media.files import write_text
from ..media.video import check_image_size
from ..method.conditioning import compose_prompt
from ..method.experts import (EXPERTS, HIGH_NOISE, expert_file_names, is_two_expert, load_edit_lora, make_trainer,
                              save_expert_loras)
from ..method.lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME, read_metadata, save_lora, unload_lora
from ..method.training import (CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, CHECKPOINTS_FOLDER, STOCK_CONDITION, StepEvent, TrainConfig,
                               check_optimizer, plan_stages, restore_encoders, with_plan)
from ..method.long_training import EncodedStore, encode_to_store, plan_long_stages, remove_store
from ..method.windows import plan_windows
from .lora_cache import (FINISHED, RESUMABLE, CacheNote, LoraCache, cache_key, checkpoint_progress,
                         copy_lora_files, entry_status)
from .prepare import PreparedClip, now_text

FINGERPRINT = "fingerprint.json"
ENCODED_FOLDER = "encoded"  # a long clip's encoded windows (`long_training.EncodedStore`), while its stage runs


@dataclass
class EditTrainingStage:
    """A training stage begins (after its samples were encoded): stage 1 (clip) or 2 (edited later frames)."""

    stage: int
    total_steps: int
    start_step: int  # > 0 when resumed from a checkpoint
    checkpoint_dir: str


@dataclass
class EditTrainingNote:
    """Something the user should know (resumed, started afresh, encoding)."""

    message: str


@dataclass
class EditTrainingEncoding(EditTrainingNote):
    """A stage's samples are being encoded (VAE, text and image encoders, once per run): the phase before its
    first step. `samples`: how many (one per training window, plus the edited later frames in stage 2)."""

    stage: int = 1
    samples: int = 1


@dataclass
class EditTrainingStopped:
    """The run was stopped; its checkpoint is kept and a rerun with the same inputs resumes from it."""

    stage: int
    step: int
    total_steps: int
    checkpoint_dir: str


@dataclass
class EditTrainingDone:
    """The LoRA was saved."""

    lora_path: str
    metadata: dict


EditTrainingEvent = (EditTrainingStage | StepEvent | EditTrainingNote | EditTrainingEncoding | EditTrainingStopped
                     | EditTrainingDone)


def train_edit_lora(
    pipe,
    prepared: PreparedClip,
    caption: str,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    trigger: str = DEFAULT_TRIGGER,
    edited_later: dict[int, np.ndarray] | None = None,
    later_captions: dict[int, str] | None = None,
    stage2_epochs: int | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
    base_model: str | None = None,
    window: int | None = None,
    window_stride: int | None = None,
    distributed=None,
    naive: bool | None = None,
    edit_caption: str | None = None,
    negative_prompt: str | None = None,
) -> Iterator[EditTrainingEvent]:
    """Train the edit LoRA into `pipe.transformer` (in place) and save it to `out_dir`; a generator of events.

    The config says what is trained on (`training.plan_stages`): stage 1 (METHOD.md §4) learns the clip's
    motion with the boxes — on the whole clip or on `config.window`-frame windows every `config.window_stride`
    frames (§7); with `edited_later` ({frame index in the prepared clip: edited uint8 (H, W, 3)}) stage 2
    (§5) continues the adapter on the clip plus each edited frame (repeated 9x per epoch; temporal windows
    share the clip's one place, `training.stage2_items`) for `stage2_steps(n, config.stage2_epochs)` steps.
    `config.condition == "stock"` trains the naive-LoRA baseline instead (§8: stock I2V condition, boxes
    unused, no stage 2; lora.json says "condition": "stock"; give it its own `out_dir`). stage2_epochs,
    window, window_stride, naive: when given, override the config's fields of the same meaning.
    Captions (METHOD.md §4–§5; `captioning.training_captions` makes them): `caption` describes the ORIGINAL
    first frame (stage 1 trains on it), `edit_caption` the edited first frame (generation's; recorded in
    lora.json), `later_captions[k]` edited later frame k (its stage-2 sample). The library never trains on the
    edit's caption: a later frame without its own caption is refused before any work (make the missing ones
    with `captioning.training_captions`, which captions them with Florence-2). Prompts are
    `compose_prompt(caption, trigger)`. negative_prompt: the one this edit's generation uses (a name of
    `defaults.NEGATIVE_PROMPTS` or the text), recorded in lora.json; training itself uses none.
    Checkpoints go to out_dir/checkpoints/stage1 and stage2; with `resume` a rerun with the same inputs and
    settings continues from them (other inputs start afresh). A stop (should_stop() True, or an exception
    such as KeyboardInterrupt) keeps the checkpoint and saves no LoRA. At the end lora.safetensors,
    lora_comfyui.safetensors and lora.json are written (`maskedit.method.lora.save_lora`); stale ones from an
    earlier run are removed before training starts. Any adapter already on the pipe is replaced.
    distributed: a `maskedit.memory.distributed.DistributedContext` when launched on several processes
    (data-parallel; only the main process writes files).
    """
    config = with_plan(config, window=window, window_stride=window_stride, naive=naive, stage2_epochs=stage2_epochs)
    check_optimizer(config)
    out_dir = Path(out_dir)
    check_prompt(caption, "caption")
    if config.naive and edited_later:
        raise MaskEditError(
            "the naive-LoRA baseline trains on the clip alone (stock condition, no stage 2); leave out the edited "
            "later frames"
        )
    edited_later = dict(sorted((edited_later or {}).items()))
    later_captions = later_captions or {}
    for index, frame in edited_later.items():
        if not 1 <= index < prepared.num_frames:
            raise MaskEditError(
                f"the edited later frame number {index} is outside the prepared clip's frames 1..{prepared.num_frames - 1}"
            )
        check_image_size(frame, prepared.width, prepared.height, f"edited frame {index}")
    check_later_captions(edited_later, later_captions)
    later_captions = {k: str(later_captions[k]).strip() for k in edited_later}
    base_model = base_model or getattr(pipe, "name_or_path", None) or "unknown"
    prompt = compose_prompt(caption, trigger)
    later = [(k, frame, compose_prompt(later_captions[k], trigger)) for k, frame in edited_later.items()]
    long = config.is_long(prepared.num_frames)  # longer than one window: windows across the clip (METHOD.md §7b)
    stages = (plan_long_stages if long else plan_stages)(prepared.frames, prepared.region, prompt, config, base_model,
                                                          later)
    main = distributed is None or distributed.is_main

    if main:
        remove_lora_files(out_dir)
    unload_lora(pipe)
    losses: list[float] = []
    try:
        for stage in stages:
            checkpoint_dir = out_dir / CHECKPOINTS_FOLDER / f"stage{stage.number}"
            fresh = _claim_checkpoints(checkpoint_dir, stage.fingerprint, resume) if main else None
            if distributed is not None:
                distributed.barrier()  # every process resumes from what the main one kept
            if fresh:
                yield EditTrainingNote(fresh)
            what = f"{len(stage.items)} window sample(s) of the {prepared.num_frames}-frame clip" if long else \
                f"{len(stage.items)} sample(s)"
            yield EditTrainingEncoding(f"stage {stage.number}: encoding {what}", stage.number, len(stage.items))
            restore_encoders(pipe)  # the previous stage's trainer moved them off the GPU
            device = next(pipe.transformer.parameters()).device
            encoded = None
            if long:  # encoded once onto disk, one sample read per step (`long_training.EncodedStore`)
                encoded = yield from _encode_long(pipe, stage, out_dir, device, distributed)
            trainer = make_trainer(pipe, None if long else stage.items, stage.config, checkpoint_dir, device=device,
                                   distributed=distributed, encoded=encoded)
            if resume and trainer.resume():
                yield EditTrainingNote(
                    f"stage {stage.number}: resumed from the checkpoint at step {trainer.state.step} of "
                    f"{stage.config.steps} in {checkpoint_dir}"
                )
            yield EditTrainingStage(stage.number, stage.config.steps, trainer.state.step, str(checkpoint_dir))
            run = trainer.run(should_stop)
            try:
                for event in run:
                    yield event
            finally:
                run.close()  # a stop or an interrupt here still writes the trainer's checkpoint
            losses = trainer.state.losses
            if trainer.state.step < stage.config.steps:
                yield EditTrainingStopped(stage.number, trainer.state.step, stage.config.steps, str(checkpoint_dir))
                return
            if long and main:
                remove_store(out_dir / ENCODED_FOLDER / f"stage{stage.number}")  # only a resumed stage reads it
    finally:
        restore_encoders(pipe)

    window_used = config.window_for(prepared.num_frames)
    metadata = {
        "base_model": base_model,
        "rank": config.rank,
        "alpha": config.alpha,
        "steps": config.steps,
        "stage2_steps": stages[1].config.steps if len(stages) > 1 else 0,
        "stage2_frames": list(edited_later),
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "frames": prepared.num_frames,
        "width": prepared.width,
        "height": prepared.height,
        "fps": prepared.fps,
        "trigger": trigger,
        "caption": caption,  # of the original first frame (what stage 1 trained on)
        "edit_caption": edit_caption,  # of the edited first frame (what generation uses), when known
        "later_captions": {str(k): later_captions[k] for k in edited_later},
        **negative_prompt_record(negative_prompt),
        "final_loss": losses[-1] if losses else None,
        "created": now_text(),
        "trainer": "maskedit",
        "settings": asdict(config),  # the whole TrainConfig: `TrainConfig.from_dict` rebuilds it
    }
    if window_used:
        metadata.update(window=window_used, window_stride=config.window_stride)
    objects = prepared.source.get("objects")
    if objects and not config.naive:  # what the edit region was made of (the app's Segment step)
        metadata["objects"] = objects
    if long:  # what generation checks: a hand-over of O > 1 frames needs a LoRA that trained that condition
        metadata.update(window_frames=config.window_frames, handover_frames=config.handover_frames,
                        windows=len(plan_windows(prepared.num_frames, config.window_frames, 1)))
    if config.naive:
        metadata.update(condition=STOCK_CONDITION, method="naive-lora")
    if distributed is not None:
        metadata["processes"] = distributed.world_size
        if not distributed.is_main:
            distributed.barrier()  # wait for the main process to write the files
            yield EditTrainingDone(str(out_dir / LORA_WEIGHT_NAME), metadata)
            return
    if is_two_expert(pipe):  # one file per expert (maskedit.method.experts); the event names the high-noise one
        path = save_expert_loras(pipe, out_dir, metadata)[HIGH_NOISE]
    else:
        path = save_lora(pipe, out_dir, metadata)
    if distributed is not None:
        distributed.barrier()
    yield EditTrainingDone(str(path), metadata)


def _encode_long(pipe, stage, out_dir: Path, device, distributed=None):
    """A long clip's stage samples encoded into out_dir/encoded/stageN (reused when a stopped run resumes); a
    generator of notes that returns the store. With several processes the main one encodes, the others read."""
    folder = out_dir / ENCODED_FOLDER / f"stage{stage.number}"
    main = distributed is None or distributed.is_main
    store = None
    if main:
        store = encode_to_store(pipe, stage.items, folder, stage.fingerprint, device, stage.config.image_view,
                                stage.config.offload_encoders)
        yield EditTrainingNote(f"stage {stage.number}: {len(store)} sample(s) encoded to disk "
                               f"({store.nbytes() / 1e9:.2f} GB), one read per step")
    if distributed is not None:
        distributed.barrier()
        if not main:
            store = EncodedStore(folder, device)
    return store


def _claim_checkpoints(folder: Path, fingerprint: str, resume: bool) -> str | None:
    """Make `folder` hold checkpoints of this run only; returns a note when old ones were discarded."""
    marker = folder / FINGERPRINT
    note = None
    kept = [folder, *(folder / expert for expert in EXPERTS)]  # two-expert runs keep one per expert
    has_checkpoint = any((sub / CHECKPOINT_STATE).exists() for sub in kept)
    same = marker.is_file() and marker.read_text().strip() == fingerprint
    if has_checkpoint and not (resume and same):
        why = "--no-resume was given" if not resume else "they were made from other inputs or settings"
        note = f"starting afresh: the checkpoints in {folder} are not used ({why})"
    if not (resume and same):
        for sub in kept:
            for name in (CHECKPOINT_STATE, CHECKPOINT_WEIGHTS):
                (sub / name).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(marker, fingerprint)
    return note


def remove_lora_files(folder: str | os.PathLike) -> None:
    """Delete lora.safetensors, lora_comfyui.safetensors and lora.json of an earlier run in `folder`."""
    for name in (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME, *expert_file_names()):
        (Path(folder) / name).unlink(missing_ok=True)


# ----- the trip through the LoRA cache


def seed_from_stage1(cache: LoraCache, stage1_key: str, target: Path) -> bool:
    """Copy a cached stage-1 run's final checkpoint into a stage-2 entry, so that its stage 1 resumes at
    its last step (no stage-1 step runs again). True when copied."""
    source = cache.get(stage1_key)
    if source is None:
        return False
    checkpoint = source.path / CHECKPOINTS_FOLDER / "stage1"
    progress = checkpoint_progress(checkpoint)
    if progress is None or progress[0] < progress[1]:
        return False
    destination = target / CHECKPOINTS_FOLDER / "stage1"
    if destination.exists():
        return False
    shutil.copytree(checkpoint, destination)
    return True


def stage2_captions(edited_later: dict | None, later_captions: dict | None) -> dict:
    """{k: caption} each edited later frame trains under (`train_edit_lora`'s rule: its own caption, never the
    edit's); the cache key holds these. Frames without one are left out (training refuses them)."""
    given = later_captions or {}
    captions = {k: str(given.get(k) or "").strip() for k in (edited_later or {})}
    return {k: text for k, text in captions.items() if text}


def check_later_captions(edited_later: dict | None, later_captions: dict | None) -> None:
    """MaskEditError when an edited later frame has no caption of its own: stage 2 trains each under its own
    caption and the library never falls back to the edit's (it would teach the LoRA the edit's words for the
    frame's look). The message says how to give or make them."""
    missing = sorted(set(edited_later or {}) - set(stage2_captions(edited_later, later_captions)))
    if missing:
        raise MaskEditError(
            f"edited later frame(s) {', '.join(map(str, missing))} have no caption: stage 2 trains each under its "
            "own caption, never the edit's; give one per frame (later_captions={K: text}, --later-prompt K=TEXT) or "
            "let Florence-2 make them (maskedit.perception.captioning.training_captions)"
        )


def negative_prompt_record(negative_prompt: str | None) -> dict:
    """lora.json's record of the negative prompt the edit's generation uses ({} when none was given): its name
    ("reference", "wan" or "custom") and its text."""
    if negative_prompt is None:
        return {}
    return {"negative_prompt": negative_prompt_name(negative_prompt),
            "negative_prompt_text": negative_prompt_text(negative_prompt)}


def stamp_negative_prompt(folder: str | os.PathLike, negative_prompt: str | None) -> None:
    """Set the negative prompt recorded in `folder`'s lora.json (a cached LoRA copied for a run whose generation
    uses another one); nothing without a lora.json or a negative prompt."""
    import json

    path = Path(folder) / METADATA_NAME
    if negative_prompt is None or not path.is_file():
        return
    metadata = json.loads(path.read_text())
    metadata.update(negative_prompt_record(negative_prompt))
    write_text(path, json.dumps(metadata, indent=2))


def train_cached(pipe, prepared, caption: str, config, *, cache: LoraCache | None, trigger: str, base_model: str,
                 edited_later: dict | None = None, later_captions: dict | None = None, use_cache: bool = True,
                 resume: bool = True, load: bool = True, out_dir: str | os.PathLike | None = None,
                 distributed=None, **train_kwargs) -> Iterator:
    """The one cached-training path (CLI and app): train the edit LoRA through the cache; a generator of
    `CacheNote` and `train_edit_lora` events.

    A finished entry is reused (CacheNote "hit", then EditTrainingDone with its files; with `load` the
    LoRA is put on the pipe); a resumable one continues from its checkpoint (unless `resume` is False);
    otherwise training runs into a new entry (stage 2 starts from a finished stage-1 entry of the same
    inputs). use_cache False forces training from scratch into the entry (an old entry of the same key is
    replaced). cache None: no cache at all, the run trains in `out_dir` (CacheNote "off").
    out_dir: also put the run's files there — the LoRA files and checkpoints, copied after the run ends
    however it ends (finished, stopped or interrupted), so the folder looks like a plain `train_edit_lora`
    run. Other keyword arguments go to `train_edit_lora` (should_stop, edit_caption; window, window_stride, naive,
    stage2_epochs override the config's). The last event is EditTrainingDone or EditTrainingStopped.
    """
    plan = {name: train_kwargs.pop(name) for name in ("window", "window_stride", "naive", "stage2_epochs")
            if name in train_kwargs}
    config = with_plan(config, **plan)
    main = distributed is None or distributed.is_main
    if cache is None:
        if out_dir is None:
            raise MaskEditError("no LoRA cache and no folder to train into were given")
        yield CacheNote("off", f"training without the LoRA cache into {out_dir}")
        yield from train_edit_lora(pipe, prepared, caption, config, out_dir, trigger=trigger,
                                           edited_later=edited_later, later_captions=later_captions, resume=resume,
                                           base_model=base_model, distributed=distributed, **train_kwargs)
        return
    check_later_captions(edited_later, later_captions)  # before any cache lookup: a refused run keys nothing
    key = cache_key(prepared, caption, trigger, config, base_model, edited_later,
                    stage2_captions(edited_later, later_captions))
    entry = cache.lookup(key) if use_cache else None
    if entry is not None and entry.status == FINISHED:
        yield CacheNote("hit", f"reusing cached LoRA {key} (trained {entry.trained_at()}): same clip, boxes, caption "
                               f"and settings, so no training step runs ({entry.path})", key, str(entry.path))
        if out_dir is not None and main:
            copy_lora_files(entry.path, out_dir)
            stamp_negative_prompt(out_dir, train_kwargs.get("negative_prompt"))
        if load:
            load_edit_lora(pipe, entry.lora_path)
        lora_path = Path(out_dir) / entry.lora_path.name if out_dir is not None else entry.lora_path
        yield EditTrainingDone(str(lora_path), read_metadata(entry.lora_path))
        return
    if not use_cache and main:
        cache.remove(key)
    info = dict(caption=caption, trigger=trigger, base_model=base_model, frames=prepared.num_frames,
                width=prepared.width, height=prepared.height, steps=config.steps,
                later_frames=sorted(int(k) for k in (edited_later or {})))
    if config.naive:
        info["method"] = "naive-lora"
    path = cache.prepare(key, info) if main else cache.path(key)
    if entry is not None and entry.status == RESUMABLE and resume:
        yield CacheNote("resume", f"resuming cached run {key} from step {entry.step} of {entry.total_steps} "
                                  f"(stage {entry.stage}) in {path}", key, str(path))
    elif edited_later:
        stage1 = cache_key(prepared, caption, trigger, config, base_model)
        if use_cache and main and seed_from_stage1(cache, stage1, path):
            yield CacheNote("stage1", f"stage 2 starts from the cached stage-1 run {stage1}", key, str(path))
        else:
            yield CacheNote("miss", f"training a new LoRA into the cache ({path})", key, str(path))
    else:
        yield CacheNote("miss" if use_cache else "off",
                        f"training a new LoRA into the cache ({path})" if use_cache
                        else f"training afresh into the cache ({path}), not reusing an earlier run", key, str(path))
    if out_dir is not None and main:
        remove_lora_files(out_dir)  # an earlier run's files must not pass for this one's
    with cache.using(key):
        evicted = cache.evict(keep=(key,)) if main else []
        if evicted:
            yield CacheNote("evicted", f"removed {len(evicted)} least recently used cached LoRA(s) to stay under "
                                       f"{cache.max_bytes / 1024 ** 3:.3g} GB", key, str(path))
        events = train_edit_lora(pipe, prepared, caption, config, path, trigger=trigger,
                                         edited_later=edited_later, later_captions=later_captions,
                                         resume=use_cache and resume, base_model=base_model,
                                         distributed=distributed, **train_kwargs)
        done = None
        try:
            for event in events:
                if isinstance(event, EditTrainingDone) and out_dir is not None:
                    done = event
                    continue  # reported below, with the path of the copy in out_dir
                yield event
        finally:
            events.close()
            cache.touch(key)
            if out_dir is not None and main:
                export_run(path, out_dir)
    if main:
        cache.evict(keep=(key,))
    if done is not None:
        status = entry_status(path)[0]
        yield CacheNote("stored", f"cached the {status} run as {key} in {cache.root}", key, str(path))
        yield EditTrainingDone(str(Path(out_dir) / Path(done.lora_path).name), done.metadata)


def export_run(entry_path: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Copy a run's LoRA files and checkpoints from its cache entry into `out_dir` (what a plain run there
    would have left)."""
    entry_path, out_dir = Path(entry_path), Path(out_dir)
    if (entry_path / CHECKPOINTS_FOLDER).is_dir():
        shutil.copytree(entry_path / CHECKPOINTS_FOLDER, out_dir / CHECKPOINTS_FOLDER, dirs_exist_ok=True)
    copy_lora_files(entry_path, out_dir)
