"""Typed settings: a preset produces the TrainConfig (windows, condition and stage-2 epochs included) and the
GenerateSettings; lora.json records the whole TrainConfig, which rebuilds the same config and the same cache
key; each dataclass checks its ranges in one place (validate)."""

import json

import pytest

from maskedit.workflow import prepare, train
from maskedit.errors import MaskEditError
from maskedit.method.lora import read_metadata
from maskedit.workflow.lora_cache import CacheNote, LoraCache, cache_key
from maskedit.workflow.train import train_cached
from maskedit.models.presets import PRESETS, GenerateSettings, get_preset
from maskedit.method.training import TrainConfig
from maskedit.media.video import Clip


def test_preset_settings_lora_json_and_cache_key_round_trip(tmp_path, tiny_pipe, synthetic_clip):
    frames, region = synthetic_clip
    prepared = prepare.PreparedClip(Clip(frames, 8.0), region)
    preset = get_preset("low-cost")
    config = preset.train_config(steps=2, rank=4, alpha=4.0, seed=3, window=5, blocks_to_swap=0, fp8=False,
                                 activation_offload=False, gradient_checkpointing=False)
    assert (config.window, config.window_stride, config.condition) == (5, preset.window_stride, "mask")
    events = list(train_cached(tiny_pipe, prepared, "a box", config, cache=LoraCache(tmp_path), trigger="p3rs0n",
                               base_model="tiny"))
    key = next(e.key for e in events if isinstance(e, CacheNote))
    done = events[-1]
    assert isinstance(done, train.EditTrainingDone)
    metadata = read_metadata(done.lora_path)
    json.dumps(metadata)  # plain JSON
    rebuilt = TrainConfig.from_dict(metadata["settings"])
    assert rebuilt == config
    assert cache_key(prepared, metadata["caption"], metadata["trigger"], rebuilt, metadata["base_model"]) == key
    assert metadata["window"] == 5 and metadata["window_stride"] == preset.window_stride
    # another window, condition or stage-2 epochs is another run
    for changed in (dict(window=0), dict(condition="stock")):
        assert cache_key(prepared, "a box", "p3rs0n", TrainConfig.from_dict({**metadata["settings"], **changed}),
                         "tiny") != key
    later = {4: frames[4]}
    assert cache_key(prepared, "a box", "p3rs0n", config, "tiny", later) != cache_key(
        prepared, "a box", "p3rs0n", TrainConfig.from_dict({**metadata["settings"], "stage2_epochs": 3}), "tiny", later)


def test_generate_settings_come_from_the_presets():
    assert GenerateSettings() == PRESETS["full"].generate_settings()  # 30 steps, CFG 5, shift 5 in one place
    quick = get_preset("zerogpu").generate_settings(seed=4)
    assert (quick.steps, quick.guidance_scale, quick.flow_shift, quick.seed) == (4, 1.0, 5.0, 4)
    assert GenerateSettings().guidance_scale_2 is None  # the low-noise expert takes guidance_scale, as in diffusers
    assert get_preset("full").generate_settings(guidance_scale_2=3.5).guidance_scale_2 == 3.5


def test_guidance_scale_2_is_refused_only_where_there_is_no_low_noise_expert():
    GenerateSettings(guidance_scale_2=3.0).check_base(two_experts=True)
    GenerateSettings().check_base(two_experts=False)
    with pytest.raises(MaskEditError, match="guidance_scale_2 \\(3\\) .*one transformer"):
        GenerateSettings(guidance_scale_2=3.0).check_base(two_experts=False)


@pytest.mark.parametrize("bad, words", [(dict(steps=0), "generation steps"), (dict(guidance_scale=0.5), "guidance"),
                                        (dict(flow_shift=0), "flow shift"), (dict(method="best"), "method"),
                                        (dict(guidance_scale_2=0.5), "guidance_scale_2"),
                                        (dict(guidance_scale_2=float("inf")), "guidance_scale_2")])
def test_generate_settings_refuse_out_of_range_values(bad, words):
    with pytest.raises(MaskEditError, match=words):
        GenerateSettings(**bad)


@pytest.mark.parametrize("bad, words", [(dict(window=6), "4k\\+1"), (dict(window_stride=0), "stride"),
                                        (dict(condition="blend"), "condition"), (dict(stage2_epochs=0), "stage-2 epochs"),
                                        (dict(learning_rate=0), "learning rate")])
def test_train_config_refuses_out_of_range_values(bad, words):
    with pytest.raises(MaskEditError, match=words):
        TrainConfig(**bad)
