"""Presets (maskedit.models.presets): every setting in one frozen dataclass, described, looked up by name."""

import dataclasses

import pytest

from maskedit.errors import MaskEditError
from maskedit.models.presets import DEFAULT_PRESET, NUM_BLOCKS_14B, PRESETS, Preset, get_preset
from maskedit.method.training import TrainConfig


def test_the_four_presets_exist_and_are_frozen():
    assert list(PRESETS) == ["full", "24gb", "low-cost", "zerogpu"]
    assert DEFAULT_PRESET == "full"
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["full"].train_steps = 3


def test_full_is_method_md():
    full, defaults = get_preset("full"), TrainConfig()
    assert (full.num_frames, full.width, full.height) == (49, 832, 480)
    assert (full.train_steps, full.learning_rate, full.rank, full.alpha) == (
        defaults.steps, defaults.learning_rate, defaults.rank, defaults.alpha) == (100, 1e-4, 16, 16.0)
    assert (full.generation_steps, full.guidance_scale, full.flow_shift, full.lora_scale) == (30, 5.0, 5.0, 1.0)
    assert full.window == 0 and full.blocks_to_swap == 0 and not full.fp8 and full.speed_lora is None


def test_low_cost_and_zerogpu_settings():
    low = get_preset("low-cost")
    assert (low.window, low.window_stride, low.blocks_to_swap, low.blocks_resident) == (9, 4, 38, 2)
    assert low.fp8 and low.gradient_checkpointing and low.activation_offload and low.target_peak_gb == 8.0
    zero = get_preset("zerogpu")
    assert zero.num_frames < 49 and zero.width * zero.height < 832 * 480 and zero.train_steps < 100
    assert zero.speed_lora and zero.guidance_scale == 1.0 and zero.generation_steps <= 8 and zero.cfg_distilled
    assert not zero.compile and zero.gpu_seconds == 180
    assert zero.fp8 and zero.offload_encoders and not zero.blocks_to_swap  # fits ZeroGPU's `large` size
    assert get_preset("24gb").blocks_to_swap + get_preset("24gb").blocks_resident == NUM_BLOCKS_14B


def test_describe_lists_every_setting():
    for preset in PRESETS.values():
        text = preset.describe()
        assert text.startswith(f"preset {preset.name}:")
        for needle in (f"{preset.num_frames} frames", f"{preset.width}x{preset.height}", f"{preset.train_steps} steps",
                       f"rank {preset.rank}", f"{preset.blocks_to_swap} swapped", "fp8", "checkpointing",
                       f"{preset.generation_steps} steps", f"CFG {preset.guidance_scale:g}", "flow shift",
                       "speed LoRA", "attention", "compile", "VAE tiling"):
            assert needle in text, (preset.name, needle)
    assert "window 9 frames, stride 4" in get_preset("low-cost").describe()
    assert "not yet measured on a GPU" in get_preset("low-cost").describe()


def test_get_preset_names_and_errors():
    assert get_preset("LOW_COST") is PRESETS["low-cost"]
    assert get_preset(" 24gb ") is PRESETS["24gb"]
    for bad in ("fast", "", None):
        with pytest.raises(MaskEditError, match="unknown preset"):
            get_preset(bad)


def test_train_config_and_overrides():
    config = get_preset("low-cost").train_config(seed=5)
    assert isinstance(config, TrainConfig)
    assert (config.blocks_to_swap, config.fp8, config.activation_offload, config.seed) == (38, True, True, 5)
    assert config.checkpointing
    custom = get_preset("full").with_overrides(train_steps=10, window=None)
    assert custom.train_steps == 10 and custom.window == 0
    with pytest.raises(MaskEditError, match="unknown preset settings"):
        get_preset("full").with_overrides(stepz=3)


@pytest.mark.parametrize("bad", [dict(num_frames=48), dict(width=830), dict(window=8), dict(window=53),
                                 dict(blocks_to_swap=40), dict(activation_offload=True), dict(rank=0)])
def test_invalid_presets_are_refused(bad):
    with pytest.raises(MaskEditError):
        Preset(name="x", summary="y", **bad)


def _parsed(*argv):
    from maskedit.interfaces.cli.main import _apply_preset, build_parser

    args = build_parser().parse_args(list(argv))
    _apply_preset(args)
    return args


def test_cli_options_default_to_the_preset_and_explicit_ones_win():
    base = ["edit", "--video", "v.mp4", "--box", "0,0,8,8", "--edited-frame", "e.png", "--edit-prompt", "p", "--out", "o"]
    full = _parsed(*base)
    assert (full.train_steps, full.lr, full.rank, full.gen_steps, full.cfg, full.shift) == (100, 1e-4, 16, 30, 5.0, 5.0)
    assert full.frames is None and full.width is None  # without --preset the clip keeps its own frames and size
    assert (full.window, full.blocks_to_swap, full.fp8, full.speed_lora) == (0, 0, False, None)
    zero = _parsed(*base, "--preset", "zerogpu", "--gen-steps", "6", "--no-fp8")
    assert (zero.frames, zero.width, zero.height) == (33, 640, 368)
    assert (zero.train_steps, zero.window, zero.window_stride, zero.cfg) == (60, 9, 4, 1.0)
    assert zero.gen_steps == 6 and zero.speed_lora == get_preset("zerogpu").speed_lora
    low = _parsed(*base, "--preset", "low-cost", "--fp8", "--blocks-to-swap", "20", "--speed-lora", "none")
    assert (low.blocks_to_swap, low.fp8, low.activation_offload, low.window) == (20, True, True, 9)
    assert low.speed_lora is None
    gen = _parsed("generate", "--prepared", "p", "--edited-frame", "e.png", "--edit-prompt", "p", "--out", "o",
                  "--preset", "zerogpu", "--attention", "native")
    assert gen.attention == "native" and gen.gen_steps == 4 and gen.blocks_to_swap == 0


def test_cli_lists_the_presets(capsys):
    from maskedit.interfaces.cli.main import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for preset in PRESETS.values():
        assert preset.describe() in out


def test_encoder_offload_is_a_memory_option_of_the_presets_the_config_and_the_cli():
    assert [name for name, p in PRESETS.items() if p.offload_encoders] == ["24gb", "low-cost", "zerogpu"]
    assert get_preset("24gb").train_config().offload_encoders and not get_preset("full").train_config().offload_encoders
    assert "encoders in CPU memory while idle" in get_preset("24gb").describe()
    assert "encoders on the GPU" in get_preset("full").describe()
    base = ["edit", "--video", "v.mp4", "--box", "0,0,8,8", "--edited-frame", "e.png", "--edit-prompt", "p", "--out", "o"]
    assert _parsed(*base, "--preset", "24gb").offload_encoders is True
    assert _parsed(*base, "--preset", "24gb", "--no-offload-encoders").offload_encoders is False
    assert _parsed(*base, "--offload-encoders").offload_encoders is True and _parsed(*base).offload_encoders is False
    gen = _parsed("generate", "--prepared", "p", "--edited-frame", "e.png", "--edit-prompt", "p", "--out", "o",
                  "--preset", "low-cost")
    assert gen.offload_encoders is True

    from maskedit.interfaces.cli.main import _train_config
    from maskedit.method.training import run_settings

    config = _train_config(_parsed(*base, "--preset", "24gb"))
    assert config.offload_encoders and "offload_encoders" not in run_settings(config)  # same results: not in the key
