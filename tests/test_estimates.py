"""The planner's precomputed table (`maskedit/models/plans.json`) and what reads it: the Train tab's estimate, the
warning before a run that will not fit the GPU, and ZeroGPU call durations from the table's FLOPs.

Expected values are recomputed here from the table's own figures and the documented constants, never typed in."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from maskedit.models import estimates, zerogpu
from maskedit.models.cards import CARDS
from maskedit.defaults import DEFAULT_MODEL_ID, TINY
from maskedit.errors import MaskEditError
from maskedit.models.presets import PRESETS, GenerateSettings
from maskedit.studio import estimate as studio_estimate
from maskedit.studio.runs import ChunkRequest

ROOT = Path(__file__).resolve().parents[1]
WAN22 = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
FRESH = [(DEFAULT_MODEL_ID, "zerogpu"),  # fp8 base weights, encoders offloaded, no block swapped (33x640x368)
         (WAN22, "zerogpu"),  # the second expert, with fp8 and offloaded encoders
         (DEFAULT_MODEL_ID, "low-cost")]  # 38 blocks swapped, fp8, activations and encoders offloaded


def write_plans():
    """scripts/write_plans.py as a module (the generator the table came from)."""
    spec = importlib.util.spec_from_file_location("write_plans", ROOT / "scripts" / "write_plans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rate(size="large"):
    """FLOP/s the duration functions should assume on a ZeroGPU call of `size`, written out from the data: the
    card's dense bf16 peak x the size's share x the calibrated utilisation."""
    return zerogpu.CARD.bf16_tflops * 1e12 * zerogpu.SIZES[size].compute_share * estimates.UTILISATION


def asked(needed, size="large"):
    """The duration asked for `needed` scheduled seconds: spaces multiplies a large call's by 1.5 (configs.json)."""
    return math.ceil(needed / {"large": 1.5, "xlarge": 1.0}[size])


def all_entries():
    return [(model, name, estimates.lookup(model, name)) for model in estimates.models() for name in PRESETS]


# ----- the table


