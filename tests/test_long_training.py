"""Training across a clip longer than one window (METHOD.md §7b): windows over the whole clip, encoded once to
disk, one sample read per step; stage 2 with edited frames anywhere in the clip."""

import numpy as np
import pytest
import torch

from maskedit.method import long_training
from maskedit.method.training import LoraTrainer, TrainConfig, encode_samples
from maskedit.workflow import train
from conftest import make_synthetic_clip


def _clip(num_frames=25):
    return make_synthetic_clip(num_frames, 32, 32, box=10, step=1)


def test_stage1_windows_cover_the_whole_clip_and_prefixed_samples_come_with_a_handover():
    frames, region = _clip(25)
    config = TrainConfig(steps=3, window_frames=9)
    specs = long_training.long_window_specs(25, config)
    assert [(s.start, s.length, s.prefix) for s in specs] == [(0, 9, 1), (8, 9, 1), (16, 9, 1)]
    stages = long_training.plan_long_stages(frames, region, "p", config, "tiny")
    item = stages[0].items[1]
    np.testing.assert_array_equal(item.sample.target_video, frames[8:17])
    assert item.sample.keep_mask[0].min() == 1 and item.sample.keep_mask[1:].min() == 0
    handover = long_training.long_window_specs(25, TrainConfig(window_frames=9, handover_frames=5))
    assert [s.prefix for s in handover] == [1, 1, 1, 5, 5, 5]
    short = long_training.long_window_specs(25, TrainConfig(window_frames=17, window=5, window_stride=4))
    assert [s.start for s in short] == [0, 4, 8, 12, 16, 20] and {s.length for s in short} == {5}
    later = long_training.plan_long_stages(frames, region, "p", config, "tiny", [(20, frames[20], "q")])
    repeats, slots = later[1].items.schedule()
    assert repeats == [1, 1, 1, 9] and slots == ["clip", "clip", "clip", None]  # one clip place per epoch
    assert later[1].items[3].sample.prompt == "q" and later[1].config.steps == 100
    with pytest.raises(Exception, match="fits one"):
        long_training.plan_long_stages(frames[:9], region[:9], "p", config, "tiny")


def test_the_store_trains_exactly_as_samples_in_memory(tiny_pipe, tmp_path):
    frames, region = _clip(17)
    config = TrainConfig(steps=4, window_frames=9, rank=4, alpha=4.0, seed=1)
    stage = long_training.plan_long_stages(frames, region, "p3rs0n, a box", config, "tiny")[0]
    store = long_training.encode_to_store(tiny_pipe, stage.items, tmp_path / "store", stage.fingerprint)
    assert len(store) == 2 and store.schedule() == ([1, 1], [None, None])
    again = long_training.encode_to_store(tiny_pipe, stage.items, tmp_path / "store", stage.fingerprint)
    assert again.entries == store.entries  # a complete store of the same stage is reused, not encoded again
    in_memory = encode_samples(tiny_pipe, [stage.items[i] for i in range(2)])
    for index in range(2):
        for name in ("latents", "condition", "prompt_embeds", "image_embeds"):
            torch.testing.assert_close(getattr(store[index], name), getattr(in_memory[index], name), rtol=0, atol=0)
    losses = []
    for encoded in (in_memory, store):
        from maskedit.method.lora import unload_lora

        unload_lora(tiny_pipe)
        trainer = LoraTrainer(tiny_pipe, None, config, encoded=encoded)
        losses.append(trainer.train().losses)
    assert losses[0] == losses[1]


def test_train_edit_lora_on_a_long_clip_sees_every_window_and_records_the_windows(tiny_pipe, tmp_path, monkeypatch):
    from maskedit.media.video import Clip
    from maskedit.workflow.prepare import PreparedClip

    frames, region = _clip(25)
    prepared = PreparedClip(Clip(frames, 8.0), region)
    seen = []
    original = LoraTrainer.sample_for_step

    def record(self, step):
        sample = original(self, step)
        seen.append((int(sample.latents.shape[2]), float(sample.latents.sum())))
        return sample

    monkeypatch.setattr(LoraTrainer, "sample_for_step", record)
    config = TrainConfig(steps=3, window_frames=9, rank=4, alpha=4.0)
    events = list(train.train_edit_lora(tiny_pipe, prepared, "a box", config, tmp_path / "lora", base_model="tiny"))
    done = events[-1]
    assert isinstance(done, train.EditTrainingDone)
    assert done.metadata["windows"] == 3 and done.metadata["window_frames"] == 9
    assert done.metadata["handover_frames"] == 1
    assert [length for length, _ in seen] == [3, 3, 3]  # each step one 9-frame window (3 latent frames)
    assert len({total for _, total in seen}) == 3  # 3 steps = one epoch: every window of the clip once
    assert not (tmp_path / "lora" / train.ENCODED_FOLDER / "stage1").exists()  # removed once the stage finished
    notes = [e.message for e in events if isinstance(e, train.EditTrainingNote)]
    assert any("3 window sample(s) of the 25-frame clip" in n for n in notes)
