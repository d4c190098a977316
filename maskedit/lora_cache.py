"""A cache of trained edit LoRAs, keyed by what training depends on (issue 8).

Stage-1 training (METHOD.md §4) depends on the conformed clip, its boxes, the trigger + caption of the
original first frame, the base model and the training settings — never on the edited first frame, which
enters only at generation (§6). So one trained LoRA serves any number of edits of the same clip, and
training can start as soon as the masks are confirmed. Stage-2 entries (§5) key additionally on the
edited later frames and their captions.

    cache = LoraCache()                                     # ~/.cache/maskedit/loras, or MASKEDIT_CACHE_DIR
    key = cache_key(prepared, caption, trigger, config, base_model)
    for event in train_cached(pipe, prepared, caption, config, cache=cache, trigger=trigger, base_model=...):
        ...                                                 # CacheNote, then train_edit_lora's events

An entry is a folder `<root>/<key>/` that `editing.train_edit_lora` trains into (its checkpoints/,
lora.safetensors, lora_comfyui.safetensors, lora.json) plus `entry.json` (what the key was made of, for
people; its modification time is the entry's last use). An entry is *finished* (the LoRA files are there),
*resumable* (a checkpoint is there) or *empty*. The cache holds at most `max_bytes`; least recently used
entries are evicted first, never one in use (`LoraCache.using`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import MaskEditError

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


def key_parts(prepared, caption: str, trigger: str, config, base_model: str, edited_later: dict | None = None,
              later_captions: dict | None = None, window: int = 0, window_stride: int = 4,
              naive: bool = False) -> dict:
    """What training depends on, as a JSON-able dict of digests and settings (the key hashes it).

    The same parts as the app's training key always had (`session.train_key` is this key); later-frame
    captions, windows and `naive` (the naive-LoRA baseline, `editing.train_edit_lora(naive=True)`: part
    "condition" = "stock") only enter when given, so keys of plain stage-1 runs are unchanged."""
    from .editing import _config_dict, _digest

    edited_later = edited_later or {}
    parts = dict(clip=_digest(prepared.frames), region=_digest(np.asarray(prepared.region, dtype=bool)),
                 caption=str(caption), trigger=str(trigger), config=_config_dict(config), base=str(base_model),
                 later={str(k): _digest(v) for k, v in sorted(edited_later.items())})
    captions = {str(k): str(v) for k, v in sorted((later_captions or {}).items()) if int(k) in edited_later}
    if captions:
        parts["later_captions"] = captions
    if window and window < prepared.num_frames:
        parts["window"] = [int(window), int(window_stride)]
    if naive:  # the stock condition never sees the boxes: re-marking the region keeps the baseline's LoRA
        del parts["region"]
        parts["condition"] = "stock"
    return parts


def cache_key(prepared, caption: str, trigger: str, config, base_model: str, edited_later: dict | None = None,
              later_captions: dict | None = None, window: int = 0, window_stride: int = 4,
              naive: bool = False) -> str:
    """A 16-hex-digit key of `key_parts` (frames, boxes, caption, trigger, settings, base model, edited later
    frames, naive baseline or not). The edited first frame is not part of it."""
    return key_from_parts(key_parts(prepared, caption, trigger, config, base_model, edited_later, later_captions,
                                    window, window_stride, naive))


def key_from_parts(parts: dict) -> str:
    """The key of `key_parts(...)`."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


