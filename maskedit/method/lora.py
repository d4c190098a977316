"""LoRA adapters: which layers, and the files they are saved to and loaded from (peft ≥ 0.17, diffusers 0.42).

A trained edit is three files in one folder:
- `lora.safetensors`: diffusers format, loads with stock `WanImageToVideoPipeline.load_lora_weights(folder,
  weight_name="lora.safetensors")`; the adapter's peft config travels in its metadata (alpha ≠ rank is safe).
- `lora_comfyui.safetensors`: the same weights with original-Wan / ComfyUI key names
  (`diffusion_model.blocks.N.self_attn.q.lora_down.weight`, `….lora_up.weight`, `….alpha`).
- `lora.json`: what it was trained on (base model, rank, steps, frames, size, trigger, caption, …).
Only safetensors are ever loaded.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import MaskEditError
from ..limits import LIMITS, MAX_LORA_HEADER_BYTES, MAX_LORA_WEIGHT
from ..media.files import display_path

LORA_WEIGHT_NAME = "lora.safetensors"
COMFYUI_WEIGHT_NAME = "lora_comfyui.safetensors"
METADATA_NAME = "lora.json"
ADAPTER_NAME = "maskedit"

LORA_TARGET_MODULES = (
    r"blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"
)
"""Every linear layer of the transformer blocks except the image cross-attention K/V (`add_k_proj`,
`add_v_proj`), METHOD.md §4. A regex that peft matches against full module names."""

_DIFFUSERS_TO_WAN = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


def lora_config(rank: int = 16, alpha: float = 16.0):
    """The peft config of an edit LoRA: no dropout, peft's default init (A Kaiming-uniform, B zero)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGET_MODULES)


def add_lora(transformer, rank: int = 16, alpha: float = 16.0, seed: int = 0) -> list:
    """Add a fresh edit adapter to `transformer` (its init drawn from `seed`); returns its parameters."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(lora_config(rank, alpha), adapter_name=ADAPTER_NAME)
    transformer.set_adapter(ADAPTER_NAME)
    return lora_parameters(transformer)


def lora_parameters(transformer) -> list:
    """The edit adapter's parameters, in a fixed order; marks them trainable and everything else frozen."""
    params = []
    for name, param in transformer.named_parameters():
        is_lora = f".{ADAPTER_NAME}." in name and ("lora_A" in name or "lora_B" in name)
        param.requires_grad_(is_lora)
        if is_lora:
            params.append(param)
    return params


def lora_state_dict(transformer) -> dict:
    """The adapter's weights with peft's saved key names (`blocks.0.attn1.to_q.lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)


def to_comfyui_keys(state_dict: dict, alpha: float) -> dict:
    """diffusers/peft LoRA keys → original-Wan (ComfyUI) keys with `lora_down`/`lora_up` and an alpha per layer."""
    import torch

    converted = {}
    for key, tensor in state_dict.items():
        prefix, kind = key.rsplit(".lora_", 1)  # "blocks.0.attn1.to_q", "A.weight"
        block, module = prefix.split(".", 2)[1], prefix.split(".", 2)[2]
        if module not in _DIFFUSERS_TO_WAN:
            raise MaskEditError(f"no ComfyUI name is known for the LoRA layer {prefix!r}")
        wan = f"diffusion_model.blocks.{block}.{_DIFFUSERS_TO_WAN[module]}"
        converted[f"{wan}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor.contiguous()
        converted[f"{wan}.alpha"] = torch.tensor(float(alpha))
    return converted


def save_lora(pipe, folder: str | os.PathLike, metadata: dict) -> Path:
    """Write the pipeline's edit adapter as `lora.safetensors`, `lora_comfyui.safetensors` and `lora.json`.

    metadata: JSON-serialisable facts of the training run; rank and alpha are taken from the adapter.
    Returns the path of `lora.safetensors`. Files are written under temporary names and renamed last.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = pipe.transformer.peft_config[ADAPTER_NAME]
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(pipe.transformer).items()}
    metadata = {**metadata, "rank": config.r, "alpha": config.lora_alpha, "format": "diffusers"}

    import torch

    if not all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point()):
        raise MaskEditError("the LoRA holds NaN or infinite weights (its training diverged), so it was not saved; "
                            "train again with a lower learning rate or LoRA alpha")
    staging = folder / ".saving"
    staging.mkdir(exist_ok=True)
    pipe.save_lora_weights(
        str(staging), transformer_lora_layers=state_dict, weight_name=LORA_WEIGHT_NAME,
        safe_serialization=True, transformer_lora_adapter_metadata=config.to_dict(),
    )
    save_file(to_comfyui_keys(state_dict, config.lora_alpha), str(staging / COMFYUI_WEIGHT_NAME))
    (staging / METADATA_NAME).write_text(json.dumps(metadata, indent=2, default=str))
    for name in (COMFYUI_WEIGHT_NAME, METADATA_NAME, LORA_WEIGHT_NAME):
        os.replace(staging / name, folder / name)
    staging.rmdir()
    return folder / LORA_WEIGHT_NAME


