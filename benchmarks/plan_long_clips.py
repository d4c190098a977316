"""What a long clip costs per window on each preset (the planner's dry run, `maskedit.models.long_plan`): GPU peak,
host memory and time floor per window, and the whole clip's training steps, time floor and disk.

    python benchmarks/plan_long_clips.py                 # a 60 s clip at 16 fps (961 frames), on an H100
    python benchmarks/plan_long_clips.py --frames 4801 --gpu h200 --write

Estimates, not measurements (the planner's meta-device dry run; the time floor is FLOPs at the card's dense bf16
peak, which no card reaches).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_section  # noqa: E402
from maskedit.models.cards import get_card  # noqa: E402
from maskedit.models.long_plan import estimate_long  # noqa: E402
from maskedit.models.planner import GB  # noqa: E402
from maskedit.models.presets import PRESETS  # noqa: E402

SECTION = "long-clip-plans"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=961, help="frames of the clip (default 961: 60 s at 16 fps)")
    parser.add_argument("--gpu", default="h100", help="card of the time floor (default h100)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    card = get_card(args.gpu)
    rows = ["| preset | window | windows | GPU peak per window | host per window | time floor per window "
            "(encodes + generation) | training samples | training steps (floor) | whole clip floor | disk |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        plan = estimate_long(name, args.frames)
        step = plan.window.phases["training step"].time_floor_s(card)
        rows.append(f"| `{name}` | {plan.window_frames} frames, {plan.window.width}x{plan.window.height} | "
                    f"{plan.windows} | {plan.window.peak_gpu_bytes / GB:.1f} GB | {plan.peak_host_gib:.1f} GiB | "
                    f"{plan.window_seconds(card):.0f} s | {plan.training_samples[0]} | "
                    f"{plan.train_steps} ({plan.train_steps * step / 60:.0f} min) | "
                    f"{plan.time_floor_s(card) / 3600:.1f} h | {plan.disk_bytes / GB:.1f} GB |")
        print(rows[-1], flush=True)
    text = (f"## Long clips: cost per window (benchmarks/plan_long_clips.py)\n\nA {args.frames}-frame clip "
            f"({args.frames / 16:.0f} s at 16 fps) on Wan2.1-I2V-14B-480P, each preset at its own size and window "
            f"(`Preset.window_frames`), one hand-over frame; time floors on an {card.name} at its "
            f"{card.bf16_tflops:g} TFLOPS bf16 peak (no card reaches it). Planner estimates, not measured on a GPU.\n\n"
            + "\n".join(rows))
    print(text)
    if args.write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
