"""The reference code's settings as the method's defaults (issue 26): its English negative prompt (Wan's selectable,
recorded in lora.json), the library's caption rule (never the edit's caption), the trigger typed as the reference's
prefix, the preview's report, the CLI help of feature-blend, and Wan2.2's own defaults (the shifted timestep
distribution inside each expert's σ range, CFG 3.5 / 3.5)."""

import json
import math

import numpy as np
import pytest
import torch

from maskedit.defaults import (REFERENCE_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT, negative_prompt_name,
                               negative_prompt_text)
from maskedit.errors import MaskEditError
from maskedit.interfaces.cli import main as cli
from maskedit.method.conditioning import compose_prompt
from maskedit.method.training import TrainConfig
from maskedit.models.bases import TINY_WAN22_BASE, WAN21_480P, WAN22_A14B, adapt_preset
from maskedit.models.presets import PRESETS, GenerateSettings, get_preset
from maskedit.workflow import generate, train


@pytest.fixture(scope="module")
def clip(prepared_edit):
    return prepared_edit


def negative_prompts_seen(pipe) -> list:
    """Spy on the pipe's prompt encoding: the negative prompts it is asked to encode."""
    seen, original = [], pipe.encode_prompt

    def spy(*args, **kwargs):
        seen.append(kwargs.get("negative_prompt", args[1] if len(args) > 1 else None))
        return original(*args, **kwargs)

    pipe.encode_prompt = spy
    return seen


# ----- the negative prompt


def test_the_reference_negative_prompt_is_the_default_everywhere():
    assert REFERENCE_NEGATIVE_PROMPT.startswith("Overexposure, static, blurred details")
    assert REFERENCE_NEGATIVE_PROMPT.endswith("a lot of people in the background, upside down")
    assert GenerateSettings().negative_prompt == "reference"
    assert all(preset.negative_prompt == "reference" for preset in PRESETS.values())
    assert all(preset.generate_settings().negative_prompt == "reference" for preset in PRESETS.values())
    assert negative_prompt_text(None) == negative_prompt_text("reference") == REFERENCE_NEGATIVE_PROMPT
    assert negative_prompt_text(" WAN ") == WAN_NEGATIVE_PROMPT and negative_prompt_name(WAN_NEGATIVE_PROMPT) == "wan"
    assert negative_prompt_text("blurry") == "blurry" and negative_prompt_name("blurry") == "custom"
    assert negative_prompt_text("") == ""  # no negative prompt at all
    with pytest.raises(MaskEditError, match="negative prompt must be text"):
        GenerateSettings(negative_prompt=3)


def test_generation_encodes_the_reference_negative_prompt_and_wans_when_chosen(tiny_pipe, clip):
    prepared, edited = clip
    seen = negative_prompts_seen(tiny_pipe)
    info = {}
    generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=1, method="no-lora", info=info)
    generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=1, method="no-lora",
                           negative_prompt="wan")
    assert seen == [REFERENCE_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT]
    assert info["negative_prompt"] == "reference"


@pytest.mark.parametrize("given, expected", [([], "reference"), (["--negative-prompt", "wan"], "wan"),
                                             (["--negative-prompt", "blurry, dark"], "blurry, dark")])
def test_cli_negative_prompt_comes_from_the_preset_or_the_flag(given, expected):
    for command in (["generate", "--prepared", "p", "--edited-frame", "e.png"], ["edit", "--video", "v.mp4", "--box",
                                                                                 "0,0,8,8", "--edited-frame", "e.png"]):
        args = cli.build_parser().parse_args([*command, "--prompt", "x", "--out", "o", *given])
        cli._apply_preset(args)
        assert args.negative_prompt == expected


def test_lora_json_records_the_negative_prompt(tiny_pipe, clip, tmp_path):
    from maskedit.workflow.lora_cache import LoraCache

    prepared, _ = clip
    config = TrainConfig(steps=1, rank=4, alpha=4.0)
    cache = LoraCache(tmp_path / "cache")
    events = list(train.train_cached(tiny_pipe, prepared, "a box", config, cache=cache, trigger="p3rs0n",
                                     base_model="tiny", out_dir=tmp_path / "first", negative_prompt="reference"))
    first = json.loads((tmp_path / "first" / "lora.json").read_text())
    assert first["negative_prompt"] == "reference" and first["negative_prompt_text"] == REFERENCE_NEGATIVE_PROMPT
    assert events[-1].metadata["negative_prompt"] == "reference"
    # the cached LoRA copied for a run that generates with Wan's says so in that run's folder
    list(train.train_cached(tiny_pipe, prepared, "a box", config, cache=cache, trigger="p3rs0n", base_model="tiny",
                            out_dir=tmp_path / "second", negative_prompt="wan"))
    second = json.loads((tmp_path / "second" / "lora.json").read_text())
    assert second["negative_prompt"] == "wan" and second["negative_prompt_text"] == WAN_NEGATIVE_PROMPT


