"""Several objects in one edit (the studio, without Gradio): objects from clicks, text and uploads, kept, dropped,
refined and removed; their union is the edit region and reaches the condition exactly; lora.json and the LoRA
cache key record them."""

import json
from pathlib import Path

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.limits import MAX_OBJECTS
from maskedit.method import masks
from maskedit.method.pipeline import MaskEditPipeline
from maskedit.models.presets import GenerateSettings
from maskedit.perception.segmentation import Segmentation, TextSegmentation
from maskedit.perception.segmentation_sam3 import TextInstance
from maskedit.studio.service import GpuCalls, Studio, TrainInputs
from maskedit.workflow import lora_cache, prepare, session
from maskedit.media.video import write_image, write_video

FPS = 8.0
F, H, W = 9, 64, 64


def moving_square(x0: int, y0: int, size: int, dx: int) -> np.ndarray:
    """bool (F, H, W): a size x size square at (x0 + dx * t, y0) on frame t."""
    region = np.zeros((F, H, W), bool)
    for t in range(F):
        region[t, y0:y0 + size, x0 + dx * t:x0 + dx * t + size] = True
    return region


TEXT_REGION = moving_square(4, 4, 12, 2)  # what the (stand-in) text segmenter finds
CLICK_REGION = moving_square(30, 40, 14, 1)  # what the (stand-in) clicks segmenter finds


class Calls:
    """Stand-in segmentation calls with known results; the pipe's calls are the real ones."""

    def __init__(self, pipe=None):
        self.pipe = pipe
        self.text_instances = [(0.9, TEXT_REGION)]
        self.clicks = []  # (points, labels, box) of each segment_clip call

    def gpu(self, text: bool = True) -> GpuCalls:
        from maskedit.studio.generation import run_generation
        from maskedit.studio.runs import run_training_chunk

        return GpuCalls(
            train_chunk=lambda request: run_training_chunk(self.pipe, request),
            generate=lambda *args, **kwargs: run_generation(self.pipe, *args, **kwargs),
            image_mask=lambda frame, points, labels, box=None: CLICK_REGION[0],
            segment_clip=self.segment_clip, caption=lambda image: "a frame",
            segment_text=self.segment_text if text else None)

    def segment_clip(self, frames, points, labels, margin, box=None):
        self.clicks.append((np.asarray(points).tolist(), np.asarray(labels).tolist(), box))
        boxes = masks.find_loose_boxes(CLICK_REGION, margin)
        return Segmentation(CLICK_REGION, masks.region_from_boxes(boxes, H, W), "stand-in clicks", False, 0, [], boxes)

    def segment_text(self, frames, text):
        found = [TextInstance(k, score, np.packbits(region, axis=-1), region.shape[-1])
                 for k, (score, region) in enumerate(self.text_instances)]
        return TextSegmentation(text, found, "stand-in SAM 3", [])


@pytest.fixture
def files(tmp_path, synthetic_clip):
    frames, _ = synthetic_clip
    write_video(tmp_path / "clip.mp4", frames, FPS)
    write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    return tmp_path


def studio_with(files, calls: Calls, text: bool = True) -> Studio:
    return Studio(session.SessionStore(files / "sessions"), calls.gpu(text), model_name="tiny", is_tiny=True,
                  allowed_roots=lambda: [files], cache_root=files / "cache")


def test_the_union_of_two_objects_reaches_the_condition_exactly(files, tiny_pipe, monkeypatch):
    calls = Calls(tiny_pipe)
    studio = studio_with(files, calls)
    st = studio.session("objects")
    studio.load_video(st, files / "clip.mp4", F, f"{W}x{H}")
    _, _, notes, found = studio.segment_text(st, "the ball", 0.1)
    assert found == [{"object": 1, "colour": "red", "score": 0.9, "area": 144, "frames": F}]
    assert "object 1 (red): score 0.90, 144 px on frame 0" in notes
    overlay, boxes, notes = studio.segment(st, "[[36, 46, 1]]", 0.1)  # a second object, by clicks
    assert [o["id"] for o in st.objects] == [1, 2] and st.objects[1]["kind"] == "clicks"
    assert "union of 2 objects" in notes and Path(overlay).is_file() and Path(boxes).is_file()

    expected = masks.loose_boxes(TEXT_REGION | CLICK_REGION)
    assert np.array_equal(expected, masks.loose_boxes(TEXT_REGION) | masks.loose_boxes(CLICK_REGION))  # apart
    prepared = prepare.load_prepared(studio.prepared_dir(st))
    assert np.array_equal(prepared.region, expected)
    assert np.array_equal(prepared.tight, TEXT_REGION | CLICK_REGION)
    assert [o["kind"] for o in prepared.source["objects"]] == ["text", "clicks"]

    seen = []
    original = MaskEditPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append((np.asarray(kwargs["condition_mask"]), np.asarray(kwargs["condition_video"])))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MaskEditPipeline, "__call__", spy)
    studio.set_edited_frame(st, files / "edited.png")
    views = list(studio.train(st, TrainInputs("a ball and a box", steps=1, rank=4)))
    assert "done" in views[-1].status
    studio.generate(st, "a red ball and a box", GenerateSettings(steps=1))
    keep, video = seen[-1]
    assert keep.shape == (F, H, W) and keep[0].all()  # frame 0 is the edited frame, kept whole
    assert np.array_equal(keep[1:] == 0, expected[1:])  # exactly the boxes of both objects are generated
    assert np.array_equal(video[1:], prepared.frames[1:])

    metadata = json.loads((Path(st.lora).parent / "lora.json").read_text())
    assert [(o["id"], o["kind"], o.get("text"), o.get("points")) for o in metadata["objects"]] == [
        (1, "text", "the ball", None), (2, "clicks", None, [[36.0, 46.0, 1]])]
    assert metadata["objects"][0]["score"] == 0.9 and metadata["objects"][0]["area"] == 144


