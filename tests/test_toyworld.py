"""The toy world: determinism, geometry, true masks, pixel-exact edits; the example and toy-model scripts."""

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from maskedit.tools import toyworld
from maskedit.errors import MaskEditError

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_clip_other_seed_other_clip():
    a, b = toyworld.render_clip(5), toyworld.render_clip(5)
    assert a.scene == b.scene
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    c = toyworld.render_clip(6)
    assert c.scene != a.scene and not np.array_equal(a.frames, c.frames)


def test_defaults_and_shapes():
    clip = toyworld.render_clip(0, num_objects=2)
    assert clip.frames.shape == (17, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (2, 17, 64, 64) and clip.masks.dtype == bool
    assert clip.coverage.shape == clip.masks.shape
    assert (clip.num_frames, clip.height, clip.width, clip.fps) == (17, 64, 64, toyworld.DEFAULT_FPS)
    assert clip.masks.any(axis=(2, 3)).all()  # both objects visible on every frame
    assert len(np.unique(clip.frames.reshape(-1, 3), axis=0)) > 200  # textured, not flat


@pytest.mark.parametrize("width,height,frames", [(32, 48, 5), (80, 64, 9), (64, 64, 1)])
def test_any_multiple_of_16_and_4k_plus_1(width, height, frames):
    clip = toyworld.render_clip(3, width, height, frames)
    assert clip.frames.shape == (frames, height, width, 3)


@pytest.mark.parametrize("width,height,frames", [(60, 64, 17), (64, 64, 16), (64, 40, 9)])
def test_bad_geometry_is_refused(width, height, frames):
    with pytest.raises(MaskEditError):
        toyworld.random_scene(0, width, height, frames)


def test_motion_is_smooth_and_present():
    clip = toyworld.render_clip(11, num_objects=1, pan=False)
    centres = []
    for mask in clip.masks[0]:
        ys, xs = np.nonzero(mask)
        centres.append((xs.mean(), ys.mean()))
    steps = np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1)
    assert steps.sum() > 5  # it moves
    assert steps.max() < 4  # by small steps (no jumps)


def test_masks_match_the_drawn_objects():
    scene = toyworld.random_scene(23, num_objects=2, occlusion=True)
    clip = toyworld.render(scene)
    for k in range(2):
        without = toyworld.render(replace(scene, objects=scene.objects[:k] + scene.objects[k + 1:]))
        changed = np.any(clip.frames != without.frames, axis=-1)
        assert not (changed & ~clip.masks[k]).any()  # every pixel the object changes is in its mask
        assert changed[clip.masks[k]].mean() > 0.9  # and nearly all of its mask shows it
    # The back object's mask leaves out what the front object hides wholly; they do overlap at some point.
    assert not (clip.masks[0] & (clip.coverage[1] >= 1.0)).any()
    assert ((clip.coverage[0] > 0) & (clip.coverage[1] > 0)).any()


@pytest.mark.parametrize("kind", toyworld.EDIT_KINDS)
@pytest.mark.parametrize("index", [0, 1])
def test_edit_differs_from_the_source_only_inside_the_region(kind, index):
    edit = toyworld.make_edit(52, kind, index, later_frames=(4, 12), num_objects=2, occlusion=True)
    changed = np.any(edit.source.frames != edit.target.frames, axis=-1)
    assert changed.any()
    assert not (changed & ~edit.region).any()  # pixel-exact: nothing outside the object's masks moved
    assert np.array_equal(edit.source.frames[~edit.region], edit.target.frames[~edit.region])
    assert np.array_equal(edit.region, edit.source.masks[index] | edit.target.masks[index])
    assert np.array_equal(edit.source_mask, edit.source.masks[index])
    assert np.array_equal(edit.edited_first_frame, edit.target.frames[0])
    assert sorted(edit.edited_later) == [4, 12]
    assert all(np.array_equal(frame, edit.target.frames[k]) for k, frame in edit.edited_later.items())
    assert edit.caption != edit.edited_caption
    other = 1 - index  # the other object is untouched
    assert edit.source.scene.objects[other] == edit.target.scene.objects[other]


def test_edit_kinds_change_what_they_say():
    scene = toyworld.random_scene(40, num_objects=1)
    before = scene.objects[0]
    color = toyworld.make_edit(scene, "color").target.scene.objects[0]
    pattern = toyworld.make_edit(scene, "pattern").target.scene.objects[0]
    shape = toyworld.make_edit(scene, "shape").target.scene.objects[0]
    assert color.color != before.color and color.shape == before.shape and color.start == before.start
    assert pattern.pattern != before.pattern and pattern.color == before.color
    assert shape.shape != before.shape and shape.color == before.color and shape.pattern == before.pattern


def test_bad_edits_are_refused():
    with pytest.raises(MaskEditError):
        toyworld.make_edit(1, "size")
    with pytest.raises(MaskEditError):
        toyworld.make_edit(1, "color", object_index=2, num_objects=2)
    with pytest.raises(MaskEditError):
        toyworld.make_edit(1, "color", later_frames=(0,))
    with pytest.raises(MaskEditError):
        toyworld.make_edit(1, "color", later_frames=(17,))


