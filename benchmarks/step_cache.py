"""Step caching on the tiny model: what each of diffusers' cache hooks skips, and how far its output moves from the
uncached run, so that the product's caches are chosen by what they skip at equal error.

Every row is one generation of `workflow.generate.generate_edit` (the method's path: no-lora here, so no training
is needed; 30 Euler steps at shift 5, CFG 5, seed 0) with a cache on the transformer, against the uncached run of
the same call:

- evaluations: transformer calls (steps × 2 CFG branches); full: those that ran every block; blocks run: block
  forwards that really computed (First Block Cache always runs block 0, so it saves at most (N − 1)/N of an
  evaluation); skipped = 1 − blocks run / (evaluations × blocks).
- difference: max and mean |Δ| of the uint8 frames against the uncached frames, and their PSNR (dB).
- time ratio: wall time of the cached call / the uncached call, the median of interleaved repeats (a shared
  2-core CPU is noisy; on the 14B model, where the blocks are nearly all the work, the speed-up is close to
  1 / (1 − skipped)).

Caches: the product's `magcache` (MagCache's published Wan2.1-I2V-480P ratios) and `teacache` (the reference's rule
with DiffSynth's 14B coefficients) through `models.step_cache`; for comparison diffusers' First Block Cache, a
TeaCache without the 14B polynomial (raw relative L1 of the modulation, `teacache-raw`), MagCache with ratios
calibrated on this model (`magcache-self`), and TaylorSeer in lite mode (whole steps predicted at a fixed interval).

    python benchmarks/step_cache.py                  # tiny model (2 blocks), 64x64, 9 frames; ~2 minutes on 2 CPUs
    python benchmarks/step_cache.py --blocks 6 --write   # a 6-block tiny transformer; write RESULTS.md's section
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, write_section  # noqa: E402
from maskedit.media.metrics import psnr  # noqa: E402
from maskedit.media.video import Clip  # noqa: E402
from maskedit.models import step_cache  # noqa: E402
from maskedit.tools import toyworld  # noqa: E402
from maskedit.workflow import generate  # noqa: E402
from maskedit.workflow.prepare import PreparedClip  # noqa: E402

ROWS = (
    ("off", None), ("magcache", 0.06), ("magcache", 0.12), ("magcache", 0.24),
    ("teacache", 0.275), ("teacache-raw", 0.3), ("teacache-raw", 0.6), ("teacache-raw", 1.0),
    ("first-block", 0.02), ("first-block", 0.05), ("first-block", 0.1),
    ("magcache-self", 0.12), ("taylorseer-lite", 2), ("taylorseer-lite", 3),
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=2, help="transformer blocks of the tiny model (default 2)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per row (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help=f"write the table into {RESULTS.name}")
    parser.add_argument("--results", default=str(RESULTS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_pipe(blocks: int):
    from maskedit.models import loading

    config = dict(loading.TINY_TRANSFORMER, num_layers=blocks)
    old = loading.TINY_TRANSFORMER
    loading.TINY_TRANSFORMER = config
    try:
        return loading.build_tiny_pipeline()
    finally:
        loading.TINY_TRANSFORMER = old


@contextlib.contextmanager
def other_cache(pipe, kind: str, threshold, steps: int):
    """The comparison caches that the product does not offer, enabled through diffusers' `enable_cache` (or the
    product's TeaCache hooks with an identity rescale)."""
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    transformer = pipe.transformer
    remove = step_cache.remove_step_cache
    step_cache.remove_step_cache = lambda module: None  # generate_edit clears caches it did not add: keep this one
    if kind == "teacache-raw":
        manager = step_cache.apply_teacache(transformer, threshold, steps, (0.0, 0.0, 0.0, 1.0, 0.0))
    elif kind == "first-block":
        transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    elif kind == "magcache-self":
        transformer.enable_cache(MagCacheConfig(threshold=threshold, max_skip_steps=step_cache.MAGCACHE_MAX_SKIP_STEPS,
                                                num_inference_steps=steps, mag_ratios=pipe._self_ratios))
    elif kind == "taylorseer-lite":
        transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=int(threshold), disable_cache_before_step=3,
                                                       use_lite_mode=True))
    try:
        yield manager if kind == "teacache-raw" else None
    finally:
        step_cache.remove_step_cache = remove
        remove(transformer)


