"""Step caching (maskedit.models.step_cache) on the tiny model: off is bit for bit the uncached run, MagCache skips
exactly the steps its schedule says (what the planner counts), TeaCache follows the reference's rule, a stopped run
leaves nothing behind, a streamed transformer does not load the blocks a skipped evaluation never runs, and the
planner and the ZeroGPU duration count the skipped evaluations."""

import json

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.models import step_cache
from maskedit.models.presets import GenerateSettings, get_preset
from maskedit.workflow import generate

STEPS = 10


@pytest.fixture(scope="module")
def clip(prepared_edit):
    return prepared_edit


@pytest.fixture(scope="module")
def pipe():
    from maskedit.models.loading import build_tiny_pipeline

    return build_tiny_pipeline()


def run(pipe, clip, steps=STEPS, **kwargs):
    prepared, edited = clip
    info = {}
    frames = generate.generate_edit(pipe, prepared, edited, "a blue box", steps=steps, method="no-lora", info=info,
                                    **kwargs)
    return frames, info


def no_cache_left(transformer) -> bool:
    hooks = [name for block in transformer.blocks if hasattr(block, "_diffusers_hook")
             for name in block._diffusers_hook.hooks]
    return transformer._cache_config is None and not hooks and not hasattr(transformer, "_maskedit_skipping_blocks")


def test_off_is_the_default_and_bit_identical_before_and_after_a_cached_run(pipe, clip):
    plain, info = run(pipe, clip)
    assert GenerateSettings().step_cache == "off" and get_preset("full").step_cache == "off"
    assert info["evaluations"] == info["full_evaluations"] == 2 * STEPS and info["skipped_evaluations"] == 0
    cached, cached_info = run(pipe, clip, step_cache="magcache")
    assert cached_info["skipped_evaluations"] > 0 and not np.array_equal(cached, plain)
    assert no_cache_left(pipe.transformer)
    again, _ = run(pipe, clip, step_cache="off")
    np.testing.assert_array_equal(again, plain)


def test_magcache_runs_exactly_the_steps_its_schedule_says(pipe, clip):
    plain, _ = run(pipe, clip, steps=30)
    frames, info = run(pipe, clip, steps=30, step_cache="magcache")
    schedule = step_cache.magcache_schedule(30)
    assert info["full_evaluations"] == 2 * sum(schedule) == 26  # MagCache's Wan I2V 480P setting: 13 of 30 steps
    assert schedule[:6] == [True] * 6  # the first 20% always run
    share, note = step_cache.full_share("magcache", 30)
    assert share == pytest.approx(13 / 30) and note is None
    assert np.abs(frames.astype(int) - plain.astype(int)).max() < 64  # close to the uncached run, not equal
    higher, higher_info = run(pipe, clip, steps=30, step_cache="magcache", step_cache_threshold=0.5)
    assert higher_info["full_evaluations"] == 2 * sum(step_cache.magcache_schedule(30, 0.5)) < 26


def test_teacache_follows_the_reference_rule(pipe, clip, monkeypatch):
    """DiffSynth's rule: the first and last steps run; between them the rescaled change accumulates and a step runs
    when it reaches the threshold. A constant rescale of 0.1 per step with 0.275 runs steps 0, 3, 6, 9."""
    monkeypatch.setitem(step_cache.TEACACHE_COEFFICIENTS, "480p", (0.0, 0.0, 0.0, 0.0, 0.1))
    _, info = run(pipe, clip, step_cache="teacache")
    assert info["step_cache_threshold"] == 0.275 and info["evaluations"] == 2 * STEPS
    assert info["full_evaluations"] == 2 * 4  # steps 0, 3, 6, 9 of each CFG branch
    assert no_cache_left(pipe.transformer)
    _, lower = run(pipe, clip, step_cache="teacache", step_cache_threshold=0.15)
    assert lower["full_evaluations"] == 2 * 6  # 0, 2, 4, 6, 8 and the last, 9


def test_a_stopped_cached_run_does_not_leak_into_the_next(pipe, clip):
    first, _ = run(pipe, clip, step_cache="magcache", steps=30)
    with pytest.raises(generate.GenerationStopped):
        run(pipe, clip, step_cache="magcache", steps=30, should_stop=lambda: True)
    assert no_cache_left(pipe.transformer)
    second, _ = run(pipe, clip, step_cache="magcache", steps=30)
    np.testing.assert_array_equal(first, second)


def test_a_cache_left_on_the_transformer_is_removed_first(pipe, clip):
    from diffusers.hooks import FirstBlockCacheConfig

    plain, _ = run(pipe, clip)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1.0))  # another caller's, left behind
    again, info = run(pipe, clip)
    np.testing.assert_array_equal(again, plain)
    assert info["skipped_evaluations"] == 0 and no_cache_left(pipe.transformer)