def test_every_known_model_and_preset_is_in_the_table_at_its_adapted_size():
    from maskedit.models.loading import KNOWN_MODELS

    generator = write_plans()
    assert set(estimates.models()) == set(KNOWN_MODELS)
    for model in KNOWN_MODELS:
        for name in PRESETS:
            entry = estimates.lookup(model, name)
            assert entry is not None, f"{model} / {name} missing: run scripts/write_plans.py"
            preset = generator.adapted_preset(model, name)
            assert (entry["model"], entry["preset"], entry["frames"]) == (model, name, preset.num_frames)
            assert entry["size"] == f"{preset.width}x{preset.height}"
            assert entry["phase_details"]["training step"]["flops"] > 0
            assert entry["phase_details"]["denoising step"]["flops"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model, name", FRESH)
def test_the_table_is_not_stale(model, name):
    """A fresh dry run (the generator's own path) equals the table's entry exactly (10-20 s each): one entry of
    each memory setting recent changes touched — no swap, swapped blocks, fp8, offloaded encoders, two experts."""
    assert write_plans().plan_entry(model, name) == estimates.lookup(model, name)


def test_the_fresh_entries_cover_each_memory_setting():
    settings = [estimates.lookup(model, name)["settings"] for model, name in FRESH]
    assert any(not s["blocks_to_swap"] for s in settings) and any(s["blocks_to_swap"] for s in settings)
    assert any(s["fp8"] for s in settings) and any(s["offload_encoders"] for s in settings)
    assert any(estimates.lookup(m, n)["checks"]["lora_layers"] == 2 * 400 for m, n in FRESH)  # both experts


@pytest.mark.slow
def test_the_utilisation_comes_from_the_published_step_time_and_a_fresh_plan():
    """UTILISATION = the planner's FLOPs for LightX2V's measured setting / (its seconds x the H100's peak)."""
    from maskedit.models.planner import estimate

    calibration = estimates.CALIBRATION
    plan = estimate("full", calibration.num_frames, (calibration.width, calibration.height), DEFAULT_MODEL_ID,
                    train=False, stage2=False, guidance_scale=calibration.guidance_scale)
    assert plan.phases["denoising step"].flops == calibration.planner_flops
    implied = calibration.planner_flops / (calibration.seconds_per_step * CARDS["h100"].bf16_tflops * 1e12)
    assert estimates.UTILISATION == round(implied, 2) == 0.35


def test_estimates_import_no_torch():
    code = "import sys, maskedit.models.estimates; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_table_of_another_format_is_refused(tmp_path, monkeypatch):
    stale = tmp_path / "plans.json"
    stale.write_text(json.dumps({"format": estimates.TABLE_FORMAT + 1, "plans": {}}))
    monkeypatch.setattr(estimates, "PLANS_FILE", stale)
    estimates.load_table.cache_clear()
    try:
        with pytest.raises(ValueError, match="write_plans"):
            estimates.load_table()
    finally:
        estimates.load_table.cache_clear()


# ----- lines and the cheapest fitting preset


def test_summary_line_says_fits_or_not_with_the_table_figure():
    entry = estimates.lookup(DEFAULT_MODEL_ID, "24gb")
    gb = entry["peak_gpu_gib"] * 1024**3 / 1e9
    roomy, tight = math.ceil(gb), math.floor(gb)
    line = estimates.summary_line(DEFAULT_MODEL_ID, "24gb", roomy)
    assert line == (f"needs ≈ {gb:.1f} GB of GPU memory (planner estimate, not yet measured on a GPU); "
                    f"fits your {roomy} GB card")
    short = estimates.summary_line(DEFAULT_MODEL_ID, "24gb", tight)
    assert f"does not fit your {tight} GB card" in short
    better = estimates.cheapest_fitting(DEFAULT_MODEL_ID, tight)
    assert (f"the {better} preset fits" if better else "no preset fits") in short
    assert estimates.summary_line(DEFAULT_MODEL_ID, "24gb") == line.split(";")[0]


def test_the_tiny_model_needs_no_plan_and_says_what_the_real_one_needs():
    line = estimates.summary_line(TINY, "full")
    gb = estimates.lookup(DEFAULT_MODEL_ID, "full")["peak_gpu_gib"] * 1024**3 / 1e9
    assert line.startswith("the tiny model needs no plan") and f"≈ {gb:.1f} GB" in line


@pytest.mark.parametrize("card", sorted(CARDS))
def test_cheapest_fitting_is_the_first_preset_in_order_that_fits(card):
    memory_gb = CARDS[card].memory_gb
    for model in estimates.models():
        chosen = estimates.cheapest_fitting(model, memory_gb)
        order = list(estimates.PRESET_ORDER)
        fitting = [n for n in order if estimates.fits(estimates.lookup(model, n), memory_gb)]
        assert chosen == (fitting[0] if fitting else None)
        if chosen:
            before = order[:order.index(chosen)]
            assert not any(estimates.fits(estimates.lookup(model, n), memory_gb) for n in before)


# ----- the warning before a run (free memory patched: no GPU here)


class _Studio(studio_estimate.Estimates):
    def __init__(self, model_name=DEFAULT_MODEL_ID, is_tiny=False):
        self.model_name, self.is_tiny = model_name, is_tiny
        self.sizer = studio_estimate.CallSizer(model_name)


def test_memory_warning_names_the_preset_that_fits_the_free_memory(monkeypatch):
    entry = estimates.lookup(DEFAULT_MODEL_ID, "full")
    peak = math.ceil(entry["peak_gpu_gib"] * 1024**3)  # the table holds GiB to 3 decimals
    studio = _Studio()
    monkeypatch.setattr(studio_estimate, "free_gpu_bytes", lambda: peak)
    assert studio.memory_warning("full") is None  # exactly enough
    monkeypatch.setattr(studio_estimate, "free_gpu_bytes", lambda: peak - 1)
    warning = studio.memory_warning("full")
    better = estimates.cheapest_fitting(DEFAULT_MODEL_ID, (peak - 1) / 1e9)
    assert better != "full" and warning.startswith("⚠️ the full preset needs ≈")
    assert (f"the {better} preset" if better else "no preset fits") in warning and "Training anyway" in warning
    # settings the table has no figure for, the tiny model, and no CUDA: no warning
    assert studio.memory_warning("full", blocks_to_swap=5) is None
    assert studio.memory_warning("full", fp8=True) is None
    assert _Studio(TINY, is_tiny=True).memory_warning("full") is None
    monkeypatch.setattr(studio_estimate, "free_gpu_bytes", lambda: None)
    assert studio.memory_warning("full") is None


def test_the_studio_warns_with_the_loaded_model_and_the_user_settings(monkeypatch, tmp_path):
    """The app's Studio carries the check (Studio.train adds it to the status notes and trains on)."""
    from maskedit.workflow import session
    from maskedit.studio.service import Studio

    studio = Studio(session.SessionStore(tmp_path), gpu=None, model_name=DEFAULT_MODEL_ID, is_tiny=False)
    monkeypatch.setattr(studio_estimate, "free_gpu_bytes", lambda: 10**9)  # 1 GB free: nothing fits
    warning = studio.memory_warning("24gb", 32, False)
    assert warning is not None and "no preset fits" in warning
    assert studio.memory_warning("24gb", 32, True) is None  # fp8 is not the preset's: no figure for it


def test_on_zerogpu_the_free_memory_is_never_queried(monkeypatch):
    """CUDA must not be touched outside a ZeroGPU call: no live query there, so no warning either."""
    import torch

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("CUDA queried on ZeroGPU"))
    assert studio_estimate.free_gpu_bytes() is None and _Studio().memory_warning("full") is None


