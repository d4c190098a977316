"""Write `maskedit/models/plans.json`: the planner's dry run (`maskedit.models.planner.estimate`) for every preset on every
real model the planner knows (`models.KNOWN_MODELS`), at the preset's frames and size adapted to the model
(`bases.adapt_preset`: 832x480 becomes 1280x720 on a 720P base).

The app reads the table (`maskedit.models.estimates`, torch-free) instead of dry-running on a button press: one dry
run takes tens of seconds on a CPU. Run this after changing the planner, a preset or a model config;
`tests/test_estimates.py` fails while the table is stale.

    python scripts/write_plans.py                 # all of them (minutes on a CPU)
    python scripts/write_plans.py --out /tmp/plans.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskedit.models.estimates import PLANS_FILE, TABLE_FORMAT, table_entry  # noqa: E402


def adapted_preset(model: str, name: str):
    """The preset `name` as the dry run should take it on `model` (its base's native size where it has one)."""
    from maskedit.models import bases
    from maskedit.models.presets import get_preset

    preset = get_preset(name)
    adapt = getattr(bases, "adapt_preset", None)
    return adapt(preset, bases.base_for_name(model)) if adapt else preset


def plan_entry(model: str, name: str) -> dict:
    """The table's entry for one model and preset: a fresh dry run's `table_entry`."""
    from maskedit.models.planner import estimate

    return table_entry(estimate(adapted_preset(model, name), model=model))


def build_table(log=print) -> dict:
    import torch

    from maskedit.models.loading import KNOWN_MODELS
    from maskedit.models.presets import PRESETS

    torch.set_num_threads(1)  # meta tensors compute nothing; more threads only contend on a shared machine
    plans: dict[str, dict[str, dict]] = {}
    for model in KNOWN_MODELS:
        for name in PRESETS:
            started = time.perf_counter()
            plans.setdefault(model, {})[name] = plan_entry(model, name)
            entry = plans[model][name]
            log(f"{model} {name}: {entry['frames']} frames {entry['size']}, peak {entry['peak_gpu_gib']:.2f} GiB "
                f"({time.perf_counter() - started:.0f} s dry run)")
    return {"format": TABLE_FORMAT, "generated_by": "scripts/write_plans.py", "plans": plans}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PLANS_FILE, help="where to write the table (default: %(default)s)")
    args = parser.parse_args(argv)
    table = build_table()
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
