"""Segmentation from clicks: prompts, the offline fallback on drawn clips, SAM2 on a tiny random model,
the loose boxes of the result (METHOD.md §3), the output videos and the benchmark script."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maskedit.method import masks
from maskedit.perception import segmentation
from maskedit.errors import MaskEditError
from maskedit.perception.segmentation import (
    BOXES_VIDEO, MASKS_VIDEO, OVERLAY_VIDEO, Segmenter, load_segmenter, overlay_frames, parse_point,
    prompts_by_object, segment_clip, write_segmentation,
)
from maskedit.perception.segmentation_fallback import FallbackSegmenter
from maskedit.tools.segmentation_scenes import moving_object_clip, texture, uniform_clip
from maskedit.media.video import read_video

ROOT = Path(__file__).resolve().parent.parent
REAL_SAM2 = os.environ.get("MASKEDIT_SAM2_PATH")


def box_iou(found: np.ndarray, truth: np.ndarray) -> float:
    """IoU of the loose boxes (METHOD.md §3) of two bool (H, W) masks."""
    a, b = masks.loose_boxes(found), masks.loose_boxes(truth)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


# ----- prompts


def test_parse_point():
    assert parse_point("320,200") == (320.0, 200.0, 1, 1)
    assert parse_point(" 12.5 , 7 ,0") == (12.5, 7.0, 0, 1)
    assert parse_point("1,2,1,3") == (1.0, 2.0, 1, 3)
    for bad in ("320", "a,b", "1,2,5", "1,2,1,x", "1,2,3,4,5"):
        with pytest.raises(MaskEditError):
            parse_point(bad)


def test_prompts_are_checked_and_grouped_by_object():
    objects = prompts_by_object([(10, 5), (40, 20), (3, 3)], [1, 1, 0], 32, 64, object_ids=[2, 1, 2])
    assert list(objects) == [2, 1]
    assert objects[2].positive_points.tolist() == [[10, 5]] and objects[2].negative_points.tolist() == [[3, 3]]
    box_only = prompts_by_object(None, None, 32, 64, box=(1, 2, 30, 20))
    assert box_only[1].box == (1, 2, 30, 20) and len(box_only[1].points) == 0
    cases = [
        (dict(points=[(64, 5)], labels=[1]), "outside the 64x32 frame"),
        (dict(points=[(5, -1)], labels=[1]), "outside"),
        (dict(points=[(5, 5)], labels=[2]), r"1 \(the object\) or 0"),
        (dict(points=[(5, 5), (6, 6)], labels=[1]), "2 points but 1 labels"),
        (dict(points=[(5, 5)], labels=[0]), "only negative clicks"),
        (dict(points=[], labels=[]), "click at least once"),
        (dict(points=[(5, 5)], labels=[1], box=(10, 10, 5, 20)), "box"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MaskEditError, match=message):
            prompts_by_object(kwargs.pop("points"), kwargs.pop("labels"), 32, 64, **kwargs)


# ----- the offline fallback on drawn clips

SCENES = [  # shape, object texture, background, speed (px/frame), pan (px/frame), size, frame clicked
    ("disc", "stripes", "noise", 3.0, 0.0, 0.35, 0),
    ("star", "checker", "stripes", 6.0, 1.5, 0.35, 0),
    ("triangle", "dots", "checker", 9.0, 0.0, 0.4, 0),
    ("blob", "noise", "gradient", 1.0, 1.5, 0.3, 8),
    ("ellipse", "gradient", "dots", 4.0, 0.0, 0.5, 16),
    ("square", "noise", "noise", 12.0, 3.0, 0.25, 0),
]


@pytest.mark.parametrize("shape,object_texture,background,speed,pan,size,frame", SCENES)
def test_fallback_boxes_follow_the_object(shape, object_texture, background, speed, pan, size, frame):
    scene = moving_object_clip(num_frames=17, width=192, height=112, shape=shape, object_texture=object_texture,
                               background=background, speed=speed, pan=pan, size=size, seed=SCENES.index(
                                   (shape, object_texture, background, speed, pan, size, frame)))
    segmenter = FallbackSegmenter()
    calls = []
    found = segmenter.propagate(scene.frames, [scene.click_on(frame)], [1], frame_index=frame,
                                progress=lambda done, total: calls.append((done, total)))
    assert found.shape == scene.region.shape and found.dtype == bool
    assert calls[-1] == (17, 17) and len(calls) == 17
    ious = [box_iou(found[t], scene.region[t]) for t in range(17)]
    assert min(ious) >= 0.8, np.round(ious, 2)
    # the live overlay on the clicked frame is the propagation's start
    assert np.array_equal(segmenter.image_mask(scene.frames[frame], [scene.click_on(frame)], [1]), found[frame])


def test_fallback_several_clicks_box_and_objects():
    rng = np.random.default_rng(5)
    height, width = 96, 160
    frame = texture("noise", height, width, [np.array(c, np.float32) for c in ([40, 120, 90], [60, 90, 160], [30, 150, 150])],
                    rng, scale=9).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    first = (xx - 40) ** 2 + (yy - 45) ** 2 < 18 ** 2
    second = (abs(xx - 120) < 16) & (abs(yy - 50) < 22)
    frame[first] = [230, 70, 40]
    frame[second] = [240, 200, 40]
    frame[second & (xx % 8 < 4)] = [200, 90, 20]  # a striped second object
    segmenter = FallbackSegmenter()
    both = segmenter.image_mask(frame, [(40, 45), (120, 50)], [1, 1], object_ids=[1, 2])
    assert box_iou(both, first | second) >= 0.9
    assert len(masks.find_loose_boxes(both[None])[0]) == 2  # two objects, two boxes
    boxed = segmenter.image_mask(frame, None, None, box=(96, 20, 144, 80))
    assert box_iou(boxed, second) >= 0.8
    one = segmenter.image_mask(frame, [(40, 45), (120, 50)], [1, 0])  # the second object excluded
    assert box_iou(one, first) >= 0.9 and not (one & second).any()


def test_fallback_refuses_clicks_on_nothing_separable():
    segmenter = FallbackSegmenter()
    flat = uniform_clip(num_frames=5)
    for call in (lambda: segmenter.image_mask(flat[0], [(40, 30)], [1]),
                 lambda: segmenter.propagate(flat, [(40, 30), (5, 5)], [1, 0])):
        with pytest.raises(MaskEditError, match="nothing separable") as error:
            call()
        assert "negative clicks" in str(error.value) and "--backend sam2" in str(error.value)


def test_fallback_refuses_a_selection_of_the_whole_frame():
    frame = uniform_clip(1, 96, 64)[0]
    frame[20:40, 30:60] = [250, 0, 0]
    with pytest.raises(MaskEditError, match="almost the whole frame"):
        FallbackSegmenter().image_mask(frame, [(50, 30)], [1], box=(0, 0, 96, 64))
    with pytest.raises(MaskEditError, match="nothing separable"):  # a click on the background
        FallbackSegmenter().image_mask(frame, [(10, 10)], [1])


# ----- whole clips, loose boxes (METHOD.md §3), files


class FixedSegmenter:
    """A stand-in backend that returns a given region, to check what segment_clip makes of it."""

    name, label, approximate, note = "fixed", "fixed masks", True, "a note from loading"

    def __init__(self, region):
        self.region = region

    def image_mask(self, frame, points, labels, *, box=None, object_ids=None):
        return self.region[0]

    def propagate(self, frames, points, labels, frame_index=0, *, box=None, object_ids=None, progress=None):
        return self.region

    def release(self):
        pass


def test_segment_clip_makes_the_method_loose_boxes():
    frames = np.zeros((4, 60, 100, 3), np.uint8)
    region = np.zeros((4, 60, 100), bool)
    region[:, 10:30, 20:60] = True  # 40x20 → grows by 2 px left/right and 1 px up/down
    region[:, 50:60, 90:100] = True  # 10x10 in the corner: 1 px per side (halves round up), clipped to the frame
    region[:, 2:6, 2:6] = True  # 16 px, a speck under 50 px: no box
    region[3] = False  # object lost on the last frame
    assert isinstance(FixedSegmenter(region), Segmenter)
    result = segment_clip(FixedSegmenter(region), frames, [(30, 20)], [1])
    assert sorted(result.box_lists[0]) == [(18, 9, 62, 31), (89, 49, 100, 60)]
    assert np.array_equal(result.boxes, masks.loose_boxes(region))
    assert not result.boxes[:, 2:6, 2:6].any()
    assert result.approximate and result.label == "fixed masks"
    assert any("not found on 1 frame(s): 3" in note for note in result.notes)
    assert any("a note from loading" in note for note in result.notes)
    with pytest.raises(MaskEditError, match="not found on any frame"):
        segment_clip(FixedSegmenter(np.zeros_like(region)), frames, [(30, 20)], [1])


def test_write_segmentation_files(tmp_path):
    scene = moving_object_clip(num_frames=9, width=96, height=64, seed=2)
    result = segment_clip(FallbackSegmenter(), scene.frames, [scene.click], [1])
    outputs = write_segmentation(tmp_path / "out", scene.frames, result, 12.0, points=[scene.click], labels=[1])
    assert {p.name for p in (tmp_path / "out").iterdir()} == {MASKS_VIDEO, BOXES_VIDEO, OVERLAY_VIDEO}
    for path in (outputs.masks, outputs.boxes, outputs.overlay):
        clip = read_video(path)
        assert clip.num_frames == 9 and clip.fps == pytest.approx(12.0) and (clip.height, clip.width) == (64, 96)
    boxes = masks.read_mask_video(outputs.boxes)
    assert np.mean(boxes == result.boxes) > 0.99  # H.264 is lossy at the edges only
    tight = masks.read_mask_video(outputs.masks)
    assert np.mean(tight == result.region) > 0.98


def test_overlay_frames():
    frames = np.full((2, 40, 50, 3), 100, np.uint8)
    region = np.zeros((2, 40, 50), bool)
    region[:, 10:20, 10:20] = True
    out = overlay_frames(frames, region, [[(5, 5, 30, 30)], []], points=[(15, 15), (40, 35)], labels=[1, 0])
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert out[1, 12, 12, 0] > 100 and out[1, 12, 12, 1] < 100  # tinted red
    assert tuple(out[0, 5, 20]) == tuple(segmentation.BOX_COLOR)  # box outline on frame 0
    assert tuple(out[1, 5, 20]) == (100, 100, 100)  # no box on frame 1
    assert out[0, 35, 40, 0] > 150 and out[0, 35, 40, 1] < 100  # the exclude click is red


# ----- choosing a backend


def test_load_segmenter_backends(tmp_path):
    with pytest.raises(MaskEditError, match="unknown segmentation backend"):
        load_segmenter("magic")
    fallback = load_segmenter("fallback")
    assert fallback.approximate and "approximate" in fallback.label and fallback.note is None
    auto = load_segmenter("auto", model_id=str(tmp_path / "missing"), device="cpu")
    assert auto.name == "fallback" and "SAM2 could not be loaded" in auto.note
    with pytest.raises(MaskEditError, match="--backend fallback"):
        load_segmenter("sam2", model_id=str(tmp_path / "missing"), device="cpu")
    with pytest.raises(MaskEditError, match="--backend fallback"):  # offline, nothing cached
        load_segmenter("sam2", model_id="someone/not-a-sam2-model", device="cpu")


# ----- SAM2 (transformers Sam2VideoModel) on a tiny random model


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    from maskedit.perception.segmentation_sam2 import save_tiny_sam2

    folder = tmp_path_factory.mktemp("tiny-sam2")
    save_tiny_sam2(folder)
    segmenter = load_segmenter("sam2", model_id=str(folder), device="cpu")  # the loading code of real weights
    yield segmenter
    segmenter.release()


def record_calls(model, monkeypatch) -> list:
    """Record every forward of the SAM2 model (its own propagation loop included): (frame, reverse,
    a copy of the point prompts the session holds per object and frame)."""
    calls, forward = [], model.forward

    def spy(*args, **kwargs):
        session = kwargs["inference_session"] if "inference_session" in kwargs else args[0]
        frame = kwargs.get("frame_idx", args[1] if len(args) > 1 else None)
        prompts = {obj: {f: {k: v.clone() for k, v in p.items()} for f, p in frames.items()}
                   for obj, frames in session.point_inputs_per_obj.items()}
        calls.append((frame, kwargs.get("reverse", False), prompts))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    return calls


def test_sam2_image_mask_shapes_and_prompts(tiny_sam2, monkeypatch):
    from maskedit.perception.segmentation_sam2 import TINY_SAM2_IMAGE_SIZE

    rng = np.random.default_rng(0)
    frame = (rng.random((50, 70, 3)) * 255).astype(np.uint8)  # odd, non-square size
    calls = record_calls(tiny_sam2.model, monkeypatch)
    mask = tiny_sam2.image_mask(frame, [(35, 25), (5, 45)], [1, 0])
    again = tiny_sam2.image_mask(frame, [(35, 25), (5, 45)], [1, 0])
    boxed = tiny_sam2.image_mask(frame, [(35, 25)], [1], box=(10, 5, 60, 45))
    assert mask.shape == (50, 70) and mask.dtype == bool and np.array_equal(mask, again)
    assert boxed.shape == (50, 70)
    scale = TINY_SAM2_IMAGE_SIZE / np.array([70, 50])
    points = calls[0][2][0][0]
    assert points["point_labels"].tolist() == [[[1, 0]]] and points["point_labels"].dtype.is_floating_point is False
    assert np.allclose(points["point_coords"][0, 0].numpy(), np.array([(35, 25), (5, 45)]) * scale)
    box_points = calls[2][2][0][0]
    assert box_points["point_labels"].tolist() == [[[2, 3, 1]]]  # box corners first, as SAM2 expects
    assert np.allclose(box_points["point_coords"][0, 0, :2].numpy(), np.array([(10, 5), (60, 45)]) * scale)
    assert len(tiny_sam2._image_session.cache._vision_features) == 1  # one embedding, reused across clicks


def test_sam2_propagates_forward_and_backward(tiny_sam2, monkeypatch):
    scene = moving_object_clip(num_frames=5, width=80, height=48, seed=3)
    calls = record_calls(tiny_sam2.model, monkeypatch)
    progress = []
    found = tiny_sam2.propagate(scene.frames, [scene.click_on(2)], [1], frame_index=2,
                                progress=lambda done, total: progress.append((done, total)))
    from_start = tiny_sam2.propagate(scene.frames, [scene.click, (3, 3)], [1, 1], object_ids=[1, 2])
    assert found.shape == (5, 48, 80) and found.dtype == bool
    visits = [(frame, reverse) for frame, reverse, _ in calls]
    # prompt frame, forward 2..4, backward 2..0; then the second run: frame 0 and forward only
    assert visits[:7] == [(2, False), (2, False), (3, False), (4, False), (2, True), (1, True), (0, True)]
    assert visits[7:] == [(0, False), (0, False), (1, False), (2, False), (3, False), (4, False)]
    assert progress == [(i, 5) for i in range(1, 6)]
    assert set(calls[7][2]) == {0, 1}  # two objects, each with its own prompt
    assert from_start.shape == (5, 48, 80)


def test_sam2_masks_are_thresholded_logits_at_clip_size(tiny_sam2):
    import torch

    logits = torch.full((2, 1, 32, 32), -5.0)
    logits[0, 0, :, :8] = 5.0  # object 1: the left quarter
    logits[1, 0, 24:, :] = 5.0  # object 2: the bottom quarter
    mask = tiny_sam2._to_mask(logits, 50, 70)
    assert mask.shape == (50, 70) and mask.dtype == bool
    assert mask[:, :15].all() and mask[40:].all() and not mask[:30, 25:].any()


def test_sam2_release_frees_the_model(tmp_path):
    from maskedit.perception.segmentation_sam2 import save_tiny_sam2

    segmenter = load_segmenter("sam2", model_id=save_tiny_sam2(tmp_path / "sam2"), device="cpu")
    assert not segmenter.approximate and "SAM2" in segmenter.label
    segmenter.release()
    assert segmenter.model is None
    with pytest.raises(MaskEditError, match="released"):
        segmenter.image_mask(np.zeros((16, 16, 3), np.uint8), [(4, 4)], [1])


@pytest.mark.skipif(not REAL_SAM2, reason="set MASKEDIT_SAM2_PATH to a local SAM2.1 checkpoint folder "
                                          "(transformers format, e.g. facebook/sam2.1-hiera-tiny) to run")
def test_real_sam2_follows_a_drawn_object():
    segmenter = load_segmenter("sam2", model_id=REAL_SAM2)
    scene = moving_object_clip(num_frames=9, width=320, height=192, shape="disc", speed=5, seed=11)
    found = segmenter.propagate(scene.frames, [scene.click_on(4)], [1], frame_index=4)
    segmenter.release()
    assert min(box_iou(found[t], scene.region[t]) for t in range(9)) >= 0.8


# ----- the benchmark script


def test_segmentation_benchmark_smoke():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "segmentation_speed.py"), "--frames", "5", "--width", "160",
         "--height", "96", "--repeats", "1", "--no-sam2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| backend | device | clip | first click (s) | live overlay (s) | propagation (s) |" in done.stdout
    assert "| fallback |" in done.stdout
