"""Small runtime helpers shared by the model modules, light to import (no diffusers, torch lazily)."""

from __future__ import annotations

import logging
from contextlib import contextmanager


def default_device() -> str:
    """"cuda" when a CUDA GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def quiet_transformers():
    """Silence transformers' info/warning chatter while importing or loading (e.g. its one-time note that
    image processors fall back to PIL without torchvision, which we keep out of CPU installs)."""
    import transformers  # noqa: F401  its import sets its logger's level; set ours after that

    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def release_memory() -> None:
    """Give memory freed by a large piece of work (a decoded upload, a checked LoRA file) back to the system:
    collect garbage, then ask glibc to return its free heap pages (`malloc_trim`; a no-op where there is no
    glibc). Without it a server's RSS stays at the peak of its largest upload."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
