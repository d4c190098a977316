"""The standing fault suite (issue 13): bad settings, bad files and interrupted runs through the real CLI.

Every case runs `python -m maskedit ...` as a subprocess on the tiny model (bounded by a timeout) and
asserts: the message naming what is wrong, exit code 2, no traceback anywhere in the output, nothing
finished lost (an earlier run's edited.mp4 / lora.safetensors in the output folder stays as it was), and
no partial output that looks complete. The cases run two at a time; each costs mostly the import (~10 s on
a 2-core machine). Ctrl-C resume and NaN runs have tests of their own below.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from maskedit.interfaces.cli import main as cli
from maskedit.media import video
from maskedit.limits import MAX_SOURCE_SIDE

from conftest import CLIP_FPS, make_synthetic_clip

REPO = Path(__file__).resolve().parents[1]
BOX = "4,8,54,42"
SIZE = ["--width", "64", "--height", "64"]
CASE_TIMEOUT = 240  # seconds per CLI run; the slowest here trains 3 tiny steps
FINISHED = b"an earlier run's finished output"


def run_cli(args, cwd: Path, timeout: float = CASE_TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "maskedit", *[str(a) for a in args]], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs of every case: the clip, edited frames, a prepared folder and a trained LoRA (made in-process)."""
    root = tmp_path_factory.mktemp("faults")
    frames, region = make_synthetic_clip()
    paths = {"root": root, "clip": root / "clip.mp4", "edited": root / "edited.png"}
    video.write_video(paths["clip"], frames, CLIP_FPS)
    edited = frames[0].copy()
    edited[region[0]] = (30, 60, 240)
    video.write_image(paths["edited"], edited)
    paths["prepared"], paths["lora"] = root / "prepared", root / "lora"
    assert cli.main(["prepare", "--video", str(paths["clip"]), "--box", BOX, *SIZE, "--out", str(paths["prepared"])]) == 0
    assert cli.main(["train", "--prepared", str(paths["prepared"]), "--train-prompt", "a box", "--steps", "2", "--model", "tiny",
                     "--no-cache", "--out", str(paths["lora"])]) == 0
    # damaged and foreign files
    (root / "empty.safetensors").write_bytes(b"")
    (root / "garbage.safetensors").write_bytes(np.random.default_rng(0).integers(0, 256, 300, np.uint8).tobytes())
    weights = load_file(str(paths["lora"] / "lora.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, str(root / "nan.safetensors"))
    (root / "text.mp4").write_text("not a video at all\n")
    long_frames, _ = make_synthetic_clip(num_frames=41)
    video.write_video(root / "long.mp4", long_frames, CLIP_FPS)
    data = (root / "long.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    video.write_video(root / "huge.mp4", np.zeros((5, 16, MAX_SOURCE_SIDE + 16, 3), np.uint8), CLIP_FPS)
    return paths


def train(w, *extra):
    return ["train", "--prepared", w["prepared"], "--train-prompt", "a box", "--steps", "3", "--model", "tiny", *extra]


def generate(w, *extra):
    return ["generate", "--prepared", w["prepared"], "--edited-frame", w["edited"], "--edit-prompt", "a blue box",
            "--lora", w["lora"], "--steps", "2", "--model", "tiny", *extra]


def edit(w, *extra):
    return ["edit", "--video", w["clip"], "--box", BOX, *SIZE, "--edited-frame", w["edited"], "--edit-prompt", "a blue box",
            "--steps", "2", "--gen-steps", "2", "--model", "tiny", *extra]


def prepare(w, *extra, video_path=None):
    return ["prepare", "--video", video_path or w["clip"], "--box", BOX, *SIZE, *extra]


# name: (args without --out, phrases the error must hold). Each writes to its own --out folder.
CASES = {
    "train steps 10**9": (lambda w: train(w, "--steps", 10**9), ["number of training steps (--steps)", "at most 10000"]),
    "generation steps 10**7": (lambda w: generate(w, "--steps", 10**7), ["generation steps (--steps)", "at most 1000"]),
    "edit generation steps 0": (lambda w: edit(w, "--gen-steps", 0), ["(--gen-steps) is 0", "at least 1"]),
    "rank 100000": (lambda w: train(w, "--rank", 100_000), ["LoRA rank (--rank) is 100000", "at most 256"]),
    "alpha nan": (lambda w: train(w, "--alpha", "nan"), ["LoRA alpha (--alpha) is nan"]),
    "lr nan": (lambda w: train(w, "--lr", "nan"), ["learning rate (--lr) is nan"]),
    "lr 1e6": (lambda w: train(w, "--lr", "1e6"), ["learning rate (--lr) is 1000000", "at most 1"]),
    "cfg nan": (lambda w: generate(w, "--cfg", "nan"), ["guidance scale (--cfg) is nan"]),
    "shift inf": (lambda w: generate(w, "--shift", "inf"), ["flow shift (--shift) is inf"]),
    "lora scale -inf": (lambda w: generate(w, "--lora-scale=-inf"), ["LoRA scale (--lora-scale) is -inf"]),
    "seed 2**70": (lambda w: train(w, "--seed", 2**70), ["seed (--seed) is 1180591620717411303424", "9223372036854775807"]),
    "negative seed": (lambda w: generate(w, "--seed", -1), ["seed (--seed) is -1", "at least 0"]),
    "seeds with one too large": (lambda w: generate(w, "--seeds", f"0,{2**64}"), ["seed (--seeds)"]),
    "frames 40001": (lambda w: edit(w, "--frames", 40001), ["number of frames (--frames) is 40001", "at most 35997"]),
    "window 83": (lambda w: edit(w, "--window-frames", 83), ["frames per generation window (--window-frames) is 83"]),
    "handover 2": (lambda w: generate(w, "--handover-frames", 2), ["hand-over frames between windows",
                                                                     "(4k+1)"]),
    "width 100000": (lambda w: prepare(w, "--width", 100_000), ["width (--width) is 100000", "at most 1920"]),
    "margin nan": (lambda w: prepare(w, "--margin", "nan"), ["box margin (--margin) is nan"]),
    "start -1": (lambda w: prepare(w, "--start", -1), ["start frame (--start) is -1"]),
    "window 8": (lambda w: train(w, "--window", 8), ["training window in frames (--window) is 8", "4k+1"]),
    "empty prompt (train)": (lambda w: train(w, "--train-prompt", ""), ["--train-prompt text is empty"]),
    "blank prompt (edit)": (lambda w: edit(w, "--edit-prompt", "   "), ["--edit-prompt text is empty"]),
    "later frame given twice": (lambda w: train(w, "--edited-later", f"4={w['edited']}", "--edited-later",
                                                f"4={w['edited']}"), ["frame 4 is given twice"]),
    "0-byte LoRA": (lambda w: generate(w, "--lora", w["root"] / "empty.safetensors"),
                    ["empty.safetensors is not a LoRA file or is damaged", "0 bytes"]),
    "random bytes as LoRA": (lambda w: generate(w, "--lora", w["root"] / "garbage.safetensors"),
                             ["garbage.safetensors is not a LoRA file or is damaged"]),
    "NaN LoRA": (lambda w: generate(w, "--lora", w["root"] / "nan.safetensors"),
                 ["NaN or infinite weights", "with a lower learning rate"]),
    "300 clicks (segment)": (lambda w: ["segment", "--video", w["clip"], *[a for i in range(300) for a in
                                                                        ("--point", f"{i % 60},{i % 50}")]],
                             ["number of clicks (--point) is 300", "at most 256"]),
    "text file named .mp4": (lambda w: prepare(w, video_path=w["root"] / "text.mp4"), ["could not be read as a video"]),
    "source wider than the limit": (lambda w: prepare(w, video_path=w["root"] / "huge.mp4"),
                                    ["too large to edit", f"larger than {MAX_SOURCE_SIDE} pixels"]),
}


@pytest.fixture(scope="module")
def results(world):
    """Every case's CompletedProcess, run two at a time; each output folder first holds an earlier run's
    finished files, which must survive the failed call unchanged."""
    def one(name):
        out = world["root"] / "out" / re.sub(r"\W+", "_", name)
        out.mkdir(parents=True)
        for finished in ("edited.mp4", "lora.safetensors"):
            (out / finished).write_bytes(FINISHED)
        return name, out, run_cli([*CASES[name][0](world), "--out", out], cwd=world["root"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {name: (out, result) for name, out, result in pool.map(one, CASES)}


def assert_refused(result: subprocess.CompletedProcess, out: Path | None, *phrases) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "error: " in result.stderr and "Traceback" not in output, output
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    if out is not None:
        assert sorted(p.name for p in out.iterdir()) == ["edited.mp4", "lora.safetensors"], list(out.iterdir())
        assert all((out / name).read_bytes() == FINISHED for name in ("edited.mp4", "lora.safetensors"))


@pytest.mark.parametrize("case", list(CASES))
def test_cli_refuses(results, case):
    out, result = results[case]
    assert_refused(result, out, *CASES[case][1])


def test_there_are_at_least_twenty_cli_cases():
    assert len(CASES) >= 20


# ----- damaged sources


def test_truncated_video_is_read_with_a_warning(world, tmp_path):
    result = run_cli(prepare(world, video_path=world["root"] / "truncated.mp4") + ["--out", tmp_path / "p"],
                     cwd=world["root"])
    assert result.returncode == 0, result.stderr
    assert "warning: truncated.mp4 looks truncated or damaged" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert str(world["root"]) not in result.stdout  # paths under the working directory are shown relative


# ----- a diverged run never becomes a finished LoRA


def test_resuming_a_nan_checkpoint_is_refused(world, tmp_path):
    out = tmp_path / "lora"
    args = train(world, "--steps", "4", "--no-cache")
    from maskedit.method.training import LoraTrainer

    original, calls = LoraTrainer.train_step, [0]

    def stop_after_two(self):  # an in-process run stopped after 2 steps keeps its checkpoint
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return original(self)

    LoraTrainer.train_step = stop_after_two
    try:
        assert cli.main([str(a) for a in args] + ["--out", str(out)]) == 130
    finally:
        LoraTrainer.train_step = original
    weights = out / "checkpoints" / "stage1" / "checkpoint.safetensors"
    tensors = load_file(str(weights))
    tensors["param.0"] = torch.full_like(tensors["param.0"], float("nan"))
    save_file(tensors, str(weights))

    result = run_cli([*args, "--out", out], cwd=tmp_path)
    assert_refused(result, None, "holds NaN or infinite values", "not resumed", "lower")
    assert "stage1" in result.stderr and str(tmp_path) not in result.stderr  # the path is shown relative
    assert not (out / "lora.safetensors").exists() and not (out / "lora.json").exists()


# ----- Ctrl-C lands between steps: resuming ends bit-identical to an uninterrupted run


class _Stderr(threading.Thread):
    """Collects a child's stderr (tqdm writes \\r-separated updates, so it is read in chunks, not lines)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.text = stream, ""

    def run(self):
        for chunk in iter(lambda: self.stream.read1(4096), b""):
            self.text += chunk.decode(errors="replace")

    def steps_done(self, total: int) -> int:
        found = re.findall(rf"(\d+)/{total} ", self.text)
        return int(found[-1]) if found else 0


def _interrupt_at(args, cwd: Path, total: int, at_step: int) -> tuple[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "maskedit", *map(str, args)], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = _Stderr(child.stderr)
    reader.start()
    deadline = time.monotonic() + CASE_TIMEOUT
    try:
        while reader.steps_done(total) < at_step and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    reader.join(timeout=10)
    return code, reader.text + child.stdout.read().decode(errors="replace")


def test_ctrl_c_then_resume_is_bit_identical(world, tmp_path):
    total = 24
    args = train(world, "--steps", total, "--no-cache")[:]
    reference = run_cli([*args, "--out", tmp_path / "whole"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "interrupted"
    steps_at_interrupt = []
    for at_step in (4, 13):
        code, output = _interrupt_at([*args, "--out", out], tmp_path, total, at_step)
        assert code == 130, output
        assert "run the same command again to resume" in output and "Traceback" not in output
        assert not (out / "lora.safetensors").exists()
        steps_at_interrupt.append(json.loads((out / "checkpoints" / "stage1" / "checkpoint.json").read_text())["step"])
    assert 0 < steps_at_interrupt[0] < steps_at_interrupt[1] < total
    resumed = run_cli([*args, "--out", out], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from the checkpoint at step {steps_at_interrupt[1]} of {total}" in resumed.stdout + resumed.stderr
    whole = load_file(str(tmp_path / "whole" / "lora.safetensors"))
    parts = load_file(str(out / "lora.safetensors"))
    assert whole.keys() == parts.keys()
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    assert json.loads((out / "lora.json").read_text())["final_loss"] == \
        json.loads((tmp_path / "whole" / "lora.json").read_text())["final_loss"]


def test_a_diverging_cli_run_exits_2_and_writes_no_lora(world, tmp_path, nan_loss_at, capsys):
    """In-process (the divergence is forced at step 3): the CLI shows the trainer's message and writes no
    LoRA and no checkpoint from the bad step."""
    nan_loss_at(3)
    out = tmp_path / "lora"
    code = cli.main([str(a) for a in train(world, "--steps", "5", "--no-cache")] + ["--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "training diverged: the loss became nan at step 3 of 5; lower the learning rate (now 0.0001" in err
    assert "nothing of this run was saved" in err
    assert not (out / "lora.safetensors").exists()
    assert not (out / "checkpoints" / "stage1" / "checkpoint.json").exists()  # none was due before step 3