def test_benchmark_edits_are_fixed():
    edits = toyworld.benchmark_edits(num_frames=9)
    assert len(edits) == len(toyworld.BENCHMARK_EDITS)
    assert {e.kind for e in edits} == set(toyworld.EDIT_KINDS)
    again = toyworld.benchmark_edits(num_frames=9, count=2)
    assert [e.name for e in again] == [e.name for e in edits[:2]]
    for a, b in zip(edits, again):
        assert np.array_equal(a.target.frames, b.target.frames)
    for edit in edits:
        assert list(edit.edited_later) == [4]
        assert edit.region[1:].any(axis=(1, 2)).all()  # the edited object shows on every frame


def test_captions_name_objects_and_motion():
    scene = toyworld.random_scene(11, num_objects=1, pan=True)
    caption = scene.caption()
    obj = scene.objects[0]
    assert obj.color in caption and obj.shape in caption and "moving" in caption and "panning" in caption


def test_make_examples_writes_index_and_files(tmp_path, monkeypatch):
    script = load_script("make_examples")
    monkeypatch.setattr(script, "EXAMPLES", (
        ("a", 11, "color", 0, (64, 48), 9, (), dict(num_objects=1)),
        ("b", 40, "shape", 1, (64, 64), 9, (4,), dict(num_objects=2)),
    ))
    index = script.make_examples(tmp_path)
    assert [e["name"] for e in index] == ["a", "b"]
    assert json.loads((tmp_path / "examples.json").read_text()) == index
    assert index[1]["edited_later_frames"] == [{"index": 4, "image": "b/edited_frame_4.png"}]
    for e in index:
        for key in ("clip", "mask_video", "edited_first_frame", "ground_truth"):
            assert (tmp_path / e[key]).is_file()
        x0, y0, x1, y1 = (int(v) for v in e["box"].split(","))
        assert 0 <= x0 < x1 <= e["width"] and 0 <= y0 < y1 <= e["height"]
    from maskedit.method.masks import read_mask_video
    from maskedit.media.video import read_image

    mask = read_mask_video(tmp_path / "b" / "mask.mp4")
    assert mask.shape == (9, 64, 64) and mask[0].any()
    assert read_image(tmp_path / "b" / "edited_first_frame.png").shape == (64, 64, 3)
    assert "b/edited_frame_4.png" in (tmp_path / "README.md").read_text()


def test_committed_examples_are_small_and_complete():
    index_path = ROOT / "examples" / "examples.json"
    if not index_path.exists():
        pytest.skip("examples/ has not been drawn (python scripts/make_examples.py)")
    index = json.loads(index_path.read_text())
    assert len(index) >= 3
    assert sum(1 for e in index if e["edited_later_frames"]) >= 1
    for e in index:
        paths = [e["clip"], e["mask_video"], e["edited_first_frame"], *(x["image"] for x in e["edited_later_frames"])]
        for path in paths:
            file = ROOT / "examples" / path
            assert file.is_file() and file.stat().st_size < 1_000_000


def test_train_toy_model_smoke_saves_a_loadable_pipeline(tmp_path):
    """--smoke on CPU: every phase runs, the folder loads with models.load_pipeline and generates; a rerun
    with more transformer steps resumes from the checkpoint."""
    import torch

    from maskedit.models.loading import load_pipeline

    script = load_script("train_toy_model")
    out = tmp_path / "toy"
    flags = ["--smoke", "--out", str(out), "--clips", "2", "--heldout", "1", "--vae-steps", "1", "--vae-batch", "1"]
    assert script.main(flags + ["--transformer-steps", "1"]) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["vae"]["steps"] == 1 and report["transformer"]["steps"] == 1
    assert set(report["eval"]) >= {"reconstruction_psnr", "trained", "untrained", "copy_first_frame"}
    card = (out / "README.md").read_text()
    assert "SMOKE RUN" in card and "next-frame PSNR" in card and "{" not in card.split("```")[0]

    loaded = load_pipeline(str(out), device="cpu")
    vae_config = loaded.pipe.vae.config
    assert list(vae_config.latents_mean) == report["latents"]["latents_mean"]
    assert list(vae_config.latents_std) == report["latents"]["latents_std"]
    assert loaded.pipe.transformer.config.added_kv_proj_dim is not None
    frames = loaded.pipe(image=__import__("PIL.Image").Image.fromarray(np.zeros((64, 64, 3), np.uint8)),
                         prompt="a red box", num_frames=5, height=64, width=64, num_inference_steps=2,
                         generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert frames.shape == (5, 64, 64, 3) and np.isfinite(frames).all()

    assert script.main(flags + ["--transformer-steps", "2"]) == 0  # resumes: only one more step
    report = json.loads((out / "training_report.json").read_text())
    assert report["vae"]["steps"] == 1 and report["transformer"]["steps"] == 2