# ----- the caption rule of the library


def test_the_library_never_trains_on_the_edit_caption(tiny_pipe, clip, tmp_path, step_counter):
    prepared, edited = clip
    later = {4: edited}
    config = TrainConfig(steps=1, rank=4, alpha=4.0, stage2_epochs=1)
    for run in (lambda: list(train.train_edit_lora(tiny_pipe, prepared, "a box", config, tmp_path / "plain",
                                                   edited_later=later, edit_caption="a blue box")),
                lambda: list(train.train_cached(tiny_pipe, prepared, "a box", config, cache=None, trigger="p3rs0n",
                                                base_model="tiny", edited_later=later, out_dir=tmp_path / "nocache",
                                                edit_caption="a blue box")),
                lambda: list(train.train_cached(tiny_pipe, prepared, "a box", config, cache=train.LoraCache(
                    tmp_path / "cache"), trigger="p3rs0n", base_model="tiny", edited_later=later,
                    later_captions={4: "  "}, edit_caption="a blue box"))):
        with pytest.raises(MaskEditError, match=r"edited later frame\(s\) 4 have no caption.*never the edit's"):
            run()
    assert step_counter == []  # refused before any step
    assert train.stage2_captions(later, {}) == {} and train.stage2_captions(later, {4: " a red box "}) == {4: "a red box"}
    events = list(train.train_edit_lora(tiny_pipe, prepared, "a box", config, tmp_path / "captioned",
                                        edited_later=later, later_captions={4: "a blue box on a gradient"},
                                        edit_caption="a blue box"))
    meta = events[-1].metadata
    assert meta["later_captions"] == {"4": "a blue box on a gradient"} and meta["edit_caption"] == "a blue box"


# ----- the trigger, the preview's report, the CLI help


def test_a_trigger_typed_as_the_reference_prefix_gives_the_same_prompt():
    expected = "p3rs0n, a red car"
    assert compose_prompt("a red car", "p3rs0n") == expected
    assert compose_prompt("a red car", "p3rs0n,") == expected == compose_prompt("a red car", " p3rs0n, ")
    assert compose_prompt("a red car", ",") == "a red car"
    from maskedit.studio.inputs import TrainInputs

    assert TrainInputs("a box", "p3rs0n, ").cleaned().trigger == "p3rs0n"


def test_the_preview_reports_the_euler_sampler_it_runs(tiny_pipe, tmp_path, clip, monkeypatch):
    from maskedit.studio.generation import run_generation
    from maskedit.workflow import preview as preview_module
    from maskedit.workflow import prepare

    prepared, edited = clip
    prepare.save_prepared(prepared, tmp_path / "prepared")
    from maskedit.media.video import write_image

    write_image(tmp_path / "edited.png", edited)
    seen = {}
    original = generate.generate_edit

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(generate, "generate_edit", spy)
    monkeypatch.setattr(preview_module, "load_preview_lora", lambda *a, **k: None)
    monkeypatch.setattr(preview_module, "unload_preview_lora", lambda *a, **k: None)
    settings = GenerateSettings(method="no-lora", sampler="unipc", step_cache="magcache")
    preview = preview_module.PreviewSettings("speed.safetensors", steps=2)
    events = list(run_generation(tiny_pipe, tmp_path / "prepared", tmp_path / "edited.png", "a blue box",
                                 tmp_path / "out", settings, preview=preview))
    report = events[-1]["report"]
    assert seen["sampler"] == "euler" and report["sampler"] == "euler" and "euler sampler" in report["preview"]
    assert report["step_cache"] == "off" and report["skipped_evaluations"] == 0


