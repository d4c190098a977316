"""The LoRA cache (issue 8): keys, hits without training, misses, resuming an interrupted entry, eviction."""

import os
import time

import numpy as np
import pytest

from maskedit.workflow import generate, prepare, train
from maskedit.method import training
from maskedit.workflow import lora_cache
from maskedit.workflow.lora_cache import CacheNote, LoraCache, cache_key
from maskedit.workflow.train import train_cached
from maskedit.method.training import TrainConfig
from maskedit.media.video import Clip

FPS = 8.0


@pytest.fixture
def prepared(synthetic_clip):
    frames, region = synthetic_clip
    return prepare.PreparedClip(Clip(frames, FPS), region)


CONFIG = TrainConfig(steps=3, rank=4, alpha=4.0, checkpoint_every=1)


def run(pipe, prepared, cache, caption="a box", config=CONFIG, **kwargs):
    events = list(train_cached(pipe, prepared, caption, config, cache=cache, trigger="p3rs0n", base_model="tiny",
                               **kwargs))
    notes = [e for e in events if isinstance(e, CacheNote)]
    return events, notes


def test_key_depends_on_stage1_inputs_only(prepared):
    key = cache_key(prepared, "a box", "p3rs0n", CONFIG, "tiny")
    assert key == cache_key(prepared, "a box", "p3rs0n", CONFIG, "tiny")
    moved = prepare.PreparedClip(prepared.clip, np.roll(prepared.region, 2, axis=2))
    other_frames = prepare.PreparedClip(Clip(prepared.frames[:, ::-1].copy(), FPS), prepared.region)
    for changed in (cache_key(moved, "a box", "p3rs0n", CONFIG, "tiny"),
                    cache_key(other_frames, "a box", "p3rs0n", CONFIG, "tiny"),
                    cache_key(prepared, "a cat", "p3rs0n", CONFIG, "tiny"),
                    cache_key(prepared, "a box", "sks", CONFIG, "tiny"),
                    cache_key(prepared, "a box", "p3rs0n", TrainConfig(steps=4, rank=4, alpha=4.0), "tiny"),
                    cache_key(prepared, "a box", "p3rs0n", CONFIG, "other-model"),
                    cache_key(prepared, "a box", "p3rs0n", CONFIG, "tiny", {4: prepared.frames[4]}),
                    cache_key(prepared, "a box", "p3rs0n", CONFIG, "tiny", {4: prepared.frames[4]}, {4: "x"})):
        assert changed != key
    # how often checkpoints are written does not change the LoRA, so neither the key
    same = TrainConfig(steps=3, rank=4, alpha=4.0, checkpoint_every=7)
    assert cache_key(prepared, "a box", "p3rs0n", same, "tiny") == key


def test_same_inputs_hit_without_a_training_step(tmp_path, tiny_pipe, prepared, step_counter):
    cache = LoraCache(tmp_path / "cache")
    events, notes = run(tiny_pipe, prepared, cache)
    assert notes[0].kind == "miss" and len(step_counter) == 3
    assert isinstance(events[-1], train.EditTrainingDone)
    entry = cache.get(notes[0].key)
    assert entry.status == "finished" and entry.lora_path.is_file()

    from maskedit.models.loading import build_tiny_pipeline

    fresh = build_tiny_pipeline()
    events, notes = run(fresh, prepared, cache)
    assert len(step_counter) == 3  # no step ran
    assert notes[0].kind == "hit" and "reusing cached LoRA" in notes[0].message
    assert events[-1].lora_path == str(entry.lora_path)
    assert generate.has_edit_lora(fresh)  # loaded onto the pipe, ready to generate


