"""Fast generation options: a distilled "speed" LoRA stacked with the edit LoRA, the attention backend,
`torch.compile` of the transformer blocks, and VAE tiling.

    load_speed_lora(pipe, "lightx2v/Wan2.1-Distill-Loras/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors")
    set_lora_weights(pipe, edit=1.0, speed=1.0)      # both adapters active, each with its weight
    ...generate with 4 steps at CFG 1...
    unload_speed_lora(pipe)                          # back to the edit LoRA alone (bit for bit)

A speed LoRA is any Wan2.1-I2V LoRA file diffusers' Wan loader reads (diffusers or original/ComfyUI
keys); it lives beside the edit adapter under its own adapter name and never trains.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import MaskEditError
from ..method.lora import ADAPTER_NAME, load_lora, unload_lora

SPEED_ADAPTER = "speed"
ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "flex", "_native_cudnn", "_native_flash",
                      "_native_efficient", "xformers")
"""Attention backends offered (diffusers' names; hub-kernel backends are left out: they download)."""


def _adapters(pipe) -> dict:
    return getattr(pipe.transformer, "peft_config", None) or {}


def resolve_speed_lora(spec: str | os.PathLike) -> Path:
    """A local `.safetensors` file or folder, or `owner/repo/path/in/repo.safetensors` on the hub
    (downloaded into the hub cache; offline, only what is cached)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    text = str(spec)
    parts = text.split("/")
    if len(parts) >= 3 and text.endswith(".safetensors") and not path.is_absolute() and not text.startswith("."):
        from huggingface_hub import hf_hub_download

        from ..runtime import hub_unreachable, missing_offline

        offline = hub_unreachable()  # no hub: the cache alone, in seconds (not minutes of retries)
        try:
            return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=bool(offline)))
        except Exception as error:  # offline, missing, no access: many types
            why = missing_offline(offline) if offline else f"{type(error).__name__}: {str(error).splitlines()[0]}"
            raise MaskEditError(
                f"could not get the speed LoRA {text!r} from the hub ({why}); download it and pass the local file "
                "instead"
            ) from None
    raise MaskEditError(f"no speed LoRA at {text!r}: give a .safetensors file, a folder, or owner/repo/file.safetensors")


def load_speed_lora(pipe, spec: str | os.PathLike, weight: float = 1.0, edit_weight: float = 1.0) -> None:
    """Load a speed LoRA as the adapter `speed` and activate it beside the edit adapter (if any)."""
    import warnings

    with warnings.catch_warnings():  # peft notes that a second adapter joins the first: that is the point
        warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute")
        load_lora(pipe, resolve_speed_lora(spec), scale=weight, adapter_name=SPEED_ADAPTER)
    set_lora_weights(pipe, edit=edit_weight, speed=weight)


def set_lora_weights(pipe, edit: float = 1.0, speed: float = 1.0) -> list[str]:
    """Activate the edit and speed adapters that the transformer has, with these weights; returns the
    active adapter names."""
    names, weights = [], []
    for name, weight in ((ADAPTER_NAME, edit), (SPEED_ADAPTER, speed)):
        if name in _adapters(pipe):
            names.append(name)
            weights.append(float(weight))
    if names:
        pipe.set_adapters(names, adapter_weights=weights)
    return names


def has_speed_lora(pipe) -> bool:
    return SPEED_ADAPTER in _adapters(pipe)


def unload_speed_lora(pipe, edit_weight: float = 1.0) -> None:
    """Delete the speed adapter; the edit adapter (if any) stays active with `edit_weight`."""
    unload_lora(pipe, SPEED_ADAPTER)
    if ADAPTER_NAME in _adapters(pipe):
        pipe.set_adapters([ADAPTER_NAME], adapter_weights=[float(edit_weight)])


def available_attention_backends() -> list[str]:
    """The backends of ATTENTION_BACKENDS whose packages are installed here."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    usable = []
    for name in ATTENTION_BACKENDS:
        try:
            _check_attention_backend_requirements(AttentionBackendName(name))
        except Exception:  # missing package / too old / unknown in this diffusers
            continue
        usable.append(name)
    return usable


def set_attention_backend(transformer, backend: str | None) -> str:
    """Use diffusers' attention `backend` (None or "default" = native PyTorch SDPA); returns its name."""
    import logging

    name = (backend or "native").lower()
    if name == "default":
        name = "native"
    if name not in ATTENTION_BACKENDS:
        raise MaskEditError(f"unknown attention backend {backend!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    if name not in available_attention_backends():
        raise MaskEditError(
            f"the attention backend {name!r} is not installed here; available: {', '.join(available_attention_backends())}"
        )
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "experimental feature" warning on every call
    try:
        transformer.set_attention_backend(name)
    except (RuntimeError, ValueError) as error:
        raise MaskEditError(f"the attention backend {name!r} cannot be used: {error}") from None
    finally:
        logger.setLevel(level)
    return name


def compile_blocks(transformer, backend: str = "inductor", mode: str | None = None, fullgraph: bool = False) -> int:
    """`torch.compile` each transformer block (regional compilation); returns how many modules were
    compiled. Blocks that carry forward hooks (block swapping / fp8 from maskedit.memory.offload) are compiled
    one level down (their attention and feed-forward modules) so the hooks stay in Python.
    Not for ZeroGPU (unsupported there)."""
    count = 0
    for block in transformer.blocks:
        if block._forward_pre_hooks or block._forward_hooks:
            for child in (getattr(block, "attn1", None), getattr(block, "attn2", None), getattr(block, "ffn", None)):
                if child is not None:
                    child.compile(backend=backend, mode=mode, fullgraph=fullgraph)
                    count += 1
        else:
            block.compile(backend=backend, mode=mode, fullgraph=fullgraph)
            count += 1
    return count


def uncompile_blocks(transformer) -> None:
    """Undo `compile_blocks` (modules run eagerly again)."""
    for module in transformer.blocks.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


def enable_vae_tiling(pipe, enabled: bool = True) -> None:
    """Decode (and encode) the video in overlapping spatial tiles: far less memory at 832x480."""
    if enabled:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()


def apply_generation_options(pipe, preset, edit_weight: float | None = None) -> list[str]:
    """Apply a preset's generation-speed settings to `pipe`: speed LoRA (loaded once, weights set),
    attention backend, VAE tiling, compile. Returns notes of what was done."""
    notes = []
    edit_weight = preset.lora_scale if edit_weight is None else edit_weight
    if preset.speed_lora:
        if not has_speed_lora(pipe):
            load_speed_lora(pipe, preset.speed_lora, preset.speed_lora_weight, edit_weight)
            notes.append(f"speed LoRA {preset.speed_lora} loaded (weight {preset.speed_lora_weight:g})")
        else:
            set_lora_weights(pipe, edit_weight, preset.speed_lora_weight)
    elif has_speed_lora(pipe):
        unload_speed_lora(pipe, edit_weight)
        notes.append("speed LoRA removed")
    if preset.attention_backend:
        notes.append(f"attention backend {set_attention_backend(pipe.transformer, preset.attention_backend)}")
    enable_vae_tiling(pipe, preset.vae_tiling)
    if preset.compile:
        if torch.cuda.is_available():
            notes.append(f"compiled {compile_blocks(pipe.transformer)} transformer modules")
        else:
            notes.append("compile skipped: no GPU")
    return notes
