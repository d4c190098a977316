"""What compositing's feather costs a perfect edit: the toy world's ground-truth edited clip composited onto its
source (`workflow.generate.composite_edit`, the method's loose boxes) at several feathers and frame sizes, scored
like the method benchmark (`media.metrics.score_edit`). No model is involved, so it runs on any CPU.

The blend lies inside the region's border (`method.composite`), so a feather wider than the loose boxes' margin
(5% of the object per side) blends the object's own edge with the source: the edit PSNR of a composited ground
truth falls from ∞. The background is the source either way (∞).

    python benchmarks/composite_feather.py                       # 64x64x17 and 320x192x33, 4 edits
    python benchmarks/composite_feather.py --sizes 832x480x9 --write
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, write_section  # noqa: E402
from method_benchmark import fmt, scaled_min_area  # noqa: E402
from maskedit.media.metrics import DATA_RANGE, EditScores, mean_scores, psnr_from_mse, score_edit  # noqa: E402
from maskedit.media.video import Clip  # noqa: E402
from maskedit.method.composite import DEFAULT_FEATHER  # noqa: E402
from maskedit.method.masks import loose_boxes  # noqa: E402
from maskedit.models.presets import GenerateSettings  # noqa: E402
from maskedit.tools import toyworld  # noqa: E402
from maskedit.workflow.generate import composite_edit  # noqa: E402
from maskedit.workflow.prepare import PreparedClip  # noqa: E402

FEATHERS = (0, 2, 4, 8, 16)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64x64x17,320x192x33",
                        help="WxHxFRAMES, comma-separated (default %(default)s; 832x480x9 takes minutes to draw)")
    parser.add_argument("--edits", type=int, default=len(toyworld.BENCHMARK_EDITS),
                        help=f"how many of the {len(toyworld.BENCHMARK_EDITS)} fixed toy edits (default all)")
    parser.add_argument("--feathers", default=",".join(map(str, FEATHERS)), help="default %(default)s")
    parser.add_argument("--write", action="store_true", help=f"write the table into {RESULTS.name} (own section)")
    parser.add_argument("--results", default=str(RESULTS), help=argparse.SUPPRESS)  # tests point it elsewhere
    args = parser.parse_args(argv)
    try:
        args.sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",") if size]
        args.feathers = [int(v) for v in args.feathers.split(",") if v.strip()]
    except ValueError:
        parser.error("--sizes takes WxHxFRAMES (e.g. 64x64x17) and --feathers whole numbers")
    if any(len(size) != 3 for size in args.sizes):
        parser.error("--sizes takes WxHxFRAMES, e.g. 832x480x9")
    return args


def pooled(scores: list) -> EditScores:
    """Several edits' scores as one: each PSNR from the edits' mean squared error (so one exact edit, ∞, does not
    hide the others' error as a plain mean would), SSIMs averaged."""
    def psnr_of(name):
        errors = [0.0 if math.isinf(v) else DATA_RANGE ** 2 / 10 ** (v / 10) for v in (getattr(s, name) for s in scores)]
        return psnr_from_mse(float(np.mean(errors)))

    mean = mean_scores(scores)
    return EditScores(psnr_of("background_psnr"), mean.background_ssim, psnr_of("edit_psnr"), mean.edit_ssim,
                      psnr_of("temporal_psnr"))


def sweep(width: int, height: int, frames: int, edits: int, feathers) -> tuple[dict, float]:
    """{feather: the composited ground truth's `pooled` scores} and the median loose-box width (pixels)."""
    scores: dict = {feather: [] for feather in feathers}
    widths = []
    for edit in toyworld.benchmark_edits(width, height, frames, edits):
        loose = loose_boxes(edit.source_mask, min_area=scaled_min_area(width, height))
        widths += [int(np.flatnonzero(frame.any(axis=0)).size) for frame in loose[1:] if frame.any()]
        prepared = PreparedClip(Clip(edit.source.frames, edit.source.fps, []), loose, edit.source_mask)
        for feather in feathers:
            truth = composite_edit(prepared, edit.edited_first_frame, edit.target.frames,
                                   GenerateSettings(composite=True, feather=feather))
            scores[feather].append(score_edit(truth.frames, edit.source.frames, edit.target.frames, edit.region))
    return {feather: pooled(values) for feather, values in scores.items()}, float(np.median(widths))


def table(results: list, args) -> str:
    lines = [f"Toy-world ground truth composited onto its source (loose boxes; frame 0 = the edited first frame), "
             f"{args.edits} edits per size, scored as in the method benchmark (frames 1..; PSNRs pooled over the "
             f"edits' squared errors, SSIM averaged); {machine()}; "
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}. Default feather: {DEFAULT_FEATHER} px.", "",
             "| size | median box width | feather px | bg PSNR ↑ | edit PSNR ↑ | edit SSIM ↑ | tPSNR ↑ |",
             "|---|---|---|---|---|---|---|"]
    for (width, height, frames), (scores, box) in results:
        for feather, s in scores.items():
            lines.append(f"| {width}x{height}x{frames} | {box:.0f} px | {feather} | {fmt(s.background_psnr)} | "
                         f"{fmt(s.edit_psnr)} | {fmt(s.edit_ssim, 3)} | {fmt(s.temporal_psnr)} |")
    lines += ["", "∞ = the composited truth is the truth in every edit (nothing cut). The blend lies inside the region's border: "
              "a feather wider than the boxes' margin (5% of the object per side) blends the object's own edge "
              "with the source."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results = []
    for size in args.sizes:
        print(f"[{time.perf_counter() - started:6.1f}s] {'x'.join(map(str, size))}", flush=True)
        results.append((size, sweep(*size, args.edits, args.feathers)))
    text = table(results, args)
    print(text)
    if args.write:
        write_section("composite_feather", "## Compositing: what the feather costs a perfect edit "
                      "(benchmarks/composite_feather.py)\n\n" + text, Path(args.results))
        print(f"wrote the composite_feather section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
