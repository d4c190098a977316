"""ZeroGPU's hardware is stated in one place (`maskedit.models.zerogpu`), agrees with the `spaces` package the
tests pin, and every GPU call of the app takes the size its plan needs: `large` when the planned peak fits half
a card with the margin, `xlarge` when only a whole card holds it, refused (naming the preset that fits) when
neither does. Expected sizes are recomputed here from the table's phase figures, never from the sizer."""

import importlib.resources
import json
import re
import subprocess
from pathlib import Path

import pytest

from maskedit.errors import MaskEditError
from maskedit.models import estimates, zerogpu
from maskedit.models.cards import CARDS
from maskedit.models.zerogpu import card_names, get_card
from maskedit.models.presets import PRESETS
from maskedit.studio.estimate import PERCEPTION_WORK_BYTES, CallSizer

ROOT = Path(__file__).resolve().parent.parent
WAN21_480P, WAN21_720P, WAN22 = ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
                                 "Wan-AI/Wan2.2-I2V-A14B-Diffusers")
GIB = 1024**3


# ----- the data and its sources


def spaces_configs() -> list[dict]:
    return json.loads(importlib.resources.files("spaces.zero").joinpath("configs.json").read_text())


def test_the_card_and_the_duration_factors_are_those_of_the_installed_spaces():
    card = next((c for c in spaces_configs() if c["model"] == zerogpu.SPACES_CARD_MODEL), None)
    assert card is not None, f"spaces' configs.json has no {zerogpu.SPACES_CARD_MODEL!r}"
    assert zerogpu.CARD.name == card["model"] and card["sm_count"] == 188
    assert zerogpu.SIZES["large"].duration_factor == card["duration_factor"]
    client = importlib.resources.files("spaces.zero").joinpath("client.py").read_text()
    assert "if gpu_size != 'xlarge':\n        duration_seconds *= zerogpu_config['duration_factor']" in client
    assert zerogpu.SIZES["xlarge"].duration_factor == 1.0  # xlarge durations are not scaled
    # the documented sizes: half and all of the card, the half no more than spaces' own figure for the card
    assert zerogpu.SIZES["xlarge"].memory_gb == 2 * zerogpu.SIZES["large"].memory_gb
    assert 2 * zerogpu.SIZES["large"].memory_gb * 1e9 <= card["memory"]
    assert [s.compute_share for s in zerogpu.SIZES.values()] == [0.5, 1.0]
    assert [s.quota_factor for s in zerogpu.SIZES.values()] == [1, 2]


def test_the_call_sizes_are_cards_the_planner_and_its_command_take():
    for size in zerogpu.GPU_SIZES:
        card = get_card(f"zerogpu-{size}")
        assert card.memory_gb == zerogpu.SIZES[size].memory_gb
        assert card.bf16_tflops == zerogpu.CARD.bf16_tflops * zerogpu.SIZES[size].compute_share
        assert f"zerogpu-{size}" in card_names()
    assert get_card("zerogpu-large").bf16_tflops == CARDS["rtx-pro-6000-server"].bf16_tflops / 2
    with pytest.raises(MaskEditError, match="zerogpu-xlarge"):
        get_card("zerogpu-medium")


def test_durations_asked_are_scheduled_for_at_least_what_is_needed():
    for size in zerogpu.GPU_SIZES:
        for needed in (1, 45, 100, 149, 150, 151, 299.5):
            asked = zerogpu.asked_seconds(needed, size)
            assert zerogpu.scheduled_seconds(asked, size) >= needed
            assert zerogpu.scheduled_seconds(asked - 1, size) < needed or asked == 1
    assert zerogpu.asked_seconds(150, "large") == 100 and zerogpu.asked_seconds(150, "xlarge") == 150


# ----- no other place states ZeroGPU's hardware


