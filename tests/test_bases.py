"""Bases (maskedit.models.bases): which base a model is, the sizes it offers, presets adapted to it."""

import pytest

from maskedit.models.bases import (
    BASES, TINY_WAN22_BASE, WAN21_480P, WAN21_720P, WAN22_A14B, adapt_preset, base_for_name, base_for_pipeline,
    sizes_for_base,
)
from maskedit.models.loading import (
    DEFAULT_MODEL_ID, WAN21_720P_MODEL_ID, WAN22_I2V_MODEL_ID, build_tiny_two_expert_pipeline, load_pipeline,
    save_tiny_pipeline,
)
from maskedit.models.presets import PRESETS, get_preset


def test_hub_ids_name_their_bases():
    assert base_for_name(DEFAULT_MODEL_ID) is WAN21_480P
    assert base_for_name(WAN21_720P_MODEL_ID) is WAN21_720P
    assert base_for_name(WAN22_I2V_MODEL_ID) is WAN22_A14B and WAN22_A14B.two_experts
    assert base_for_name("tiny-wan2.2") is TINY_WAN22_BASE


def test_a_720p_folder_loads_like_480p_and_offers_720p_sizes(tmp_path):
    folder = tmp_path / "Wan2.1-I2V-14B-720P-Diffusers"
    save_tiny_pipeline(folder)
    loaded = load_pipeline(str(folder), device="cpu")
    base = base_for_pipeline(loaded.pipe, loaded.name)
    assert base is WAN21_720P
    assert sizes_for_base(base)[:2] == [(1280, 720), (720, 1280)]
    assert "1280x720" in base.banner()


def test_a_two_expert_pipeline_is_wan22_whatever_its_folder_is_called():
    pipe = build_tiny_two_expert_pipeline()
    assert base_for_pipeline(pipe, "/models/my-folder") is WAN22_A14B
    assert base_for_pipeline(pipe, "tiny-wan2.2") is TINY_WAN22_BASE
    assert "two experts (boundary 0.9)" in WAN22_A14B.banner()


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_adapt_their_size_to_the_base(name):
    preset = get_preset(name)
    assert adapt_preset(preset, WAN21_480P) == preset
    on_720p = adapt_preset(preset, WAN21_720P)
    if (preset.width, preset.height) == (832, 480):
        assert (on_720p.width, on_720p.height) == (1280, 720)
    else:  # a budget size (zerogpu) stays
        assert (on_720p.width, on_720p.height) == (preset.width, preset.height)
    assert adapt_preset(preset.with_overrides(width=480, height=832), WAN21_720P).width == 720
    assert (adapt_preset(preset, WAN22_A14B).width, adapt_preset(preset, WAN22_A14B).height) == (preset.width, preset.height)
    # two experts each keep their resident blocks on the GPU: half as many each (24gb: 8 → 4 + 4)
    assert adapt_preset(get_preset("24gb"), WAN22_A14B).blocks_resident == 4
    assert adapt_preset(get_preset("low-cost"), WAN22_A14B).blocks_resident == 1
    assert adapt_preset(get_preset("full"), WAN22_A14B).blocks_to_swap == 0
    # the tiny two-expert model keeps the size and blocks, and takes Wan2.2's training distribution and guidance
    from maskedit.models.bases import two_expert_defaults

    assert adapt_preset(get_preset("24gb"), TINY_WAN22_BASE) == two_expert_defaults(get_preset("24gb"))


def test_every_base_offers_sizes_valid_for_a_preset():
    for base in BASES.values():
        for width, height in sizes_for_base(base):
            get_preset("full").with_overrides(width=width, height=height)  # multiples of 16: accepted
