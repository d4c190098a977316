"""The models we load and how big they are: loading (hub id or folder, and the one tiny random factory),
bases (what each base offers and how presets adapt to it), presets (the one place for defaults), speed
(speed LoRA, attention backend, compile), the planner (real size without a GPU; `segmentation_estimate`: SAM 3's
dry run), cards and estimates (its table, torch-free).

May import: perception, the method, memory, media and the base modules.

`from maskedit.models import load_pipeline, build_tiny_pipeline, …` keeps working: names not defined here
come from `maskedit.models.loading` (the module `maskedit.models` was before the folders; issue 20).
"""

from __future__ import annotations

import importlib
import pkgutil

_SUBMODULES = {module.name for module in pkgutil.iter_modules(__path__)}


def __getattr__(name: str):
    if name.startswith("__") or name in _SUBMODULES:  # `from maskedit.models import estimates` imports the
        raise AttributeError(name)                   # module itself, without loading torch through `loading`
    loading = importlib.import_module(".loading", __name__)
    try:
        return getattr(loading, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
