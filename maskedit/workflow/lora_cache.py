"""A cache of trained edit LoRAs, keyed by what training depends on (issue 8).

Stage-1 training (METHOD.md §4) depends on the conformed clip, its boxes, the trigger + caption of the
original first frame, the base model and the training settings — never on the edited first frame, which
enters only at generation (§6). So one trained LoRA serves any number of edits of the same clip, and
training can start as soon as the masks are confirmed. Stage-2 entries (§5) key additionally on the
edited later frames and their captions.

    cache = LoraCache()                                     # ~/.cache/maskedit/loras, or MASKEDIT_CACHE_DIR
    key = cache_key(prepared, caption, trigger, config, base_model)
    entry = cache.lookup(key)                               # None, or a finished / resumable / empty entry

This module only stores: training through it is one sequence in `workflow.train.train_cached`.

An entry is a folder `<root>/<key>/` that `workflow.train.train_edit_lora` trains into (its checkpoints/,
lora.safetensors, lora_comfyui.safetensors, lora.json) plus `entry.json` (what the key was made of, for
people; its modification time is the entry's last use). An entry is *finished* (the LoRA files are there),
*resumable* (a checkpoint is there) or *empty*. The cache holds at most `max_bytes`; least recently used
entries are evicted first, never one in use (`LoraCache.using`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MaskEditError

CACHE_ENV = "MASKEDIT_CACHE_DIR"
CACHE_LIMIT_ENV = "MASKEDIT_CACHE_GB"
DEFAULT_MAX_BYTES = 20 * 1024 ** 3
ENTRY_JSON = "entry.json"
BUSY_MARKER = "in_use"
BUSY_STALE_SECONDS = 6 * 3600  # a crashed process's in_use marker stops protecting its entry after this
FINISHED, RESUMABLE, EMPTY = "finished", "resumable", "empty"


def default_cache_dir() -> Path:
    """MASKEDIT_CACHE_DIR, else $XDG_CACHE_HOME/maskedit/loras, else ~/.cache/maskedit/loras."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maskedit" / "loras"


def default_max_bytes() -> int:
    """MASKEDIT_CACHE_GB (gigabytes, may be fractional), else 20 GB."""
    text = os.environ.get(CACHE_LIMIT_ENV)
    if text:
        try:
            return int(float(text) * 1024 ** 3)
        except ValueError:
            raise MaskEditError(f"{CACHE_LIMIT_ENV}={text!r} is not a number of gigabytes") from None
    return DEFAULT_MAX_BYTES


# ----- the key


OBJECT_KEY_FIELDS = ("kind", "text", "points", "box", "file")
"""What the key keeps of each object of the edit region (`prepared.source["objects"]`, written by the app's Segment
step): what made it (clicks, text, a mask file, a box), not its score or area (the region's digest holds those)."""


def key_parts(prepared, caption: str, trigger: str, config, base_model: str, edited_later: dict | None = None,
              later_captions: dict | None = None, window: int | None = None, window_stride: int | None = None,
              naive: bool | None = None) -> dict:
    """What training depends on, as a JSON-able dict of digests and settings (the key hashes it).

    config: the run's `training.TrainConfig` (its window, stride, condition and stage-2 epochs included;
    window, window_stride, naive override them when given, as in `workflow.train.train_edit_lora`). Later-frame
    captions, windows, stage-2 epochs other than the default, the objects of a region made of objects (part
    "objects") and the naive baseline's condition (part "condition" = "stock", boxes left out) only enter when
    they apply, so keys of plain stage-1 runs stay as they were."""
    from ..media.hashing import array_digest
    from ..method.long_training import long_clip_part
    from ..method.training import TrainConfig, run_settings, with_plan

    config = with_plan(config, window=window, window_stride=window_stride, naive=naive)
    edited_later = edited_later or {}
    parts = dict(clip=array_digest(prepared.frames), region=array_digest(np.asarray(prepared.region, dtype=bool)),
                 caption=str(caption), trigger=str(trigger), config=run_settings(config), base=str(base_model),
                 later={str(k): array_digest(v) for k, v in sorted(edited_later.items())})
    captions = {str(k): str(v) for k, v in sorted((later_captions or {}).items()) if int(k) in edited_later}
    if captions:
        parts["later_captions"] = captions
    used_window = config.window_for(prepared.num_frames)
    if used_window:
        parts["window"] = [int(used_window), int(config.window_stride)]
    if edited_later and config.stage2_epochs != TrainConfig.stage2_epochs:
        parts["stage2_epochs"] = int(config.stage2_epochs)
    objects = getattr(prepared, "source", {}).get("objects")
    if objects and not config.naive:  # the objects the region was made of (lora.json lists them): what made each
        parts["objects"] = [{k: o[k] for k in OBJECT_KEY_FIELDS if k in o} for o in objects]
    if config.naive:  # the stock condition never sees the boxes: re-marking the region keeps the baseline's LoRA
        del parts["region"]
        parts["condition"] = "stock"
    parts.update(long_clip_part(config, prepared.num_frames))  # nothing for a clip of one window
    return parts