def test_the_cache_key_records_the_objects(files):
    calls = Calls()
    studio = studio_with(files, calls)
    st = studio.session("keys")
    studio.load_video(st, files / "clip.mp4", F, f"{W}x{H}")
    studio.segment_text(st, "the ball", 0.1)
    studio.segment(st, "[[36, 46, 1]]", 0.1)
    inputs = TrainInputs("a ball", steps=2, rank=4)
    config, _ = studio.train_config(inputs, F)
    both, parts, _ = studio._key(st, inputs, config, {})
    assert parts["objects"] == [{"kind": "text", "text": "the ball"},
                                {"kind": "clicks", "points": [[36.0, 46.0, 1]]}]
    studio.keep_objects(st, [2])  # the text object dropped: another region, another key
    only_clicks, parts, _ = studio._key(st, inputs, config, {})
    assert only_clicks != both and [o["kind"] for o in parts["objects"]] == ["clicks"]
    studio.keep_objects(st, "[1, 2]")
    assert studio._key(st, inputs, config, {})[0] == both
    # the same region made another way is another record, so another key (its lora.json would differ)
    other = studio.session("keys-2")
    studio.load_video(other, files / "clip.mp4", F, f"{W}x{H}")
    calls.text_instances = [(0.5, TEXT_REGION)]
    studio.segment_text(other, "a ball", 0.1)
    studio.segment(other, "[[36, 46, 1]]", 0.1)
    assert np.array_equal(prepare.load_prepared(studio.prepared_dir(other)).region,
                          prepare.load_prepared(studio.prepared_dir(st)).region)
    assert studio._key(other, inputs, config, {})[0] != both
    # a plain prepared clip (the CLI's) has no objects: its key is as it always was
    plain = prepare.load_prepared(studio.prepared_dir(st))
    plain.source.pop("objects")
    assert "objects" not in lora_cache.key_parts(plain, "a ball", "p3rs0n", config, "tiny")


def test_keep_drop_refine_and_remove(files):
    calls = Calls()
    calls.text_instances = [(0.8, TEXT_REGION), (0.6, CLICK_REGION)]
    studio = studio_with(files, calls)
    st = studio.session("edit-objects")
    studio.load_video(st, files / "clip.mp4", F, f"{W}x{H}")
    _, _, _, found = studio.segment_text(st, "things", 0.1)
    assert [f["object"] for f in found] == [1, 2] and [f["colour"] for f in found] == ["red", "blue"]
    assert studio.object_rows(st)[1] == [2, "blue", 'text "things"', "0.60", 196, F, "yes"]

    overlay, boxes, notes = studio.keep_objects(st, [2])
    assert np.array_equal(prepare.load_prepared(studio.prepared_dir(st)).region, masks.loose_boxes(CLICK_REGION))
    overlay, boxes, notes = studio.keep_objects(st, [])
    assert overlay is None and "No object is kept" in notes
    with pytest.raises(MaskEditError, match="no region to edit"):
        studio.prepared_dir(st)
    with pytest.raises(MaskEditError, match="there is no object 7"):
        studio.keep_objects(st, [7])
    studio.keep_objects(st, [1, 2])

    # clicks on a text object refine it: the SAM prompt starts from its frame-0 box
    image, points = studio.set_click_target(st, "1")
    assert st.click_target == 1 and points == "[]" and image.shape == (H, W, 3)
    studio.segment(st, "[[9, 9, 1], [40, 50, 0]]", 0.1)
    assert calls.clicks[-1] == ([[9.0, 9.0], [40.0, 50.0]], [1, 0], [4, 4, 16, 16])
    refined = studio.object(st, 1)
    assert refined["kind"] == "clicks" and refined["text"] == "things" and refined["box"] == [4, 4, 16, 16]
    assert 'refines text "things"' in studio.object_choices(st)[0][0]
    # a 4th number sends clicks to that object; an unknown one is refused before any work
    studio.segment(st, "[[50, 50, 1, 2]]", 0.1)
    assert calls.clicks[-1][2] == [30, 40, 44, 54] and studio.object(st, 2)["kind"] == "clicks"
    with pytest.raises(MaskEditError, match="there is no object 5"):
        studio.segment(st, "[[50, 50, 1, 5]]", 0.1)
    # the same text again replaces its own objects (refined ones are no longer text objects)
    studio.set_click_target(st, "new")
    _, _, _, found = studio.segment_text(st, "things", 0.1)
    assert [o["id"] for o in st.objects] == [1, 2, 3, 4]
    _, _, _, found = studio.segment_text(st, "things", 0.1)
    assert [o["id"] for o in st.objects] == [1, 2, 3, 4] and [f["object"] for f in found] == [3, 4]

    studio.keep_objects(st, [1, 2, 3])
    studio.remove_unkept(st)
    assert [o["id"] for o in st.objects] == [1, 2, 3]
    assert not (studio.sub(st, "segment") / "objects" / "4.npz").exists()
    studio.remove_object(st, 3)
    studio.use_mask(st, box="50,2,62,12")
    assert st.objects[-1]["kind"] == "box" and st.objects[-1]["id"] == 3
    region = prepare.load_prepared(studio.prepared_dir(st)).region
    assert region[:, 2:12, 50:62].all()  # a box is taken as it is (no margin)
    studio.clear_objects(st)
    assert st.objects == [] and not studio.sub(st, "prepared").exists()
    studio.load_video(st, files / "clip.mp4", F, f"{W}x{H}")  # a new clip starts with no objects
    assert st.objects == [] and st.click_target is None


