"""The planner's figures (maskedit.models.planner dry runs, CPU only) for every preset on every built-in base
(Wan2.1-I2V-14B 480P and 720P, Wan2.2-I2V-A14B), beside the paper's measured training peaks; the `zerogpu`
preset's calls against ZeroGPU's call sizes (from maskedit/models/plans.json, before and after issue 25); and
the published step times the utilisation is calibrated on.

    python benchmarks/plan_presets.py            # print the tables
    python benchmarks/plan_presets.py --write    # also put them into RESULTS.md (sections "planner", "zerogpu",
                                                 # "calibration")
    python benchmarks/plan_presets.py --write --only zerogpu calibration   # those two (under a minute)

Estimates, not measurements: a GPU run of benchmarks/run_all.py prints measured / planned ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_section  # noqa: E402

from maskedit.models import estimates, planner, zerogpu  # noqa: E402
from maskedit.models.cards import CARDS  # noqa: E402
from maskedit.models.loading import KNOWN_MODELS  # noqa: E402
from maskedit.models.presets import PRESETS  # noqa: E402
from maskedit.studio import estimate as studio_estimate  # noqa: E402

PAPER_MB = {0: 25_097, 16: 16_305, 32: 9_987, 38: 7_617}  # RTX 4090, 832x480, 9-frame windows, fp8 base
REFERENCE_49_GB = 21.5  # reference code: 49 frames, 32 of 40 swapped, bf16


NOTES = """No constant is fitted to the paper's figures. The slope agrees: the paper saves (16,305 − 9,987)/16 = 395
MB per swapped block, the planner about 404 MB (the fp8 bytes of one block: 0.40 B parameters + per-row
scales). The 49-frame row is the reference code's setting, our `24gb` preset's training (activations
offloaded; without the offload the 40 checkpointed block inputs, 20,280 tokens x 5120 x 2 bytes = 8.3 GB,
stay on the GPU).

How to read the tables:
- `24gb` and `low-cost` keep umT5, CLIP and the VAE in host memory except while each runs
  (`offload_encoders`), so every phase of the 480P `24gb` edit fits 24 GB; the largest phase of `low-cost`
  is the condition's VAE encode (never tiled: the method needs the exact condition latents), just above 8 GB.
- At 720P the `24gb` preset's 49-frame training step does not fit 24 GB (3.5x the tokens of 832x480): use
  `low-cost` or fewer frames there; `python -m maskedit plan` says which.