def cache_key(prepared, caption: str, trigger: str, config, base_model: str, edited_later: dict | None = None,
              later_captions: dict | None = None, window: int | None = None, window_stride: int | None = None,
              naive: bool | None = None) -> str:
    """The one key of a training run: 16 hex digits of `key_parts` (frames, boxes, caption, trigger, settings,
    base model, edited later frames, naive baseline or not). The edited first frame is not part of it."""
    return key_from_parts(key_parts(prepared, caption, trigger, config, base_model, edited_later, later_captions,
                                    window, window_stride, naive))


def key_from_parts(parts: dict) -> str:
    """The key of `key_parts(...)`."""
    from ..media.hashing import json_digest

    return json_digest(parts)[:16]


PART_NAMES = {"clip": "the frames", "region": "the boxes", "caption": "the caption", "trigger": "the trigger",
              "config": "the training settings", "base": "the base model", "later": "the edited later frames",
              "later_captions": "the later frames' captions", "window": "the windows",
              "stage2_epochs": "the stage-2 epochs", "long_clip": "the clip's windows",
              "condition": "the training condition (naive baseline)"}


def changed_parts(old: dict, new: dict) -> list[str]:
    """What differs between two `key_parts` dicts, in words ("the boxes", "the caption", ...)."""
    return [PART_NAMES.get(name, name) for name in PART_NAMES if old.get(name) != new.get(name)]


# ----- entries


@dataclass
class CacheEntry:
    """One cached run. status: "finished" | "resumable" | "empty"; step/total_steps: of the last
    checkpoint (stage 2 counts on from stage 1's steps), when resumable."""

    key: str
    path: Path
    status: str
    step: int = 0
    total_steps: int = 0
    stage: int = 0
    size: int = 0
    last_used: float = 0.0

    @property
    def lora_path(self) -> Path:
        """lora.safetensors, or for a two-expert (Wan2.2) run its high-noise file (the folder is the LoRA)."""
        from ..method.experts import HIGH_NOISE, expert_weight_name, has_expert_loras
        from ..method.lora import LORA_WEIGHT_NAME

        if not (self.path / LORA_WEIGHT_NAME).is_file() and has_expert_loras(self.path):
            return self.path / expert_weight_name(HIGH_NOISE)
        return self.path / LORA_WEIGHT_NAME

    @property
    def info(self) -> dict:
        try:
            return json.loads((self.path / ENTRY_JSON).read_text())
        except (OSError, ValueError):
            return {}

    def trained_at(self) -> str:
        """When the entry was last trained or created, as local "YYYY-MM-DD HH:MM"."""
        info = self.info
        stamp = info.get("trained") or info.get("created")
        try:
            stamp = float(stamp) if stamp is not None else self.lora_path.stat().st_mtime
        except (OSError, TypeError, ValueError):
            return "at an unknown time"
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))

    def describe(self) -> str:
        if self.status == FINISHED:
            return f"finished LoRA {self.key}"
        if self.status == RESUMABLE:
            return f"run {self.key} at step {self.step} of {self.total_steps} (stage {self.stage})"
        return f"empty entry {self.key}"


def entry_status(path: str | os.PathLike) -> tuple[str, int, int, int]:
    """(status, step, total_steps, stage) of a folder `train_edit_lora` trains into."""
    from ..method.experts import has_expert_loras
    from ..method.lora import LORA_WEIGHT_NAME, METADATA_NAME
    from ..method.training import CHECKPOINTS_FOLDER

    path = Path(path)
    if ((path / LORA_WEIGHT_NAME).is_file() or has_expert_loras(path)) and (path / METADATA_NAME).is_file():
        return FINISHED, 0, 0, 0
    for stage in (2, 1):
        progress = checkpoint_progress(path / CHECKPOINTS_FOLDER / f"stage{stage}")
        if progress is not None:
            return RESUMABLE, progress[0], progress[1], stage
    return EMPTY, 0, 0, 0