def test_feature_blend_help_says_it_uses_the_naive_lora(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "uses the LoRA when given" not in text
    assert "feature-blend (the latent-blending baseline, paper Eq. 3: stock image-to-video with the LoRA of " \
           "`train --naive`" in text


# ----- Wan2.2's own defaults


@pytest.mark.parametrize("base", [WAN22_A14B, TINY_WAN22_BASE])
def test_wan22_takes_its_own_timestep_distribution_and_guidance(base):
    for name in PRESETS:
        preset = adapt_preset(get_preset(name), base)
        config = preset.train_config()
        assert (config.timestep_sampler, config.timestep_shift) == ("shifted", preset.flow_shift), name
        settings = preset.generate_settings()
        if get_preset(name).guidance_scale > 1:
            assert (settings.guidance_scale, settings.guidance_scale_2) == (3.5, 3.5), name
        else:  # a CFG-distilled preset keeps CFG 1
            assert (settings.guidance_scale, settings.guidance_scale_2) == (1.0, None), name
        assert settings.step_cache == "off"
    one = adapt_preset(get_preset("full"), WAN21_480P)
    assert one.train_config().timestep_sampler == "uniform" and one.generate_settings().guidance_scale == 5.0
    assert one.generate_settings().guidance_scale_2 is None


def shifted_cdf(t: float, shift: float) -> float:
    """CDF of t = s·u / (1 + (s − 1)·u), u ~ U(0, 1)."""
    return t / (shift - (shift - 1.0) * t)


def test_each_experts_sigma_histogram_is_the_shifted_distribution_restricted_to_its_range():
    """Draws of the trainer of each expert (`TwoExpertTrainer` on the tiny two-expert model, Wan2.2's preset
    config): a 20-bin histogram within 4 standard errors of the shifted CDF restricted to the expert's range, and a
    Kolmogorov–Smirnov distance under the 0.1% critical value."""
    from maskedit.method.experts import EXPERTS, TwoExpertTrainer, expert_sigma_range
    from maskedit.method.training import EncodedSample
    from maskedit.models.loading import WAN22_BOUNDARY_RATIO, build_tiny_two_expert_pipeline

    config = adapt_preset(get_preset("full"), TINY_WAN22_BASE).train_config(steps=2, rank=2, alpha=2.0)
    pipe = build_tiny_two_expert_pipeline()
    dummy = EncodedSample(torch.zeros(1), torch.zeros(1), torch.zeros(1), None)
    trainer = TwoExpertTrainer(pipe, None, config, encoded=[dummy])
    n, shift = 20000, config.timestep_shift
    for expert in EXPERTS:
        low, high = expert_sigma_range(WAN22_BOUNDARY_RATIO, expert)
        drawn = np.sort(torch.cat([trainer.trainers[expert].draw_timestep() for _ in range(n)]).double().numpy())
        assert low <= drawn.min() and drawn.max() <= high
        p_low, p_high = shifted_cdf(low, shift), shifted_cdf(high, shift)

        def cdf(t):
            return (shifted_cdf(t, shift) - p_low) / (p_high - p_low)

        edges = np.linspace(low, high, 21)
        counts = np.histogram(drawn, edges)[0]
        expected = n * np.diff([cdf(e) for e in edges])
        assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected) + 1), (expert, counts, expected)
        ks = np.max(np.abs(np.arange(1, n + 1) / n - np.array([cdf(t) for t in drawn])))
        assert ks < 1.95 / math.sqrt(n), (expert, ks)
        # not the uniform distribution on the range: the shift puts more mass at high noise
        uniform = np.max(np.abs(np.arange(1, n + 1) / n - (drawn - low) / (high - low)))
        assert uniform > 5 / math.sqrt(n), (expert, uniform)


def test_the_timestep_sampler_is_a_setting_of_the_cli_and_the_app(tmp_path):
    args = cli.build_parser().parse_args(["train", "--prepared", "p", "--prompt", "x", "--out", "o",
                                          "--timestep-sampler", "shifted"])
    cli._apply_preset(args)
    config = cli._train_config(args)
    assert (config.timestep_sampler, config.timestep_shift) == ("shifted", 5.0)  # the preset's flow shift
    args = cli.build_parser().parse_args(["train", "--prepared", "p", "--prompt", "x", "--out", "o",
                                          "--timestep-sampler", "shifted", "--timestep-shift", "3"])
    cli._apply_preset(args)
    assert cli._train_config(args).timestep_shift == 3.0
    args = cli.build_parser().parse_args(["train", "--prepared", "p", "--prompt", "x", "--out", "o", "--model",
                                          "tiny-wan2.2"])
    cli._apply_preset(args)
    assert cli._train_config(args).timestep_sampler == "shifted"  # Wan2.2's default
    # the app: TrainInputs.timestep_sampler overrides the preset's in the studio's TrainConfig
    from maskedit.studio.inputs import TrainInputs
    from maskedit.studio.service import Studio
    from maskedit.workflow.session import SessionStore

    studio = Studio(SessionStore(tmp_path), gpu=None, model_name="tiny", is_tiny=True)
    config, _ = studio.train_config(TrainInputs("a box", timestep_sampler="shifted"), 9)
    assert (config.timestep_sampler, config.timestep_shift) == ("shifted", 5.0)
    config, _ = studio.train_config(TrainInputs("a box"), 9)
    assert config.timestep_sampler == "uniform"
