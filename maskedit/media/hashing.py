"""The one hashing scheme of run keys: checkpoint fingerprints (training.py) and LoRA cache keys (lora_cache.py).

`array_digest` hashes an array's shape, dtype and bytes (sha256 hex); `json_digest` hashes a JSON-able dict
with sorted keys (values that are not JSON types are written with str()).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


DIGEST_CHUNK_BYTES = 64 * 1024**2
"""Bytes hashed at once: a memory-mapped long clip is hashed a few frames at a time, never copied whole."""


def array_digest(array) -> str:
    """sha256 hex of an array's shape, dtype and contents (64 hex digits). The bytes are fed in chunks of whole
    leading-axis slices (the same bytes in the same order as `tobytes()`, so the same digest)."""
    array = np.asarray(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    if array.ndim == 0 or array.nbytes <= DIGEST_CHUNK_BYTES:
        digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
    step = max(1, DIGEST_CHUNK_BYTES // max(1, array[0].nbytes))
    for start in range(0, array.shape[0], step):
        digest.update(np.ascontiguousarray(array[start:start + step]).tobytes())
    return digest.hexdigest()


def json_digest(parts: dict) -> str:
    """sha256 hex of `parts` as sorted-key JSON (64 hex digits)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