def checkpoint_progress(folder: str | os.PathLike) -> tuple[int, int] | None:
    """(step, total_steps) of the checkpoint in a stage folder, or None when it holds no complete one.
    A two-expert run keeps one checkpoint per expert (`folder/<expert>/`, `experts.TwoExpertTrainer`):
    its step and total are both experts' together, and both must be there."""
    from ..method.experts import EXPERTS
    from ..method.training import CHECKPOINT_STATE, CHECKPOINT_WEIGHTS

    folder = Path(folder)
    single = (folder / CHECKPOINT_STATE).is_file()
    parts = [folder] if single else [folder / expert for expert in EXPERTS]
    if not any((part / CHECKPOINT_STATE).is_file() for part in parts):
        return None
    step = total = 0
    for part in parts:
        if not ((part / CHECKPOINT_STATE).is_file() and (part / CHECKPOINT_WEIGHTS).is_file()):
            return None
        try:
            state = json.loads((part / CHECKPOINT_STATE).read_text())
            step, total = step + int(state["step"]), total + int(state["config"]["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return step, total


def folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class LoraCache:
    """Cached LoRA runs under `root` (default `default_cache_dir()`), at most `max_bytes` in all (default
    `default_max_bytes()`; None there too: no limit is not offered, a limit of 0 keeps only entries in use)."""

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self._pinned: dict[str, int] = {}  # keys in use by this process (counts)

    # -- looking up
    def path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise MaskEditError(f"{key!r} is not a LoRA cache key")
        return self.root / key

    def get(self, key: str) -> CacheEntry | None:
        """The entry of `key` (None when absent), without marking it used."""
        path = self.path(key)
        if not path.is_dir():
            return None
        status, step, total, stage = entry_status(path)
        marker = path / ENTRY_JSON
        last_used = marker.stat().st_mtime if marker.exists() else path.stat().st_mtime
        return CacheEntry(key, path, status, step, total, stage, folder_size(path), last_used)

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry of `key` when it is finished or resumable (marked used); None otherwise."""
        entry = self.get(key)
        if entry is None or entry.status == EMPTY:
            return None
        self.touch(key)
        return entry

    def entries(self) -> list[CacheEntry]:
        """Every entry, least recently used first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if path.is_dir() and len(path.name) == 16 and all(c in "0123456789abcdef" for c in path.name):
                entry = self.get(path.name)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: e.last_used)

    def size(self) -> int:
        return sum(e.size for e in self.entries())

    # -- writing
    def prepare(self, key: str, info: dict | None = None) -> Path:
        """The folder to train `key` into (created; entry.json written when new or when `info` is given)."""
        path = self.path(key)
        path.mkdir(parents=True, exist_ok=True)
        marker = path / ENTRY_JSON
        if info is not None or not marker.exists():
            record = dict(info or {}, key=key, created=time.time())
            marker.write_text(json.dumps(record, indent=2, default=str))
        self.touch(key)
        return path

    def touch(self, key: str) -> None:
        marker = self.path(key) / ENTRY_JSON
        try:
            if marker.exists():
                os.utime(marker)
            else:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"key": key, "created": time.time()}))
        except OSError:
            pass

    def remove(self, key: str) -> bool:
        """Delete an entry (invalidation); True when there was one. An entry in use is deleted too: the
        caller must have stopped its run."""
        path = self.path(key)
        if not path.exists():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True

    @contextmanager
    def using(self, key: str):
        """Protect `key` from eviction (this process and, through a marker file, others) while inside."""
        self._pinned[key] = self._pinned.get(key, 0) + 1
        marker = self.path(key) / BUSY_MARKER
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
            yield self.path(key)
        finally:
            self._pinned[key] -= 1
            if not self._pinned[key]:
                del self._pinned[key]
                marker.unlink(missing_ok=True)

    def in_use(self, entry: CacheEntry) -> bool:
        if entry.key in self._pinned:
            return True
        marker = entry.path / BUSY_MARKER
        try:
            return time.time() - marker.stat().st_mtime < BUSY_STALE_SECONDS
        except OSError:
            return False

    def evict(self, keep: tuple[str, ...] | list[str] = ()) -> list[str]:
        """Remove least recently used entries until the cache fits `max_bytes` (entries in use and `keep`
        stay); returns the removed keys."""
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.key in keep or self.in_use(entry):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            total -= entry.size
            removed.append(entry.key)
        return removed


# ----- training through the cache


@dataclass
class CacheNote:
    """What the cache decided: kind "hit" (a finished LoRA is reused; no training), "resume" (a cached run
    continues from its checkpoint), "stage1" (stage 2 starts from a cached stage-1 run), "miss" (trained
    afresh), "evicted" (old entries were removed to stay under the limit), "off" (the cache is not used)."""

    kind: str
    message: str
    key: str = ""
    path: str = ""


def copy_lora_files(source_folder: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Copy a cached entry's LoRA files (lora.safetensors, lora_comfyui.safetensors, lora.json) to out_dir."""
    from ..method.experts import expert_file_names
    from ..method.lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME

    source_folder, out_dir = Path(source_folder), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME, *expert_file_names()):
        if (source_folder / name).is_file() and (source_folder / name).resolve() != (out_dir / name).resolve():
            shutil.copyfile(source_folder / name, out_dir / name)
            copied.append(out_dir / name)
    return copied