def read_metadata(path: str | os.PathLike) -> dict:
    """The `lora.json` beside a LoRA file (or in a LoRA folder); {} when there is none."""
    path = Path(path)
    meta = (path if path.is_dir() else path.parent) / METADATA_NAME
    return json.loads(meta.read_text()) if meta.exists() else {}


def load_lora(pipe, path: str | os.PathLike, scale: float = 1.0, adapter_name: str = ADAPTER_NAME) -> None:
    """Load an edit LoRA (a `.safetensors` file, or a folder holding `lora.safetensors`) into `pipe`.

    Either key format works (diffusers or ComfyUI/original Wan). Replaces an adapter of the same name.
    Raises MaskEditError when the file is not safetensors, is missing, or does not fit the model.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if path.suffix != ".safetensors":
        raise MaskEditError(f"{path.name} is not a .safetensors file; only safetensors LoRA files are loaded")
    if not path.is_file():
        raise MaskEditError(f"no LoRA file at {display_path(path)}")
    check_lora_file(path)
    unload_lora(pipe, adapter_name)
    try:
        with warnings.catch_warnings():
            # Wan's loader pads zero adapters for add_k_proj/add_v_proj, which we never train; peft notes it.
            warnings.filterwarnings("ignore", message=".*inconsistency was discovered between the PEFT config")
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter_name)
    except Exception as error:  # diffusers/peft/safetensors raise many types for a foreign or broken file
        unload_lora(pipe, adapter_name)
        raise MaskEditError(
            f"{path.name} does not fit this model ({type(error).__name__}: {str(error)[:300]}); "
            "was it trained on another base model or size?"
        ) from None
    if adapter_name not in (getattr(pipe.transformer, "peft_config", None) or {}):
        # diffusers only warns when a file holds no transformer LoRA keys (e.g. a text-encoder LoRA)
        raise MaskEditError(f"{path.name} holds no LoRA weights for this model's transformer; is it an edit LoRA?")
    pipe.set_adapters([adapter_name], adapter_weights=[scale])


LORA_WEIGHT_KEY = re.compile(r"\.lora(?:_(?P<kind>A|B|down|up)|\.(?P<old>up|down))(?:\.[\w-]+)?\.weight$")
"""A LoRA weight's key: peft/diffusers `….lora_A[.adapter].weight` / `lora_B`, original Wan / ComfyUI / kohya
`….lora_down.weight` / `lora_up`, older diffusers `….lora.down.weight` / `lora.up`."""
LORA_OTHER_KEY = re.compile(r"\.(alpha|diff|diff_b|dora_scale)$")
"""The other keys a LoRA file may hold: per-layer alphas, full-weight and bias differences (ComfyUI, musubi),
DoRA magnitudes."""
LORA_DTYPES = ("F16", "BF16", "F32", "F64")
MAX_SHOWN_KEYS = 3


def check_lora_file(path: str | os.PathLike) -> None:
    """Raise MaskEditError unless `path` is a safetensors LoRA file: first from its header alone
    (`check_lora_header`: names, dtypes, shapes, sizes; no tensor read), then its values in bounded chunks
    (`media.tensor_files.value_chunks`): every weight finite and at most `limits.MAX_LORA_WEIGHT` in size, every
    alpha within the LoRA alpha's range. Memory: the header plus one chunk, whatever the file's size.

    Tells a damaged or foreign file (0 bytes, cut short, not safetensors, not a LoRA: a full checkpoint, int32
    weights) and a LoRA of a diverged run (NaN/inf or huge weights, which would generate a black video) apart
    from one that merely does not fit the model (`load_lora` and `workflow.lora_checks` report that)."""
    from ..media.tensor_files import value_chunks

    path = Path(path)
    header = check_lora_header(path)
    for name, values in value_chunks(path, header):
        if not np.isfinite(values).all():
            raise MaskEditError(f"{path.name} holds NaN or infinite weights ({name}): the run that made it diverged; "
                                "train it again with a lower learning rate or LoRA alpha")
        if name.endswith(".alpha"):
            alpha = LIMITS["alpha"]
            if values.size and not (alpha.low <= float(np.abs(values).min()) and float(np.abs(values).max()) <= alpha.high):
                raise MaskEditError(f"{path.name} holds the alpha {float(values.max()):g} ({name}), outside the LoRA "
                                    f"alpha's range {alpha.low:g}..{alpha.high:g}; it is not a usable LoRA")
            continue
        largest = float(np.abs(values).max()) if values.size else 0.0
        if largest > MAX_LORA_WEIGHT:
            raise MaskEditError(f"{path.name} holds a weight of {largest:.3g} ({name}); a LoRA's weights are small "
                                f"(at most {MAX_LORA_WEIGHT:g} here, trained ones well under 1), so this file would "
                                "generate garbage: it is damaged or not a LoRA; train it again or use another file")


def check_lora_header(path: str | os.PathLike):
    """The file's safetensors header (`media.tensor_files.TensorHeader`), checked as a LoRA's without reading a
    tensor: every key a LoRA name (`LORA_WEIGHT_KEY`, `LORA_OTHER_KEY`), float dtypes (`LORA_DTYPES`), 2-D
    weights of rank at most the rank limit, scalar alphas, and at least one down/up pair. MaskEditError
    naming the first keys that break a rule."""
    from ..media.tensor_files import read_header

    path = Path(path)
    header = read_header(path, MAX_LORA_HEADER_BYTES)
    tensors = header.tensors
    if not tensors:
        raise MaskEditError(f"{path.name} holds no weights")

    def refuse(keys: list[str], why: str) -> MaskEditError:
        shown = ", ".join(repr(k[:120]) for k in keys[:MAX_SHOWN_KEYS]) + (
            f" and {len(keys) - MAX_SHOWN_KEYS} more" if len(keys) > MAX_SHOWN_KEYS else "")
        return MaskEditError(f"{path.name} is not a LoRA for this model: {shown} {why}")

    foreign = [k for k in tensors if not (LORA_WEIGHT_KEY.search(k) or LORA_OTHER_KEY.search(k))]
    if foreign:
        raise refuse(foreign, "has no LoRA name (LoRA files hold …lora_A / lora_B (or lora_down / lora_up) weights "
                              "and alphas); is it a model checkpoint rather than a LoRA?")
    wrong_type = [k for k, entry in tensors.items() if entry.dtype not in LORA_DTYPES]
    if wrong_type:
        raise refuse(wrong_type, f"holds {tensors[wrong_type[0]].dtype} values; a LoRA's weights are floating point "
                                 f"({', '.join(LORA_DTYPES)})")
    max_rank = int(LIMITS["rank"].high)
    kinds = {}
    for key, entry in tensors.items():
        match = LORA_WEIGHT_KEY.search(key)
        if match is None:
            if key.endswith(".alpha") and entry.count != 1:
                raise refuse([key], f"is an alpha of shape {list(entry.shape)}; an alpha is one number")
            continue
        kind = "down" if (match["kind"] or match["old"]) in ("A", "down") else "up"
        kinds[kind] = kinds.get(kind, 0) + 1
        rank = entry.shape[0] if kind == "down" else (entry.shape[1] if len(entry.shape) > 1 else 0)
        if len(entry.shape) != 2 or min(entry.shape) < 1:
            raise refuse([key], f"is a weight of shape {list(entry.shape)}; a LoRA's weights are 2-D matrices")
        if rank > max_rank:
            raise refuse([key], f"has rank {rank}, more than the LoRA rank's limit of {max_rank}")
    if not kinds.get("down") or not kinds.get("up"):
        raise MaskEditError(f"{path.name} holds no pairs of LoRA weights (…lora_A and …lora_B, or lora_down and "
                            "lora_up); is it an edit LoRA?")
    return header


def unload_lora(pipe, adapter_name: str = ADAPTER_NAME) -> None:
    """Remove an adapter from the transformer if it has one by that name (no-op otherwise)."""
    config = getattr(pipe.transformer, "peft_config", None) or {}
    if adapter_name in config:
        pipe.delete_adapters([adapter_name])