def test_changed_box_caption_or_setting_misses(tmp_path, tiny_pipe, prepared, step_counter):
    cache = LoraCache(tmp_path / "cache")
    one = TrainConfig(steps=1, rank=4, alpha=4.0)
    run(tiny_pipe, prepared, cache, config=one)
    moved = prepare.PreparedClip(prepared.clip, np.roll(prepared.region, 2, axis=1))
    for kwargs in (dict(prepared=moved), dict(caption="a cat"), dict(config=TrainConfig(steps=1, rank=4, alpha=4.0,
                                                                                        learning_rate=2e-4))):
        before = len(step_counter)
        args = dict(prepared=prepared, caption="a box", config=one)
        args.update(kwargs)
        _, notes = run(tiny_pipe, args.pop("prepared"), cache, **args)
        assert notes[0].kind == "miss", kwargs
        assert len(step_counter) == before + 1
    assert len(cache.entries()) == 4


def test_interrupted_entry_resumes_from_its_checkpoint(tmp_path, tiny_pipe, prepared, step_counter):
    from safetensors.torch import load_file

    cache = LoraCache(tmp_path / "cache")
    config = TrainConfig(steps=4, rank=4, alpha=4.0, checkpoint_every=1)
    events, notes = run(tiny_pipe, prepared, cache, config=config, should_stop=lambda: len(step_counter) >= 2)
    assert isinstance(events[-1], train.EditTrainingStopped)
    entry = cache.get(notes[0].key)
    assert entry.status == "resumable" and (entry.step, entry.total_steps) == (2, 4)
    events, notes = run(tiny_pipe, prepared, cache, config=config)
    assert notes[0].kind == "resume" and "resuming cached run" in notes[0].message and "step 2 of 4" in notes[0].message
    assert len(step_counter) == 4  # only the 2 missing steps ran
    assert cache.get(notes[0].key).status == "finished"
    # bit-identical to an uninterrupted run
    events, _ = run(tiny_pipe, prepared, LoraCache(tmp_path / "other"), config=config)
    resumed, whole = load_file(str(cache.get(notes[0].key).lora_path)), load_file(events[-1].lora_path)
    assert resumed.keys() == whole.keys()
    assert all(np.array_equal(resumed[k].numpy(), whole[k].numpy()) for k in whole)


def test_no_cache_forces_training(tmp_path, tiny_pipe, prepared, step_counter):
    cache = LoraCache(tmp_path / "cache")
    one = TrainConfig(steps=1, rank=4, alpha=4.0)
    run(tiny_pipe, prepared, cache, config=one)
    _, notes = run(tiny_pipe, prepared, cache, config=one, use_cache=False)
    assert notes[0].kind == "off" and len(step_counter) == 2
    assert cache.get(notes[0].key).status == "finished"


def test_stage2_starts_from_the_cached_stage1_run(tmp_path, tiny_pipe, prepared, step_counter):
    cache = LoraCache(tmp_path / "cache")
    one = TrainConfig(steps=2, rank=4, alpha=4.0)
    run(tiny_pipe, prepared, cache, config=one)
    later = {4: np.ascontiguousarray(prepared.frames[4][::-1])}
    events, notes = run(tiny_pipe, prepared, cache, config=one, edited_later=later, stage2_epochs=1,
                        later_captions={k: "an edited box" for k in later})
    assert notes[0].kind == "stage1"
    assert len(step_counter) == 2 + training.stage2_steps(1, 1)  # stage 1 did not run again
    assert isinstance(events[-1], train.EditTrainingDone)
    assert notes[0].key != cache_key(prepared, "a box", "p3rs0n", one, "tiny")


def _fake_entry(cache, key, size, age):
    path = cache.prepare(key)
    (path / "lora.safetensors").write_bytes(b"\0" * size)
    (path / "lora.json").write_text("{}")
    stamp = time.time() - age
    os.utime(path / lora_cache.ENTRY_JSON, (stamp, stamp))
    return path