ZEROGPU_CONTEXT = re.compile(r"zerogpu|zero-gpu|\bslice\b|`x?large`|\bx?large\b (call|size|slice)", re.I)
STALE = [re.compile(p) for p in (r"H200", r"\b70\s?GB", r"\b141\s?GB", r"PyTorch 2\.1\b", r"2\.1\s?[–-]\s?2\.8")]
MEMORY = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?GB\b")
COMPUTE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?TFLOPS\b")
CALL_MEMORY = re.compile(r"\bof (\d+(?:\.\d+)?)\s?GB\b|(\d+(?:\.\d+)?)\s?GB (?:per|a) call\b")
OWN = {"maskedit/models/zerogpu.py", "tests/test_zerogpu_hardware.py"}


def documented_sizes() -> set[float]:
    """The memory figures a document may give a ZeroGPU call: each size's, and what a call may plan to use."""
    return {size.memory_gb for size in zerogpu.SIZES.values()} | \
        {round(zerogpu.usable_bytes(name) / 1e9, 1) for name in zerogpu.GPU_SIZES}


def statements(path: str, text: str) -> list[str]:
    """Lines of `path` that state ZeroGPU's hardware anywhere but its one place: a stale fact (an H200, 70/141 GB,
    the old torch range) beside a ZeroGPU word, and in code any GB/TFLOPS figure beside one (code reads the data)."""
    found = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        context = " ".join(lines[max(0, number - 1):number + 2])  # a statement may wrap
        if not ZEROGPU_CONTEXT.search(line) and not (ZEROGPU_CONTEXT.search(context) and
                                                     any(p.search(line) for p in STALE)):
            continue
        if any(p.search(line) for p in STALE):
            found.append(f"{path}:{number + 1}: {line.strip()}")
        elif path.endswith(".py") and (MEMORY.search(line) or COMPUTE.search(line)):
            found.append(f"{path}:{number + 1}: {line.strip()}")
        elif any(float(a or b) not in documented_sizes() for a, b in CALL_MEMORY.findall(line)):
            found.append(f"{path}:{number + 1}: {line.strip()}")  # a document's figure of a call's memory
    return found


def test_the_detector_finds_the_old_statements():
    assert statements("README.md", "memory (`large` is half an H200, 70 GB)")
    assert statements("x.py", '    return 70.0, "ZeroGPU: 70 GB per call"')
    assert statements("x.py", 'ZEROGPU_MEMORY_GB = {"large": 48.0}  # 48 GB') and \
        statements("x.py", "# a ZeroGPU large call: 240 TFLOPS")
    assert statements("pre-requirements.txt", "torch==2.8.0  # ZeroGPU lists PyTorch 2.1-2.8")
    assert statements("RESULTS.md", "on one call's GPU (ZeroGPU's large slice is\nhalf an H200)")
    assert not statements("RESULTS.md", "LightX2V on an H200: 366 s for 40 steps")  # a card, not ZeroGPU
    assert statements("README.md", "| base | peak (of 70 GB) on ZeroGPU |")
    assert statements("README.md", "ZeroGPU gives 40 GB per call")
    assert not statements("README.md", "| base | largest phase (of 48 GB) on ZeroGPU |")
    assert not statements("x.py", 'f"ZeroGPU: {large.memory_gb:g} GB per call"')


def test_no_other_file_states_zerogpu_memory_or_compute():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for path in tracked:
        if path in OWN or not path.endswith((".py", ".md", ".txt", ".toml", ".ini", ".cfg", ".yml", ".yaml")):
            continue
        found += statements(path, (ROOT / path).read_text(errors="replace"))
    assert not found, "ZeroGPU's hardware is stated outside maskedit/models/zerogpu.py:\n" + "\n".join(found)


# ----- the size each kind of call takes, from its plan


def planned_peak(entry: dict, phases, extra: int = 0) -> float:
    return max(entry["phase_details"][p]["peak_gpu_gib"] for p in phases if p in entry["phase_details"]) * GIB + extra


def expected_size(peak: float) -> str | None:
    """The rule, written out: large if ≤ (1 − margin) x 48 GB, else xlarge if ≤ (1 − margin) x 96 GB."""
    for size in ("large", "xlarge"):
        if peak <= zerogpu.SIZES[size].memory_gb * 1e9 * (1 - zerogpu.MEMORY_MARGIN):
            return size
    return None


