"""The planner's peak GPU memory per phase with the encoders on the GPU and in CPU memory while idle
(`offload_encoders`, maskedit.memory.offload.EncoderOffload), per preset, at the preset's frames and size on
Wan2.1-I2V-14B-480P. CPU only (the meta-device dry run); a few minutes per preset and setting.

    python benchmarks/encoder_offload_plan.py                    # every preset, off and on
    python benchmarks/encoder_offload_plan.py 24gb low-cost      # some presets

Exits 1 when the 24gb preset with its own settings does not fit a 24 GB card (22.35 GiB).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maskedit.models import planner  # noqa: E402
from maskedit.models.presets import PRESETS  # noqa: E402

CARD_GB = 24


def main(names: list[str]) -> int:
    print(f"| preset | encoders | {' | '.join(planner.PHASES)} | peak GiB | host GiB | fits {CARD_GB} GB |")
    print("|---|---|" + "---|" * (len(planner.PHASES) + 3))
    fits = True
    for name in names or list(PRESETS):
        for offload in (False, True):
            started = time.perf_counter()
            plan = planner.estimate(name, offload_encoders=offload)
            cells = [f"{plan.phases[p].peak_gpu_gib:.2f}" if p in plan.phases else "-" for p in planner.PHASES]
            print(f"| {name} | {'CPU while idle' if offload else 'on the GPU'} | {' | '.join(cells)} | "
                  f"{plan.peak_gpu_gib:.2f} | {plan.peak_host_gib:.2f} | {'yes' if plan.fits(CARD_GB) else 'no'} | "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            if name == "24gb" and offload == PRESETS[name].offload_encoders:
                fits = plan.fits(CARD_GB)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
