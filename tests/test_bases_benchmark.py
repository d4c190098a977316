"""benchmarks/bases_preview.py runs on the CPU (a smoke test of its code path, not a measurement)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bases_preview_benchmark_smoke():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bases_preview.py"), "--repeats", "1", "--train-steps", "2",
         "--full-steps", "2", "--frames", "5", "--size", "32"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| case | first (s) | second (s) | second / first |"
    assert len(rows) == 4 and "two experts" in rows[3]
    for row in rows[1:]:
        assert float(row.rsplit("|", 2)[1]) > 0
