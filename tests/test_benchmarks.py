"""Smoke test of benchmarks/core_overhead.py: smallest settings, tiny model, prints the table, writes nothing."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "core_overhead.py"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def test_core_overhead_smoke():
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    # A subprocess keeps the script's torch.set_num_threads and model state out of this test session.
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "1", "--warmup", "0", "--steps", "2", "--threads", "1",
         "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| case | ours (s) | reference (s) | ratio | goal |" in out
    for row in ("| training step |", "| generation step |", "| generation call (2 steps, no decode) |"):
        line = next((l for l in out.splitlines() if l.startswith(row)), None)
        assert line is not None, out
        ours, reference, ratio = (float(cell) for cell in line.split("|")[2:5])
        assert ours > 0 and reference > 0 and ratio > 0
    assert "appended to" not in out
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == before, "the smoke test must not write RESULTS.md"
