"""SAM 3 on a tiny random model built here (as the SAM2 tests do): text → every instance tracked through the clip,
clicks through its tracker (sharing the video model's ViT), the backends chosen in one place and what they say
when text has no backend, and the union of several objects as loose boxes (METHOD.md §3)."""

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.method import masks
from maskedit.perception.segmentation import (SegmentationBackends, load_segmenter, segment_text, union_region)
from maskedit.perception.segmentation_fallback import FallbackSegmenter
from maskedit.tools.segmentation_scenes import moving_object_clip


@pytest.fixture(scope="module")
def sam3_folder(tmp_path_factory):
    from maskedit.perception.segmentation_sam3 import save_tiny_sam3

    return save_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3"))


@pytest.fixture(scope="module")
def tiny_sam3(sam3_folder):
    segmenter = load_segmenter("sam3", sam3_model=sam3_folder, device="cpu")  # the loading code of real weights
    yield segmenter
    segmenter.release()


@pytest.fixture(scope="module")
def scene():
    return moving_object_clip(num_frames=5, width=80, height=48, seed=3)


def known_detections(model, masks_by_frame: dict, score: float = 0.9):
    """Make the video model's detector report known masks (bool (N, L, L) at its low-res size L) on the frames
    in `masks_by_frame` and nothing elsewhere; the vision encoder, tracker, memory and post-processing still run."""
    import torch

    low = model.low_res_mask_size
    frame = {"index": 0}
    original = model._det_track_one_frame

    def run_detection(inference_session, vision_embeds):
        known = masks_by_frame.get(frame["index"])
        if known is None:
            empty = {"bbox": torch.zeros(0, 4), "mask": torch.zeros(0, low, low), "scores": torch.zeros(0)}
            return {prompt: dict(empty) for prompt in inference_session.prompts}
        known = torch.as_tensor(known, dtype=torch.bool)
        found = {"bbox": torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(len(known), 1),
                 "mask": torch.where(known, 10.0, -10.0), "scores": torch.full((len(known),), score)}
        return {prompt: dict(found) for prompt in inference_session.prompts}

    def det_track_one_frame(inference_session, frame_idx, *args, **kwargs):
        frame["index"] = frame_idx
        return original(inference_session, frame_idx, *args, **kwargs)

    model.run_detection = run_detection  # instance attributes shadow the methods
    model._det_track_one_frame = det_track_one_frame

    def undo():
        del model.run_detection
        del model._det_track_one_frame

    return undo


def test_tiny_sam3_folder_loads_like_the_real_checkpoint(sam3_folder, tiny_sam3):
    import os

    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(sam3_folder))
    assert tiny_sam3.name == "sam3" and tiny_sam3.supports_text and not tiny_sam3.approximate
    assert "SAM 3" in tiny_sam3.label and tiny_sam3.image_size == 56
    tokens = tiny_sam3.tokenizer("a dog", padding="max_length", max_length=32).input_ids
    assert len(tokens) == 32 and tokens[0] == tiny_sam3.tokenizer.bos_token_id


def test_clicks_go_through_the_video_models_own_tracker(sam3_folder, tiny_sam3, scene):
    """The click tracker shares the video model's weights (no second ViT) and tracks exactly as the stand-alone
    `Sam3TrackerVideoModel` transformers loads from the same folder."""
    from transformers import Sam3TrackerVideoModel

    from maskedit.perception.segmentation_sam3 import Sam3Segmenter

    backbone = tiny_sam3.video_model.detector_model.vision_encoder.backbone
    assert tiny_sam3.model.vision_encoder.backbone is backbone
    assert tiny_sam3.model.vision_encoder.neck is tiny_sam3.video_model.tracker_neck
    assert tiny_sam3.video_model.tracker_model.vision_encoder is None  # the video model itself is unchanged
    progress = []
    ours = tiny_sam3.propagate(scene.frames, [scene.click], [1], progress=lambda d, t: progress.append((d, t)))
    alone = Sam3TrackerVideoModel.from_pretrained(sam3_folder).eval()
    reference = Sam3Segmenter.__new__(Sam3Segmenter)
    reference.__dict__.update(tiny_sam3.__dict__, model=alone)
    assert np.array_equal(ours, reference.propagate(scene.frames, [scene.click], [1]))
    assert ours.shape == (5, 48, 80) and ours.dtype == bool and progress[-1] == (5, 5)
    per_object = tiny_sam3.propagate_objects(scene.frames, [scene.click, (3, 3)], [1, 1], object_ids=[1, 2])
    assert list(per_object) == [1, 2] and all(m.shape == (5, 48, 80) for m in per_object.values())
    assert tiny_sam3.image_mask(scene.frames[0], [scene.click], [1]).shape == (48, 80)


