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
