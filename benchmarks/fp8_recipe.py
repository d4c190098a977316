"""The two fp8 training recipes on the toy benchmark: loss curves at equal steps.

- ours: the frozen base in e4m3 with a float32 scale per output row, torch's AdamW (fp32 state), lr 1e-4;
- the reference code's: a plain e4m3 cast of the base (no scale), an 8-bit AdamW (bitsandbytes' AdamW8bit;
  the reference adds Kahan summation for its bf16 LoRA weights, which ours, trained in float32, do not need),
  lr 1e-3 (its GUI switches to it with fp8);
- and one change at a time from ours (the storage, the optimizer, the learning rate), plus the unquantised base
  as the yardstick of what fp8 costs.

Every recipe trains the same stage-1 sample of a toy edit (`maskedit.tools.toyworld`, loose boxes) from the same
LoRA initialisation and noise stream (seed 0) on the tiny model, and is scored every `--every` steps on a fixed set
of (t, noise) draws (`LoraTrainer.fixed_loss`, 16 pairs, its own generator): the loss curve at equal steps.
Also reported: the relative error of each fp8 storage on the tiny model's block weights, and the same storage on
weights at the scale of the 14B model's (N(0, 0.02)) — where the unscaled cast loses more.

    PYTHONPATH=/path/to/bitsandbytes python benchmarks/fp8_recipe.py              # ~5 minutes on 2 CPUs
    python benchmarks/fp8_recipe.py --steps 200 --write                             # RESULTS.md's section

bitsandbytes is optional (see requirements.txt); without it the 8-bit rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, write_section  # noqa: E402
from maskedit.memory.offload import dequantize_fp8, quantize_fp8  # noqa: E402
from maskedit.method.conditioning import compose_prompt, stage1_sample  # noqa: E402
from maskedit.method.masks import loose_boxes  # noqa: E402
from maskedit.method.training import LoraTrainer, TrainConfig, TrainItem  # noqa: E402
from maskedit.models.loading import build_tiny_pipeline  # noqa: E402
from maskedit.tools import toyworld  # noqa: E402

RECIPES = (
    # name, fp8 storage (None = no fp8), optimizer, learning rate
    ("unquantised base, AdamW, 1e-4", None, "adamw", 1e-4),
    ("**ours**: row-scaled e4m3, AdamW, 1e-4", "row", "adamw", 1e-4),
    ("**reference**: plain e4m3, AdamW8bit, 1e-3", "none", "adamw8bit", 1e-3),
    ("plain e4m3, AdamW, 1e-4", "none", "adamw", 1e-4),
    ("row-scaled e4m3, AdamW8bit, 1e-4", "row", "adamw8bit", 1e-4),
    ("row-scaled e4m3, AdamW, 1e-3", "row", "adamw", 1e-3),
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=25, help="steps between fixed-loss measurements")
    parser.add_argument("--edits", type=int, default=2, help="toy edits (each trains every recipe)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help=f"write the section into {RESULTS.name}")
    parser.add_argument("--results", default=str(RESULTS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def storage_errors(pipe) -> dict:
    """Relative error ‖dequantised − w‖ / ‖w‖ of each storage, over the block Linear weights of the tiny model and
    over N(0, 0.02) weights (the 14B model's scale)."""
    tiny = [m.weight.detach().float() for b in pipe.transformer.blocks for m in b.modules()
            if isinstance(m, torch.nn.Linear)]
    real = [torch.randn(512, 512, generator=torch.Generator().manual_seed(i)) * 0.02 for i in range(4)]
    result = {}
    for name, weights in (("tiny", tiny), ("N(0, 0.02)", real)):
        for mode in ("row", "none"):
            error = sum(float((dequantize_fp8(*quantize_fp8(w, mode), torch.float32) - w).norm() ** 2) for w in weights)
            total = sum(float(w.norm() ** 2) for w in weights)
            result[(name, mode)] = math.sqrt(error / total)
    return result


def train_curve(pipe, item, storage, optimizer, lr, steps, every) -> tuple[list[float], list[float], float]:
    """(fixed-loss at 0, every, 2·every, … steps; training losses; seconds) of one recipe on a fresh copy."""
    pipe = copy.deepcopy(pipe)
    config = TrainConfig(steps=steps, rank=16, alpha=16.0, learning_rate=lr, optimizer=optimizer,
                         fp8=storage is not None, fp8_scaling=storage or "row", checkpoint_every=0, seed=0)
    trainer = LoraTrainer(pipe, [item], config)
    curve = [trainer.fixed_loss(pairs=16)]
    started = time.perf_counter()
    while trainer.state.step < steps:
        target = min(steps, trainer.state.step + every)
        trainer.train(should_stop=lambda: trainer.state.step >= target)
        curve.append(trainer.fixed_loss(pairs=16))
    return curve, list(trainer.state.losses), time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    pipe = build_tiny_pipeline()
    edits = toyworld.benchmark_edits(args.size, args.size, args.frames, args.edits)
    curves: dict[str, list] = {}
    seconds: dict[str, list] = {}
    for edit in edits:
        boxes = loose_boxes(edit.source_mask, min_area=1)
        item = TrainItem(stage1_sample(edit.source.frames, boxes, compose_prompt(edit.caption)))
        for name, storage, optimizer, lr in RECIPES:
            if optimizer == "adamw8bit" and not have_bnb:
                continue
            curve, _, spent = train_curve(pipe, item, storage, optimizer, lr, args.steps, args.every)
            curves.setdefault(name, []).append(curve)
            seconds.setdefault(name, []).append(spent / args.steps)
            print(f"{edit.name} | {name}: {[round(v, 4) for v in curve]}", flush=True)
    text = table(curves, seconds, storage_errors(pipe), args, have_bnb, [e.name for e in edits])
    print(text)
    if args.write:
        write_section("fp8_recipe", text, Path(args.results))
        print(f"wrote the fp8_recipe section of {args.results}")
    return 0


def table(curves, seconds, errors, args, have_bnb, edit_names) -> str:
    marks = list(range(0, args.steps + 1, args.every))
    if marks[-1] != args.steps:
        marks.append(args.steps)
    lines = [
        "## fp8 training recipes on the toy benchmark (benchmarks/fp8_recipe.py)",
        "",
        f"Tiny model (random weights), {args.size}x{args.size}, {args.frames} frames, stage-1 sample with loose boxes "
        f"of {len(edit_names)} toy edits ({', '.join(edit_names)}); LoRA rank 16, betas (0.9, 0.99), weight decay "
        f"0.01, seed 0, the same initialisation and noise for every recipe. Fixed-set flow-matching loss (16 fixed "
        f"(t, noise) draws; mean over the edits) at equal steps; CPU, {args.threads} threads; {machine()}; "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}.",
        "",
        "| recipe | " + " | ".join(f"step {m}" for m in marks) + " | s/step |",
        "|---|" + "---|" * (len(marks) + 1),
    ]
    for name, runs in curves.items():
        mean = np.mean(np.array(runs), axis=0)
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in mean) + f" | {np.mean(seconds[name]):.2f} |")
    if not have_bnb:
        lines += ["", "bitsandbytes is not installed here: the AdamW8bit rows are missing (see requirements.txt)."]
    lines += [
        "",
        "Relative error of the fp8 storage (‖dequantised − w‖ / ‖w‖):",
        "",
        "| weights | row-scaled e4m3 (ours) | plain e4m3 cast (reference) |",
        "|---|---|---|",
    ]
    for weights in ("tiny", "N(0, 0.02)"):
        label = "the tiny model's block Linear weights" if weights == "tiny" else "N(0, 0.02) (the 14B model's scale)"
        lines.append(f"| {label} | {errors[(weights, 'row')]:.4f} | {errors[(weights, 'none')]:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