def test_text_finds_every_instance_through_the_clip(tiny_sam3, scene):
    progress = []
    found = tiny_sam3.find_instances(scene.frames, "  the   disk ", progress=lambda d, t: progress.append((d, t)))
    assert len(found) == 2  # the tiny model's two queries, each tracked from frame 0
    assert [i.score for i in found] == sorted((i.score for i in found), reverse=True)
    assert all(0 < i.score < 1 for i in found)
    for instance in found:
        assert instance.masks.shape == (5, 48, 80) and instance.masks.dtype == bool
        assert instance.area0 == instance.masks[0].sum() and instance.frames_found == instance.masks.any((1, 2)).sum()
    assert not (found[0].masks & found[1].masks).any()  # a pixel belongs to one instance of a prompt
    assert progress == [(i, 5) for i in range(1, 6)]
    assert len(tiny_sam3.find_instances(scene.frames, "disk", max_instances=1)) == 1
    with pytest.raises(MaskEditError, match="text prompt is empty"):
        tiny_sam3.find_instances(scene.frames, "   ")
    with pytest.raises(MaskEditError, match="at most 200"):
        tiny_sam3.find_instances(scene.frames, "x" * 201)


def test_a_known_detection_comes_out_exactly_on_frame_0(tiny_sam3, scene):
    """The detector's masks reach the result unchanged (bilinear to the clip size, > 0), with their score."""
    import torch
    import torch.nn.functional as F

    low = tiny_sam3.video_model.low_res_mask_size
    known = np.zeros((1, low, low), bool)
    known[0, 4:10, 2:8] = True
    undo = known_detections(tiny_sam3.video_model, {0: known})
    try:
        found = segment_text(tiny_sam3, scene.frames, "disk")
    finally:
        undo()
    assert len(found.instances) == 1 and found.instances[0].score == pytest.approx(0.9)
    expected = F.interpolate(torch.where(torch.from_numpy(known), 10.0, -10.0)[None], size=(48, 80),
                             mode="bilinear", align_corners=False)[0, 0] > 0
    assert np.array_equal(found.instances[0].masks[0], expected.numpy())
    assert found.label == tiny_sam3.label and found.text == "disk"


def test_text_without_a_text_backend_says_what_to_get(tmp_path, scene):
    backends = SegmentationBackends("fallback", sam3_model=str(tmp_path / "missing"), device="cpu")
    with pytest.raises(MaskEditError) as error:
        backends.text()
    text = str(error.value)
    for words in ("text prompts need SAM 3", "huggingface.co/facebook/sam3", "hf download facebook/sam3",
                  "--sam3-model", "does not exist"):
        assert words in text, text
    assert "Traceback" not in text
    with pytest.raises(MaskEditError, match="does not exist"):  # tried once, the same answer after
        backends.text()
    offline = SegmentationBackends("auto", sam3_model="someone/not-a-sam3", device="cpu")
    with pytest.raises(MaskEditError, match="not in the local Hugging Face cache, and downloading was off"):
        offline.text()
    with pytest.raises(MaskEditError, match="cannot segment from text"):
        segment_text(FallbackSegmenter(), scene.frames, "disk")
    lines = backends.describe()
    assert lines[0].startswith("SAM 3 (text and clicks): not available") and lines[1].startswith("SAM2 (clicks)")
    assert lines[2].startswith("offline fallback (colour clicks)")


def test_auto_takes_a_named_sam3_for_clicks_and_text(sam3_folder, tmp_path):
    backends = SegmentationBackends("auto", sam3_model=sam3_folder, sam2_model=str(tmp_path / "none"), device="cpu")
    assert "loads on first use from the folder" in backends.describe()[0]
    clicks = backends.clicks()
    assert clicks.name == "sam3" and backends.text() is clicks  # one model for both
    assert "runs on the cpu" in clicks.note
    assert backends.describe()[0].startswith("SAM 3 (text and clicks): in use for clicks and text")
    backends.release()
    on_cpu = SegmentationBackends("auto", sam2_model=str(tmp_path / "none"), device="cpu")
    assert on_cpu.clicks().name == "fallback"  # a CPU machine does not try a SAM 3 nobody named
    assert "sam3" not in on_cpu.failures and "SAM2 could not be loaded" in on_cpu.clicks().note


