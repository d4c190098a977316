"""`python -m maskedit segment` and `caption` on drawn clips and a tiny Florence-2, offline."""

import numpy as np

from maskedit.interfaces.cli import main as cli
from maskedit.method import masks
from maskedit.media import video
from maskedit.perception.captioning import save_tiny_florence2
from maskedit.tools.segmentation_scenes import moving_object_clip


def run(capsys, *args):
    code = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_masks_boxes_and_overlay_that_prepare_accepts(capsys, tmp_path):
    scene = moving_object_clip(num_frames=9, width=96, height=64, seed=3)
    clip_path = tmp_path / "clip.mp4"
    video.write_video(clip_path, scene.frames, scene.fps)
    x, y = scene.click
    code, out, err = run(capsys, "segment", "--video", clip_path, "--point", f"{x:.0f},{y:.0f}",
                         "--backend", "fallback", "--out", tmp_path / "seg")
    assert code == 0, err
    assert "approximate" in out.lower()
    for name in ("masks.mp4", "boxes.mp4", "overlay.mp4"):
        clip = video.read_video(tmp_path / "seg" / name)
        assert (clip.num_frames, clip.width, clip.height, clip.fps) == (9, 96, 64, scene.fps), name
    tight = masks.read_mask_video(tmp_path / "seg" / "masks.mp4")
    truth = masks.loose_boxes(scene.region)
    found = masks.loose_boxes(tight)
    iou = (found & truth).sum((1, 2)) / np.maximum((found | truth).sum((1, 2)), 1)
    assert iou.min() >= 0.8, iou
    code, out, err = run(capsys, "prepare", "--video", clip_path, "--mask-video", tmp_path / "seg" / "masks.mp4",
                         "--width", 96, "--height", 64, "--out", tmp_path / "prepared")
    assert code == 0, err


def test_segment_needs_a_click(capsys, tmp_path):
    scene = moving_object_clip(num_frames=5, width=64, height=64)
    video.write_video(tmp_path / "clip.mp4", scene.frames, scene.fps)
    code, _, err = run(capsys, "segment", "--video", tmp_path / "clip.mp4", "--out", tmp_path / "seg")
    assert code == 2 and "--point" in err and "Traceback" not in err
    assert not (tmp_path / "seg" / "masks.mp4").exists()


def test_caption_with_a_tiny_florence2_and_without_one(capsys, tmp_path):
    image = np.full((64, 64, 3), 120, np.uint8)
    video.write_image(tmp_path / "frame.png", image)
    model = save_tiny_florence2(tmp_path / "florence")
    code, out, err = run(capsys, "caption", tmp_path / "frame.png", "--caption-model", model, "--trigger", "sks")
    assert code == 0, err
    assert out.strip().startswith("sks")
    code, _, err = run(capsys, "caption", tmp_path / "frame.png", "--caption-model", tmp_path / "missing")
    assert code == 2 and "prompt" in err and "Traceback" not in err
