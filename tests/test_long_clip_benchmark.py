"""The long-clip benchmark's quick mode: toy clips several windows long, one- and several-frame hand-overs, the
seams table; RESULTS.md is written only with --write (into its own section)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_mode_measures_every_window_for_both_handovers(capsys):
    spec = importlib.util.spec_from_file_location("long_clip_benchmark", ROOT / "benchmarks" / "long_clip.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["long_clip_benchmark"] = bench
    spec.loader.exec_module(bench)
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    assert bench.main(["--quick", "--size", "32x32", "--handover", "1,5"]) == 0
    text = capsys.readouterr().out
    assert "| 1 | 1 |" in text and "| 5 | 2 |" in text  # 2 windows with one hand-over frame, 3 with five
    assert "seam jump" in text and "ΔE" in text
    assert results.read_bytes() == before