def calibrate(pipe, run, steps):
    """MagCache's own calibration on this model (`MagCacheConfig(calibrate=True)`): the cond branch's ratios."""
    from diffusers.hooks import MagCacheConfig
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK
    from diffusers.hooks.hooks import HookRegistry

    ratios = []
    tail = pipe.transformer.blocks[-1]
    remove = step_cache.remove_step_cache
    step_cache.remove_step_cache = lambda module: None
    pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
    hook = HookRegistry.check_if_exists_or_initialize(tail).get_hook(_MAG_CACHE_BLOCK_HOOK)
    original = hook._perform_calibration_step

    def keep(state, residual):
        original(state, residual)
        if hook.state_manager._context.name == "cond":
            ratios.append(state.calibration_ratios[-1])

    hook._perform_calibration_step = keep
    try:
        with contextlib.redirect_stdout(None):
            run()
    finally:
        step_cache.remove_step_cache = remove
        remove(pipe.transformer)
    return ratios


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = build_pipe(args.blocks)
    edit = toyworld.make_edit(3, kind="color", width=args.size, height=args.size, num_frames=args.frames,
                              later_frames=())
    from maskedit.method.masks import loose_boxes

    prepared = PreparedClip(Clip(edit.source.frames, edit.source.fps), loose_boxes(edit.source_mask, min_area=1))
    blocks_run = []
    for block in pipe.transformer.blocks:
        block.ffn.register_forward_hook(lambda *a: blocks_run.append(1))

    def run(kind="off", threshold=None):
        info = {}
        product = kind in ("off", "magcache", "teacache")
        started = time.perf_counter()
        with contextlib.nullcontext() if product else other_cache(pipe, kind, threshold, args.steps):
            frames = generate.generate_edit(pipe, prepared, edit.edited_first_frame, edit.edited_caption,
                                            steps=args.steps, method="no-lora", seed=0, info=info,
                                            step_cache=kind if product else "off",
                                            step_cache_threshold=threshold if product else None)
        return frames, info, time.perf_counter() - started

    pipe._self_ratios = calibrate(pipe, run, args.steps)
    reference, _, _ = run()
    rows = []
    for kind, threshold in ROWS:
        blocks_run.clear()
        frames, info, _ = run(kind, threshold)
        run_blocks = len(blocks_run)
        times, plain = [], []
        for _ in range(args.repeats):  # interleaved with the uncached call
            plain.append(run()[2])
            times.append(run(kind, threshold)[2])
        ratio = statistics.median(t / p for t, p in zip(times, plain))
        difference = np.abs(frames.astype(int) - reference.astype(int))
        total = info["evaluations"] * args.blocks
        rows.append(dict(kind=kind, threshold=threshold, evaluations=info["evaluations"], full=info["full_evaluations"],
                         blocks=run_blocks, skipped=1 - run_blocks / total, max=int(difference.max()),
                         mean=float(difference.mean()), psnr=psnr(frames, reference), ratio=ratio))
        print(rows[-1], flush=True)
    text = table(rows, args)
    print(text)
    if args.write:
        write_section(f"step_cache_{args.blocks}", text, Path(args.results))
        print(f"wrote the step_cache_{args.blocks} section of {args.results}")
    return 0


def table(rows, args) -> str:
    lines = [f"### Step caching on the tiny model ({args.blocks} transformer blocks, random weights; "
             f"benchmarks/step_cache.py)",
             "",
             f"{args.size}x{args.size}, {args.frames} frames, {args.steps} Euler steps at shift 5, CFG 5 (2 branches), "
             f"seed 0, no-lora; one toy edit. CPU, {args.threads} thread(s); {machine()}; "
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}. Difference: the uint8 frames against the uncached run's.",
             "",
             "| cache | threshold | evaluations (full / all) | block forwards run | skipped | max \\|Δ\\| | mean \\|Δ\\| "
             "| PSNR vs uncached | time ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        threshold = "–" if r["threshold"] is None else f"{r['threshold']:g}"
        label = f"**{r['kind']}**" if r["kind"] in ("magcache", "teacache") else r["kind"]
        lines.append(f"| {label} | {threshold} | {r['full']} / {r['evaluations']} | {r['blocks']} | {r['skipped']:.0%} | "
                     f"{r['max']} | {r['mean']:.3f} | {_db(r['psnr'])} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def _db(value: float) -> str:
    return "∞" if value == float("inf") else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