PART_NAMES = {"clip": "the frames", "region": "the boxes", "caption": "the caption", "trigger": "the trigger",
              "config": "the training settings", "base": "the base model", "later": "the edited later frames",
              "later_captions": "the later frames' captions", "window": "the windows",
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
        from .lora import LORA_WEIGHT_NAME

        return self.path / LORA_WEIGHT_NAME

    @property
    def info(self) -> dict:
        try:
            return json.loads((self.path / ENTRY_JSON).read_text())
        except (OSError, ValueError):
            return {}

    def describe(self) -> str:
        if self.status == FINISHED:
            return f"finished LoRA {self.key}"
        if self.status == RESUMABLE:
            return f"run {self.key} at step {self.step} of {self.total_steps} (stage {self.stage})"
        return f"empty entry {self.key}"


def entry_status(path: str | os.PathLike) -> tuple[str, int, int, int]:
    """(status, step, total_steps, stage) of a folder `train_edit_lora` trains into."""
    from .editing import CHECKPOINTS_FOLDER
    from .lora import LORA_WEIGHT_NAME, METADATA_NAME
    from .training import CHECKPOINT_STATE, CHECKPOINT_WEIGHTS

    from .experts import has_expert_loras

    path = Path(path)
    if ((path / LORA_WEIGHT_NAME).is_file() or has_expert_loras(path)) and (path / METADATA_NAME).is_file():
        return FINISHED, 0, 0, 0
    for stage in (2, 1):
        folder = path / CHECKPOINTS_FOLDER / f"stage{stage}"
        if (folder / CHECKPOINT_STATE).is_file() and (folder / CHECKPOINT_WEIGHTS).is_file():
            try:
                state = json.loads((folder / CHECKPOINT_STATE).read_text())
                return RESUMABLE, int(state["step"]), int(state["config"]["steps"]), stage
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return EMPTY, 0, 0, 0


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


def seed_from_stage1(cache: LoraCache, stage1_key: str, target: Path) -> bool:
    """Copy a cached stage-1 run's final checkpoint into a stage-2 entry, so that its stage 1 resumes at
    its last step (no stage-1 step runs again). True when copied."""
    from .editing import CHECKPOINTS_FOLDER

    source = cache.get(stage1_key)
    if source is None:
        return False
    checkpoint = source.path / CHECKPOINTS_FOLDER / "stage1"
    state_file = checkpoint / "checkpoint.json"
    if not state_file.is_file():
        return False
    try:
        state = json.loads(state_file.read_text())
        if int(state["step"]) < int(state["config"]["steps"]):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    destination = target / CHECKPOINTS_FOLDER / "stage1"
    if destination.exists():
        return False
    shutil.copytree(checkpoint, destination)
    return True


def train_cached(pipe, prepared, caption: str, config, *, cache: LoraCache | None, trigger: str, base_model: str,
                 edited_later: dict | None = None, later_captions: dict | None = None, use_cache: bool = True,
                 load: bool = True, **train_kwargs) -> Iterator:
    """Train the edit LoRA through the cache; a generator of `CacheNote` and `editing.train_edit_lora` events.

    A finished entry is reused (CacheNote "hit", then EditTrainingDone with its files; with `load` the
    LoRA is put on the pipe); a resumable one continues from its checkpoint; otherwise training runs into
    a new entry. use_cache False (--no-cache) forces training from scratch into the entry (an old entry of
    the same key is replaced). Other keyword arguments go to `train_edit_lora` (should_stop, window, ...).
    Returns nothing; the last event is EditTrainingDone or EditTrainingStopped.
    """
    from . import editing
    from .lora import load_lora, read_metadata

    if cache is None:
        raise MaskEditError("no LoRA cache given")
    window = int(train_kwargs.get("window") or 0)
    stride = int(train_kwargs.get("window_stride") or 4)
    naive = bool(train_kwargs.get("naive"))
    key = cache_key(prepared, caption, trigger, config, base_model, edited_later, later_captions, window, stride,
                    naive)
    entry = cache.lookup(key) if use_cache else None
    if entry is not None and entry.status == FINISHED:
        yield CacheNote("hit", f"reusing cached LoRA {key} ({entry.path}): same clip, boxes, caption and "
                               "settings, so no training is needed", key, str(entry.path))
        if load:
            load_lora(pipe, entry.lora_path)
        yield editing.EditTrainingDone(str(entry.lora_path), read_metadata(entry.lora_path))
        return
    if not use_cache:
        cache.remove(key)
    info = dict(caption=caption, trigger=trigger, base_model=base_model, frames=prepared.num_frames,
                width=prepared.width, height=prepared.height, steps=config.steps,
                later_frames=sorted(int(k) for k in (edited_later or {})))
    if naive:
        info["method"] = "naive-lora"
    path = cache.prepare(key, info)
    if entry is not None and entry.status == RESUMABLE:
        yield CacheNote("resume", f"resuming cached run {key} from step {entry.step} of {entry.total_steps} "
                                  f"(stage {entry.stage}) in {path}", key, str(path))
    elif edited_later:
        stage1 = cache_key(prepared, caption, trigger, config, base_model, None, None, window, stride)
        if use_cache and seed_from_stage1(cache, stage1, path):
            yield CacheNote("stage1", f"stage 2 starts from the cached stage-1 run {stage1}", key, str(path))
        else:
            yield CacheNote("miss", f"training a new LoRA into the cache ({path})", key, str(path))
    else:
        yield CacheNote("miss" if use_cache else "off",
                        f"training a new LoRA into the cache ({path})" if use_cache
                        else f"--no-cache: training afresh into {path}", key, str(path))
    with cache.using(key):
        evicted = cache.evict(keep=(key,))
        if evicted:
            yield CacheNote("evicted", f"removed {len(evicted)} least recently used cached LoRA(s) to stay under "
                                       f"{cache.max_bytes / 1024 ** 3:.3g} GB", key, str(path))
        events = editing.train_edit_lora(pipe, prepared, caption, config, path, trigger=trigger,
                                         edited_later=edited_later, later_captions=later_captions,
                                         resume=use_cache, base_model=base_model, **train_kwargs)
        try:
            yield from events
        finally:
            events.close()
            cache.touch(key)
    cache.evict(keep=(key,))


def copy_lora_files(source_folder: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Copy a cached entry's LoRA files (lora.safetensors, lora_comfyui.safetensors, lora.json) to out_dir."""
    from .experts import expert_file_names
    from .lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME

    source_folder, out_dir = Path(source_folder), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME, *expert_file_names()):
        if (source_folder / name).is_file() and (source_folder / name).resolve() != (out_dir / name).resolve():
            shutil.copyfile(source_folder / name, out_dir / name)
            copied.append(out_dir / name)
    return copied

