"""What the app needs besides widgets: per-session work folders, path checks, point parsing, training keys,
loss curves, and the chunked training / step-reporting generation drivers. Pure Python (no gradio).

A session folder (one per browser tab or gradio_client `Client`, named after its session hash) holds:

    source/        the uploaded video and mask video, copied in
    clip/          the conformed clip (clip.npz + clip.json), before any region is chosen
    prepared/      the prepared clip (`editing.save_prepared`): clip, boxes, first frame
    segment/       masks.mp4, boxes.mp4, overlay.mp4 of the last propagation
    edited/        the edited first frame and edited later frames (frame_K.png)
    train/<key>/   one training run per *training key* (clip + boxes + caption + trigger + settings + base
                   model + edited later frames); its checkpoints/, lora*.safetensors, partial/ after a stop
    lora/          an uploaded LoRA
    results/<n>/   edited.mp4, side_by_side.mp4, report.json of each generation

The edited first frame enters only at generation, never the training key: one LoRA serves any number
of edits of the same clip (issue 8 builds its cache and background training on these keys).

Training runs in chunks (`run_training_chunk`): each call trains until its time budget or step limit is
near, the trainer's checkpoint (bit-exact resume) is saved in the run folder, and the next call resumes it;
`train_in_chunks` chains calls until the LoRA is saved or the user stops.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import MaskEditError

STALE_SECONDS = 24 * 3600
DEFAULT_CHUNK_SECONDS = 110.0
"""Per-call GPU budget of one training chunk (ZeroGPU calls should stay under ~2 minutes)."""
SMOOTHING = 0.9  # exponential moving average of the loss curve
STOP_TRAINING = "stop_training"
STOP_GENERATION = "stop_generation"
CLIP_FOLDER, PREPARED_FOLDER, SOURCE_FOLDER = "clip", "prepared", "source"
SEGMENT_FOLDER, EDITED_FOLDER, TRAIN_FOLDER = "segment", "edited", "train"
LORA_FOLDER, RESULTS_FOLDER = "lora", "results"
PARTIAL_FOLDER = "partial"


def default_work_root() -> Path:
    """MASKEDIT_WORK_DIR, else <system temp>/maskedit-sessions (outside the app's folder, so no session
    file is ever served by path)."""
    return Path(os.environ.get("MASKEDIT_WORK_DIR") or Path(tempfile.gettempdir()) / "maskedit-sessions")


# ----- session folders


def session_name(session_hash: str | None) -> str:
    """A folder name for a session hash: kept when it is plain letters/digits/-/_, else hashed."""
    text = str(session_hash or "")
    if not text:
        raise MaskEditError("this request has no session; reload the page")
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SessionStore:
    """Work folders under `root`, one per session; stale ones (untouched for `max_age` s) are removed."""

    def __init__(self, root: str | os.PathLike | None = None, max_age: float = STALE_SECONDS):
        self.root = Path(root) if root else default_work_root()
        self.max_age = max_age

    def folder(self, session_hash: str | None) -> Path:
        """The session's folder (created, its time refreshed)."""
        folder = self.root / session_name(session_hash)
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)
        return folder

    def remove(self, folder_or_hash) -> None:
        """Delete a session folder (a path inside root, or a session hash); missing is fine."""
        if folder_or_hash is None:
            return
        path = Path(str(folder_or_hash))
        if not path.is_absolute():
            path = self.root / session_name(str(folder_or_hash))
        if is_inside(path, self.root) and path.resolve() != self.root.resolve():
            shutil.rmtree(path, ignore_errors=True)

    def remove_stale(self, now: float | None = None) -> list[Path]:
        """Delete session folders not touched for max_age seconds; returns what was removed."""
        now = time.time() if now is None else now
        removed = []
        if not self.root.is_dir():
            return removed
        for path in self.root.iterdir():
            try:
                if path.is_dir() and now - path.stat().st_mtime > self.max_age:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            except OSError:
                continue
        return removed


