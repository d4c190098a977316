"""The one hashing scheme of run keys: checkpoint fingerprints (training.py) and LoRA cache keys (lora_cache.py).

`array_digest` hashes an array's shape, dtype and bytes (sha256 hex); `json_digest` hashes a JSON-able dict
with sorted keys (values that are not JSON types are written with str()).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def array_digest(array) -> str:
    """sha256 hex of an array's shape, dtype and contents (64 hex digits)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def json_digest(parts: dict) -> str:
    """sha256 hex of `parts` as sorted-key JSON (64 hex digits)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
