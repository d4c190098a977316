"""Training across a clip longer than one window (METHOD.md §7b): windows drawn over the whole clip, encoded once
to disk, one sample read per step — so neither memory nor the cost of a step grows with the clip.

    stages = plan_long_stages(frames, region, prompt, config, base_model, later)   # frames: memory-mapped (F, H, W, 3)
    store = encode_to_store(pipe, stages[0].items, folder, fingerprint=stages[0].fingerprint)
    trainer = LoraTrainer(pipe, None, stages[0].config, checkpoint_dir, encoded=store)

Stage 1 trains on every window of the clip (`windows.training_window_starts`: the generation windows' tiling with
one shared frame, so no range of the clip is left out; or `config.window`-frame windows every `config.window_stride`
frames across the clip when the preset trains on short windows), each packed like a stage-1 sample. With a
hand-over of O > 1 frames (`config.handover_frames`) every window also gives a sample whose first 1+4m frames
(m drawn, up to O) are kept whole: the condition a later window sees at generation. Stage 2 adds the edited later
frames (anywhere in the clip) 9 times per epoch beside one clip place that all stage-1 windows of a pass share
(`training.stage2_items`' rule). Items are built when read (`LazyItems`) and their encodings live on disk
(`EncodedStore`), so a clip of any length trains in bounded memory.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import MaskEditError
from ..media.hashing import array_digest, json_digest
from .conditioning import METHOD_IMAGE_VIEW, naive_sample, stage1_sample, stage2_sample, window_starts
from .pipeline import TEXT_TOKENS
from .training import (CLIP_SLOT, STAGE2_REPEATS, STOCK_CONDITION, EncodedSample, Stage, TrainConfig, TrainItem,
                       encode_sample, release_encoders, run_settings, stage2_steps)
from .windows import prefix_lengths, prefix_sample, training_window_starts

STORE_INDEX = "index.json"


@dataclass(frozen=True)
class WindowSpec:
    """One stage-1 sample of a long clip: clip frames start..start+length-1, the first `prefix` kept whole (1: the
    plain stage-1 packing)."""

    start: int
    length: int
    prefix: int = 1


def long_window_specs(num_frames: int, config: TrainConfig) -> list[WindowSpec]:
    """The stage-1 samples of a clip of `num_frames` frames longer than `config.window_frames`: every generation
    window (or every `config.window`-frame window, `config.window_stride` apart, when the config trains on short
    windows), plus, with `config.handover_frames` > 1, each window again with a kept prefix of 1+4m frames."""
    if config.window and config.window < config.window_frames:
        starts = window_starts(num_frames, config.window, config.window_stride)
        specs = [WindowSpec(s, config.window) for s in starts]
    else:
        starts = training_window_starts(num_frames, config.window_frames)
        specs = [WindowSpec(s, min(config.window_frames, num_frames - s)) for s in starts]
    if config.handover_frames > 1 and not config.naive:
        prefixed = [s for s in specs if s.length > config.handover_frames]
        lengths = prefix_lengths(config.handover_frames, len(prefixed), config.seed)
        specs += [replace(s, prefix=p) for s, p in zip(prefixed, lengths)]
    return specs


class LazyItems(Sequence):
    """`TrainItem`s of a long clip's windows, each built when read (its keep mask is the only new array), followed
    by `extra` items (stage 2's edited frames). frames (F, H, W, 3) uint8 and region (F, H, W) bool may be
    memory-mapped: only a window's frames are read."""

    def __init__(self, frames, region, prompt: str, specs: list[WindowSpec], naive: bool = False,
                 slot: str | None = None, extra: list[TrainItem] | None = None):
        self.frames, self.region, self.prompt = frames, region, prompt
        self.specs, self.naive, self.slot = list(specs), naive, slot
        self.extra = list(extra or [])

    def __len__(self) -> int:
        return len(self.specs) + len(self.extra)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index >= len(self.specs):
            return self.extra[index - len(self.specs)]
        spec = self.specs[index]
        frames = np.array(self.frames[spec.start:spec.start + spec.length])  # one window, copied out of the map
        if self.naive:
            sample = naive_sample(frames, self.prompt)
        else:
            region = np.asarray(self.region[spec.start:spec.start + spec.length], dtype=bool)
            sample = prefix_sample(frames, region, self.prompt, spec.prefix) if spec.prefix > 1 else \
                stage1_sample(frames, region, self.prompt)
        return TrainItem(sample, 1, self.slot)

    def schedule(self) -> tuple[list[int], list[str | None]]:
        """(repeats, slots) of every item, without building any."""
        return ([1] * len(self.specs) + [item.repeats for item in self.extra],
                [self.slot] * len(self.specs) + [item.slot for item in self.extra])

    def shared(self, slot: str, extra: list[TrainItem]) -> "LazyItems":
        """The same windows sharing `slot`, followed by `extra`."""
        return LazyItems(self.frames, self.region, self.prompt, self.specs, self.naive, slot, extra)


def long_clip_part(config: TrainConfig, num_frames: int) -> dict:
    """The part of keys and fingerprints that marks a long clip's run ({} for a clip of one window, so their keys
    stay as they were): the generation window and the hand-over its samples were made for."""
    if num_frames <= config.window_frames:
        return {}
    return {"long_clip": [int(config.window_frames), int(config.handover_frames)]}


def plan_long_stages(frames, region, prompt: str, config: TrainConfig, base_model: str,
                     later: list[tuple[int, object, str]] = ()) -> list[Stage]:
    """`training.plan_stages` for a clip longer than `config.window_frames` (see the module docstring): the same
    stages and fingerprints' parts, with lazily built window items."""
    num_frames = frames.shape[0]
    if num_frames <= config.window_frames:
        raise MaskEditError(f"a clip of {num_frames} frames fits one {config.window_frames}-frame window; train it "
                            "with training.plan_stages")
    if config.naive and later:
        raise MaskEditError("the naive-LoRA baseline trains on the clip alone (stock condition, no stage 2); "
                            "leave out the edited later frames")
    specs = long_window_specs(num_frames, config)
    items = LazyItems(frames, region, prompt, specs, naive=config.naive)
    parts = dict(base=base_model, clip=array_digest(frames), prompt=prompt, config=run_settings(config),
                 windows=[[s.start, s.length, s.prefix] for s in specs], **long_clip_part(config, num_frames))
    if config.naive:
        parts["condition"] = STOCK_CONDITION
    else:
        parts["region"] = array_digest(np.asarray(region, dtype=bool))
    stage1_print = json_digest(parts)
    stages = [Stage(1, items, config, stage1_print)]
    if later:
        frame_items = [TrainItem(stage2_sample(np.asarray(frames[k]), frame, np.asarray(region[k], dtype=bool), text),
                                 STAGE2_REPEATS) for k, frame, text in later]
        config2 = replace(config, steps=stage2_steps(len(later), config.stage2_epochs))
        stage2_print = json_digest(dict(
            stage1=stage1_print, frames={str(k): array_digest(frame) for k, frame, _ in later},
            prompts=[text for _, _, text in later], config=run_settings(config2), windows_share_clip=True))
        stages.append(Stage(2, items.shared(CLIP_SLOT, frame_items), config2, stage2_print))
    return stages


# ----- encodings on disk


class EncodedStore(Sequence):
    """Encoded samples in a folder (one safetensors file each, the prompt embeddings once per prompt), read one at
    a time onto `device`: a trainer's `encoded` samples whose memory does not grow with their number.
    `schedule()` gives every sample's (repeats, slots) without reading any."""

    def __init__(self, folder: str | os.PathLike, device=None):
        self.folder = Path(folder)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        index = json.loads((self.folder / STORE_INDEX).read_text())
        self.entries = index["samples"]
        self.fingerprint = index.get("fingerprint")
        self._last: tuple[int, EncodedSample] | None = None
        self._prompts: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        from safetensors.torch import load_file

        entry = self.entries[index]
        tensors = load_file(str(self.folder / entry["file"]))
        prompt = self._prompts.get(entry["prompt"])
        if prompt is None:
            prompt = load_file(str(self.folder / entry["prompt"]))["prompt_embeds"].to(self.device)
            self._prompts = {entry["prompt"]: prompt}  # one prompt kept: stage 1 has one, stage 2 a few
        sample = EncodedSample(tensors["latents"].to(self.device), tensors["condition"].to(self.device), prompt,
                               tensors["image_embeds"].to(self.device) if "image_embeds" in tensors else None,
                               entry["repeats"], entry["slot"])
        self._last = (index, sample)
        return sample

    def schedule(self) -> tuple[list[int], list[str | None]]:
        return [e["repeats"] for e in self.entries], [e["slot"] for e in self.entries]

    def nbytes(self) -> int:
        """Bytes of the folder's files (the encodings on disk)."""
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())