def test_eviction_keeps_the_limit_least_recently_used_first(tmp_path):
    cache = LoraCache(tmp_path / "cache", max_bytes=3500)
    keys = [f"{i:016x}" for i in range(4)]
    for age, key in zip((400, 300, 200, 100), keys):
        _fake_entry(cache, key, 1000, age)
    cache.touch(keys[0])  # used just now: the most recent
    with cache.using(keys[1]):  # in use: never evicted
        removed = cache.evict()
    assert removed == [keys[2]]
    assert cache.size() <= 3500
    assert {e.key for e in cache.entries()} == {keys[0], keys[1], keys[3]}
    assert [e.status for e in cache.entries()] == ["finished"] * 3
    cache.max_bytes = 0
    assert set(cache.evict(keep=(keys[0],))) == {keys[1], keys[3]}
    assert [e.key for e in cache.entries()] == [keys[0]]
    with pytest.raises(Exception):
        cache.path("../etc")


def test_default_folder_and_limit_are_settable(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKEDIT_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("MASKEDIT_CACHE_GB", "0.5")
    cache = LoraCache()
    assert cache.root == tmp_path / "c" and cache.max_bytes == 512 * 1024 ** 2
    monkeypatch.delenv("MASKEDIT_CACHE_DIR")
    monkeypatch.delenv("MASKEDIT_CACHE_GB")
    assert lora_cache.default_cache_dir().parts[-2:] == ("maskedit", "loras")


def test_interrupted_two_expert_entry_resumes_from_its_per_expert_checkpoints(tmp_path, prepared, step_counter):
    """A Wan2.2-style run keeps stageN/<expert>/ checkpoints: the cache sees it as resumable (both experts'
    steps together), resumes only the missing steps, ends finished and bit-identical to an uninterrupted run,
    and a hit puts both experts' LoRAs back on the pipe."""
    from safetensors.torch import load_file

    from maskedit.method.experts import EXPERTS, expert_weight_name, has_expert_loras
    from maskedit.models.loading import build_tiny_two_expert_pipeline

    cache = LoraCache(tmp_path / "cache")
    config = TrainConfig(steps=4, rank=4, alpha=4.0, checkpoint_every=1)
    pipe = build_tiny_two_expert_pipeline()
    events, notes = run(pipe, prepared, cache, config=config, should_stop=lambda: len(step_counter) >= 3)
    assert isinstance(events[-1], train.EditTrainingStopped)
    entry = cache.get(notes[0].key)
    assert entry.status == "resumable" and (entry.step, entry.total_steps, entry.stage) == (3, 4, 1)
    assert lora_cache.checkpoint_progress(entry.path / training.CHECKPOINTS_FOLDER / "stage1") == (3, 4)
    events, notes = run(pipe, prepared, cache, config=config)
    assert notes[0].kind == "resume" and "step 3 of 4" in notes[0].message
    assert len(step_counter) == 4  # only the missing step ran
    entry = cache.get(notes[0].key)
    assert entry.status == "finished" and has_expert_loras(entry.path)
    assert entry.lora_path.name == expert_weight_name(EXPERTS[0])
    whole, _ = run(build_tiny_two_expert_pipeline(), prepared, LoraCache(tmp_path / "other"), config=config)
    other = LoraCache(tmp_path / "other").get(notes[0].key)
    for expert in EXPERTS:
        a, b = load_file(str(entry.path / expert_weight_name(expert))), load_file(str(other.path / expert_weight_name(expert)))
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), expert
    fresh = build_tiny_two_expert_pipeline()
    events, notes = run(fresh, prepared, cache, config=config)
    assert notes[0].kind == "hit" and len(step_counter) == 8  # 4 + the uninterrupted run's 4; the hit runs none
    assert all(expert_module_has_adapter(fresh, expert) for expert in EXPERTS)


def expert_module_has_adapter(pipe, expert):
    from maskedit.method.experts import expert_module
    from maskedit.method.lora import ADAPTER_NAME

    return ADAPTER_NAME in (getattr(expert_module(pipe, expert), "peft_config", None) or {})
