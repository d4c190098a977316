"""Captions: boilerplate stripping, the trigger prefix, Florence-2 on a tiny random model built offline."""

import os

import numpy as np
import pytest
import torch

from maskedit.perception.captioning import (
    CAPTION_TASK, Captioner, clean_caption, load_captioner, save_tiny_florence2,
)
from maskedit.method.conditioning import DEFAULT_TRIGGER, compose_prompt
from maskedit.errors import MaskEditError

REAL_FLORENCE2 = os.environ.get("MASKEDIT_FLORENCE2_PATH")
DETAILED_CAPTION_PROMPT = "Describe in detail what is shown in the image."  # Florence-2's text for the task


@pytest.mark.parametrize("raw,expected", [
    ("The image shows a red car on a road.", "a red car on a road."),
    ("<s>The image shows a stop sign on a street.</s>", "a stop sign on a street."),
    ("The image shows  a   boat.<pad>", "a boat."),
    ("The image shows NASA's logo.", "NASA's logo."),
    # the reference strips "The image shows " only: other openings stay, so the prompts are the reference's
    ("The image is a close-up of a cat.", "The image is a close-up of a cat."),
    ("In this image, a dog runs on the grass.", "In this image, a dog runs on the grass."),
    ("the image shows a cat.", "the image shows a cat."),
    ("A man walking a dog.", "A man walking a dog."),
    ("The image shows", "The image shows"),  # nothing after the opening: left alone
    ("", ""),
])
def test_clean_caption(raw, expected):
    assert clean_caption(raw) == expected


def test_captions_use_the_reference_token_budget(tiny_folder):
    """Florence-2 generates at most 256 new tokens (the reference's; Florence-2's own example uses 1,024) when
    loaded as the app and the CLI load it (no max_new_tokens given)."""
    loaded = load_captioner(tiny_folder, device="cpu")
    seen = {}

    class Seen(Exception):
        pass

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise Seen

    loaded.model.generate = spy
    with pytest.raises(Seen):
        loaded.describe(image())
    assert seen["max_new_tokens"] == 256 and seen["do_sample"] is False
    loaded.release()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_florence2(tmp_path_factory.mktemp("tiny-florence2"))


@pytest.fixture
def captioner(tiny_folder):
    loaded = load_captioner(tiny_folder, device="cpu", max_new_tokens=6)  # the loading code of real weights
    yield loaded
    loaded.release()


def image(height=48, width=80, seed=0):
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def test_tiny_florence2_generates_a_prefixed_caption(captioner):
    assert isinstance(captioner, Captioner) and "Florence-2" in captioner.label
    text = captioner.describe(image())
    assert isinstance(text, str)
    assert captioner.caption(image()) == compose_prompt(text)
    assert captioner.caption(image(), trigger="") == compose_prompt(text, "")
    assert captioner.captions([image(), image(30, 20, 1)])[0] == compose_prompt(text)


def test_prompt_plumbing_and_boilerplate(captioner, monkeypatch):
    tokenizer = captioner.processor.tokenizer
    seen = {}

    def fake_generate(**inputs):
        seen.update(inputs)
        # what Florence-2 answers: </s><s>The image shows ...</s>
        ids = tokenizer("The image shows a red car on a road.", add_special_tokens=False)["input_ids"]
        row = [tokenizer.eos_token_id, tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id]
        return torch.tensor([row] * inputs["input_ids"].shape[0])

    monkeypatch.setattr(captioner.model, "generate", fake_generate)
    assert captioner.describe(image()) == "a red car on a road."
    assert captioner.caption(image()) == compose_prompt("a red car on a road.", DEFAULT_TRIGGER)
    assert captioner.caption(image(), trigger="t0k3n") == "t0k3n, a red car on a road."
    ids = seen["input_ids"][0].tolist()
    image_token = tokenizer.image_token_id
    assert ids[:5] == [image_token] * 5 and image_token not in ids[5:]  # 64x64 → 2x2 patches + 1 pooled
    assert tokenizer.decode(ids[5:], skip_special_tokens=True) == DETAILED_CAPTION_PROMPT
    assert captioner.task == CAPTION_TASK
    assert tuple(seen["pixel_values"].shape) == (1, 3, 64, 64)
    assert captioner.captions([image(), image()]) == [compose_prompt("a red car on a road.")] * 2