@torch.no_grad()
def encode_to_store(pipe, items: Sequence, folder: str | os.PathLike, fingerprint: str, device=None,
                    image_view: str = METHOD_IMAGE_VIEW, offload_encoders: bool = False,
                    progress=None) -> EncodedStore:
    """Encode `items` one at a time into `folder` (what `training.encode_samples` computes, the same code) and return
    the store on `device`. A folder already holding a complete store of the same `fingerprint` is reused (a resumed
    run does not encode again); any other content is replaced. progress(done, total) after each sample."""
    from safetensors.torch import save_file

    from ..memory.offload import enable_encoder_offload

    folder = Path(folder)
    device = torch.device(device) if device is not None else pipe._execution_device
    index_path = folder / STORE_INDEX
    if index_path.is_file():
        try:
            if json.loads(index_path.read_text()).get("fingerprint") == fingerprint:
                return EncodedStore(folder, device)
        except ValueError:
            pass
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if offload_encoders:
        enable_encoder_offload(pipe, device)
    entries, prompts = [], {}  # prompt → (file, its embeddings): a long clip's windows share one prompt
    for number in range(len(items)):
        item = items[number]
        prompt = item.sample.prompt
        if prompt not in prompts:
            embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=TEXT_TOKENS,
                                           device=device)
            prompts[prompt] = (f"prompt_{len(prompts):03d}.safetensors", embeds)
            save_file({"prompt_embeds": embeds.detach().cpu().contiguous()}, str(folder / prompts[prompt][0]))
        prompt_file, embeds = prompts[prompt]
        encoded = encode_sample(pipe, item, device, image_view, prompt_embeds=embeds)
        tensors = {"latents": encoded.latents, "condition": encoded.condition}
        if encoded.image_embeds is not None:
            tensors["image_embeds"] = encoded.image_embeds
        name = f"sample_{number:06d}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / name))
        entries.append({"file": name, "prompt": prompt_file, "repeats": item.repeats, "slot": item.slot})
        if progress is not None:
            progress(number + 1, len(items))
    release_encoders(pipe)
    index_path.write_text(json.dumps({"fingerprint": fingerprint, "samples": entries}))  # written last: complete
    return EncodedStore(folder, device)


def remove_store(folder: str | os.PathLike) -> None:
    """Delete an encoded store (after its stage finished: only a resumed run reads it)."""
    shutil.rmtree(folder, ignore_errors=True)
