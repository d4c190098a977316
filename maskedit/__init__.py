"""MaskEdit: first-frame-guided video editing with a mask-aware LoRA on Wan2.1-I2V (diffusers, peft).

The public API, importable from the package top (loaded on first use, so `python -m maskedit --help`
does not import torch or diffusers):

    from maskedit import MaskEditPipeline, load_pipeline, prepare_clip, train_edit_lora, generate_edit
"""

from __future__ import annotations

import importlib

from .errors import MaskEditError

_EXPORTS = {
    # the diffusers pipeline and its helpers
    "MaskEditPipeline": "pipeline", "SAMPLERS": "pipeline", "IMAGE_VIEWS": "pipeline", "use_sampler": "pipeline",
    "reference_sigmas": "pipeline",
    # models
    "load_pipeline": "models", "build_tiny_pipeline": "models",
    # conditions
    "stage1_sample": "conditioning", "stage2_sample": "conditioning", "inference_condition": "conditioning",
    "stock_condition": "conditioning", "compose_prompt": "conditioning",
    # training
    "LoraTrainer": "training", "TrainConfig": "training", "TrainItem": "training",
    # the edit API
    "PreparedClip": "editing", "prepare_clip": "editing", "save_prepared": "editing", "load_prepared": "editing",
    "load_edited_frame": "editing", "train_edit_lora": "editing", "generate_edit": "editing",
    "write_edit_outputs": "editing",
    # LoRA files and presets
    "save_lora": "lora", "load_lora": "lora", "read_metadata": "lora",
    "Preset": "presets", "get_preset": "presets", "PRESETS": "presets",
}

__all__ = ["MaskEditError", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