def test_estimate_line_for_the_train_tab(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    tiny = _Studio(TINY, is_tiny=True).estimate_line("zerogpu")
    assert tiny.startswith("**Estimate** — the tiny model needs no plan") and "no GPU on this machine" in tiny
    real = _Studio().estimate_line("24gb")
    entry = estimates.lookup(DEFAULT_MODEL_ID, "24gb")
    assert f"24gb on Wan2.1-I2V-14B-480P ({entry['frames']} frames, {entry['size']})" in real
    assert estimates.summary_line(DEFAULT_MODEL_ID, "24gb") in real
    assert _Studio().estimate_line("full") != real  # changes with the preset
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    on_space = _Studio().estimate_line("zerogpu")
    entry = estimates.lookup(DEFAULT_MODEL_ID, "zerogpu")
    training = max(entry["phase_details"][p]["peak_gpu_gib"] for p in studio_estimate.estimates.CALL_PHASES["training"])
    usable = zerogpu.usable_bytes("large") / 1e9
    assert f"training calls: large (≈ {training * 1024**3 / 1e9:.1f} of {usable:.1f} GB planned at most)" in on_space
    large, xlarge = zerogpu.SIZES["large"].memory_gb, zerogpu.SIZES["xlarge"].memory_gb
    assert "renders: large" in on_space and f"ZeroGPU: {large:g} GB per call ({xlarge:g} GB, at 2x" in on_space
    assert "training calls: xlarge" in _Studio().estimate_line("full")


def test_a_local_folder_of_a_known_base_uses_its_hub_figures():
    assert studio_estimate.table_model("/models/Wan2.1-I2V-14B-720P-Diffusers") == \
        "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
    assert studio_estimate.table_model(TINY) is None and studio_estimate.table_model(None) is None


# ----- ZeroGPU durations from the table's FLOPs


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_training_call_duration_comes_from_the_table_flops(preset):
    for model in estimates.models():
        entry = estimates.lookup(model, preset)
        size = studio_estimate.CallSizer(model).size("training", preset)
        step_s = studio_estimate.training_step_seconds(model, preset, size)
        flops = entry["phase_details"]["training step"]["flops"]
        assert step_s == pytest.approx(flops / rate(size), rel=1e-12)
        fits = studio_estimate.TRAIN_CALL_OVERHEAD_S + 1.5 * step_s <= zerogpu.CALL_LIMIT_S
        if not fits:
            with pytest.raises(MaskEditError, match="more than one ZeroGPU call allows"):
                studio_estimate.training_call_seconds(110, step_s)
            continue
        needed = int(max(110, 1.5 * step_s) + studio_estimate.TRAIN_CALL_OVERHEAD_S)
        assert studio_estimate.training_call_seconds(110, step_s) == needed <= zerogpu.CALL_LIMIT_S
        request = ChunkRequest("p", "c", "a box", None, "p3rs0n", model, budget_s=110, step_s=step_s, gpu_size=size)
        assert request.duration_s == asked(needed, size)


def test_the_zerogpu_preset_trains_within_a_large_call_on_every_known_model():
    for model in estimates.models():
        step_s = studio_estimate.training_step_seconds(model, "zerogpu", "large")
        assert studio_estimate.training_call_seconds(110, step_s) <= zerogpu.CALL_LIMIT_S


def test_the_tiny_model_keeps_its_small_durations(tmp_path):
    request = ChunkRequest("p", "c", "a box", None, "p3rs0n", TINY, budget_s=5)
    assert request.needed_s == 5 + studio_estimate.TRAIN_CALL_OVERHEAD_S and request.duration_s == asked(45)
    assert studio_estimate.generation_call_seconds(TINY, tmp_path, GenerateSettings(steps=4)) == asked(30 + 4 * 6)
    assert studio_estimate.generation_call_seconds(None, tmp_path, GenerateSettings(steps=4), "xlarge") == 30 + 4 * 6


def prepared_folder(tmp_path, entry):
    from maskedit.workflow.prepare import PREPARED_JSON

    width, height = (int(v) for v in entry["size"].split("x"))
    folder = tmp_path / entry["preset"]
    folder.mkdir(exist_ok=True)
    (folder / PREPARED_JSON).write_text(json.dumps({"frames": entry["frames"], "width": width, "height": height,
                                                    "fps": 16.0}))
    return folder


def planned_render_seconds(entry, steps, size):
    """A render's seconds written out from the plan: overhead + (encodes + decode + steps x denoising) / rate."""
    details = entry["phase_details"]
    fixed = (details["encode prompts/images"]["flops"] + details["VAE decode"]["flops"]) / rate(size)
    per_step = details["denoising step"]["flops"] / rate(size)
    return studio_estimate.GENERATION_CALL_OVERHEAD_S + fixed + steps * per_step, fixed, per_step


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", zerogpu.GPU_SIZES)
def test_generation_call_duration_comes_from_the_table_flops(preset, size, tmp_path):
    entry = estimates.lookup(DEFAULT_MODEL_ID, preset)
    folder = prepared_folder(tmp_path, entry)
    steps, guidance = entry["settings"]["generation_steps"], entry["settings"]["guidance_scale"]
    settings = GenerateSettings(steps=steps, guidance_scale=guidance)
    expected, fixed, per_step = planned_render_seconds(entry, steps, size)
    if expected > zerogpu.CALL_LIMIT_S:
        with pytest.raises(MaskEditError, match="more than one ZeroGPU call allows") as excinfo:
            studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, settings, size)
        fitting = int((zerogpu.CALL_LIMIT_S - studio_estimate.GENERATION_CALL_OVERHEAD_S - fixed) // per_step)
        if fitting >= 1:
            assert f"at most {fitting} steps" in str(excinfo.value)
            fewer = GenerateSettings(steps=fitting, guidance_scale=guidance)
            assert studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, fewer, size) <= \
                zerogpu.CALL_LIMIT_S
        return
    seconds = studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, settings, size)
    assert seconds == asked(expected, size)
    assert zerogpu.scheduled_seconds(seconds, size) >= expected  # scheduled for at least what it needs


