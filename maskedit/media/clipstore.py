"""Clips too long to hold in memory: frames and regions as memory-mapped .npy files, read a window at a time.

A conformed 832x480 clip of 36,000 frames is 43 GB of uint8, its boxes 14 GB of bool: such a clip is never held in
RAM. `read_conformed(..., into=FOLDER)` decodes it straight into `FOLDER/frames.npy`, regions are written frame by
frame into `region.npy`, and every reader (`open_array`) gets a read-only `np.memmap`: slicing a window reads only
that window's pages, and numpy code written for in-memory arrays works on it unchanged.

    with array_writer(folder / FRAMES_FILE, (F, H, W, 3), np.uint8) as frames:   # appears only when complete
        frames[i] = ...
    frames = open_array(folder / FRAMES_FILE)                                      # read-only memmap

Clips of at most `LAZY_ABOVE_FRAMES` frames keep the in-memory path (and their .npz files), unchanged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MaskEditError

LAZY_ABOVE_FRAMES = 81
"""Clips longer than this many frames (one window of the base) are stored memory-mapped, not in memory."""
FRAMES_FILE = "frames.npy"
REGION_FILE = "region.npy"
TIGHT_FILE = "tight.npy"
CHUNK_FRAMES = 16
"""Frames processed at once when a long clip's arrays are written or reduced (bounded memory)."""


def is_lazy(num_frames: int) -> bool:
    """True when a clip of `num_frames` frames is stored memory-mapped (longer than one window)."""
    return num_frames > LAZY_ABOVE_FRAMES


@contextmanager
def array_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype) -> Iterator[np.memmap]:
    """A writable memory-mapped .npy of `shape` and `dtype` at a temporary name beside `path`; renamed onto `path`
    when the block ends without an exception (deleted otherwise), so a half-written array never looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.partial.npy")
    array = np.lib.format.open_memmap(temp, mode="w+", dtype=dtype, shape=tuple(int(v) for v in shape))
    try:
        yield array
        array.flush()
    except BaseException:
        del array
        temp.unlink(missing_ok=True)
        raise
    del array  # the map is closed before the rename
    os.replace(temp, path)


def open_array(path: str | os.PathLike) -> np.memmap:
    """A read-only memory map of a .npy written by `array_writer`; MaskEditError when it is missing or damaged."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise MaskEditError(f"{path} is missing or damaged ({error}); prepare the clip again") from None


def is_mapped(array) -> bool:
    """True when `array` (or the array it is a view of) is a memory map."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = getattr(array, "base", None)
    return False


def mapped_file(array) -> Path | None:
    """The file a memory-mapped array (a whole .npy opened by `open_array`) reads, else None."""
    name = getattr(array, "filename", None)
    return Path(name) if isinstance(array, np.memmap) and name else None


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """`target` becomes the file `source`: a hard link where the file system allows (the arrays here are written once
    and replaced by renaming, never changed in place, so a link cannot see a later change), else a copy. The
    signature of `shutil.copy2`, so it serves as `shutil.copytree(copy_function=...)`."""
    import shutil

    target = Path(target)
    temp = target.with_name(f".{target.name}.link")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        shutil.copy2(source, target)


def chunks(num_frames: int, size: int = CHUNK_FRAMES) -> Iterator[slice]:
    """Slices of at most `size` frames covering 0..num_frames-1 in order."""
    for start in range(0, num_frames, size):
        yield slice(start, min(start + size, num_frames))


def copy_array(array: np.ndarray, path: str | os.PathLike) -> np.memmap:
    """`array` written to a memory-mapped .npy at `path` chunk by chunk (never whole in memory); returns it
    opened read-only."""
    with array_writer(path, array.shape, array.dtype) as out:
        for part in chunks(array.shape[0]):
            out[part] = array[part]
    return open_array(path)


def mean_over_frames(array: np.ndarray, start: int = 0) -> float:
    """The mean of `array[start:]` (e.g. the share of a region's pixels from frame 1 on), computed chunk by chunk;
    nan when there is no frame."""
    total, count = 0.0, 0
    for part in chunks(array.shape[0] - start):
        block = np.asarray(array[start + part.start:start + part.stop])
        total += float(block.sum(dtype=np.float64))
        count += block.size
    return total / count if count else float("nan")
