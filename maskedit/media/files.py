"""Writing files so that a failure never leaves one that looks complete."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it is renamed onto `path` (with the usual file
    mode, not mkstemp's private one), on any exception it is deleted. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield temp_name
        os.chmod(temp_name, 0o666 & ~_umask())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temp_name:
        Path(temp_name).write_bytes(text.encode())


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """Write arrays to a compressed .npz atomically."""
    import numpy as np

    with atomic_path(path) as temp_name, open(temp_name, "wb") as handle:
        np.savez_compressed(handle, **arrays)


_DISPLAY_ROOT: ContextVar[Path | None] = ContextVar("maskedit_display_root", default=None)


@contextmanager
def paths_shown_relative_to(root: str | os.PathLike):
    """Inside this block `display_path` shows paths under `root` relative to it (a server sets its session
    folder, so messages never show where on the server a session lives). Per thread / asyncio task."""
    token = _DISPLAY_ROOT.set(Path(root).resolve())
    try:
        yield
    finally:
        _DISPLAY_ROOT.reset(token)


def display_path(path: str | os.PathLike) -> str:
    """`path` as a message shows it: relative to the root of `paths_shown_relative_to` when under it, else
    relative to the working directory when under it, else as given."""
    path = Path(path)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return str(path)
    for root in (_DISPLAY_ROOT.get(), Path.cwd()):
        if root is not None and resolved.is_relative_to(root):
            return str(resolved.relative_to(root)) or "."
    return str(path)
