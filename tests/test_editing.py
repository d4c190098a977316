"""Tests for maskedit.workflow.editing, the Python API behind the command line and the app (tiny model, CPU)."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from maskedit.workflow import generate, prepare, train
from maskedit.method import training
from maskedit.method import masks
from maskedit.media import metrics
from maskedit.media import video
from maskedit.media.video import Clip
from maskedit.errors import MaskEditError
from maskedit.method.lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME
from maskedit.method.training import StepEvent, TrainConfig

from conftest import make_synthetic_clip

BOX = (4, 8, 54, 42)  # covers the synthetic box's whole path, in 64x64 pixels


def write_frame_folder(folder, frames):
    for index, frame in enumerate(frames):
        video.write_image(folder / f"frame{index}.png", frame)
    return folder


@pytest.fixture
def prepared(clip_file):
    return prepare.prepare_clip(clip_file, box=BOX, width=64, height=64)


def edited_first_frame(prepared):
    edited = prepared.frames[0].copy()
    edited[prepared.region[0]] = (30, 60, 240)
    return edited


def run_training(pipe, prepared, out_dir, **kwargs):
    kwargs.setdefault("config", TrainConfig(steps=3))
    return list(train.train_edit_lora(pipe, prepared, "a box on a gradient", out_dir=out_dir, **kwargs))


# ----- preparing


def test_prepare_clip_conforms_the_mask_with_the_clip(tmp_path):
    frames, region = make_synthetic_clip(num_frames=17)
    write_frame_folder(tmp_path / "clip", frames)  # lossless, so frames can be compared exactly
    write_frame_folder(tmp_path / "mask", masks.mask_pixels_from_region(region))
    prepared = prepare.prepare_clip(tmp_path / "clip", mask_video=tmp_path / "mask", num_frames=9, width=64, height=64)

    kept = video.select_frame_indices(17, 9, "uniform")
    assert prepared.frames.shape == (9, 64, 64, 3)
    np.testing.assert_array_equal(prepared.frames, frames[kept])
    np.testing.assert_array_equal(prepared.tight, region[kept])
    np.testing.assert_array_equal(prepared.region, masks.loose_boxes(region[kept]))
    assert prepared.fps == pytest.approx(video.DEFAULT_FOLDER_FPS / 2)  # every other frame: same duration
    assert any("kept 9 of 17" in note for note in prepared.notes)


def test_prepare_clip_resizes_mask_and_clip_alike(tmp_path):
    frames, region = make_synthetic_clip(num_frames=9, height=128, width=128, box=40, step=6)
    write_frame_folder(tmp_path / "clip", frames)
    write_frame_folder(tmp_path / "mask", masks.mask_pixels_from_region(region))
    prepared = prepare.prepare_clip(tmp_path / "clip", mask_video=tmp_path / "mask", width=64, height=64)
    assert prepared.frames.shape == (9, 64, 64, 3) and prepared.region.shape == (9, 64, 64)
    np.testing.assert_array_equal(prepared.tight, masks.fit_region(region, 64, 64))
    # the box colour sits where the mask says, frame by frame
    boxy = prepared.frames[..., 2] < 50  # the box's blue is <= 40, the background's >= 60
    assert boxy[~prepared.tight].mean() < 0.01 and boxy[prepared.tight].mean() > 0.9


def test_prepare_clip_box_and_mask_errors(clip_file, tmp_path, synthetic_clip):
    with pytest.raises(MaskEditError, match="exactly one"):
        prepare.prepare_clip(clip_file, width=64, height=64)
    with pytest.raises(MaskEditError, match="whole frame"):
        prepare.prepare_clip(clip_file, box="0,0,64,64", width=64, height=64)
    with pytest.raises(MaskEditError, match="empty or leaves"):
        prepare.prepare_clip(clip_file, box=(40, 40, 80, 80), width=64, height=64)
    with pytest.raises(MaskEditError, match="4k\\+1"):
        prepare.prepare_clip(clip_file, box=BOX, num_frames=10, width=64, height=64)
    # a mask of another shape is refused unless fitted
    wide = np.repeat(synthetic_clip[1], 2, axis=2)  # 64 x 128
    masks.write_mask_video(tmp_path / "wide.mp4", wide, 8)
    with pytest.raises(MaskEditError, match="--fit"):
        prepare.prepare_clip(clip_file, mask_video=tmp_path / "wide.mp4", width=64, height=64)
    fitted = prepare.prepare_clip(clip_file, mask_video=tmp_path / "wide.mp4", width=64, height=64, fit=True)
    assert fitted.region.shape == (9, 64, 64) and fitted.region[1:].any()
    # specks under the minimum area leave nothing
    specks = np.zeros_like(synthetic_clip[1])
    specks[:, 10:15, 10:15] = True
    masks.write_mask_video(tmp_path / "specks.mp4", specks, 8)
    with pytest.raises(MaskEditError, match="--min-area"):
        prepare.prepare_clip(clip_file, mask_video=tmp_path / "specks.mp4", width=64, height=64)


def test_save_and_load_prepared_round_trip_is_exact(tmp_path, clip_file, mask_file):
    prepared = prepare.prepare_clip(clip_file, mask_video=mask_file, width=64, height=64)
    folder = prepare.save_prepared(prepared, tmp_path / "prepared", export_frames=True)
    names = {path.name for path in folder.iterdir()}
    assert {"clip.mp4", "boxes.mp4", "clip.npz", "boxes.npz", "tight.npz", "first_frame.png", "prepared.json",
            "frames"} <= names
    assert not [name for name in names if name.startswith(".")]  # no temporary files left
    assert len(list((folder / "frames").iterdir())) == 9
    info = json.loads((folder / "prepared.json").read_text())
    assert (info["frames"], info["width"], info["height"]) == (9, 64, 64) and info["fps"] == pytest.approx(8)

    loaded = prepare.load_prepared(folder)
    np.testing.assert_array_equal(loaded.frames, prepared.frames)
    np.testing.assert_array_equal(loaded.region, prepared.region)
    np.testing.assert_array_equal(loaded.tight, prepared.tight)
    assert loaded.fps == prepared.fps and loaded.notes == prepared.notes
    assert loaded.source_size == (64, 64)
    np.testing.assert_array_equal(video.read_image(folder / "first_frame.png"), prepared.frames[0])

    # without the exact copies the mp4s are read (H.264: close, not exact)
    for name in ("clip.npz", "boxes.npz", "tight.npz"):
        (folder / name).unlink()
    from_mp4 = prepare.load_prepared(folder)
    assert np.abs(from_mp4.frames.astype(int) - prepared.frames).mean() < 4
    assert (from_mp4.region == prepared.region).mean() > 0.99


def test_load_prepared_refuses_other_folders(tmp_path):
    with pytest.raises(MaskEditError, match="prepare"):
        prepare.load_prepared(tmp_path)


def test_load_edited_frame_sizes(tmp_path, prepared):
    frame = prepared.frames[0]
    video.write_image(tmp_path / "ok.png", frame)
    np.testing.assert_array_equal(prepare.load_edited_frame(tmp_path / "ok.png", 64, 64), frame)
    video.write_image(tmp_path / "small.png", frame[:48, :48])
    with pytest.raises(MaskEditError, match="--fit"):
        prepare.load_edited_frame(tmp_path / "small.png", 64, 64)
    assert prepare.load_edited_frame(tmp_path / "small.png", 64, 64, fit=True).shape == (64, 64, 3)
    # a frame of the source video's size is conformed like the clip, without --fit
    video.write_image(tmp_path / "source.png", np.zeros((96, 128, 3), np.uint8))
    assert prepare.load_edited_frame(tmp_path / "source.png", 64, 64, source_size=(128, 96)).shape == (64, 64, 3)


# ----- results


def test_background_psnr_and_side_by_side(synthetic_clip, tmp_path):
    frames, region = synthetic_clip
    prepared = prepare.PreparedClip(Clip(frames, 8.0, []), region)

    def background_psnr(edited):
        return generate.write_edit_outputs(tmp_path, prepared, edited).background_psnr

    assert background_psnr(frames) == float("inf")
    inside_only = frames.copy()
    inside_only[region] = 0
    inside_only[0] = 0  # frame 0 is the user's edit: not judged
    assert background_psnr(inside_only) == float("inf")
    noisy = np.clip(frames.astype(int) + 10, 0, 255).astype(np.uint8)
    psnr = background_psnr(noisy)
    assert np.isfinite(psnr) and 25 < psnr < 30  # an error of about 10 grey levels is ~28 dB
    assert psnr == metrics.psnr(noisy[1:], frames[1:], ~region[1:])  # the one PSNR (metrics.py)

    both = generate.side_by_side(frames, noisy)
    assert both.shape == (9, 64, 128, 3)
    np.testing.assert_array_equal(both[:, :, 64:], noisy)
    with pytest.raises(MaskEditError):
        generate.side_by_side(frames, frames[:5])


# ----- training


def test_train_edit_lora_events_files_and_resume(tmp_path, tiny_pipe, prepared):
    events = run_training(tiny_pipe, prepared, tmp_path / "lora")
    kinds = [type(event).__name__ for event in events]
    assert kinds[-1] == "EditTrainingDone" and kinds.count("StepEvent") == 3
    stage = next(e for e in events if isinstance(e, train.EditTrainingStage))
    assert (stage.stage, stage.total_steps, stage.start_step) == (1, 3, 0)
    for name in (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME):
        assert (tmp_path / "lora" / name).is_file()
    meta = json.loads((tmp_path / "lora" / METADATA_NAME).read_text())
    assert meta["steps"] == 3 and meta["frames"] == 9 and meta["width"] == 64 and meta["trigger"] == "p3rs0n"
    assert meta["caption"] == "a box on a gradient" and meta["stage2_frames"] == [] and meta["final_loss"] > 0
    assert generate.has_edit_lora(tiny_pipe)

    # a rerun with the same inputs resumes at the end: no steps, same weights
    first = load_file(str(tmp_path / "lora" / LORA_WEIGHT_NAME))
    again = run_training(tiny_pipe, prepared, tmp_path / "lora")
    assert not [e for e in again if isinstance(e, StepEvent)]
    assert any(isinstance(e, train.EditTrainingNote) and "resumed" in e.message for e in again)
    second = load_file(str(tmp_path / "lora" / LORA_WEIGHT_NAME))
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)

    # other inputs do not resume from these checkpoints
    changed = list(train.train_edit_lora(tiny_pipe, prepared, "another caption", TrainConfig(steps=3), tmp_path / "lora"))
    assert len([e for e in changed if isinstance(e, StepEvent)]) == 3
    assert any(isinstance(e, train.EditTrainingNote) and "afresh" in e.message for e in changed)


def test_train_edit_lora_stop_then_resume_matches_uninterrupted(tmp_path, prepared):
    from maskedit.models.loading import build_tiny_pipeline

    reference = run_training(build_tiny_pipeline(), prepared, tmp_path / "whole", config=TrainConfig(steps=4))
    done = [0]

    def stop_after_two():
        return done[0] >= 2

    pipe = build_tiny_pipeline()
    events = []
    for event in train.train_edit_lora(pipe, prepared, "a box on a gradient", TrainConfig(steps=4),
                                         tmp_path / "parts", should_stop=stop_after_two):
        events.append(event)
        done[0] += isinstance(event, StepEvent)
    assert isinstance(events[-1], train.EditTrainingStopped) and events[-1].step == 2
    assert not (tmp_path / "parts" / LORA_WEIGHT_NAME).exists()

    resumed = run_training(build_tiny_pipeline(), prepared, tmp_path / "parts", config=TrainConfig(steps=4))
    assert len([e for e in resumed if isinstance(e, StepEvent)]) == 2
    assert resumed[-1].metadata["final_loss"] == reference[-1].metadata["final_loss"]
    whole = load_file(str(tmp_path / "whole" / LORA_WEIGHT_NAME))
    parts = load_file(str(tmp_path / "parts" / LORA_WEIGHT_NAME))
    assert all(np.array_equal(whole[k].numpy(), parts[k].numpy()) for k in whole)


def test_train_edit_lora_stage2(tmp_path, tiny_pipe, prepared):
    later = {4: prepared.frames[4].copy()}
    later[4][prepared.region[4]] = (30, 60, 240)
    with pytest.raises(MaskEditError, match="own caption"):  # never the first frame's caption silently
        run_training(tiny_pipe, prepared, tmp_path / "bad", edited_later=later, stage2_epochs=1)
    events = run_training(tiny_pipe, prepared, tmp_path / "lora", edited_later=later, stage2_epochs=1,
                          later_captions={4: "a blue box"}, edit_caption="a blue box on a gradient")
    stages = [e for e in events if isinstance(e, train.EditTrainingStage)]
    assert [(s.stage, s.total_steps) for s in stages] == [(1, 3), (2, training.stage2_steps(1, 1))]
    assert training.stage2_steps(2, 10) == 10 * (1 + 9 * 2)
    assert len([e for e in events if isinstance(e, StepEvent)]) == 3 + 10
    assert (tmp_path / "lora" / "checkpoints" / "stage2").is_dir()
    meta = events[-1].metadata
    assert meta["stage2_frames"] == [4] and meta["stage2_steps"] == 10
    assert (meta["caption"], meta["edit_caption"], meta["later_captions"]) == (
        "a box on a gradient", "a blue box on a gradient", {"4": "a blue box"})
    with pytest.raises(MaskEditError, match="outside"):
        run_training(tiny_pipe, prepared, tmp_path / "bad", edited_later={9: prepared.frames[0]}, later_captions={9: "x"})
    with pytest.raises(MaskEditError, match="fit"):
        run_training(tiny_pipe, prepared, tmp_path / "bad", edited_later={2: prepared.frames[0][:32]}, later_captions={2: "x"})


# ----- generation


def test_generate_edit_methods(tiny_pipe, prepared):
    edited = edited_first_frame(prepared)
    with pytest.raises(MaskEditError, match="LoRA"):
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2)
    with pytest.raises(MaskEditError, match="naive baseline's LoRA"):  # paper App. B.1: blending uses the naive LoRA
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="feature-blend")
    steps = []
    for sampler in ("euler", "unipc"):
        frames = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="no-lora",
                                       callback=steps.append, sampler=sampler)
        assert frames.shape == (9, 64, 64, 3) and frames.dtype == np.uint8
    assert [s.step for s in steps] == [1, 2, 1, 2] and steps[0].total_steps == 2
    with pytest.raises(MaskEditError, match="unknown"):
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", method="magic")
    with pytest.raises(MaskEditError, match="fit"):
        generate.generate_edit(tiny_pipe, prepared, edited[:32], "a blue box", method="no-lora")


def test_generate_edit_with_lora_is_deterministic_and_stoppable(tmp_path, tiny_pipe, prepared):
    run_training(tiny_pipe, prepared, tmp_path / "lora")
    edited = edited_first_frame(prepared)
    first = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, seed=3)
    again = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, seed=3)
    np.testing.assert_array_equal(first, again)
    assert tiny_pipe.scheduler.config.shift == generate.DEFAULT_FLOW_SHIFT  # the default sampler: Euler
    generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, flow_shift=3.0, method="no-lora",
                          sampler="unipc")
    assert tiny_pipe.scheduler.config.flow_shift == 3.0
    # no-lora switched the adapter off only for its own call
    np.testing.assert_array_equal(generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, seed=3), first)
    with pytest.raises(generate.GenerationStopped):
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=3, should_stop=lambda: True)

    outputs = generate.write_edit_outputs(tmp_path / "out", prepared, first)
    clip = video.read_video(outputs.edited)
    assert clip.frames.shape == (9, 64, 64, 3) and clip.fps == pytest.approx(8)
    assert video.read_video(outputs.side_by_side).frames.shape == (9, 64, 128, 3)
    assert np.isfinite(outputs.background_psnr)


# ----- the naive-LoRA baseline (METHOD.md §8)


def test_train_naive_lora_uses_the_stock_condition(tmp_path, tiny_pipe, prepared, monkeypatch):
    import torch

    from maskedit.method.conditioning import GREY_FILL, condition_pixels

    seen = []
    original = training.LoraTrainer.__init__

    def spy(self, pipe, items, *args, **kwargs):
        original(self, pipe, items, *args, **kwargs)
        seen.append((items, self.samples))

    monkeypatch.setattr(training.LoraTrainer, "__init__", spy)
    events = run_training(tiny_pipe, prepared, tmp_path / "naive", naive=True)
    assert isinstance(events[-1], train.EditTrainingDone)
    assert [(e.stage, e.total_steps) for e in events if isinstance(e, train.EditTrainingStage)] == [(1, 3)]
    (items, encoded), = seen
    (item,) = items
    sample = item.sample
    # the stock condition: frame 0 kept, every later frame generated from an empty (grey-filled) condition
    assert np.all(sample.keep_mask[0] == 1) and np.all(sample.keep_mask[1:] == 0)
    np.testing.assert_array_equal(sample.condition_video[0], prepared.frames[0])
    assert np.all(sample.condition_video[1:] == 0)
    pixels = condition_pixels(sample.condition_video, sample.keep_mask)  # what the VAE encodes
    assert torch.all(pixels[:, :, 1:] == GREY_FILL)
    np.testing.assert_array_equal(sample.target_video, prepared.frames)
    np.testing.assert_array_equal(sample.image, prepared.frames[0])
    assert sample.prompt == "p3rs0n, a box on a gradient"
    mask = encoded[0].condition[:, :4]  # the packed latent mask the transformer sees: [1, 0, …]
    assert mask[:, :, 0].min() == 1 and mask[:, :, 1:].max() == 0
    meta = json.loads((tmp_path / "naive" / METADATA_NAME).read_text())
    assert meta["condition"] == "stock" and meta["method"] == "naive-lora" and meta["stage2_frames"] == []
    assert generate.is_naive_lora(meta)

    # its own fingerprint: a mask-aware run in the same folder never resumes the naive checkpoints (nor back)
    seen.clear()
    mask_run = run_training(tiny_pipe, prepared, tmp_path / "naive")
    assert len([e for e in mask_run if isinstance(e, StepEvent)]) == 3
    assert any(isinstance(e, train.EditTrainingNote) and "afresh" in e.message for e in mask_run)
    assert seen[0][0][0].sample.keep_mask[1:].max() == 1  # the mask condition: outside the boxes is kept
    assert "condition" not in json.loads((tmp_path / "naive" / METADATA_NAME).read_text())
    with pytest.raises(MaskEditError, match="stage 2"):
        run_training(tiny_pipe, prepared, tmp_path / "bad", naive=True, edited_later={4: prepared.frames[4]})


def test_generate_naive_lora_is_the_stock_condition_with_the_naive_lora(tmp_path, tiny_pipe, prepared):
    from maskedit.method.lora import load_lora

    edited = edited_first_frame(prepared)
    with pytest.raises(MaskEditError, match="naive"):
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="naive-lora")
    config = TrainConfig(steps=3, learning_rate=5e-3)
    run_training(tiny_pipe, prepared, tmp_path / "mask", config=config)
    run_training(tiny_pipe, prepared, tmp_path / "naive", config=config, naive=True)  # leaves the naive adapter on
    naive = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="naive-lora")
    assert naive.shape == (9, 64, 64, 3) and naive.dtype == np.uint8
    blended = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="feature-blend")
    assert blended.shape == naive.shape and not np.array_equal(blended, naive)  # the blending baseline: naive LoRA + Eq. 3
    no_lora = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="no-lora")
    assert not np.array_equal(naive, no_lora)  # the LoRA is active
    # the same as the stock condition from the edited frame with that LoRA, loaded from its files
    load_lora(tiny_pipe, tmp_path / "naive")
    np.testing.assert_array_equal(
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="naive-lora"), naive)
    load_lora(tiny_pipe, tmp_path / "mask")
    mask = generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2)
    assert not np.array_equal(naive, mask) and not np.array_equal(mask, no_lora)
    # the mask-aware LoRA under the stock condition is something else again: the naive LoRA really was used
    assert not np.array_equal(
        generate.generate_edit(tiny_pipe, prepared, edited, "a blue box", steps=2, method="naive-lora"), naive)
