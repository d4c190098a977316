"""Every performance benchmark of MaskEdit in one go, with a short summary table last.

    python benchmarks/run_all.py            # GPU: real-size (Wan2.1-I2V-14B config, random weights); CPU: tiny smoke
    python benchmarks/run_all.py --write    # also write the train_step, generate and run_all sections of RESULTS.md

On a GPU it ends with the measured peak of each training case beside the planner's estimate (ratio).

Runs `train_step.py --quick` and `generate.py --quick` in one process on one transformer (built once,
directly on the device), so that the whole run fits in under 8 minutes on one H100-class GPU. Estimated
(not yet measured): ~10 s to build, ~1.5 min of training cases (the 38-swapped ones spend most of it
copying 30 GB into pinned memory), ~3.5 min of generation (11 calls at 49x832x480, each with its VAE
encode). `--compile` adds the torch.compile row (1-2 min more) when at least --compile-budget seconds
of --budget are left. On a CPU it runs the tiny model as a smoke test in seconds. The summary: the
figures the presets and the README quote, and the estimates of a whole edit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generate  # noqa: E402
import train_step  # noqa: E402
from train_step import NOT_MEASURED, RESULTS, machine, random_transformer, write_section  # noqa: E402

from maskedit.models.loading import REAL_TRANSFORMER_14B, TINY_TRANSFORMER  # noqa: E402
from maskedit.models.presets import get_preset  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, choices=["real14b", "tiny"],
                        help="default: real14b on a GPU, tiny on a CPU")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds the whole run should stay under")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd blocks (GPU)")
    parser.add_argument("--compile-budget", type=float, default=330.0,
                        help="seconds that must be left before generation for --compile to run")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    args.model = args.model or ("real14b" if args.device.startswith("cuda") else "tiny")
    return args


def find(rows, prefix):
    return next((r for r in rows if r["case"].startswith(prefix)), None)


def summary(train_rows, gen_rows, args, seconds) -> str:
    real = args.model == "real14b" and args.device.startswith("cuda")
    full, low, zero = get_preset("full"), get_preset("low-cost"), get_preset("zerogpu")
    clip = find(train_rows, "full clip")
    window0 = find(train_rows, "window") or {}
    window38 = next((r for r in train_rows if r["case"].startswith("window") and "38/40" in r["case"]), {})
    lowcost = find(train_rows, "low-cost") or {}
    step_cfg5 = find(gen_rows, "ours + edit LoRA, CFG 5 (full")
    distilled = find(gen_rows, "ours + edit + speed LoRA")
    ours = find(gen_rows, "ours (mask condition)")
    zcall = find(gen_rows, "zerogpu generation call")
    low_gen = find(gen_rows, "ours + edit LoRA, CFG 5, 38/40")
    unit = " GiB" if real else ""
    lines = [
        "## Summary (benchmarks/run_all.py)",
        "",
        f"{'Wan2.1-I2V-14B config, random weights' if real else 'tiny model, CPU smoke test'}; {machine()}; "
        f"whole run {seconds:.0f} s",
        "",
        "| figure | value |",
        "|---|---|",
        f"| ours / stock per denoising step (goal ≤ 1.0) | {ours['ratio'].split(' ')[0] if ours else '–'} |",
        f"| full: training step, whole clip | {clip['seconds']:.2f} s, peak {clip['peak']}{unit}, MFU {clip['mfu']} |",
        f"| full: generation step, CFG 5 + edit LoRA | {step_cfg5['step']:.3f} s, peak {step_cfg5['peak']} |",
        f"| full: whole edit ≈ {full.train_steps} × train step + {full.generation_steps} × gen step | "
        f"{full.train_steps * clip['seconds'] + full.generation_steps * step_cfg5['step']:.0f} s (+ encode/decode) |",
        f"| window, 0 swapped: training step | {window0.get('seconds', float('nan')):.2f} s, peak {window0.get('peak', '–')} |",
        f"| window, 38 swapped: training step | {window38.get('seconds', float('nan')):.2f} s, peak {window38.get('peak', '–')} |",
        f"| low-cost: training step (target peak ≤ {low.target_peak_gb:g} GB) | {lowcost.get('seconds', float('nan')):.2f} s, "
        f"peak {lowcost.get('peak', '–')} |",
        f"| low-cost: generation step (38 swapped + fp8, CFG 5) | {low_gen['step']:.3f} s, peak {low_gen['peak']} |" if low_gen else None,
        f"| zerogpu: distilled step (CFG 1, speed LoRA) | {distilled['step']:.3f} s ({distilled['ratio']}) |",
        f"| zerogpu: generation call, decode included | {zcall['call']:.1f} s |",
        f"| zerogpu: whole edit ≤ {zero.train_steps} × window step (832x480 upper bound) + call (target {zero.gpu_seconds} s) "
        f"| {zero.train_steps * window0.get('seconds', float('nan')) + zcall['call']:.0f} s |",
    ]
    lines = [line for line in lines if line is not None]
    if not real:
        lines += ["", f"**{NOT_MEASURED}** The values above are the CPU smoke run on the tiny model."]
    return "\n".join(lines)


def planner_comparison(train_rows) -> str:
    """Measured peak (`torch.cuda.max_memory_allocated`) of each real-size training case beside the planner's
    dry-run estimate of the same settings (maskedit.models.planner: training step only, the case's frames as one
    whole-clip sample, gradient checkpointing on as in train_step.py)."""
    from maskedit.models import planner

    lines = ["## Planner check (benchmarks/run_all.py)", "",
             "| case | measured peak GiB | planner GiB | measured / planner |", "|---|---|---|---|"]
    for row in train_rows:
        try:
            measured = float(row["peak"])
        except (TypeError, ValueError):
            continue
        overrides = dict(row["overrides"])
        plan = planner.estimate("full", row["frames"], (row["width"], row["height"]), generate=False, stage2=False,
                                window=0, gradient_checkpointing=True, **overrides)
        estimate = plan.phases["training step"].peak_gpu_gib
        lines.append(f"| {row['case']} | {measured:.2f} | {estimate:.2f} | {measured / estimate:.2f} |")
        print(f"  planner: {row['case']}: measured {measured:.2f} GiB, estimated {estimate:.2f} GiB, "
              f"ratio {measured / estimate:.2f}", flush=True)
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = REAL_TRANSFORMER_14B if args.model == "real14b" else TINY_TRANSFORMER
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"building the {args.model} transformer on {device} …", flush=True)
    transformer = random_transformer(dict(config), device, dtype)
    common = ["--model", args.model, "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    common += ["--write"] if args.write else []
    print("== training steps ==", flush=True)
    train_rows = train_step.main(common + ["--quick"], transformer=transformer)
    left = args.budget - (time.perf_counter() - started)
    print(f"== generation ({left:.0f} s of the budget left) ==", flush=True)
    extra = ["--compile"] if args.compile and left > args.compile_budget else []
    gen_rows = generate.main(common + ["--quick"] + extra, transformer=transformer)
    comparison = None
    if args.model == "real14b" and device.type == "cuda":
        print("== planner estimates of the same training cases (CPU dry runs) ==", flush=True)
        comparison = planner_comparison(train_rows)
    seconds = time.perf_counter() - started
    text = summary(train_rows, gen_rows, args, seconds)
    if comparison:
        text += "\n\n" + comparison
    print()
    print(text)
    if args.write:
        write_section("run_all", text)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
