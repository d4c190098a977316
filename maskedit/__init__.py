"""MaskEdit: first-frame-guided video editing with a mask-aware LoRA on Wan2.1-I2V (diffusers, peft).

The public API, importable from the package top (loaded on first use, so `python -m maskedit --help`
does not import torch or diffusers):

    from maskedit import MaskEditPipeline, load_pipeline, prepare_clip, train_edit_lora, generate_edit
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from .errors import MaskEditError

_EXPORTS = {
    # the diffusers pipeline and its helpers
    "MaskEditPipeline": "method.pipeline", "SAMPLERS": "method.pipeline", "IMAGE_VIEWS": "method.pipeline", "use_sampler": "method.pipeline",
    "reference_sigmas": "method.pipeline",
    # models
    "load_pipeline": "models.loading", "build_tiny_pipeline": "models.loading",
    # conditions
    "stage1_sample": "method.conditioning", "stage2_sample": "method.conditioning", "inference_condition": "method.conditioning",
    "stock_condition": "method.conditioning", "compose_prompt": "method.conditioning",
    # training
    "LoraTrainer": "method.training", "TrainConfig": "method.training", "TrainItem": "method.training",
    # the edit API
    "PreparedClip": "workflow.prepare", "prepare_clip": "workflow.prepare", "save_prepared": "workflow.prepare",
    "load_prepared": "workflow.prepare", "load_edited_frame": "workflow.prepare", "train_edit_lora": "workflow.train",
    "train_cached": "workflow.train", "generate_edit": "workflow.generate", "write_edit_outputs": "workflow.generate",
    # clips of any length (METHOD.md §7b)
    "generate_clip": "workflow.long_clip", "generate_long_edit": "workflow.long_clip", "plan_windows": "method.windows",
    # LoRA files and presets
    "save_lora": "method.lora", "load_lora": "method.lora", "read_metadata": "method.lora",
    "Preset": "models.presets", "get_preset": "models.presets", "PRESETS": "models.presets",
}

__all__ = ["MaskEditError", *_EXPORTS]

# ----- old module paths (before the folders of issue 20), kept for one release: `from maskedit.editing import x`
# still works (with a DeprecationWarning) and gives x from its new module. `maskedit.models` is now a
# package that still offers the old module's names (maskedit/models/__init__.py).
MOVED_MODULES = {
    "background": "studio.background_job", "bases": "models.bases", "captioning": "perception.captioning",
    "cards": "models.cards", "cli": "interfaces.cli.main", "cli_common": "interfaces.cli.common",
    "cli_plan": "interfaces.cli.plan", "cli_segment": "interfaces.cli.segment", "conditioning": "method.conditioning",
    "distributed": "memory.distributed", "editing": ("workflow.prepare", "workflow.train", "workflow.generate", "models.loading", "method.experts"), "estimates": "models.estimates",
    "experts": "method.experts", "files": "media.files", "hashing": "media.hashing",
    "lora": "method.lora", "lora_cache": ("workflow.lora_cache", "workflow.train"), "lora_checks": "workflow.lora_checks",
    "masks": "method.masks", "metrics": "media.metrics", "models": "models.loading",
    "offload": "memory.offload", "pipeline": "method.pipeline", "planner": "models.planner",
    "presets": "models.presets", "preview": "workflow.preview", "segmentation": "perception.segmentation",
    "segmentation_fallback": "perception.segmentation_fallback", "segmentation_prompts": "perception.segmentation_prompts", "segmentation_sam2": "perception.segmentation_sam2",
    "segmentation_scenes": "tools.segmentation_scenes", "session": "workflow.session", "speed": "models.speed",
    "toyworld": "tools.toyworld", "training": "method.training", "video": "media.video"
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `maskedit.<old name>`: a module that forwards every name to the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and old in MOVED_MODULES and old != "models":
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def exec_module(self, module):
        moved = MOVED_MODULES[module.__name__.removeprefix(__name__ + ".")]
        targets = [importlib.import_module(f"{__name__}.{name}") for name in ((moved,) if isinstance(moved, str) else moved)]
        warnings.warn(f"{module.__name__} moved to {' and '.join(t.__name__ for t in targets)}; the old path goes in "
                      "the next release", DeprecationWarning, stacklevel=2)
        for target in reversed(targets):  # the first module that has a name wins
            module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})

        def forward(name):
            for target in targets:
                if hasattr(target, name):
                    return getattr(target, name)
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

        module.__getattr__ = forward


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
