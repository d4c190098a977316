"""The preview against the full render, and a two-expert training step against a one-transformer one.

Rows (wall seconds, median of --repeats, after one warm-up; a whole `generate_edit` call, VAE encode and
decode included):
- full render: the `full` preset's generation (30 steps, CFG 5: two transformer passes a step);
- preview: `maskedit.workflow.preview.generate_preview` (edit LoRA + a random rank-64 stand-in for the speed LoRA,
  4 steps, CFG 1: one pass a step); the ratio preview / full is the fraction of the full render's time;
- training step: `LoraTrainer` on a one-transformer model vs `TwoExpertTrainer` (alternating experts)
  on a two-expert model of the same block config; goal: ratio ≈ 1 (one expert trains per step).

The models are the tiny ones (Wan2.1 layout and the two-expert Wan2.2 layout, random weights); on a CPU
this is a smoke test of the code path and of the step-count arithmetic, not a GPU figure.

    python benchmarks/bases_preview.py [--repeats N] [--frames 9] [--size 64] [--threads 1] [--train-steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine  # noqa: E402


def timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median wall seconds of two calls, after one warm-up each, run interleaved (the machine may be shared)."""
    first(), second()
    times = ([], [])
    for _ in range(repeats):
        for function, bucket in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def speed_lora(folder: Path, builder, rank: int = 64) -> str:
    """A random rank-`rank` LoRA in ComfyUI keys (one file; a two-expert model takes it for both experts)."""
    from safetensors.torch import save_file

    from maskedit.method.lora import add_lora, lora_state_dict, to_comfyui_keys

    pipe = builder()
    add_lora(pipe.transformer, rank=rank, alpha=rank, seed=3)
    path = folder / "speed.safetensors"
    save_file(to_comfyui_keys(lora_state_dict(pipe.transformer), float(rank)), str(path))
    return str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full-steps", type=int, help="steps of the full render (default: the full preset's, 30)")
    parser.add_argument("--train-steps", type=int, default=20, help="training steps timed per trainer (interleaved)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import numpy as np

    from maskedit.workflow import generate, prepare
    from maskedit.method.experts import EXPERTS, TwoExpertTrainer, expert_module
    from maskedit.method.lora import add_lora
    from maskedit.models.loading import build_tiny_pipeline, build_tiny_two_expert_pipeline
    from maskedit.models.presets import get_preset
    from maskedit.workflow.preview import PreviewSettings, generate_preview
    from maskedit.method.conditioning import stage1_sample
    from maskedit.method.training import LoraTrainer, TrainConfig, TrainItem, encode_samples
    from maskedit.media.video import Clip

    rng = np.random.default_rng(0)
    frames = (rng.random((args.frames, args.size, args.size, 3)) * 255).astype(np.uint8)
    region = np.zeros(frames.shape[:3], bool)
    region[:, args.size // 4: args.size // 2, args.size // 4: args.size // 2] = True
    prepared = prepare.PreparedClip(Clip(frames, 16.0), region)
    edited = frames[0][::-1].copy()
    full = get_preset("full").with_overrides(generation_steps=args.full_steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, builder in (("Wan2.1 layout", build_tiny_pipeline), ("Wan2.2 two experts", build_tiny_two_expert_pipeline)):
            pipe = builder()
            for module in (expert_module(pipe, e) for e in EXPERTS) if label.startswith("Wan2.2") else [pipe.transformer]:
                add_lora(module, rank=16, alpha=16.0, seed=1)
            settings = PreviewSettings(speed_lora(Path(tmp), builder))
            full_s, preview_s = timed_pair(
                lambda: generate.generate_edit(pipe, prepared, edited, "a box", steps=full.generation_steps,
                                              guidance_scale=full.guidance_scale, flow_shift=full.flow_shift),
                lambda: generate_preview(pipe, prepared, edited, "a box", settings), args.repeats)
            rows.append(f"| {label}: full render ({full.generation_steps} steps, CFG {full.guidance_scale:g}) vs preview "
                        f"({settings.steps} steps, CFG {settings.guidance_scale:g}) | {full_s:.3f} | {preview_s:.3f} | "
                        f"{preview_s / full_s:.2f} |")

        items = [TrainItem(stage1_sample(frames, region, "a box"))]
        one_pipe, two_pipe = build_tiny_pipeline(), build_tiny_two_expert_pipeline()
        config = TrainConfig(steps=10_000, checkpoint_every=0)
        one = LoraTrainer(one_pipe, None, config, device="cpu", encoded=encode_samples(one_pipe, items))
        two = TwoExpertTrainer(two_pipe, None, config, device="cpu", encoded=encode_samples(two_pipe, items))
        for _ in range(2):  # warm-up (both experts of `two`)
            one.train_step(), two.train_step()
        one_times, two_times = [], []
        for _ in range(args.train_steps):  # interleaved, so that load from other jobs hits both alike
            for trainer, times in ((one, one_times), (two, two_times)):
                started = time.perf_counter()
                trainer.train_step()
                times.append(time.perf_counter() - started)
        one_s, two_s = statistics.median(one_times), statistics.median(two_times)
        rows.append(f"| training step: one transformer vs two experts (alternating; median of {args.train_steps}) | "
                    f"{one_s:.3f} | {two_s:.3f} | {two_s / one_s:.2f} |")

    print(f"machine: {machine()}, {args.threads} torch threads; {args.frames} frames at {args.size}x{args.size}, "
          "tiny random models")
    print("| case | first (s) | second (s) | second / first |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