TRAINING = ("encode prompts/images", "VAE encode", "training step")
GENERATION = ("encode prompts/images", "VAE encode", "denoising step", "VAE decode")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_kind_of_call_takes_the_size_its_plan_needs(preset):
    extra = 2 * 10**9  # a segmenter's and a captioner's weights moved to the GPU at start-up
    for model in estimates.models():
        entry = estimates.lookup(model, preset)
        sizer = CallSizer(model, extra_bytes=extra)
        speed = 0 if entry["settings"]["speed_lora"] else entry["checks"]["speed_lora_gpu_bytes"]
        for kind, peak in (("training", planned_peak(entry, TRAINING, extra)),
                           ("generation", planned_peak(entry, GENERATION, extra)),
                           ("preview", planned_peak(entry, GENERATION, extra) + speed),
                           ("segmentation", entry["checks"]["resident_gpu_bytes"] + PERCEPTION_WORK_BYTES + extra),
                           ("caption", entry["checks"]["resident_gpu_bytes"] + PERCEPTION_WORK_BYTES + extra)):
            assert sizer.peak_bytes(kind, preset) == int(peak)
            if expected_size(peak) is None:
                with pytest.raises(MaskEditError, match="more than a ZeroGPU call holds"):
                    sizer.size(kind, preset)
            else:
                assert sizer.size(kind, preset) == expected_size(peak), (model, preset, kind)


def test_the_zerogpu_preset_fits_a_large_call_on_every_base_and_full_needs_a_whole_card():
    assert set(estimates.models()) == {WAN21_480P, WAN21_720P, WAN22}
    for model in estimates.models():
        entry = estimates.lookup(model, "zerogpu")
        assert expected_size(planned_peak(entry, TRAINING + GENERATION) + 2 * 10**9) == "large", model
        sizer = CallSizer(model, extra_bytes=2 * 10**9)
        assert {sizer.size(kind, "zerogpu") for kind in ("training", "generation", "preview", "segmentation",
                                                          "caption")} == {"large"}
        assert sizer.size("training", "full") == "xlarge"  # 14B in bf16 with every block resident


def test_with_a_start_up_placement_every_call_follows_its_plan():
    placed = CallSizer(WAN21_480P, placement="zerogpu")
    assert placed.size("training", "full") == "large"  # the weights every call holds are the placement's
    assert placed.peak_bytes("generation", None) == CallSizer(WAN21_480P).peak_bytes("generation", "zerogpu")


def test_no_plan_means_large_and_a_stand_in_plans_for_the_tiny_model(monkeypatch):
    monkeypatch.delenv("MASKEDIT_PLAN_MODEL", raising=False)
    assert CallSizer("tiny").size("training", "full") == "large" and CallSizer(None).size("caption") == "large"
    monkeypatch.setenv("MASKEDIT_PLAN_MODEL", WAN21_480P)
    assert CallSizer("tiny").size("training", "full") == "xlarge"
    assert CallSizer("tiny").size("training", "zerogpu") == "large"


def test_a_call_no_size_holds_is_refused_naming_the_preset_that_fits(monkeypatch):
    real = estimates.lookup

    def lookup(model, preset):
        entry = real(model, preset)
        if preset != "full" or entry is None:
            return entry
        huge = json.loads(json.dumps(entry))
        huge["phase_details"]["training step"]["peak_gpu_gib"] = 120e9 / GIB  # no ZeroGPU call holds 120 GB
        return huge

    monkeypatch.setattr(estimates, "lookup", lookup)
    with pytest.raises(MaskEditError) as excinfo:
        CallSizer(WAN21_480P).size("training", "full")
    message = str(excinfo.value)
    assert "this training call needs ≈ 120.0 GB" in message and "xlarge" in message
    cheapest = next(name for name in estimates.PRESET_ORDER if name != "full" and
                    expected_size(planned_peak(real(WAN21_480P, name), TRAINING)) == "large")
    assert f"the {cheapest} preset needs ≈" in message and "fits a large call" in message
