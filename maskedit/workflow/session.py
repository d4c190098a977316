"""Session folders for the app: where each session's files live, path checks, and the inputs given as text
(points, sizes, frame numbers). Pure Python (no gradio); `maskedit.studio` builds the session service on it.

A session folder (one per browser tab or gradio_client `Client`, named after its session hash) holds:

    source/        the uploaded video and mask video, copied in
    clip/          the conformed clip (clip.npz + clip.json), before any region is chosen
    prepared/      the prepared clip (`prepare.save_prepared`): clip, boxes, first frame
    segment/       masks.mp4, boxes.mp4, overlay.mp4 of the last propagation
    edited/        the edited first frame and edited later frames (frame_K.png)
    train/<key>/   the session's own LoRA cache (when the app keeps one per session, as on a public Space):
                   one entry per training key, its checkpoints/, lora*.safetensors, partial/ after a stop
    runs/<key>/    the inputs a background run reads (a copy: a later segmentation may rewrite prepared/)
    lora/          an uploaded LoRA
    results/<n>/   edited.mp4, side_by_side.mp4, report.json of each generation

The edited first frame enters only at generation, never the training key (`lora_cache.cache_key`): one LoRA
serves any number of edits of the same clip.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import MaskEditError
from ..limits import (MAX_JSON_CHARS, check, check_points_count, check_text, parse_json, parse_number_text,
                      shown_value)

STALE_SECONDS = 24 * 3600
STOP_TRAINING = "stop_training"
STOP_GENERATION = "stop_generation"
CLIP_FOLDER, PREPARED_FOLDER, SOURCE_FOLDER = "clip", "prepared", "source"
SEGMENT_FOLDER, EDITED_FOLDER, TRAIN_FOLDER = "segment", "edited", "train"
LORA_FOLDER, RESULTS_FOLDER = "lora", "results"


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


POINTS_EXAMPLE = "[[120, 80], [30, 20, 0]]"


def parse_points(text, with_objects: bool = False):
    """Clicks as JSON: [[x, y], [x, y, label], [x, y, label, object], ...] or [{"x": .., "y": .., "label": 0|1,
    "object": k}, ...] (label 1 = the object, 0 = not the object; default 1), in pixels of the conformed first
    frame; `object` (a whole number >= 1) says which object a click belongs to (several objects; default: the
    one being clicked). The JSON is bounded (`limits.parse_json`: size, depth, numbers) and holds at most
    MAX_POINTS clicks; a label is exactly 0 or 1 (1.5 and True are refused). Returns (points float (N, 2),
    labels int (N,)), and with `with_objects` also the object numbers int (N,), 0 where none was given."""
    if isinstance(text, str) and not text.strip():
        raise MaskEditError(f"no points given: pass JSON like {POINTS_EXAMPLE} (x, y, label 1/0)")
    data = parse_json(text, "points JSON", POINTS_EXAMPLE)
    if isinstance(data, dict) and "points" in data:
        data = data["points"]
    if not isinstance(data, list) or not data:
        raise MaskEditError(f"the points must be a non-empty JSON list, e.g. {POINTS_EXAMPLE}")
    check_points_count(len(data))
    points, labels, objects = [], [], []
    for item in data:
        if isinstance(item, dict):
            item = [item.get("x"), item.get("y"), item.get("label", 1), *([item["object"]] if "object" in item else [])]
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3, 4):
            raise MaskEditError(f"the point {shown_value(item)} is not [x, y], [x, y, label] or [x, y, label, object]")
        if not all(_is_number(v) and math.isfinite(v) for v in item):
            raise MaskEditError(f"the point {shown_value(item)} needs finite numbers: [x, y], [x, y, label] or "
                                "[x, y, label, object]")
        label = item[2] if len(item) >= 3 else 1
        if label not in (0, 1):
            raise MaskEditError(f"the label of the point {shown_value(item)} is {label}; use 1 (the object) or 0 "
                                "(not the object)")
        number = float(item[3]) if len(item) == 4 else 0.0
        if len(item) == 4 and not (number.is_integer() and 1 <= number <= 10 ** 6):
            raise MaskEditError(f"the object of the point {shown_value(item)} is {shown_value(item[3])}; give an "
                                "object number (1, 2, ...)")
        points.append((float(item[0]), float(item[1])))
        labels.append(int(label))
        objects.append(int(number))
    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    return (points, labels, np.asarray(objects, dtype=np.int64)) if with_objects else (points, labels)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def parse_size(text, default=None) -> tuple[int, int] | None:
    """"832x480" (or "832x480 (landscape)") → (832, 480); "auto"/empty → default. Each side is a bounded whole
    number within the width/height limits (`limits`)."""
    if text is None or str(text).strip().lower() in ("", "auto", "default"):
        return default
    text = check_text(text, "size", 200)
    match = re.match(r"\s*(\d+)\s*[x×,]\s*(\d+)", text)
    if not match:
        raise MaskEditError(f"the size {shown_value(text)} is not WIDTHxHEIGHT, e.g. 832x480")
    width = parse_number_text(match.group(1), "width of the size", integer=True, example="832x480")
    height = parse_number_text(match.group(2), "height of the size", integer=True, example="832x480")
    return check("width", width, "size"), check("height", height, "size")


def parse_later_frames(text) -> list[int]:
    """Frame indices of edited later frames as JSON ([16, 24]) or comma-separated text ("16, 24"); each a
    whole number (2.5 is refused, never rounded)."""
    if text is None or str(text).strip() in ("", "[]"):
        return []
    example = "[16] or 16, 24"
    what = "later frame numbers"
    if isinstance(text, str) and not text.strip().startswith("["):
        text = check_text(text, what, MAX_JSON_CHARS)
        return [parse_number_text(v, "later frame number", integer=True, example=example)
                for v in text.split(",") if v.strip()]
    data = parse_json(text, what, example)
    if not isinstance(data, list):
        raise MaskEditError(f"the {what} {shown_value(text)} must be whole numbers, e.g. {example}")
    return [parse_number_text(v, "later frame number", integer=True, example=example) for v in data]


def parse_later_captions(data) -> dict[int, str]:
    """Captions of edited later frames {K: text}, from a dict or its JSON ({"16": "a blue car"}), bounded like
    every JSON field and text (`limits`); empty texts are left out (they are captioned automatically)."""
    example = '{"16": "a blue car on a road"}'
    if data is None or (isinstance(data, str) and data.strip() in ("", "{}")):
        return {}
    data = parse_json(data, "later frames' captions", example)
    if not isinstance(data, dict):
        raise MaskEditError(f"the later frames' captions {shown_value(data)} must be a JSON object of frame "
                            f"number and caption, e.g. {example}")
    captions = {}
    for key, value in data.items():
        index = parse_number_text(key, "frame number of a later frame's caption", integer=True, example=example)
        captions[index] = check_text(value, f"caption of later frame {index}")
    return {k: v for k, v in captions.items() if v}


# ----- the conformed clip (before a region exists)


def save_clip(folder, clip, source: dict) -> Path:
    """Write a conformed `video.Clip` (lossless npz + json with fps, notes, source settings). A clip longer than one
    window keeps its frames in the memory-mapped `frames.npy` (`clipstore`; linked or written chunk by chunk when
    they are not there yet)."""
    from ..media import clipstore
    from ..media.files import save_npz, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if clipstore.is_lazy(clip.num_frames):
        target = folder / clipstore.FRAMES_FILE
        mapped = clipstore.mapped_file(clip.frames)
        if mapped is None or mapped.resolve() != target.resolve():
            clipstore.copy_array(clip.frames, target)
        (folder / "clip.npz").unlink(missing_ok=True)
    else:
        (folder / clipstore.FRAMES_FILE).unlink(missing_ok=True)
        save_npz(folder / "clip.npz", frames=clip.frames)
    write_text(folder / "clip.json", json.dumps({"fps": clip.fps, "notes": clip.notes, "source": source}, default=str))
    return folder


def load_clip(folder):
    """(video.Clip, source dict) written by `save_clip`; MaskEditError when there is none."""
    from ..media.video import Clip

    folder = Path(folder)
    if not (folder / "clip.json").is_file():
        raise MaskEditError("no video is loaded yet: load a video first (step 1)")
    info = json.loads((folder / "clip.json").read_text())
    from ..media.clipstore import FRAMES_FILE, open_array

    if (folder / FRAMES_FILE).is_file():  # a long clip: memory-mapped (`clipstore`), never loaded whole
        frames = open_array(folder / FRAMES_FILE)
    else:
        with np.load(folder / "clip.npz", allow_pickle=False) as data:
            frames = np.asarray(data["frames"])
    return Clip(frames, float(info["fps"]), list(info.get("notes", []))), dict(info.get("source", {}))


def copy_into(folder, source, name: str | None = None) -> Path:
    """Copy a file into `folder` (as `name`, default its own name); returns the copy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or Path(source).name)
    if Path(source).resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target

