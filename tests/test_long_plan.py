"""The planner for clips longer than one window (METHOD.md §7b): one window's dry run scaled to the clip."""

import json

import pytest

from maskedit.interfaces.cli import main as cli
from maskedit.models import long_plan
from maskedit.models.cards import get_card
from maskedit.models.planner import GB, Phase, Plan
from maskedit.models.presets import get_preset


def _fake_window(preset, frames, size, model, attention="flash", **overrides):
    settings = get_preset(preset).with_overrides(num_frames=frames)
    phases = {"VAE encode": Phase("VAE encode", 10 * 2**30, 2**30, 10**14),
              "training step": Phase("training step", 20 * 2**30, 2 * 2**30, 10**15),
              "denoising step": Phase("denoising step", 15 * 2**30, 2**30, 4 * 10**14),
              "VAE decode": Phase("VAE decode", 12 * 2**30, 2**30, 10**14)}
    return Plan(model, settings, frames, 832, 480, attention, phases)


def test_a_long_clip_costs_one_windows_peak_and_every_windows_time(monkeypatch):
    monkeypatch.setattr(long_plan, "estimate", _fake_window)
    plan = long_plan.estimate_long("full", 961)
    card = get_card("h100")
    assert (plan.windows, plan.window_frames, plan.last_window_frames, plan.train_steps) == (12, 81, 81, 1200)
    assert plan.peak_gpu_gib == pytest.approx(20.0)  # the training step of one window, whatever the clip's length
    assert plan.window_seconds(card) == pytest.approx((2 * 10**14 + 30 * 4 * 10**14) / (card.bf16_tflops * 1e12))
    assert plan.time_floor_s(card) == pytest.approx(1200 * 10**15 / (card.bf16_tflops * 1e12)
                                                    + 12 * plan.window_seconds(card))
    pixels = 961 * 832 * 480
    assert plan.disk_bytes == pixels * 7 + plan.encoded_bytes
    assert plan.encoded_bytes == 12 * (36 * 21 * 60 * 104 * 4 + 257 * 1280 * 4) + 512 * 4096 * 4
    assert long_plan.estimate_long("low-cost", 961).training_samples == (239, 9)  # its 9-frame windows, stride 4
    assert "12 windows of up to 81 frames" in plan.table(card) and plan.to_dict(card)["windows"] == 12
    small = long_plan.estimate_long("24gb", 961, train_steps=50)
    assert small.window_frames == 49 and small.windows == 20 and small.train_steps == 50  # the preset's window


def test_plan_frames_past_one_window_dry_runs_one_window(capsys):
    """The real dry run (zerogpu: 33-frame windows at 640x368) through `plan --frames N --json`."""
    assert cli.main(["plan", "--preset", "zerogpu", "--frames", "161", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["frames"] == 33 and data["long_clip"]["windows"] == 5 and data["long_clip"]["frames"] == 161
    assert data["long_clip"]["peak_gpu_gib"] == pytest.approx(data["peak_gpu_gib"])
    assert data["long_clip"]["time_floor_s"] > 5 * data["long_clip"]["window_time_floor_s"] > 0
    assert cli.main(["plan", "--preset", "zerogpu", "--frames", "161", "--window-frames", "30"]) == 2
    assert "4k+1" in capsys.readouterr().err
