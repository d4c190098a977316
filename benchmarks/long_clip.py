"""Long-clip benchmark: toy-world clips several windows long, edited window by window (METHOD.md §7b), with their
seams measured against ground truth.

For each toy edit (`maskedit.tools.toyworld`: a clip, one object's colour / pattern / shape changed, the edited first
frame and the ground-truth edited clip) and each hand-over O (1 frame, and several), the edit LoRA is trained on
windows across the whole clip (`workflow.train.train_edit_lora` with `window_frames` W and `handover_frames` O: O > 1
also trains kept prefixes) and the clip is generated window after window (`workflow.long_clip.generate_long_edit`).
Per window it reports, as `media.seams` measures them on every long generation:
- seam jump: mean |frame difference| across the seam into the window ÷ the median inside windows (1.0 = seamless),
  beside the ground truth's own ratio at the same frames (the motion there);
- colour drift: ΔE (CIE76, Lab) of the edit region's mean colour from window 0 to this window (the ground truth's
  beside it: its object's colour changes only with its motion and shading);
- background PSNR (dB, outside the boxes, against the source) of the window's new frames;
- edit PSNR (dB, inside the boxes, against the ground-truth edited clip) of the window's new frames.
Mean over the edits.

    python benchmarks/long_clip.py --quick            # CI: tiny model, 64x64, 1 edit, 17 frames in 9-frame windows
    python benchmarks/long_clip.py --write            # tiny model, 2 edits, 64x64x33 (4 windows of 9; 7 with O = 5)
    python benchmarks/long_clip.py --model /path/to/Wan2.1-I2V-14B-480P --size 832x480 --frames 241 \\
        --window-frames 81 --handover 1,5 --steps 100 --gen-steps 30 --write     # on a GPU: 3 windows of 81

The tiny model has random weights: its figures show that the windows, hand-overs and seams are computed, not how
seamless the method is. On a GPU with the real model the same script gives the figures that matter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_section  # noqa: E402
from maskedit.media.metrics import psnr_from_mse  # noqa: E402
from maskedit.media.seams import SeamMeter  # noqa: E402
from maskedit.media.video import Clip  # noqa: E402
from maskedit.method.lora import unload_lora  # noqa: E402
from maskedit.method.masks import MIN_COMPONENT_AREA, loose_boxes  # noqa: E402
from maskedit.method.training import TrainConfig  # noqa: E402
from maskedit.method.windows import plan_windows  # noqa: E402
from maskedit.models.loading import TINY, load_pipeline  # noqa: E402
from maskedit.tools import toyworld  # noqa: E402
from maskedit.workflow.long_clip import LongEditDone, LongEditRun, generate_long_edit  # noqa: E402
from maskedit.workflow.prepare import PreparedClip  # noqa: E402
from maskedit.workflow.train import EditTrainingDone, train_edit_lora  # noqa: E402

SECTION = "long-clip"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=TINY, help="'tiny' (default), a diffusers folder or a hub id of a Wan I2V model")
    parser.add_argument("--quick", action="store_true", help="CI mode: 1 edit, 17 frames, 2 LoRA steps, 1 denoising step")
    parser.add_argument("--size", default="64x64", help="WxH (default 64x64; 832x480 for the real model)")
    parser.add_argument("--frames", type=int, default=33, help="frames of each clip (4k+1; default 33)")
    parser.add_argument("--window-frames", type=int, default=9, help="frames per window (default 9; 81 for Wan)")
    parser.add_argument("--handover", default="1,5", help="hand-overs to compare, comma-separated (default 1,5)")
    parser.add_argument("--edits", type=int, default=2, help="toy edits (default 2)")
    parser.add_argument("--steps", type=int, default=40, help="LoRA steps (default 40; 100 per window with Wan)")
    parser.add_argument("--gen-steps", type=int, default=4, help="denoising steps (default 4; 30 with Wan)")
    parser.add_argument("--cfg", type=float, default=1.0, help="guidance scale (default 1; 5 with Wan)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.window_frames, args.edits, args.steps, args.gen_steps = 17, 9, 1, 2, 1
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    args.handovers = [int(v) for v in args.handover.split(",") if v.strip()]
    return args


def edit_scores(run: LongEditRun, prepared: PreparedClip, target: np.ndarray) -> list[float]:
    """Edit PSNR (inside the boxes, against the ground truth) of each window's new frames (frame 0 left out)."""
    scores = []
    for window in run.windows:
        frames = np.asarray(run.window_frames(window.index), dtype=np.float64)
        indices = list(window.new_frames)
        inside = np.asarray(prepared.region[indices], dtype=bool)
        error = (frames - target[indices]) ** 2
        if window.index == 0:
            error, inside = error[1:], inside[1:]
        chosen = error[inside]
        scores.append(psnr_from_mse(float(chosen.mean())) if chosen.size else float("nan"))
    return scores


def ground_truth_seams(windows, edit: toyworld.ToyEdit, region: np.ndarray):
    """The ground-truth edited clip measured like a generation (the reference: its motion and shading only)."""
    window_of = np.zeros(edit.target.num_frames, np.int64)
    for window in windows:
        window_of[window.new_frames.start:window.stop] = window.index
    meter = SeamMeter([w.start + w.handover for w in windows[1:]], window_of)
    for index in range(edit.target.num_frames):
        meter.add(index, edit.target.frames[index], edit.source.frames[index], region[index])
    return meter.report()


