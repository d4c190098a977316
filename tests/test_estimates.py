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

from maskedit.models import estimates
from maskedit.models.cards import CARDS
from maskedit.defaults import DEFAULT_MODEL_ID, TINY
from maskedit.errors import MaskEditError
from maskedit.models.presets import PRESETS, GenerateSettings
from maskedit.studio import estimate as studio_estimate
from maskedit.studio.runs import ChunkRequest

ROOT = Path(__file__).resolve().parents[1]
QUICKEST = (DEFAULT_MODEL_ID, "zerogpu")  # 33 frames of 640x368: the quickest preset to dry-run


def write_plans():
    """scripts/write_plans.py as a module (the generator the table came from)."""
    spec = importlib.util.spec_from_file_location("write_plans", ROOT / "scripts" / "write_plans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rate(share=1.0):
    """FLOP/s the duration functions assume on a ZeroGPU call with `share` of the card."""
    return estimates.ZEROGPU_CARD.bf16_tflops * 1e12 * share * estimates.ASSUMED_UTILISATION


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


def test_the_table_is_not_stale():
    """A fresh dry run (the generator's own path) equals the table's entry exactly (takes tens of seconds)."""
    model, name = QUICKEST
    assert write_plans().plan_entry(model, name) == estimates.lookup(model, name)


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
    memory = estimates.ZEROGPU_MEMORY_GB[studio_estimate.zerogpu_size("zerogpu", False)]
    assert estimates.summary_line(DEFAULT_MODEL_ID, "zerogpu", memory) in on_space and "ZeroGPU" in on_space


def test_a_local_folder_of_a_known_base_uses_its_hub_figures():
    assert studio_estimate.table_model("/models/Wan2.1-I2V-14B-720P-Diffusers") == \
        "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
    assert studio_estimate.table_model(TINY) is None and studio_estimate.table_model(None) is None


# ----- ZeroGPU durations from the table's FLOPs


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_training_call_duration_comes_from_the_table_flops(preset):
    for model in estimates.models():
        entry = estimates.lookup(model, preset)
        size = studio_estimate.zerogpu_size(preset, False)
        step_s = studio_estimate.training_step_seconds(model, preset, size)
        flops = entry["phase_details"]["training step"]["flops"]
        assert step_s == pytest.approx(flops / rate(estimates.ZEROGPU_COMPUTE_SHARE[size]), rel=1e-12)
        fits = studio_estimate.TRAIN_CALL_OVERHEAD_S + 1.5 * step_s <= estimates.ZEROGPU_CALL_LIMIT_S
        if not fits:
            with pytest.raises(MaskEditError, match="more than one ZeroGPU call allows"):
                studio_estimate.training_call_seconds(110, step_s)
            continue
        seconds = studio_estimate.training_call_seconds(110, step_s)
        assert seconds == int(max(110, 1.5 * step_s) + studio_estimate.TRAIN_CALL_OVERHEAD_S)
        assert seconds <= estimates.ZEROGPU_CALL_LIMIT_S


def test_the_zerogpu_preset_trains_within_a_call_on_every_known_model():
    for model in estimates.models():
        step_s = studio_estimate.training_step_seconds(model, "zerogpu", "large")
        assert studio_estimate.training_call_seconds(110, step_s) <= estimates.ZEROGPU_CALL_LIMIT_S


def test_the_tiny_model_keeps_its_small_durations(tmp_path):
    request = ChunkRequest("p", "c", "a box", None, "p3rs0n", TINY, budget_s=5)
    assert request.duration_s == 5 + studio_estimate.TRAIN_CALL_OVERHEAD_S
    assert studio_estimate.generation_call_seconds(TINY, tmp_path, GenerateSettings(steps=4)) == 30 + 4 * 6
    assert studio_estimate.generation_call_seconds(None, tmp_path, GenerateSettings(steps=4)) == 30 + 4 * 6


def prepared_folder(tmp_path, entry):
    from maskedit.workflow.prepare import PREPARED_JSON

    width, height = (int(v) for v in entry["size"].split("x"))
    folder = tmp_path / entry["preset"]
    folder.mkdir()
    (folder / PREPARED_JSON).write_text(json.dumps({"frames": entry["frames"], "width": width, "height": height,
                                                    "fps": 16.0}))
    return folder


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_generation_call_duration_comes_from_the_table_flops(preset, tmp_path):
    entry = estimates.lookup(DEFAULT_MODEL_ID, preset)
    folder = prepared_folder(tmp_path, entry)
    steps, guidance = entry["settings"]["generation_steps"], entry["settings"]["guidance_scale"]
    settings = GenerateSettings(steps=steps, guidance_scale=guidance)
    details = entry["phase_details"]
    share = estimates.ZEROGPU_COMPUTE_SHARE["large"]
    fixed = (details["encode prompts/images"]["flops"] + details["VAE decode"]["flops"]) / rate(share)
    per_step = details["denoising step"]["flops"] / rate(share)
    expected = studio_estimate.GENERATION_CALL_OVERHEAD_S + fixed + steps * per_step
    if expected > estimates.ZEROGPU_CALL_LIMIT_S:
        with pytest.raises(MaskEditError, match="more than one ZeroGPU call allows") as excinfo:
            studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, settings)
        fitting = int((estimates.ZEROGPU_CALL_LIMIT_S - studio_estimate.GENERATION_CALL_OVERHEAD_S - fixed) // per_step)
        if fitting >= 1:
            assert f"at most {fitting} steps" in str(excinfo.value)
            fewer = GenerateSettings(steps=fitting, guidance_scale=guidance)
            assert studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, fewer) <= \
                estimates.ZEROGPU_CALL_LIMIT_S
        return
    seconds = studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, settings)
    assert seconds == int(expected) + 1 and seconds <= estimates.ZEROGPU_CALL_LIMIT_S


def test_the_zerogpu_preset_renders_within_a_call(tmp_path):
    entry = estimates.lookup(DEFAULT_MODEL_ID, "zerogpu")
    settings = GenerateSettings(steps=entry["settings"]["generation_steps"],
                                guidance_scale=entry["settings"]["guidance_scale"])
    seconds = studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, prepared_folder(tmp_path, entry), settings)
    assert studio_estimate.GENERATION_CALL_OVERHEAD_S < seconds <= estimates.ZEROGPU_CALL_LIMIT_S


def test_the_app_duration_functions_use_the_estimates(tmp_path, monkeypatch):
    import app

    entry = estimates.lookup(DEFAULT_MODEL_ID, "zerogpu")
    folder = prepared_folder(tmp_path, entry)
    settings = GenerateSettings(steps=4, guidance_scale=1.0)

    class Loaded:
        class model:
            name = DEFAULT_MODEL_ID

    monkeypatch.setattr(app, "RUNTIME", Loaded)
    assert app._generation_duration(folder, None, "", tmp_path, settings) == \
        studio_estimate.generation_call_seconds(DEFAULT_MODEL_ID, folder, settings)
    step_s = studio_estimate.training_step_seconds(DEFAULT_MODEL_ID, "zerogpu", "large")
    request = ChunkRequest("p", "c", "a box", None, "p3rs0n", DEFAULT_MODEL_ID, budget_s=5, step_s=step_s)
    assert app._train_duration(request) == studio_estimate.training_call_seconds(5, step_s)
