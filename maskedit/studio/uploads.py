"""An uploaded LoRA (the Train tab's "skip training", `/use_lora`): one file for a one-transformer base, the
pair of per-expert files for a two-expert base (Wan2.2-A14B), checked in full before it replaces anything.

    names = check_lora_upload(paths, transformers)          # MaskEditError saying what to upload instead
    path = install_lora_upload(paths, transformers, folder)  # the checked files copied into `folder`
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import MaskEditError
from ..limits import parse_json
from ..method.experts import EXPERTS, HIGH_NOISE, LOW_NOISE, PAIR_HELP, expert_of_file, expert_pair, expert_weight_name
from ..method.lora import LORA_WEIGHT_NAME, METADATA_NAME, check_lora_file, check_lora_header
from ..workflow.lora_checks import check_lora_fits

EXPERT_LABELS = {HIGH_NOISE: "high-noise expert", LOW_NOISE: "low-noise expert"}
SINGLE = "transformer"
"""The key of a one-transformer base in `transformers` ({SINGLE: module} vs {HIGH_NOISE: …, LOW_NOISE: …})."""


def base_transformers(pipe) -> dict:
    """{SINGLE: transformer} of a one-transformer pipeline, {HIGH_NOISE: transformer, LOW_NOISE:
    transformer_2} of a two-expert one: what an upload is checked against."""
    from ..method.experts import expert_module, is_two_expert

    if is_two_expert(pipe):
        return {expert: expert_module(pipe, expert) for expert in EXPERTS}
    return {SINGLE: pipe.transformer}


def check_lora_upload(paths, transformers: dict | None, two_experts: bool) -> dict[str, Path]:
    """{expert or SINGLE: weights file} of an upload (`paths`: the uploaded files, a lora.json among them
    allowed), each file checked: .safetensors, a LoRA from its header alone (`lora.check_lora_header`: LoRA
    names, float dtypes, shapes, not empty) and its layers fitting its transformer (`lora_checks.check_lora_fits`;
    skipped when `transformers` is None), then its values in bounded chunks (`lora.check_lora_file`: finite, of
    a LoRA's magnitude). A two-expert base takes the pair in either order, a one-transformer base one
    file; anything else is a MaskEditError that says what to upload."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise MaskEditError("no LoRA file was uploaded")
    weights = [p for p in paths if p.suffix.lower() != ".json"]
    for path in paths:
        if path.suffix.lower() not in (".safetensors", ".json"):
            raise MaskEditError(f"{path.name} is not a .safetensors file; only safetensors LoRA files are loaded")
    for path in paths:
        if path.suffix.lower() == ".json" and path.name != METADATA_NAME:
            raise MaskEditError(f"{path.name}: the only other file a LoRA upload takes is the {METADATA_NAME} "
                                "MaskEdit wrote beside it")
    if two_experts:
        if len(weights) < 2:
            shown = weights[0].name if weights else METADATA_NAME
            raise MaskEditError(f"{shown} alone is not enough: this base has two experts (Wan2.2-A14B), so {PAIR_HELP}; "
                                "upload both files together (select both, or the folder's files)")
        chosen = expert_pair(weights)
    else:
        if len(weights) != 1 or expert_of_file(weights[0]) is not None:
            names = ", ".join(p.name for p in weights) or METADATA_NAME
            raise MaskEditError(f"{names}: this model has one transformer (Wan2.1), so its LoRA is one .safetensors "
                                "file (lora.safetensors); a pair of …high_noise… / …low_noise… files is for a "
                                "two-expert base (Wan2.2-A14B)")
        chosen = {SINGLE: weights[0]}
    for key, path in chosen.items():  # from the headers first: names, dtypes, shapes, sizes; no tensor read
        check_lora_header(path)
        if transformers is not None:
            check_lora_fits(path, transformers[key], EXPERT_LABELS.get(key, SINGLE))
    for path in chosen.values():  # then the values, in bounded chunks
        check_lora_file(path)
    metadata = next((p for p in paths if p.name == METADATA_NAME), None)
    if metadata is not None:
        check_metadata(metadata)
        chosen["metadata"] = metadata
    return chosen


MAX_METADATA_BYTES = 1024 * 1024  # a lora.json MaskEdit writes is a few KB


def check_metadata(path: Path) -> None:
    """An uploaded lora.json: a JSON object of at most MAX_METADATA_BYTES, nested at most 8 deep."""
    if Path(path).stat().st_size > MAX_METADATA_BYTES:
        raise MaskEditError(f"{path.name} is larger than {MAX_METADATA_BYTES // 1024} KB; it is not the lora.json "
                            "MaskEdit writes")
    try:
        data = parse_json(Path(path).read_text(), path.name, '{"trigger": "p3rs0n", ...}', max_depth=8,
                          max_chars=MAX_METADATA_BYTES)
    except (OSError, UnicodeDecodeError, MaskEditError) as error:
        raise MaskEditError(f"{path.name} is not the lora.json MaskEdit writes ({str(error)[:160]})") from None
    if not isinstance(data, dict):
        raise MaskEditError(f"{path.name} is not the lora.json MaskEdit writes (not a JSON object)")


def install_lora_upload(chosen: dict[str, Path], folder: str | os.PathLike) -> Path:
    """Copy the checked files (`check_lora_upload`) into `folder` under MaskEdit's names (lora.safetensors, or
    lora_high_noise / lora_low_noise.safetensors, and lora.json), replacing what was there only once every copy
    is complete. Returns the path Generate loads: lora.safetensors, or the high-noise file (its folder holds
    the pair, `experts.load_edit_lora`)."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".uploading")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    names = {SINGLE: LORA_WEIGHT_NAME, "metadata": METADATA_NAME, **{e: expert_weight_name(e) for e in EXPERTS}}
    for key, path in chosen.items():
        shutil.copyfile(path, staging / names[key])
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder / (LORA_WEIGHT_NAME if SINGLE in chosen else expert_weight_name(HIGH_NOISE))
