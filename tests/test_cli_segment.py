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


def test_segment_by_text_with_a_tiny_sam3_then_clicks_and_keep(capsys, tmp_path):
    """--text finds every instance (listed with score and area), clicks add an object, --keep picks; the
    masks written are the union of the kept objects."""
    import json

    from maskedit.perception.segmentation_sam3 import save_tiny_sam3

    sam3 = save_tiny_sam3(tmp_path / "sam3")
    scene = moving_object_clip(num_frames=5, width=96, height=64, seed=3)
    clip_path = tmp_path / "clip.mp4"
    video.write_video(clip_path, scene.frames, scene.fps)
    x, y = scene.click
    code, out, err = run(capsys, "segment", "--video", clip_path, "--text", "the disk", "--sam3-model", sam3,
                         "--backend", "fallback", "--device", "cpu", "--point", f"{x:.0f},{y:.0f},1,3",
                         "--keep", "1,3", "--out", tmp_path / "seg")
    assert code == 0, err
    assert "text segmenter: SAM 3 (sam3, cpu)" in out and "segmenter: approximate" in out
    assert "backend: SAM 3 (text and clicks): in use for text" in out and "backend: SAM2 (clicks): " in out
    assert "backend: offline fallback (colour clicks): in use for clicks" in out
    assert 'object 1 (red): "the disk", score 0.' in out and "px on frame 0" in out
    assert "object 2 (blue)" in out and "dropped (--keep)" in out and "object 3 (green): 1 click(s)" in out
    listed = json.loads((tmp_path / "seg" / "objects.json").read_text())
    assert [(o["id"], o["kind"], o["kept"]) for o in listed] == [(1, "text", True), (2, "text", False),
                                                                 (3, "clicks", True)]
    assert listed[0]["text"] == "the disk" and 0 < listed[0]["score"] < 1 and listed[0]["area"] >= 0
    tight = masks.read_mask_video(tmp_path / "seg" / "masks.mp4")
    assert tight.shape == (5, 64, 96) and tight.any()
    for name in ("masks.mp4", "boxes.mp4", "overlay.mp4"):
        assert video.read_video(tmp_path / "seg" / name).num_frames == 5


def test_segment_by_text_without_sam3_says_what_to_get(capsys, tmp_path):
    scene = moving_object_clip(num_frames=5, width=64, height=64)
    video.write_video(tmp_path / "clip.mp4", scene.frames, scene.fps)
    code, out, err = run(capsys, "segment", "--video", tmp_path / "clip.mp4", "--text", "the disk",
                         "--sam3-model", tmp_path / "missing", "--out", tmp_path / "seg")
    assert code == 2 and "Traceback" not in err
    for words in ("text prompts need SAM 3", "hf download facebook/sam3", "--sam3-model"):
        assert words in err, err
    code, _, err = run(capsys, "segment", "--video", tmp_path / "clip.mp4", "--text", "x", "--keep", "a",
                       "--out", tmp_path / "seg")
    assert code == 2 and "--keep takes object numbers" in err
    assert not (tmp_path / "seg" / "masks.mp4").exists()