def is_inside(path, root) -> bool:
    """True when `path` (symlinks resolved) is `root` or lies below it."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except (ValueError, OSError):
        return False


def check_path(path, allowed_roots, what: str = "file") -> Path:
    """`path` when it lies inside one of `allowed_roots` (the session folder, the upload folder, the
    examples); MaskEditError otherwise (a path of another session or of the server is never read)."""
    if path is None or str(path) == "":
        raise MaskEditError(f"no {what} given")
    candidate = Path(str(path))
    if any(is_inside(candidate, root) for root in allowed_roots if root):
        return candidate.resolve()
    raise MaskEditError(
        f"the {what} {candidate.name!r} is not part of this session; upload the file itself instead of giving "
        "a path on the server"
    )


# ----- inputs given as text


def parse_points(text) -> tuple[np.ndarray, np.ndarray]:
    """Clicks as JSON: [[x, y], [x, y, label], ...] or [{"x": .., "y": .., "label": 0|1}, ...]
    (label 1 = the object, 0 = not the object; default 1), in pixels of the conformed first frame.
    Returns (points float (N, 2), labels int (N,))."""
    if isinstance(text, str):
        if not text.strip():
            raise MaskEditError('no points given: pass JSON like [[120, 80], [30, 20, 0]] (x, y, label 1/0)')
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise MaskEditError(f"the points are not valid JSON ({error.msg}); pass e.g. [[120, 80], [30, 20, 0]]") from None
    else:
        data = text
    if isinstance(data, dict) and "points" in data:
        data = data["points"]
    if not isinstance(data, list) or not data:
        raise MaskEditError('the points must be a non-empty JSON list, e.g. [[120, 80], [30, 20, 0]]')
    points, labels = [], []
    for item in data:
        if isinstance(item, dict):
            item = [item.get("x"), item.get("y"), item.get("label", 1)]
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            raise MaskEditError(f"the point {item!r} is not [x, y] or [x, y, label]")
        try:
            x, y = float(item[0]), float(item[1])
            label = int(item[2]) if len(item) == 3 else 1
        except (TypeError, ValueError):
            raise MaskEditError(f"the point {item!r} needs numbers: [x, y] or [x, y, label]") from None
        if label not in (0, 1):
            raise MaskEditError(f"the label of the point {item!r} is {label}; use 1 (the object) or 0 (not the object)")
        points.append((x, y))
        labels.append(label)
    return np.asarray(points, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def parse_size(text, default=None) -> tuple[int, int] | None:
    """"832x480" (or "832x480 (landscape)") → (832, 480); "auto"/empty → default."""
    if text is None or str(text).strip().lower() in ("", "auto", "default"):
        return default
    match = re.match(r"\s*(\d+)\s*[x×,]\s*(\d+)", str(text))
    if not match:
        raise MaskEditError(f"the size {text!r} is not WIDTHxHEIGHT, e.g. 832x480")
    return int(match.group(1)), int(match.group(2))


def parse_later_frames(text) -> list[int]:
    """Frame indices of edited later frames as JSON ([16, 24]) or comma-separated text ("16, 24")."""
    if text is None or str(text).strip() in ("", "[]"):
        return []
    try:
        data = json.loads(text) if str(text).strip().startswith("[") else [v for v in str(text).split(",") if v.strip()]
        return [int(v) for v in data]
    except (ValueError, TypeError):
        raise MaskEditError(f"the later frame numbers {text!r} must be whole numbers, e.g. [16] or 16, 24") from None


# ----- the conformed clip (before a region exists)


def save_clip(folder, clip, source: dict) -> Path:
    """Write a conformed `video.Clip` (lossless npz + json with fps, notes, source settings)."""
    from .files import save_npz, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_npz(folder / "clip.npz", frames=clip.frames)
    write_text(folder / "clip.json", json.dumps({"fps": clip.fps, "notes": clip.notes, "source": source}, default=str))
    return folder


def load_clip(folder):
    """(video.Clip, source dict) written by `save_clip`; MaskEditError when there is none."""
    from .video import Clip

    folder = Path(folder)
    if not (folder / "clip.json").is_file():
        raise MaskEditError("no video is loaded yet: load a video first (step 1)")
    info = json.loads((folder / "clip.json").read_text())
    with np.load(folder / "clip.npz", allow_pickle=False) as data:
        frames = np.asarray(data["frames"])
    return Clip(frames, float(info["fps"]), list(info.get("notes", []))), dict(info.get("source", {}))


# ----- training keys, loss curves, ETA


def train_key(prepared, caption: str, trigger: str, config, base_model: str, edited_later: dict | None = None,
              window: int = 0, window_stride: int = 4, naive: bool = False) -> str:
    """What stage-1 (and stage-2) training depends on, hashed: frames, boxes, prompt, settings, base model,
    the edited later frames and the training windows; `naive`: the naive-LoRA baseline's run (its own key).
    The edited first frame is not part of it. (The LoRA cache's key, `maskedit.lora_cache.cache_key`.)"""
    from .lora_cache import cache_key

    return cache_key(prepared, caption, trigger, config, base_model, edited_later, None, window, window_stride,
                     naive)


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
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{secs}s")


# ----- chunked training


@dataclass
class ChunkSettings:
    """How long one training call may run: `budget_s` seconds of wall time (the next step must be expected
    to end within it), and at most `max_steps` steps (None: no step limit; tests use it to chunk exactly)."""

    budget_s: float = DEFAULT_CHUNK_SECONDS
    max_steps: int | None = None


def run_training_chunk(pipe, prepared_dir, run_dir, caption: str, config, *, trigger: str, base_model: str,
                       later_frames: dict | None = None, chunk: ChunkSettings | None = None,
                       stop_file=None, resume: bool = True, save_partial: bool = True, window: int = 0,
                       window_stride: int = 4, naive: bool = False) -> Iterator[dict]:
    """One call's worth of training (resuming the run's checkpoint); yields plain dicts (window,
    window_stride: train on overlapping windows; naive: the naive-LoRA baseline; `editing.train_edit_lora`):

    {"kind": "note", "message"}, {"kind": "stage", "stage", "total_steps", "start_step"},
    {"kind": "step", "step", "total_steps", "loss", "seconds"}, {"kind": "chunk_end", "step", "total_steps"}
    (budget used up: call again), {"kind": "stopped", "step", "total_steps", "partial"} (the user's stop:
    a loadable LoRA of the steps so far is in run_dir/partial), {"kind": "done", "lora", "metadata"}.
    Pickle-friendly, so it can run in a ZeroGPU worker.
    """
    from . import editing
    from .training import StepEvent

    chunk = chunk or ChunkSettings()
    started = time.perf_counter()
    prepared = editing.load_prepared(prepared_dir)
    later = {int(k): editing.load_edited_frame(path, prepared.width, prepared.height, what=f"edited frame {k}")
             for k, path in (later_frames or {}).items()}
    state = {"steps": 0, "last": 0.0, "user": False}

    def should_stop() -> bool:
        if stop_file is not None and Path(stop_file).exists():
            state["user"] = True
            return True
        if chunk.max_steps is not None and state["steps"] >= chunk.max_steps:
            return True
        elapsed = time.perf_counter() - started
        return state["steps"] > 0 and elapsed + 1.5 * state["last"] > chunk.budget_s

    events = editing.train_edit_lora(pipe, prepared, caption, config, run_dir, trigger=trigger, edited_later=later,
                                     resume=resume, should_stop=should_stop, base_model=base_model,
                                     window=int(window or 0), window_stride=int(window_stride or 4),
                                     naive=bool(naive))
    try:
        for event in events:
            if isinstance(event, StepEvent):
                state["steps"] += 1
                state["last"] = event.seconds
                yield {"kind": "step", "step": event.step, "total_steps": event.total_steps,
                       "loss": event.loss, "seconds": event.seconds}
            elif isinstance(event, editing.EditTrainingNote):
                yield {"kind": "note", "message": event.message}
            elif isinstance(event, editing.EditTrainingStage):
                yield {"kind": "stage", "stage": event.stage, "total_steps": event.total_steps,
                       "start_step": event.start_step}
            elif isinstance(event, editing.EditTrainingStopped):
                if state["user"]:
                    partial = None
                    if save_partial:
                        from .lora import save_lora

                        meta = {"partial": True, "stage": event.stage, "step": event.step,
                                "total_steps": event.total_steps, "base_model": base_model, "trigger": trigger,
                                "caption": caption, "frames": prepared.num_frames, "width": prepared.width,
                                "height": prepared.height}
                        if naive:
                            meta.update(condition=editing.STOCK_CONDITION, method="naive-lora")
                        partial = str(save_lora(pipe, Path(run_dir) / PARTIAL_FOLDER, meta))
                    yield {"kind": "stopped", "stage": event.stage, "step": event.step,
                           "total_steps": event.total_steps, "partial": partial}
                else:
                    yield {"kind": "chunk_end", "stage": event.stage, "step": event.step,
                           "total_steps": event.total_steps}
            elif isinstance(event, editing.EditTrainingDone):
                shutil.rmtree(Path(run_dir) / PARTIAL_FOLDER, ignore_errors=True)
                yield {"kind": "done", "lora": event.lora_path, "metadata": event.metadata}
    finally:
        events.close()


def train_in_chunks(call_chunk: Callable[[bool], Iterator[dict]], max_chunks: int = 10_000) -> Iterator[dict]:
    """Chain training calls until the LoRA is saved or the user stops. call_chunk(resume) runs one chunk
    (first call: resume as asked by the caller, then always resume). Yields every event plus
    {"kind": "chunk", "index"} before each call."""
    for index in range(max_chunks):
        yield {"kind": "chunk", "index": index}
        last = None
        for event in call_chunk(index > 0):
            last = event["kind"]
            yield event
            if last in ("done", "stopped"):
                return
        if last != "chunk_end":
            raise MaskEditError("training ended without saving a LoRA or a checkpoint; see the server log")
    raise MaskEditError(f"training did not finish in {max_chunks} calls")


# ----- generation with step events


def run_generation(pipe, prepared_dir, edited_frame, caption: str, out_dir, *, lora_path=None, method="mask-lora",
                   steps=30, guidance_scale=5.0, flow_shift=5.0, seed=0, lora_scale=1.0, trigger=None,
                   fit=False, stop_file=None, preset=None) -> Iterator[dict]:
    """Generate an edit and write its files; yields {"kind": "warning", "message"} for a preset option that
    cannot be used here (generation goes on without it), {"kind": "step", "step", "total_steps", "seconds"}
    per denoising step and finally {"kind": "done", "edited", "side_by_side", "report"}.

    The pipe gets exactly the given LoRA (or none): an adapter left by another session is removed.
    preset: a preset name (or `presets.Preset`) whose generation options apply — its speed LoRA (stacked
    with the edit LoRA), attention backend and VAE tiling (`apply_preset_options`); None: none of them."""
    from . import editing
    from .conditioning import DEFAULT_TRIGGER
    from .lora import load_lora, read_metadata, unload_lora

    started = time.perf_counter()
    prepared = editing.load_prepared(prepared_dir)
    edited = editing.load_edited_frame(edited_frame, prepared.width, prepared.height, fit, prepared.source_size,
                                       "edited first frame")
    if lora_path:
        load_lora(pipe, lora_path, float(lora_scale))
        if trigger is None:
            trigger = read_metadata(lora_path).get("trigger")
    else:
        unload_lora(pipe)
    trigger = DEFAULT_TRIGGER if trigger is None else trigger
    options = apply_preset_options(pipe, preset, float(lora_scale), use_speed=method != "no-lora")
    for message in options["warnings"]:
        yield {"kind": "warning", "message": message}
    speed_weight = options["speed_lora_weight"]
    should_stop = (lambda: Path(stop_file).exists()) if stop_file else None
    results: queue.Queue = queue.Queue()

    def work():
        try:
            frames = editing.generate_edit(
                pipe, prepared, edited, caption, steps=int(steps), guidance_scale=float(guidance_scale),
                flow_shift=float(flow_shift), seed=int(seed), lora_scale=float(lora_scale), method=method,
                trigger=trigger, callback=lambda e: results.put(("step", e)), should_stop=should_stop,
                speed_lora_weight=speed_weight)
            results.put(("frames", frames))
        except BaseException as error:  # re-raised in the caller's thread
            results.put(("error", error))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while True:
        kind, value = results.get()
        if kind == "step":
            yield {"kind": "step", "step": value.step, "total_steps": value.total_steps, "seconds": value.seconds}
        elif kind == "error":
            thread.join()
            raise value
        else:
            frames = value
            break
    thread.join()
    outputs = editing.write_edit_outputs(out_dir, prepared, frames)
    report = {"method": method, "frames": int(frames.shape[0]), "width": prepared.width, "height": prepared.height,
              "fps": prepared.fps, "background_psnr_db": outputs.background_psnr, "seconds": time.perf_counter() - started,
              "steps": int(steps), "guidance_scale": float(guidance_scale), "flow_shift": float(flow_shift),
              "seed": int(seed), "lora_scale": float(lora_scale), "lora": Path(lora_path).name if lora_path else None,
              "preset": options["preset"], "speed_lora": options["speed_lora"], "options": options["notes"],
              "warnings": options["warnings"]}
    Path(out_dir, "report.json").write_text(json.dumps(report, indent=2, default=str))
    yield {"kind": "done", "edited": str(outputs.edited), "side_by_side": str(outputs.side_by_side), "report": report}


def apply_preset_options(pipe, preset, edit_weight: float = 1.0, use_speed: bool = True) -> dict:
    """Put a preset's generation options on the (shared) pipe: its speed LoRA beside the edit LoRA, its
    attention backend and VAE tiling; a pipe left with another preset's options gets them undone. An
    option that cannot be used here (a speed LoRA that is not on disk or in the hub cache offline, an
    attention backend not installed) is skipped with a warning: generation never fails for it.
    Returns {"preset", "speed_lora" (what is active, or None), "speed_lora_weight", "notes", "warnings"}."""
    from .presets import get_preset
    from .speed import (enable_vae_tiling, has_speed_lora, load_speed_lora, set_attention_backend,
                        set_lora_weights, unload_speed_lora)

    chosen = get_preset(preset) if isinstance(preset, str) else preset
    result = {"preset": getattr(chosen, "name", None), "speed_lora": None, "speed_lora_weight": 1.0, "notes": [],
              "warnings": []}
    spec = chosen.speed_lora if (chosen is not None and use_speed) else None
    loaded_spec = getattr(pipe, "_maskedit_speed_lora", None)
    if has_speed_lora(pipe) and (spec is None or loaded_spec != spec):
        unload_speed_lora(pipe, edit_weight)
        pipe._maskedit_speed_lora = None
    if spec:
        try:
            if not has_speed_lora(pipe):
                load_speed_lora(pipe, spec, chosen.speed_lora_weight, edit_weight)
                pipe._maskedit_speed_lora = spec
            else:
                set_lora_weights(pipe, edit_weight, chosen.speed_lora_weight)
            result.update(speed_lora=spec, speed_lora_weight=float(chosen.speed_lora_weight))
            result["notes"].append(f"speed LoRA {Path(spec).name} (weight {chosen.speed_lora_weight:g})")
        except MaskEditError as error:
            if has_speed_lora(pipe):
                unload_speed_lora(pipe, edit_weight)
            pipe._maskedit_speed_lora = None
            result["warnings"].append(f"the preset's speed LoRA could not be loaded, so this edit was generated "
                                      f"without it (use more steps and CFG > 1 for full quality): {error}")
    if chosen is None:
        return result
    backend = chosen.attention_backend or "native"
    if backend != (getattr(pipe, "_maskedit_attention", None) or "native"):
        try:
            set_attention_backend(pipe.transformer, backend)
            pipe._maskedit_attention = backend
            result["notes"].append(f"attention backend {backend}")
        except MaskEditError as error:
            result["warnings"].append(f"{error}; the default attention is used")
    enable_vae_tiling(pipe, bool(chosen.vae_tiling))
    if chosen.vae_tiling:
        result["notes"].append("VAE tiling")
    if chosen.compile:
        result["notes"].append("compile skipped in the app (not on ZeroGPU; the first step would be slow)")
    return result


def format_report(report: dict) -> str:
    """The quality report as Markdown."""
    psnr = report.get("background_psnr_db")
    psnr_text = "–" if psnr is None or (isinstance(psnr, float) and np.isnan(psnr)) else (
        "identical (∞ dB)" if psnr == float("inf") else f"{psnr:.2f} dB")
    return (f"| | |\n|---|---|\n| method | {report['method']} |\n"
            f"| background PSNR (outside the boxes, frames 1..) | {psnr_text} |\n"
            f"| frames | {report['frames']} at {report['width']}x{report['height']}, {report['fps']:g} fps |\n"
            f"| time | {report['seconds']:.1f} s ({report['steps']} steps, CFG {report['guidance_scale']:g}, "
            f"shift {report['flow_shift']:g}, seed {report['seed']}) |"
            + (f"\n| preset | {report['preset']} |" if report.get("preset") else "")
            + (f"\n| options | {', '.join(report['options'])} |" if report.get("options") else "")
            + "".join(f"\n| ⚠️ | {w} |" for w in report.get("warnings") or []))


def copy_into(folder, source, name: str | None = None) -> Path:
    """Copy a file into `folder` (as `name`, default its own name); returns the copy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or Path(source).name)
    if Path(source).resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target