def test_objects_are_bounded_and_text_needs_a_text_segmenter(files):
    calls = Calls()
    studio = studio_with(files, calls, text=False)
    st = studio.session("bounds")
    studio.load_video(st, files / "clip.mp4", F, f"{W}x{H}")
    with pytest.raises(MaskEditError, match="no text segmenter"):
        studio.segment_text(st, "a ball", 0.1)
    studio = studio_with(files, calls)
    with pytest.raises(MaskEditError, match="text prompt is empty"):
        studio.segment_text(st, " ", 0.1)
    calls.text_instances = []
    with pytest.raises(MaskEditError, match='found nothing matching "a ball"'):
        studio.segment_text(st, "a ball", 0.1)
    calls.text_instances = [(0.5, TEXT_REGION)] * (MAX_OBJECTS + 3)
    _, _, notes, found = studio.segment_text(st, "a ball", 0.1)
    assert len(found) == MAX_OBJECTS and f"kept the {MAX_OBJECTS} highest-scoring of {MAX_OBJECTS + 3}" in notes
    with pytest.raises(MaskEditError, match=f"at most {MAX_OBJECTS} objects"):
        studio.segment(st, "[[36, 46, 1]]", 0.1)
    with pytest.raises(MaskEditError, match=f"at most {MAX_OBJECTS} objects"):
        studio.use_mask(st, box="1,1,5,5")
    with pytest.raises(MaskEditError, match="at most 16 numbers"):
        studio.keep_objects(st, list(range(1, 20)))


def test_several_objects_at_the_size_users_use(tmp_path):
    """49 frames of 832x480 with four objects (three from text, one box): stored, unioned and written as the
    prepared region in seconds, the objects' masks bounded on disk."""
    import time

    frames_n, height, width = 49, 480, 832
    frames = np.full((frames_n, height, width, 3), 90, np.uint8)
    write_video(tmp_path / "clip.mp4", frames, 16.0)
    regions = []
    for k in range(3):
        region = np.zeros((frames_n, height, width), bool)
        for t in range(frames_n):
            region[t, 40 + 120 * k:140 + 120 * k, 50 + 4 * t + 200 * k:150 + 4 * t + 200 * k] = True
        regions.append(region)
    calls = Calls()
    calls.text_instances = [(0.9 - 0.1 * k, region) for k, region in enumerate(regions)]
    studio = studio_with(tmp_path, calls)
    st = studio.session("real-size")
    studio.load_video(st, tmp_path / "clip.mp4", frames_n, f"{width}x{height}")
    started = time.perf_counter()
    _, _, _, found = studio.segment_text(st, "the boxes", 0.1)
    studio.use_mask(st, box="700,400,800,470")
    seconds = time.perf_counter() - started
    assert len(found) == 3 and len(st.objects) == 4
    prepared = prepare.load_prepared(studio.prepared_dir(st))
    expected = masks.loose_boxes(regions[0] | regions[1] | regions[2])
    expected[:, 400:470, 700:800] = True
    assert np.array_equal(prepared.region, expected)
    stored = sum(f.stat().st_size for f in (studio.sub(st, "segment") / "objects").glob("*.npz"))
    assert stored < 4 * frames_n * height * width / 50  # bool masks compress: well under a byte per 50 pixels
    assert seconds < 120, seconds