def test_the_union_of_objects_is_one_region_of_loose_boxes():
    first = np.zeros((3, 60, 100), bool)
    first[:, 10:30, 10:30] = True  # 20x20: grows 1 px per side
    second = np.zeros_like(first)
    second[:, 40:50, 60:90] = True  # 30x10: grows 2 px left/right (halves round up), 1 px up/down
    second[2] = False  # gone on the last frame
    overlapping = np.zeros_like(first)
    overlapping[:, 25:35, 25:40] = True  # touches the first: one component, one box
    region, boxes = union_region([first, second], [(0, 0, 5, 5)], 3, 60, 100)
    assert sorted(boxes[0]) == [(0, 0, 5, 5), (9, 9, 31, 31), (58, 39, 92, 51)]
    assert sorted(boxes[2]) == [(0, 0, 5, 5), (9, 9, 31, 31)]
    assert np.array_equal(region, masks.region_from_boxes(boxes, 60, 100))
    assert np.array_equal(region[:2] & ~masks.box_region(60, 100, (0, 0, 5, 5), 2),
                          masks.loose_boxes(first | second)[:2])
    merged, merged_boxes = union_region([first, overlapping], [], 3, 60, 100)
    assert len(merged_boxes[0]) == 1 and np.array_equal(merged, masks.loose_boxes(first | overlapping))
    with pytest.raises(MaskEditError, match="shape"):
        union_region([first[:2]], [], 3, 60, 100)


# ----- speed and memory at real size (the planner's meta-device dry run)


def test_the_sam3_estimate_runs_the_model_it_names():
    """On the tiny config the dry run builds the very model the tests run (same parameters), its figures add up,
    and the tracker's cost grows with the objects."""
    from transformers import Sam3VideoConfig

    from maskedit.models.segmentation_estimate import estimate_sam3
    from maskedit.perception.segmentation_sam3 import TINY_SAM3, build_tiny_sam3

    config = Sam3VideoConfig(**TINY_SAM3)
    one = estimate_sam3(5, 80, 48, objects=1, config=config)
    three = estimate_sam3(5, 80, 48, objects=3, config=config)
    model = build_tiny_sam3()
    assert one.parameters == sum(p.numel() for p in model.parameters())
    assert one.weights_bytes == 2 * one.parameters  # bfloat16
    assert set(one.phases) == {"vision", "text", "detector", "tracker"}
    assert all(p.flops > 0 and p.peak_gpu_bytes > one.weights_bytes for p in one.phases.values())
    assert one.phases["vision"].flops == three.phases["vision"].flops
    assert 2.5 < three.phases["tracker"].flops / one.phases["tracker"].flops <= 3.0
    assert one.frame_flops(text=True) - one.frame_flops(text=False) == one.phases["detector"].flops
    assert one.clip_flops() == 5 * one.frame_flops() + one.phases["text"].flops
    assert one.host_mask_bytes == 5 * 48 * 10 and three.memory_bank_bytes == 3 * one.memory_bank_bytes
    assert one.peak_gpu_bytes == max(p.peak_gpu_bytes for p in one.phases.values()) + one.memory_bank_bytes


def test_the_readme_states_the_sam3_estimate():
    from pathlib import Path

    from maskedit.models.segmentation_estimate import readme_rows

    rows = readme_rows()
    assert rows in (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "SAM 3, text, 1 object | 49x832x480" in rows


def test_a_checkpoint_of_another_kind_is_refused_not_built_at_random(tmp_path, sam3_folder):
    """transformers would build a random SAM 3 from a SAM2 config (and an empty tokenizer from a folder without
    one): the loaders read config.json first and say what the folder holds."""
    from maskedit.perception.segmentation_sam2 import save_tiny_sam2
    from maskedit.perception.segmentation_sam3 import build_tiny_sam3

    sam2 = save_tiny_sam2(tmp_path / "sam2")
    with pytest.raises(MaskEditError, match="it is a sam2_video checkpoint, not sam3_video") as error:
        load_segmenter("sam3", sam3_model=sam2, device="cpu")
    assert str(error.value).count("could not load") == 1
    with pytest.raises(MaskEditError, match="it is a sam3_video checkpoint, not sam2_video"):
        load_segmenter("sam2", model_id=sam3_folder, device="cpu")
    build_tiny_sam3().save_pretrained(str(tmp_path / "no-tokenizer"))
    with pytest.raises(MaskEditError, match="no tokenizer files"):
        load_segmenter("sam3", sam3_model=str(tmp_path / "no-tokenizer"), device="cpu")
