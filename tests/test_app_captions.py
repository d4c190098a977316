"""Automatic captions through the app, with the tiny real Florence-2 (`captioning.save_tiny_florence2`, random
weights): "Caption both automatically" (/caption) and Train with an empty caption, as a client gets them.

The captions of a random model are gibberish, but they are Florence-2's own, made by the app's captioner call: the
test compares them with the same model's captions of the same frames.
"""

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from maskedit.media.video import read_image, read_video
from test_app import FRAMES, SIZE, inputs, running_app  # noqa: F401  (fixture)

CAPTION_STEPS = 2


@pytest.fixture(scope="module")
def florence(tmp_path_factory):
    from maskedit.perception.captioning import save_tiny_florence2

    return save_tiny_florence2(tmp_path_factory.mktemp("florence") / "tiny_florence2")


@pytest.fixture(scope="module")
def captioned_app(tmp_path_factory, florence):
    with running_app("tiny", tmp_path_factory.mktemp("caption_sessions"), captioner=florence) as url:
        yield url


def describe(florence, image):
    from maskedit.perception.captioning import load_captioner

    captioner = load_captioner(florence, device="cpu")  # as the app loads it (`studio.runtime.Runtime.captioner`)
    try:
        return captioner.describe(image)
    finally:
        captioner.release()


def test_caption_both_automatically_returns_captions_to_an_api_client(captioned_app, inputs, florence):
    c = Client(captioned_app, verbose=False)
    c.predict(handle_file(str(inputs / "clip.mp4")), FRAMES, f"{SIZE}x{SIZE}", 0, api_name="/load_video")
    c.predict(handle_file(str(inputs / "mask.mp4")), "", 0.1, False, api_name="/use_mask")
    # before an edited first frame: the original's caption, and the prompt as it was (a value, never an update)
    original, prompt, status = c.predict(prompt_text="my prompt", api_name="/caption")
    assert prompt == "my prompt" and isinstance(original, str) and original
    assert "upload the edited first frame to caption it too" in status and "→ **4 · Train**" in status
    preview, _ = c.predict(handle_file(str(inputs / "edited.png")), False, api_name="/set_edited_frame")
    original_again, edited, status = c.predict(prompt_text="my prompt", api_name="/caption")
    assert original_again == original == describe(florence, read_video(inputs / "clip.mp4").frames[0])
    assert edited == describe(florence, read_image(preview)) and "Captions filled in" in status


def test_train_with_an_empty_caption_trains_on_florence2s_caption(captioned_app, inputs, florence):
    c = Client(captioned_app, verbose=False)
    c.predict(handle_file(str(inputs / "clip.mp4")), FRAMES, f"{SIZE}x{SIZE}", 0, api_name="/load_video")
    c.predict(handle_file(str(inputs / "mask.mp4")), "", 0.1, False, api_name="/use_mask")
    job = c.submit("", "p3rs0n", "full", CAPTION_STEPS, 1e-4, 4, 0, 0, False, False, 110, api_name="/train")
    job.result()
    plot, status, points, files = job.outputs()[-1]
    assert "done" in status and points["step"] == list(range(1, CAPTION_STEPS + 1))
    meta = json.loads(Path(next(f for f in files if f.endswith("lora.json"))).read_text())
    expected = describe(florence, read_video(inputs / "clip.mp4").frames[0])
    assert meta["caption"] == expected  # the ORIGINAL first frame's caption, made by the app's captioner
    assert any(f"caption of the original first frame (Florence-2): {expected}" in o[1] for o in job.outputs())
