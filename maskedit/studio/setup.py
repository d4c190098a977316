"""Opening the service for one app: its session store, training budget, background driver and LoRA cache, each
from the app's flags, else its environment variable, else the default for where it runs (locally, ZeroGPU)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..limits import check, parse_number_text
from ..workflow.lora_cache import default_cache_dir
from ..workflow.session import SessionStore
from .inputs import GpuCalls
from .runs import DEFAULT_CHUNK_SECONDS
from .runtime import Runtime, on_zero_gpu  # noqa: F401  (on_zero_gpu: the page asks here)
from .service import Studio
from .uploads import base_transformers


def has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def background_default(background: bool | None = None) -> bool:
    """Whether the page starts with background training on: the given value, else MASKEDIT_BACKGROUND, else on
    with a GPU (ZeroGPU included)."""
    if background is not None:
        return background
    env = os.environ.get("MASKEDIT_BACKGROUND", "").strip().lower()
    return env in ("1", "true", "on", "yes") if env else (on_zero_gpu() or has_gpu())


def cache_root(lora_cache: str | None) -> Path | None:
    """The shared LoRA cache folder, or None for one cache per session: "shared" locally, "session" on a
    Space (SPACE_ID set: visitors must not share each other's LoRAs); a folder = shared there."""
    choice = lora_cache or os.environ.get("MASKEDIT_LORA_CACHE") or ("session" if os.environ.get("SPACE_ID")
                                                                      else "shared")
    if choice == "session":
        return None
    return default_cache_dir() if choice == "shared" else Path(choice).expanduser()


def open_studio(runtime: Runtime, gpu: GpuCalls, *, work_dir=None, gpu_budget: float | None = None,
                chunk_steps: int | None = None, background_driver: str | None = None, lora_cache: str | None = None,
                allowed_roots: Callable[[], list] | None = None) -> Studio:
    """The app's `Studio` over `runtime`'s model. gpu_budget: seconds per training call (else
    MASKEDIT_GPU_BUDGET); background_driver: "thread", or "session" (the default on ZeroGPU); lora_cache:
    "shared" | "session" | a folder (`cache_root`); allowed_roots: folders besides a session's own from which
    files may be read (the upload folder, the examples)."""
    budget = gpu_budget or os.environ.get("MASKEDIT_GPU_BUDGET") or DEFAULT_CHUNK_SECONDS
    budget = check("budget_s", parse_number_text(budget, "GPU budget") if isinstance(budget, str) else budget,
                   "--gpu-budget / MASKEDIT_GPU_BUDGET")
    store = SessionStore(work_dir)
    store.remove_stale()
    return Studio(store, gpu, model_name=runtime.model.name, is_tiny=runtime.model.is_tiny, budget_s=budget,
                  chunk_steps=chunk_steps,
                  background_driver=background_driver or ("session" if on_zero_gpu() else "thread"),
                  cache_root=cache_root(lora_cache), allowed_roots=allowed_roots,
                  transformers=lambda: base_transformers(runtime.pipe), sizer=runtime.sizer)
