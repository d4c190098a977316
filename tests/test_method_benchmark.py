"""The method benchmark: its quick mode runs every method and the checks that hold by construction pass;
the table goes into RESULTS.md only with --write, and only into its own section."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("method_benchmark", ROOT / "benchmarks" / "method_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["method_benchmark"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_quick_mode_runs_every_method_and_its_checks_pass(bench, tmp_path, capsys):
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    out = tmp_path / "scores.json"
    # Even smaller than --quick's defaults (5 frames, 2 LoRA steps, 2 denoising steps): the same code paths.
    code = bench.main(["--quick", "--edits", "1", "--frames", "5", "--train-steps", "2", "--gen-steps", "2",
                       "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    labels = [f"| *{name}* |" for name in bench.REFERENCES]
    labels += [f"| {name} |" for name in bench.METHODS if name != "mask-lora"] + ["| **mask-lora (ours)** |"]
    assert all(label in text for label in labels)
    assert "random weights" in text and "FAILED" not in text

    edits = json.loads(out.read_text())
    assert len(edits) == 1
    runs = {run["method"]: run for run in edits[0]["runs"]}
    assert set(runs) == set(bench.METHODS) | set(bench.REFERENCES)
    # By construction: the truth scores perfectly; the unedited clip keeps the background perfectly.
    truth = runs["ground-truth"]
    assert truth["background_psnr"] == truth["edit_psnr"] == truth["temporal_psnr"] == math.inf
    assert runs["source"]["background_psnr"] == math.inf and runs["source"]["edit_psnr"] < math.inf
    assert runs["mask-lora+stage2"]["train_steps"] == runs["mask-lora"]["train_steps"] == 2  # same budget
    # the paper's own measures for every method, with the model's own CLIP image encoder
    assert "| CLIP score ↑ | input similarity ↑ |" in text and "paper's Table 1 figures come from its own CLIP" in text
    assert all(-1.0 <= run["clip_score"] <= 1.0 and -1.0 <= run["input_similarity"] <= 1.0 for run in runs.values())
    assert runs["source"]["input_similarity"] == pytest.approx(1.0, abs=1e-6)  # the source against itself
    checks = {check["name"]: check for check in edits[0]["checks"]}
    latent = next(c for name, c in checks.items() if name.startswith("feature-blend: final latents"))
    assert latent["ok"] and "max |difference| 0" in latent["detail"]
    assert all(c["ok"] for c in checks.values() if c["asserted"])
    # Compositing (issue 27): its own table; the composited source is the source, and compositing never lowers
    # the background PSNR of a generated row (outside the loose boxes it is the source itself)
    assert "| method | bg PSNR ↑ generated | bg PSNR ↑ composited |" in text and "ring PSNR" in text
    assert runs["source"]["composited"]["background_psnr"] == math.inf and runs["source"]["ring_psnr"] == math.inf
    for name in bench.METHODS:
        assert runs[name]["composited"]["background_psnr"] >= runs[name]["background_psnr"], name
        assert math.isfinite(runs[name]["ring_psnr"]) and runs[name]["ring_mean_abs_diff"] > 0, name
    # Nothing was written into the repository.
    assert (results.read_bytes() if results.exists() else None) == before


def test_write_replaces_only_its_own_section(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## core overhead\n\n| a | b |\n")
    bench.write_section("method_benchmark", "first table", path)
    bench.write_section("method_benchmark", "second table", path)
    text = path.read_text()
    assert text.startswith("# Benchmark results\n\n## core overhead\n\n| a | b |\n")
    assert text.count("<!-- method_benchmark -->") == 1 and text.count("<!-- /method_benchmark -->") == 1
    assert "second table" in text and "first table" not in text
    path.write_text(text + "\n## appended later by another benchmark\n")
    bench.write_section("method_benchmark", "third table", path)
    text = path.read_text()
    assert "appended later by another benchmark" in text and "third table" in text and "second" not in text
    fresh = tmp_path / "new.md"
    bench.write_section("method_benchmark", "only table", fresh)
    assert fresh.read_text().startswith("# Benchmark results")


def test_arguments(bench):
    args = bench.parse_args(["--quick"])
    assert (args.width, args.height, args.frames, args.edits, args.train_steps, args.gen_steps) == (64, 64, 9, 2, 4, 3)
    assert args.stage2_steps == 2 and args.methods == list(bench.METHODS)
    full = bench.parse_args([])
    assert (full.width, full.height, full.frames, full.train_steps) == (64, 64, 17, 100)
    real = bench.parse_args(["--model", "/some/wan/folder"])
    assert (real.width, real.height, real.frames) == (832, 480, 49)
    for bad in (["--methods", "magic"], ["--train-steps", "1"], ["--stage2-steps", "4", "--train-steps", "4"],
                ["--size", "64"], ["--edits", "9"], ["--frames", "1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_min_area_scales_with_the_frame(bench):
    assert bench.scaled_min_area(832, 480) == 50
    assert bench.scaled_min_area(64, 64) == 1
