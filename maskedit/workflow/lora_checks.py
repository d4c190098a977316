"""Does a LoRA file fit a transformer? Checked from the file's key names and shapes alone, without loading it
into the model (an upload is checked while another call may be generating with that model).

    check_lora_fits("lora_low_noise.safetensors", pipe.transformer_2)   # MaskEditError when it does not fit

Keys in the formats MaskEdit writes are checked layer by layer: diffusers/peft
(`[transformer.]blocks.N.attn1.to_q.lora_A.weight`, A: (rank, in_features), B: (out_features, rank)) and
original-Wan / ComfyUI (`diffusion_model.blocks.N.self_attn.q.lora_down.weight`). Keys of other formats are
left to diffusers' loader, which checks them when the LoRA is loaded for generation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import MaskEditError

_KEY = re.compile(
    r"^(?:transformer\.|diffusion_model\.|base_model\.model\.)?(?P<module>blocks\.\d+\..+?)"
    r"\.lora_(?P<kind>A|B|down|up)(?:\.[\w-]+)?\.weight$"
)
_WAN_TO_DIFFUSERS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
MAX_SHOWN = 3  # mismatching layers named in a message


def lora_layers(path: str | os.PathLike) -> dict[str, dict[str, tuple[int, ...]]]:
    """{diffusers module name: {"A" | "B": shape}} of the LoRA keys in a recognised format, from the file's
    safetensors header alone (`media.tensor_files.read_header`: bounded, no tensor read; a damaged header is a
    MaskEditError). A (down) is (rank, in_features), B (up) is (out_features, rank)."""
    from ..limits import MAX_LORA_HEADER_BYTES
    from ..media.tensor_files import read_header

    layers: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, entry in read_header(path, MAX_LORA_HEADER_BYTES).tensors.items():
        match = _KEY.match(key)
        if match is None:
            continue
        module = _diffusers_name(match["module"])
        if module is None:
            continue
        kind = "A" if match["kind"] in ("A", "down") else "B"
        layers.setdefault(module, {})[kind] = entry.shape
    return layers


def check_lora_fits(path: str | os.PathLike, transformer, what: str | None = None) -> None:
    """Raise MaskEditError when a LoRA layer of `path` names a layer `transformer` lacks, or its shapes do
    not match that layer's in/out features. `what` names the transformer in the message (e.g. "low-noise
    expert"). A file with no keys in a recognised format passes (diffusers checks it on load)."""
    path = Path(path)
    modules = dict(transformer.named_modules())
    problems = []
    for name, shapes in sorted(lora_layers(path).items()):
        module = modules.get(name)
        if module is None or not hasattr(module, "in_features"):
            problems.append(f"{name} is not a layer of this model")
            continue
        a, b = shapes.get("A"), shapes.get("B")
        if a is not None and (len(a) != 2 or a[1] != module.in_features):
            problems.append(f"{name} takes {module.in_features} inputs, the LoRA's A is {list(a)}")
        elif b is not None and (len(b) != 2 or b[0] != module.out_features):
            problems.append(f"{name} gives {module.out_features} outputs, the LoRA's B is {list(b)}")
        elif a is not None and b is not None and a[0] != b[1]:
            problems.append(f"{name}: the LoRA's A {list(a)} and B {list(b)} have different ranks")
    if problems:
        more = len(problems) - MAX_SHOWN
        shown = "; ".join(problems[:MAX_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        raise MaskEditError(f"{path.name} does not fit this model's {what or 'transformer'} ({shown}); was it "
                            "trained on another base model?")


def _diffusers_name(module: str) -> str | None:
    """`blocks.N.attn1.to_q` as it is; `blocks.N.self_attn.q` (original Wan) mapped; None if unknown."""
    block, index, rest = module.split(".", 2)
    if rest in _WAN_TO_DIFFUSERS:
        return f"{block}.{index}.{_WAN_TO_DIFFUSERS[rest]}"
    return module if rest.startswith(("attn1.", "attn2.", "ffn.")) else None


def check_edit_lora_fits(pipe, lora) -> None:
    """Before an edit LoRA is loaded (`experts.load_edit_lora`, what the CLI's --lora gives): each of its files
    checked against the transformer it goes into, from the headers alone — a LoRA file (one-transformer base),
    a folder of the two per-expert files or the list of the two (Wan2.2-A14B). A large file that cannot fit
    costs its header, not its tensors. Pairings the loader refuses itself (a pair on one transformer) pass."""
    from ..method.experts import EXPERTS, expert_module, expert_pair, expert_weight_name, has_expert_loras, is_two_expert
    from ..method.lora import check_lora_header

    if is_two_expert(pipe):
        if isinstance(lora, (list, tuple)):
            files = expert_pair(lora)
        elif Path(lora).is_dir() and has_expert_loras(lora):
            files = {expert: Path(lora) / expert_weight_name(expert) for expert in EXPERTS}
        else:
            return
        for expert, path in files.items():
            check_lora_header(path)
            check_lora_fits(path, expert_module(pipe, expert), f"{expert.replace('_', '-')} expert")
    elif not isinstance(lora, (list, tuple)) and Path(lora).is_file():
        check_lora_header(lora)
        check_lora_fits(lora, pipe.transformer)