- Wan2.2-A14B: presets that swap blocks keep half as many resident per expert (each expert streams its own
  blocks: 24gb → 36 of 40 swapped per expert), so its `24gb` fits 24 GB too; the price is host memory
  (both experts' swapped blocks wait there: ≈ 66 GiB). `full` holds both experts on the GPU to encode and
  generate (≈ 78 GB: tight on an 80 GB card); one trains at a time.
- zerogpu rows are the whole edit at the preset's 33x640x368 on one call's GPU; the app splits training into
  chunked calls, each sized by its own plan (section "ZeroGPU calls" below)."""


def preset_rows(model: str, size) -> list[str]:
    h100, rtx = planner.CARDS["h100"], planner.CARDS["4090"]
    rows = []
    for name in PRESETS:
        started = time.perf_counter()
        plan = planner.estimate(name, size=size, model=model, stage2=False)  # a stage-2 step is never the peak
        gib = {phase: f"{p.peak_gpu_gib:.1f}" for phase, p in plan.phases.items()}
        rows.append(
            f"| {name} | {plan.num_frames}x{plan.width}x{plan.height} | " + " | ".join(gib[p] for p in planner.PHASES)
            + f" | {plan.peak_host_gib:.1f} | {plan.train_step_flops / 1e12:.0f} "
            f"| {plan.phases['denoising step'].flops / 1e12:.0f} | {plan.time_floor_s(h100):.0f} | {plan.time_floor_s(rtx):.0f} |")
        print(rows[-1], f"({time.perf_counter() - started:.0f} s dry run)", flush=True)
    return rows


def paper_rows() -> list[str]:
    rows = []
    for swap, measured in PAPER_MB.items():
        plan = planner.estimate("low-cost", blocks_to_swap=swap, generate=False, stage2=False)
        estimate = plan.phases["training step"].peak_gpu_bytes / 1e6
        rows.append(f"| fp8, 9-frame windows, act. offload, {swap}/40 swapped | {measured:,} | {estimate:,.0f} "
                    f"| {estimate / measured:.2f} |")
        print(rows[-1], flush=True)
    plan = planner.estimate("24gb", generate=False, stage2=False)
    estimate = plan.phases["training step"].peak_gpu_bytes / 1e6
    rows.append(f"| bf16, 49 frames, 32/40 swapped (reference code) | {REFERENCE_49_GB * 1000:,.0f} | {estimate:,.0f} "
                f"| {estimate / (REFERENCE_49_GB * 1000):.2f} |")
    print(rows[-1], flush=True)
    return rows


# ----- ZeroGPU: the zerogpu preset's calls, before and after issue 25

BEFORE_COMMIT = "a6d29eb"
"""The last commit before issue 25: its plans.json and its rules give the "before" columns."""
BEFORE = dict(card="h200", share={"large": 0.5, "xlarge": 1.0}, utilisation=0.3)
"""What the estimates assumed before issue 25 (a card since replaced; see maskedit/models/zerogpu.py)."""
TRAIN_BUDGET_S = 110  # the app's default seconds of training per call (MASKEDIT_GPU_BUDGET)
CALLS = [("training chunk", "training"), ("render", "generation"), ("preview", "preview"),
         ("segmentation", "segmentation"), ("caption", "caption")]


def before_table() -> dict:
    """plans.json as it was at BEFORE_COMMIT (empty when git or that commit is unavailable)."""
    shown = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:maskedit/models/plans.json"], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(shown.stdout)["plans"] if shown.returncode == 0 else {}


def before_call(entry: dict, kind: str) -> tuple[str, int]:
    """(size, seconds asked) of one zerogpu-preset call by the rules before issue 25: training took `xlarge` for
    14B bf16 with every block resident and asked budget + 40 s (or 1.5 steps); every other call named no size
    (spaces' default; on today's card the whole bf16 pipeline moved to the GPU at start-up exceeds its automatic
    threshold, so it became `xlarge` too) and a render asked 30 s + its FLOPs at 30% of the old card's share."""
    peak = CARDS[BEFORE["card"]].bf16_tflops * 1e12 * BEFORE["utilisation"]
    details = entry["phase_details"]
    if kind == "training":
        step = details["training step"]["flops"] / (peak * BEFORE["share"]["xlarge"])
        return "xlarge", int(max(TRAIN_BUDGET_S, 1.5 * step) + 40)
    if kind in ("segmentation", "caption"):
        return "default", {"segmentation": 120, "caption": 40}[kind]
    rate = peak * BEFORE["share"]["large"]
    steps = entry["settings"]["generation_steps"]
    fixed = (details["encode prompts/images"]["flops"] + details["VAE decode"]["flops"]) / rate
    return "default", int(30 + fixed + steps * details["denoising step"]["flops"] / rate) + 1


def after_call(model: str, entry: dict, kind: str) -> tuple[str, int, int]:
    """(size, seconds asked, seconds spaces schedules) of one zerogpu-preset call now (the app's own functions)."""
    size = studio_estimate.CallSizer(model).size(kind, "zerogpu")
    if kind == "training":
        step = studio_estimate.training_step_seconds(model, "zerogpu", size)
        needed = studio_estimate.training_call_seconds(TRAIN_BUDGET_S, step)
    elif kind in ("segmentation", "caption"):
        needed = studio_estimate.PERCEPTION_SECONDS["segment_clip" if kind == "segmentation" else "caption"]
    else:
        details, rate = entry["phase_details"], estimates.flops_per_second(zerogpu.SIZES[size].card)
        fixed = (details["encode prompts/images"]["flops"] + details["VAE decode"]["flops"]) / rate
        needed = studio_estimate.GENERATION_CALL_OVERHEAD_S + fixed + \
            entry["settings"]["generation_steps"] * details["denoising step"]["flops"] / rate
    asked = zerogpu.asked_seconds(needed, size)
    return size, asked, zerogpu.scheduled_seconds(asked, size)


def zerogpu_section() -> str:
    large = zerogpu.SIZES["large"]
    usable = zerogpu.usable_bytes("large") / 1e9
    lines = ["## ZeroGPU calls of the `zerogpu` preset (benchmarks/plan_presets.py, from maskedit/models/plans.json)",
             "", f"ZeroGPU's sizes, duration factors and card: `maskedit/models/zerogpu.py` ({zerogpu.SOURCE}). A "
             f"call takes `large` ({large.memory_gb:g} GB) when its planned peak is at most "
             f"{usable:.1f} GB (a {zerogpu.MEMORY_MARGIN:.0%} margin), else `xlarge`. Before = commit "
             f"{BEFORE_COMMIT}'s preset (bf16 weights, encoders on the GPU) and rules; after = today's. Peaks in GB "
             "(10^9 bytes), planner estimates; the segmenter's and captioner's weights (≈ 2 GB for SAM2.1-L and "
             "Florence-2-L) add to every call. Seconds: asked = the `duration` the app gives spaces; scheduled = "
             f"what spaces reserves (a `large` call's duration x {large.duration_factor:g}).", ""]
    before = before_table()
    for model in estimates.models():
        entry = estimates.lookup(model, "zerogpu")
        old = before.get(model, {}).get("zerogpu")
        lines += [f"### {estimates.short_name(model)} ({entry['frames']}x{entry['size']})", "",
                  f"| phase | peak before | peak after | share of {large.memory_gb:g} GB | runs in (size after) |",
                  "|---|---|---|---|---|"]
        for phase in planner.PHASES:
            after = entry["phase_details"][phase]["peak_gpu_gib"] * estimates.GIB / 1e9
            was = f"{old['phase_details'][phase]['peak_gpu_gib'] * estimates.GIB / 1e9:.1f}" if old else "—"
            runs = ", ".join(f"{words} ({after_call(model, entry, kind)[0]})" for words, kind in CALLS[:2]
                             if phase in estimates.CALL_PHASES[kind])
            lines.append(f"| {phase} | {was} | {after:.1f} | {after / large.memory_gb:.0%} | {runs} |")
        lines += ["", "| call | planned peak after | size before → after | asked s before → after | scheduled s after |",
                  "|---|---|---|---|---|"]
        for words, kind in CALLS:
            peak = studio_estimate.CallSizer(model).peak_bytes(kind, "zerogpu") / 1e9
            size, asked, scheduled = after_call(model, entry, kind)
            was_size, was_asked = before_call(old, kind) if old and kind != "preview" else ("—", "—")
            lines.append(f"| {words} | {peak:.1f} | {was_size} → {size} | {was_asked} → {asked} | {scheduled} |")
        lines.append("")
    lines += ["Training chunks ask their budget (110 s by default) plus 40 s of transfers and encoding, at least "
              "1.5 planned steps; renders (4 distilled steps without CFG) their FLOPs at the calibrated "
              "utilisation of half the card (section \"Calibration\"); segmentation and captions fixed allowances. "
              "Before, the compute of a render was timed on the old card at 30% of its share: about half the "
              "seconds planned for it now."]
    return "\n".join(lines)


PUBLISHED = [  # (source, card, frames, size, seconds per step, how the figure bounds a step)
    ("LightX2V README, H100 cross-framework table: Diffusers", "h100", 81, (832, 480), 9.77, "s/it"),
    ("same table: xDiT", "h100", 81, (832, 480), 8.93, "s/it"),
    ("same table: FastVideo", "h100", 81, (832, 480), 7.35, "s/it"),
    ("same table: SGL-Diffusion", "h100", 81, (832, 480), 6.13, "s/it"),
    ("same table: LightX2V (Sage int8 attention)", "h100", 81, (832, 480), 5.18, "s/it"),
    ("LightX2V benchmark_source.md, H200: Wan2.1 official, 366 s / 40 steps", "h200", 81, (832, 480), 366 / 40,
     "≤ (total incl. encoders and VAE)"),
    ("same: Wan2.1 official 720P, 974 s / 40 steps", "h200", 81, (1280, 720), 974 / 40, "≤ (total)"),
    ("Wan2.1 README: I2V-14B 720P on one H800/H100, 1491.6 s / 40 steps, model offload", "h100", 81, (1280, 720),
     1491.6 / 40, "≤ (total, with offload)"),
]


def calibration_section() -> str:
    lines = ["## Calibration: the planner's FLOPs against published Wan2.1-I2V-14B step times "
             "(benchmarks/plan_presets.py)", "",
             "Each row: the planner's FLOPs for one denoising step with CFG (two transformer passes) at the "
             "setting measured, divided by the measured seconds and the card's dense bf16 peak = the fraction of "
             "peak that run reached. Rows marked ≤ divide a whole run (encoders, VAE, and for the Wan README model "
             "offload, included) by its steps, so their utilisation is a lower bound.", "",
             "| source | card | setting | s / step | planner TFLOP / step | utilisation |", "|---|---|---|---|---|---|"]
    flops, bounds = {}, []
    for source, card, frames, size, seconds, how in PUBLISHED:
        model = estimates.DEFAULT_MODEL_ID if size == (832, 480) else "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
        if (frames, size) not in flops:
            plan = planner.estimate("full", frames, size, model, train=False, stage2=False, guidance_scale=5.0)
            flops[(frames, size)] = plan.phases["denoising step"].flops
        ratio = flops[(frames, size)] / (seconds * CARDS[card].bf16_tflops * 1e12)
        bound = "≥ " if how.startswith("≤") else ""
        bounds += [ratio] if bound else []
        lines.append(f"| {source} | {CARDS[card].name} | {frames}x{size[0]}x{size[1]}, CFG | {'≤ ' if bound else ''}"
                     f"{seconds:.2f} | {flops[(frames, size)] / 1e12:,.0f} | {bound}{ratio:.2f} |")
    calibration = estimates.CALIBRATION
    assert flops[(calibration.num_frames, (calibration.width, calibration.height))] == calibration.planner_flops
    lines += ["", f"Chosen: **{estimates.UTILISATION:.2f}**, the Diffusers row ({calibration.source}): diffusers' own "
              "Wan transformer with PyTorch SDPA in bf16 on one GPU is how MaskEdit runs Wan; the faster stacks "
              "fuse kernels or quantise attention, which MaskEdit does not. The lower bounds from whole runs "
              f"(≥ {min(bounds):.2f} to ≥ {max(bounds):.2f}) do not contradict it.", "",
              "Every ZeroGPU duration is FLOPs / "
              f"(the call's share of the {zerogpu.CARD.name}'s {zerogpu.CARD.bf16_tflops:g} dense bf16 TFLOPS x "
              f"{estimates.UTILISATION:.2f}). Unmeasured: whether a Blackwell card, half of one, training steps "
              "(backward, recompute) and fp8 storage reach the same fraction; `benchmarks/run_all.py` on a GPU "
              "measures it. No published Wan2.1 step time on an RTX PRO 6000 was found."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--only", nargs="+", choices=("planner", "zerogpu", "calibration"),
                        default=("planner", "zerogpu", "calibration"), help="the sections to make")
    args = parser.parse_args(argv)
    for name, make in (("zerogpu", zerogpu_section), ("calibration", calibration_section)):
        if name in args.only:
            text = make()
            print(text, flush=True)
            if args.write:
                write_section(name, text)
    if "planner" not in args.only:
        return
    started = time.perf_counter()
    header = ("| preset | clip | " + " | ".join(f"{p} GiB" for p in planner.PHASES)
              + " | host GiB | TFLOP / train step | TFLOP / denoise step | edit floor H100 s | edit floor 4090 s |")
    lines = ["## Planner estimates (benchmarks/plan_presets.py)", "",
             "Dry runs of our code on the real configs with the meta device as the GPU (maskedit.models.planner): peak "
             "GPU memory per phase (everything on the GPU then: weights, encoders, activations), peak host memory, "
             "FLOPs, and the whole edit's time floor (all steps at the card's dense bf16 peak — no run is that fast). "
             "**Estimates, not yet measured on a GPU.**", ""]
    for model, spec in KNOWN_MODELS.items():
        what = "presets at their own size" if spec.default_size == (832, 480) else \
            f"presets at {spec.default_size[0]}x{spec.default_size[1]} where they use 832x480, as the app adapts them"
        if spec.transformer_2 is not None:
            what += "; two experts: one trains at a time (the other in host memory), both resident to generate"
        lines += [f"### {model} ({what})", "", header, "|" + "---|" * (len(planner.PHASES) + 7)]
        lines += preset_rows(model, None)
        lines.append("")
    lines += ["### Training peak against the paper (RTX 4090, 832x480; MB = 10^6 bytes)", "",
              "| settings (our implementation) | paper MB | planner MB | planner / paper |", "|---|---|---|---|"]
    lines += paper_rows()
    lines += ["", f"{machine()}; {time.perf_counter() - started:.0f} s for every dry run above.", "", NOTES]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("planner", text)


if __name__ == "__main__":
    main()