def test_captioner_that_cannot_load_says_to_type_a_prompt(tmp_path):
    for model in (str(tmp_path / "missing"), "someone/not-a-florence-model"):  # a folder; a hub id, offline
        with pytest.raises(MaskEditError, match="type it yourself") as excinfo:
            load_captioner(model, device="cpu")
        assert "--train-prompt" in str(excinfo.value) and "--caption-model" in str(excinfo.value)
    # offline (HF_HUB_OFFLINE here): the reason is said whole, not cut mid-sentence
    assert str(excinfo.value).startswith("could not load the captioner 'someone/not-a-florence-model': it is not in "
                                         "the local Hugging Face cache, and the hub cannot be used (HF_HUB_OFFLINE is "
                                         "set). No caption can be made automatically")


def test_released_captioner_refuses(tiny_folder):
    loaded = load_captioner(tiny_folder, device="cpu", max_new_tokens=2)
    loaded.release()
    with pytest.raises(MaskEditError, match="released"):
        loaded.describe(image())


def test_bad_image_is_refused(captioner):
    with pytest.raises(MaskEditError, match="uint8"):
        captioner.describe(np.zeros((8, 8), np.float32))


@pytest.mark.skipif(not REAL_FLORENCE2, reason="set MASKEDIT_FLORENCE2_PATH to a local Florence-2 folder in "
                                               "transformers format (e.g. florence-community/Florence-2-base) to run")
def test_real_florence2_caption():
    captioner = load_captioner(REAL_FLORENCE2)
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[64:192, 64:192] = [220, 30, 30]
    prompt = captioner.caption(frame)
    captioner.release()
    assert prompt.startswith(f"{DEFAULT_TRIGGER}, ") and len(prompt) > len(DEFAULT_TRIGGER) + 5
    assert not prompt[len(DEFAULT_TRIGGER) + 2:].lower().startswith("the image")


# ----- the caption rule of training (issue 11)


def test_training_captions_caption_the_original_first_frame_and_each_edited_frame(captioner, tiny_folder):
    from maskedit.perception.captioning import training_captions

    original, edited4, edited6 = image(seed=1), image(seed=2), image(seed=3)
    loads = []

    def load():
        loads.append(1)
        return load_captioner(tiny_folder, device="cpu", max_new_tokens=6)

    made = training_captions(original, {4: edited4, 6: edited6}, None, {6: "a blue box"}, load=load)
    assert made.caption == captioner.describe(original)  # the ORIGINAL frame, not an edit
    assert made.later == {4: captioner.describe(edited4), 6: "a blue box"}  # given ones kept
    assert len(loads) == 1 and len(made.notes) == 2 and "original first frame" in made.notes[0]

    given = training_captions(original, {4: edited4}, " a red box ", {4: "a blue box"}, load=load)
    assert (given.caption, given.later, given.notes, len(loads)) == ("a red box", {4: "a blue box"}, [], 1)


def test_training_captions_without_a_captioner_ask_for_them(tmp_path):
    from maskedit.perception.captioning import training_captions

    def unavailable():
        return load_captioner(str(tmp_path / "missing"))

    with pytest.raises(MaskEditError, match=r"ORIGINAL first frame \(--train-prompt\)"):
        training_captions(image(), {}, None, load=unavailable)
    with pytest.raises(MaskEditError, match=r"edited later frame\(s\) 4 \(--later-prompt"):
        training_captions(image(), {4: image(seed=2)}, "a red box", load=unavailable)
    with pytest.raises(MaskEditError, match="not among the edited later frames"):
        training_captions(image(), {}, "a red box", {3: "a blue box"}, load=unavailable)
