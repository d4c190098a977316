"""A safetensors file read from its header alone, and its values in bounded chunks, so that a file is checked
without ever holding one of its tensors in memory (a 2 GB upload costs its header plus one chunk).

    header = read_header("lora.safetensors")                # names, dtypes, shapes; no tensor read
    for name, chunk in value_chunks("lora.safetensors", header):   # float32 arrays of at most CHUNK_BYTES
        ...

The format: 8 bytes (little-endian u64) giving the header's length N, N bytes of JSON {name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data, each tensor's bytes at
[begin, end) of it, the tensors covering the data without gaps. Anything else is a MaskEditError that says the
file is damaged or not safetensors.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MaskEditError
from ..limits import parse_json

CHUNK_BYTES = 8 * 1024 * 1024
"""Bytes of one tensor read at a time by `value_chunks`."""

ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
              "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
"""Bytes per element of each safetensors dtype."""
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
"""The dtypes `value_chunks` converts (the ones a LoRA's weights come in)."""
_NUMPY = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it: dtype (a safetensors name, e.g. "BF16"), shape, and its bytes
    [begin, end) within the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass
class TensorHeader:
    """A safetensors file's header: its tensors by name, its metadata, where the data starts, the file's size."""

    tensors: dict[str, TensorEntry]
    metadata: dict = field(default_factory=dict)
    data_start: int = 0
    file_size: int = 0


def read_header(path: str | os.PathLike, max_header_bytes: int) -> TensorHeader:
    """The header of a safetensors file (at most `max_header_bytes` of JSON read), checked for consistency:
    known dtypes, whole non-negative shapes, byte ranges matching the shapes and covering the data exactly.
    Raises MaskEditError naming the file and what is wrong; never reads a tensor."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0

    def damaged(why: str) -> MaskEditError:
        return MaskEditError(f"{path.name} is not a LoRA file or is damaged ({why}); give the .safetensors file "
                             "that `train` wrote")

    if size == 0:
        raise damaged("it is empty (0 bytes)")
    if size < 8:
        raise damaged(f"it is {size} bytes, shorter than a safetensors header")
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(max_header_bytes, size - 8):
            raise damaged(f"its header says it is {length:,} bytes long, more than "
                          f"{'the file holds' if length > size - 8 else f'the {max_header_bytes:,} bytes read'}")
        raw = handle.read(length)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise damaged("its header is not UTF-8 text") from None
    try:
        data = parse_json(text, "safetensors header", '{"name": {"dtype": "F32", "shape": [4, 8], ...}}',
                          max_depth=3, max_chars=length)
    except MaskEditError as error:
        raise damaged(str(error)) from None
    if not isinstance(data, dict):
        raise damaged("its header is not a JSON object")
    metadata = data.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise damaged("its __metadata__ is not a map of texts")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in data.items():
        tensors[name] = _entry(name, entry, damaged)
    covered = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != covered:
            raise damaged(f"the bytes of {name!r} start at {entry.begin:,}, not where the previous tensor ends "
                          f"({covered:,})")
        covered = entry.end
    if covered != data_size:
        raise damaged(f"its tensors take {covered:,} bytes but the file holds {data_size:,} after the header; it "
                      "was cut short or has bytes appended")
    return TensorHeader(tensors, metadata, 8 + length, size)


def _entry(name: str, entry, damaged) -> TensorEntry:
    if not isinstance(entry, dict):
        raise damaged(f"the header's entry of {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEM_BYTES:
        raise damaged(f"{name!r} has the unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise damaged(f"{name!r} has the shape {shape!r}, not a list of whole numbers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise damaged(f"{name!r} has the byte range {offsets!r}")
    result = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    if result.count * ITEM_BYTES[dtype] != result.end - result.begin:
        raise damaged(f"{name!r} is {dtype} {list(shape)} ({result.count * ITEM_BYTES[dtype]:,} bytes) but its byte "
                      f"range holds {result.end - result.begin:,}")
    return result


def value_chunks(path: str | os.PathLike, header: TensorHeader, names=None,
                 chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[str, np.ndarray]]:
    """(name, values: float32, float64 for F64) of the float tensors `names` (default: all, in file order), each tensor in
    chunks of at most `chunk_bytes` bytes of the file: memory is one chunk, whatever the file's size."""
    chosen = sorted((n for n in (header.tensors if names is None else names)
                     if header.tensors[n].dtype in FLOAT_DTYPES), key=lambda n: header.tensors[n].begin)
    with open(path, "rb") as handle:
        for name in chosen:
            entry = header.tensors[name]
            item = ITEM_BYTES[entry.dtype]
            step = max(item, chunk_bytes // item * item)
            for start in range(entry.begin, entry.end, step):
                handle.seek(header.data_start + start)
                raw = handle.read(min(step, entry.end - start))
                yield name, _as_floats(raw, entry.dtype)


def _as_floats(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # the upper half of a float32
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    values = np.frombuffer(raw, _NUMPY[dtype])
    return values if dtype == "F64" else values.astype(np.float32)
