"""Preparing a clip longer than one window (METHOD.md §7b): frames and boxes go frame by frame into memory-mapped
files, with the same selection, geometry and boxes as the in-memory path of a short clip."""

import numpy as np
import pytest

from maskedit.media import clipstore, video
from maskedit.method import masks
from maskedit.workflow import prepare
from conftest import make_synthetic_clip


@pytest.fixture(scope="module")
def long_files(tmp_path_factory):
    """A 103-frame 80x64 clip and its mask video (24 fps)."""
    folder = tmp_path_factory.mktemp("long_prepare")
    frames, region = make_synthetic_clip(103, 64, 80, box=14, step=1)
    video.write_video(folder / "clip.mp4", frames, 24.0)
    masks.write_mask_video(folder / "mask.mp4", region, 24.0)
    return folder


def test_a_long_clip_is_prepared_on_disk_like_the_in_memory_path(long_files, tmp_path):
    store = tmp_path / "prepared"
    prepared = prepare.prepare_clip(long_files / "clip.mp4", mask_video=long_files / "mask.mp4", num_frames=101,
                                    width=64, height=48, store=store)
    assert clipstore.is_mapped(prepared.frames) and clipstore.is_mapped(prepared.region)
    source = video.probe_video(long_files / "clip.mp4")
    expected, _ = video.read_conformed(long_files / "clip.mp4", 101, 64, 48)
    raw = masks.read_mask_for_clip(long_files / "mask.mp4", source, 101)
    boxes = masks.loose_boxes(masks.conform_region(raw, source, 101, 64, 48))
    np.testing.assert_array_equal(prepared.frames, expected.frames)
    np.testing.assert_array_equal(prepared.region, boxes)
    assert prepared.tight is None and prepared.fps == pytest.approx(expected.fps)

    prepare.save_prepared(prepared, store)   # the arrays are already there: only the rest is written
    loaded = prepare.load_prepared(store)
    assert clipstore.is_mapped(loaded.frames) and loaded.num_frames == 101
    np.testing.assert_array_equal(loaded.region, boxes)
    assert not (store / prepare.CLIP_ARRAY).exists() and (store / prepare.CLIP_VIDEO).is_file()
    assert video.probe_video(store / prepare.BOXES_VIDEO).num_frames == 101

    elsewhere = tmp_path / "copy"             # saved into another folder: linked (or copied), never loaded whole
    prepare.save_prepared(loaded, elsewhere)
    np.testing.assert_array_equal(prepare.load_prepared(elsewhere).frames, expected.frames)


def test_a_long_clip_with_a_box_and_a_short_clip_keep_their_paths(long_files, tmp_path):
    prepared = prepare.prepare_clip(long_files / "clip.mp4", box="10,8,30,30", num_frames=97, width=64, height=48,
                                    store=tmp_path / "p")
    assert prepared.region.shape == (97, 48, 64) and prepared.region[:, 8:30, 10:30].all()
    assert prepared.region.sum() == 97 * 22 * 20
    short = prepare.prepare_clip(long_files / "clip.mp4", box="10,8,30,30", num_frames=81, width=64, height=48)
    assert not clipstore.is_mapped(short.frames)  # one window or less: in memory, as before
    prepare.save_prepared(short, tmp_path / "short")
    assert (tmp_path / "short" / prepare.CLIP_ARRAY).is_file() and not (tmp_path / "short" / "frames.npy").exists()


def test_a_long_mask_whose_boxes_vanish_is_refused(long_files, tmp_path):
    with pytest.raises(Exception, match="smaller than"):
        prepare.prepare_clip(long_files / "clip.mp4", mask_video=long_files / "mask.mp4", num_frames=101, width=64,
                             height=48, min_area=10_000, store=tmp_path / "p")
    assert not (tmp_path / "p" / "region.npy").exists()
