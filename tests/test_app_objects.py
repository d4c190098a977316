"""Masks from a sentence and several objects, through the app with gradio_client: /load_video → /segment_text
(a tiny random SAM 3 built here) → a second object by clicks (/segment) → /train → /generate, with the union of
both objects' boxes in the condition the pipeline gets; and what a text prompt says when there is no SAM 3."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from maskedit.method import masks  # noqa: E402
from maskedit.method.pipeline import MaskEditPipeline  # noqa: E402
from test_app import FRAMES, POINT, SIZE, assert_user_error, inputs, running_app  # noqa: E402,F401  (fixtures)
from test_segmentation_sam3 import known_detections, sam3_folder  # noqa: E402,F401  (fixtures)

KNOWN = (slice(10, 15), slice(10, 15))  # the detection on SAM 3's 16x16 low-res grid: pixels ~40..60 of 64


def object_masks(work: Path) -> dict[int, np.ndarray]:
    """The session's objects' masks as the app stored them ({id: bool (F, H, W)})."""
    (folder,) = [p for p in work.iterdir() if (p / "segment" / "objects").is_dir()]
    return {int(f.stem): np.load(f)["masks"] for f in sorted((folder / "segment" / "objects").glob("*.npz"))}


def flow(c: Client, files: Path, work: Path) -> dict[int, np.ndarray]:
    """/load_video → /segment_text → /segment (a second object) → /train → /generate; returns the objects' masks."""
    c.predict(handle_file(str(files / "clip.mp4")), FRAMES, f"{SIZE}x{SIZE}", 0, api_name="/load_video")
    overlay, boxes, notes, found = c.predict("the ball", 0.1, api_name="/segment_text")
    assert [(f["object"], f["colour"], f["score"]) for f in found] == [(1, "red", 0.9)]
    assert found[0]["area"] > 0 and "SAM 3" in notes and "score 0.90" in notes
    overlay, boxes, notes = c.predict(f"[[{POINT[0]}, {POINT[1]}, 1]]", 0.1, api_name="/segment")  # the disk
    assert "union of 2 objects" in notes and "approximate" in notes
    listed = c.predict(api_name="/objects")
    assert [(o["id"], o["kind"]) for o in listed] == [(1, "text"), (2, "clicks")]
    assert listed[0]["text"] == "the ball" and listed[0]["label"].startswith("SAM 3")

    stored = object_masks(work)
    assert set(stored) == {1, 2}
    frame0 = stored[1][0]  # the known detection, as SAM 3 hands it back on frame 0
    assert frame0[44:56, 44:56].all() and not frame0[:32].any() and not frame0[:, :32].any()
    assert stored[2][0, POINT[1], POINT[0]] and not (stored[2][0] & frame0).any()  # the disk: another object

    c.predict(handle_file(str(files / "edited.png")), False, api_name="/set_edited_frame")
    c.predict("a box and a disk", "p3rs0n", "full", 2, 1e-4, 4, 0, 0, False, False, 110, api_name="/train")
    edited, *_ = c.predict("a flipped box", None, "mask-lora", 1, 5.0, 5.0, 0, 1.0, False, api_name="/generate")
    assert Path(edited).is_file()
    return stored


def test_text_then_clicks_then_train_and_generate(tmp_path, inputs, sam3_folder, monkeypatch):  # noqa: F811
    import app

    work = tmp_path / "sessions"
    with running_app("tiny", work, sam3_model=sam3_folder, chunk_steps=2) as url:
        text_segmenter = app.RUNTIME.text_segmenter()  # the tiny SAM 3, loaded as real weights are
        low = text_segmenter.video_model.low_res_mask_size
        known = np.zeros((1, low, low), bool)
        known[(0, *KNOWN)] = True
        undo = known_detections(text_segmenter.video_model, {0: known})
        seen = []
        original = MaskEditPipeline.__call__

        def spy(self, *args, **kwargs):
            seen.append(np.asarray(kwargs["condition_mask"]))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(MaskEditPipeline, "__call__", spy)
        try:
            stored = flow(Client(url, verbose=False), inputs, work)
        finally:
            undo()
    expected = masks.loose_boxes(stored[1] | stored[2])
    keep = seen[-1]
    assert keep[0].all() and np.array_equal(keep[1:] == 0, expected[1:])  # the union of both objects' boxes
    for mask in stored.values():  # each object's own boxes are inside what is generated
        assert not (masks.loose_boxes(mask)[1:] & (keep[1:] == 1)).any()


def test_text_without_sam3_gives_a_message(tmp_path, inputs):  # noqa: F811
    with running_app("tiny", tmp_path / "sessions", sam3_model=str(tmp_path / "no-sam3")) as url:
        c = Client(url, verbose=False)
        c.predict(handle_file(str(inputs / "clip.mp4")), FRAMES, f"{SIZE}x{SIZE}", 0, api_name="/load_video")
        with pytest.raises(Exception) as excinfo:
            c.predict("the ball", 0.1, api_name="/segment_text")
        assert_user_error(excinfo, "text prompts need SAM 3", "hf download facebook/sam3", "--sam3-model")
        with pytest.raises(Exception) as excinfo:
            c.predict("[[1, 2, 1, 3]]", 0.1, api_name="/segment")
        assert_user_error(excinfo, "there is no object 3")
        overlay, boxes, notes = c.predict(f"[[{POINT[0]}, {POINT[1]}, 1]]", 0.1, api_name="/segment")  # clicks work
        assert Path(boxes).is_file()
        overlay, boxes, notes = c.predict("[]", 0.1, api_name="/keep_objects")
        assert overlay is None and "No object is kept" in notes