def test_the_zerogpu_preset_renders_within_a_large_call(tmp_path):
    for model in estimates.models():
        entry = estimates.lookup(model, "zerogpu")
        settings = GenerateSettings(steps=entry["settings"]["generation_steps"],
                                    guidance_scale=entry["settings"]["guidance_scale"])
        seconds = studio_estimate.generation_call_seconds(model, prepared_folder(tmp_path, entry), settings)
        assert asked(studio_estimate.GENERATION_CALL_OVERHEAD_S) < seconds
        assert zerogpu.scheduled_seconds(seconds, "large") <= zerogpu.CALL_LIMIT_S


def test_the_app_duration_functions_follow_the_plan(tmp_path, monkeypatch):
    """app.py's duration functions against the seconds written out from the plan's FLOPs (not the helpers)."""
    import app

    entry = estimates.lookup(DEFAULT_MODEL_ID, "zerogpu")
    folder = prepared_folder(tmp_path, entry)
    settings = GenerateSettings(steps=4, guidance_scale=1.0)

    class Loaded:
        class model:
            name = DEFAULT_MODEL_ID

    monkeypatch.setattr(app, "RUNTIME", Loaded)
    for size in zerogpu.GPU_SIZES:
        expected, _, _ = planned_render_seconds(entry, 4, size)
        assert app._generation_duration(folder, None, "", tmp_path, settings, gpu_size=size) == asked(expected, size)
        step_s = entry["phase_details"]["training step"]["flops"] / rate(size)
        request = ChunkRequest("p", "c", "a box", None, "p3rs0n", DEFAULT_MODEL_ID, budget_s=5, step_s=step_s,
                               gpu_size=size)
        needed = int(max(5, 1.5 * step_s) + studio_estimate.TRAIN_CALL_OVERHEAD_S)
        assert app._train_duration(request) == asked(needed, size)


def test_a_render_whose_steps_are_partly_skipped_asks_for_the_evaluations_it_runs(tmp_path):
    """The hook for step caching: only the denoising steps whose transformer passes run are timed."""
    entry = estimates.lookup(DEFAULT_MODEL_ID, "zerogpu")
    folder = prepared_folder(tmp_path, entry)
    cached = studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, GenerateSettings(steps=8, guidance_scale=1.0),
                                                     evaluations=3)
    expected, _, _ = planned_render_seconds(entry, 3, "large")
    assert cached == asked(expected) < studio_estimate.generation_call_seconds(
        DEFAULT_MODEL_ID, folder, GenerateSettings(steps=8, guidance_scale=1.0))
