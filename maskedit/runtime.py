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


# ----- can the Hugging Face hub be reached? (answered in seconds, not after minutes of retries)

HUB_PROBE_TIMEOUT_S = 3.0
"""Seconds the probe waits for the hub to answer. A machine without network refuses at once; one whose packets are
dropped takes this long."""
HUB_PROBE_TTL_S = 60.0
"""A probe's answer is reused this long (a load of many files asks once, a later load asks again)."""
_probe: dict = {}


def hub_endpoint() -> str:
    """The hub's address: HF_ENDPOINT, else https://huggingface.co."""
    import os

    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_unreachable() -> str | None:
    """None when the Hugging Face hub answers (any HTTP status counts), else why it cannot be used, in words for a
    message ("HF_HUB_OFFLINE is set", "https://huggingface.co cannot be reached (ConnectError)").

    Without it, a model that is not in the local cache is looked for on the hub through huggingface_hub's retries
    (minutes on a machine without network); with it, the loaders ask for local files only and say at once that the
    model is missing. The answer is kept HUB_PROBE_TTL_S seconds; proxies from the environment are used."""
    import os
    import time

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = hub_endpoint()
    cached = _probe.get(endpoint)
    if cached is not None and time.monotonic() - cached[0] < HUB_PROBE_TTL_S:
        return cached[1]
    import httpx

    try:
        httpx.head(endpoint, timeout=HUB_PROBE_TIMEOUT_S, follow_redirects=False)
        reason = None
    except httpx.HTTPError as error:
        reason = f"{endpoint} cannot be reached ({type(error).__name__})"
    _probe[endpoint] = (time.monotonic(), reason)
    return reason


def hub_files_only(model_id: str) -> tuple[bool, str | None]:
    """(local files only?, why) for loading `model_id`: a local folder never asks the hub; a hub id asks it only
    when it can be reached (`hub_unreachable`), else the local cache alone is used and `why` says what was missing."""
    import os

    if os.path.isdir(model_id):
        return True, None
    reason = hub_unreachable()
    return reason is not None, reason


def missing_offline(reason: str) -> str:
    """A loader's words for a hub model that is neither cached nor reachable (`reason`: `hub_unreachable`'s)."""
    return f"it is not in the local Hugging Face cache, and the hub cannot be used ({reason})"