def run_edit(pipe, edit: toyworld.ToyEdit, handover: int, args, work: Path) -> dict:
    """Train and generate one toy edit with hand-over `handover`; returns the per-window figures."""
    min_area = max(1, round(MIN_COMPONENT_AREA * args.width * args.height / (832 * 480)))
    region = loose_boxes(edit.source_mask, min_area=min_area)
    prepared = PreparedClip(Clip(edit.source.frames, toyworld.DEFAULT_FPS), region)
    config = TrainConfig(steps=args.steps, rank=16, alpha=16.0, seed=args.seed, window_frames=args.window_frames,
                         handover_frames=handover, checkpoint_every=0)
    unload_lora(pipe)
    started = time.perf_counter()
    done = None
    for event in train_edit_lora(pipe, prepared, edit.caption, config, work / "lora", base_model=args.model,
                                 resume=False):
        done = event if isinstance(event, EditTrainingDone) else done
    trained = time.perf_counter() - started
    started = time.perf_counter()
    outputs = None
    for event in generate_long_edit(pipe, prepared, edit.edited_first_frame, edit.edited_caption, work / "out",
                                    window_frames=args.window_frames, handover_frames=handover,
                                    trained_handover=done.metadata.get("handover_frames"), steps=args.gen_steps,
                                    guidance_scale=args.cfg, seed=args.seed, resume=False, preview=False):
        if isinstance(event, LongEditDone):
            outputs = event.outputs
    generated = time.perf_counter() - started
    windows = plan_windows(prepared.num_frames, args.window_frames, handover)
    run = LongEditRun(work / "out", windows, "")
    truth = ground_truth_seams(windows, edit, region)
    return {"seams": outputs.seams, "truth": truth, "edit_psnr": edit_scores(run, prepared, edit.target.frames),
            "windows": len(windows), "train_s": trained, "generate_s": generated}


def mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    finite = [v for v in values if math.isfinite(v)]
    if values and not finite:
        return float("inf")
    return float(np.mean(finite)) if finite else float("nan")


def table(results: dict[int, list[dict]]) -> str:
    rows = ["| hand-over | window | seam jump (ground truth) | colour drift ΔE (ground truth) | background PSNR | "
            "edit PSNR vs ground truth |", "|---|---|---|---|---|---|"]
    for handover, runs in results.items():
        for j in range(runs[0]["windows"]):
            jump = "—" if j == 0 else (f"{mean(r['seams'].seam_jump[j - 1] for r in runs):.2f} "
                                       f"({mean(r['truth'].seam_jump[j - 1] for r in runs):.2f})")
            drift = f"{mean(r['seams'].colour_drift[j] for r in runs):.2f} " \
                    f"({mean(r['truth'].colour_drift[j] for r in runs):.2f})"
            rows.append(f"| {handover} | {j} | {jump} | {drift} | "
                        f"{_db(mean(r['seams'].background_psnr[j] for r in runs))} | "
                        f"{_db(mean(r['edit_psnr'][j] for r in runs))} |")
    return "\n".join(rows)


def _db(value: float) -> str:
    return "∞" if value == float("inf") else ("–" if math.isnan(value) else f"{value:.2f} dB")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    loaded = load_pipeline(args.model)
    edits = toyworld.benchmark_edits(args.width, args.height, args.frames, count=args.edits)
    results: dict[int, list[dict]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="maskedit-long-bench-") as folder:
        for handover in args.handovers:
            for number, edit in enumerate(edits):
                result = run_edit(loaded.pipe, edit, handover, args, Path(folder) / f"o{handover}" / str(number))
                results.setdefault(handover, []).append(result)
                print(f"hand-over {handover}, {edit.name}: {result['windows']} windows, train {result['train_s']:.1f} s, "
                      f"generate {result['generate_s']:.1f} s; " + "; ".join(result["seams"].lines()), flush=True)
    text = table(results)
    print(text)
    if args.write:
        windows = ", ".join(f"O = {o}: {runs[0]['windows']} windows" for o, runs in results.items())
        note = ("**The tiny model has random weights: these figures show that windows, hand-overs and seams are "
                "computed end to end, not how seamless the method is.** Run the script on a GPU with the real model "
                "(its docstring has the command) for figures that mean something." if loaded.is_tiny else
                "Real-model figures.")
        summary = (f"## Long clips (benchmarks/long_clip.py)\n\n{datetime.datetime.now():%Y-%m-%d %H:%M}, "
                   f"{machine()}; model {args.model}; {len(edits)} toy edit(s), {args.frames} frames at "
                   f"{args.width}x{args.height}, windows of {args.window_frames} frames ({windows}); {args.steps} "
                   f"LoRA steps, {args.gen_steps} denoising steps at CFG {args.cfg:g}; "
                   f"{time.perf_counter() - started:.0f} s in all.\n\n{note}\n\n"
                   "Seam jump: mean |frame difference| across the seam into the window ÷ the median inside windows "
                   "(1.0 = seamless); colour drift: ΔE (CIE76) of the edit region's mean Lab colour from window 0; "
                   "background PSNR outside the boxes against the source and edit PSNR inside them against the ground "
                   "truth, over each window's new frames. Ground-truth figures in brackets.\n\n" + text)
        write_section(SECTION, summary)
        print(json.dumps({"written": SECTION}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
