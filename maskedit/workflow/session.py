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
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import MaskEditError

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
        except RecursionError:
            raise MaskEditError("the points JSON is nested too deeply; pass a flat list, e.g. [[120, 80], [30, 20, 0]]") from None
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
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise MaskEditError(f"the later frame numbers {str(text)[:80]!r} must be whole numbers, e.g. [16] or 16, 24") from None


def parse_later_captions(data) -> dict[int, str]:
    """Captions of edited later frames {K: text}, from a dict or its JSON ({"16": "a blue car"}); empty texts
    are left out (they are captioned automatically)."""
    if data is None or (isinstance(data, str) and data.strip() in ("", "{}")):
        return {}
    try:
        data = json.loads(data) if isinstance(data, str) else data
        captions = {int(k): str(v).strip() for k, v in dict(data).items()}
    except (ValueError, TypeError):
        raise MaskEditError(f"the later frames' captions {str(data)[:80]!r} must be a JSON object of frame number "
                            'and caption, e.g. {"16": "a blue car on a road"}') from None
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