def test_bad_settings_and_two_expert_bases_are_refused_before_any_work(clip):
    from maskedit.models.loading import build_tiny_two_expert_pipeline

    prepared, edited = clip
    two = build_tiny_two_expert_pipeline()
    calls = []
    hook = two.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(MaskEditError, match="two-expert"):
        generate.generate_edit(two, prepared, edited, "a box", steps=2, method="no-lora", step_cache="magcache")
    hook.remove()
    assert calls == []
    info = {}  # off: both experts' evaluations are counted (4 steps at shift 5: 2 high-noise, 2 low-noise)
    generate.generate_edit(two, prepared, edited, "a box", steps=4, method="no-lora", info=info)
    assert info["evaluations"] == info["full_evaluations"] == 8 and info["step_cache"] == "off"
    with pytest.raises(MaskEditError, match="step cache 'fast' is unknown"):
        GenerateSettings(step_cache="fast")
    with pytest.raises(MaskEditError, match=r"step cache threshold \(step_cache_threshold\)"):
        GenerateSettings(step_cache="magcache", step_cache_threshold=5.0)


def test_streamed_blocks_of_skipped_evaluations_are_not_loaded(clip):
    """With fp8 blocks (BlockStreamer on the CPU) every evaluation materialises each block's weights; a skipped one
    loads only the first block (where the cache decides) and at most one prefetched block."""
    from maskedit.memory.offload import apply_memory_options, memory_setup
    from maskedit.models.loading import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    apply_memory_options(pipe.transformer, "cpu", 0, fp8=True)
    streamer = memory_setup(pipe.transformer).streamer
    blocks = len(pipe.transformer.blocks)

    def loads(**kwargs):
        before = streamer.stats["loads"]
        _, info = run(pipe, clip, steps=30, **kwargs)
        return streamer.stats["loads"] - before, info

    full, _ = loads()
    assert full == 2 * 30 * blocks
    cached, info = loads(step_cache="magcache")
    assert cached == info["full_evaluations"] * blocks + info["skipped_evaluations"]  # block 0 only when skipped


def test_the_planner_counts_only_the_evaluations_that_run(tmp_path):
    from maskedit.models.planner import Phase, Plan
    from maskedit.models.cards import CARDS
    from maskedit.studio.estimate import generation_call_seconds
    from maskedit.models.loading import DEFAULT_MODEL_ID

    card = CARDS["h100"]
    phases = {name: Phase(name, 0, 0, int(flops * card.bf16_tflops * 1e12))
              for name, flops in (("training step", 2.0), ("denoising step", 1.0), ("VAE decode", 3.0))}
    plain = Plan("m", get_preset("full"), 49, 832, 480, "flash", phases)
    cached = Plan("m", get_preset("full").with_overrides(step_cache="magcache"), 49, 832, 480, "flash", phases)
    assert plain.time_floor_s(card) == pytest.approx(100 * 2 + 30 + 3)
    assert cached.denoising_steps_run() == 13 and cached.time_floor_s(card) == pytest.approx(100 * 2 + 13 + 3)
    # the ratios are the checkpoint's: a 720P model counts with MagCache's 720P ones
    assert step_cache.model_key("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers") == "720p" == step_cache.model_key("/m/720P")
    assert step_cache.model_key(DEFAULT_MODEL_ID) == step_cache.model_key(None) == "480p"
    on_720p = Plan("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", cached.preset, 49, 1280, 720, "flash", phases)
    assert on_720p.denoising_steps_run() == sum(step_cache.magcache_schedule(30, key="720p"))
    teacache = Plan("m", get_preset("full").with_overrides(step_cache="teacache"), 49, 832, 480, "flash", phases)
    assert teacache.denoising_steps_run() == pytest.approx(30 * step_cache.TEACACHE_ASSUMED_FULL_SHARE)
    # the ZeroGPU duration of a render counts them too
    (tmp_path / "prepared.json").write_text(json.dumps({"frames": 33, "width": 640, "height": 368}))
    off = generation_call_seconds(DEFAULT_MODEL_ID, tmp_path, GenerateSettings(steps=8, guidance_scale=5.0))
    on = generation_call_seconds(DEFAULT_MODEL_ID, tmp_path, GenerateSettings(steps=8, guidance_scale=5.0,
                                                                             step_cache="magcache"))
    assert on < off


def test_presets_turn_the_cache_on_where_speed_matters():
    for name in ("24gb", "low-cost"):
        assert get_preset(name).step_cache != "off", name  # each evaluation streams the swapped blocks
    for name in ("full", "zerogpu"):
        assert get_preset(name).step_cache == "off", name  # exact / 4 distilled steps
