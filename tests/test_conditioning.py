"""Samples of METHOD.md §4-§6 and the packing of the pixel keep mask into Wan's 4 latent channels."""

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline

from maskedit.method.conditioning import (
    GREY_FILL,
    compose_prompt,
    condition_pixels,
    frames_to_tensor,
    inference_condition,
    naive_sample,
    pack_latent_mask,
    stage1_sample,
    stage2_sample,
    stock_condition,
)
from maskedit.errors import MaskEditError
from maskedit.models.loading import build_tiny_pipeline


def hand_made_mask(num_frames=9, size=16):
    """Frame f codes f in binary over its four 8x8 cells (cell (i, j) is bit 2i+j), so every frame differs."""
    keep = np.zeros((num_frames, size, size), dtype=np.float32)
    for f in range(num_frames):
        for i in range(2):
            for j in range(2):
                keep[f, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = (f >> (2 * i + j)) & 1
    return keep


def test_packing_channel_layout():
    keep = hand_made_mask()
    assert len({k.tobytes() for k in keep}) == 9
    packed = pack_latent_mask(torch.from_numpy(keep), 2, 2)
    assert packed.shape == (1, 4, 3, 2, 2) and packed.dtype == torch.float32
    nearest = torch.from_numpy(keep[:, ::8, ::8])  # nearest downsampling picks each cell's top-left pixel
    for c in range(4):
        assert torch.equal(packed[0, c, 0], nearest[0])
        for j in (1, 2):
            assert torch.equal(packed[0, c, j], nearest[4 * (j - 1) + 1 + c]), (c, j)


def test_packing_single_frame_and_batch():
    keep = hand_made_mask()[5:6]
    packed = pack_latent_mask(torch.from_numpy(keep), 2, 2)
    assert packed.shape == (1, 4, 1, 2, 2)
    assert all(torch.equal(packed[0, c, 0], torch.from_numpy(keep[0, ::8, ::8])) for c in range(4))
    batch = pack_latent_mask(torch.from_numpy(np.stack([hand_made_mask(), 1 - hand_made_mask()])), 2, 2)
    assert batch.shape == (2, 4, 3, 2, 2) and torch.equal(batch[0] + batch[1], torch.ones(4, 3, 2, 2))
    with pytest.raises(MaskEditError, match="4k\\+1"):
        pack_latent_mask(torch.ones(8, 16, 16), 2, 2)


def test_stock_mask_packs_like_diffusers():
    pipe = build_tiny_pipeline(pipeline_class=WanImageToVideoPipeline)
    image = torch.zeros(1, 3, 64, 64)
    _, condition = pipe.prepare_latents(image, 1, 16, 64, 64, 9, torch.float32, torch.device("cpu"))
    stock = stock_condition(np.zeros((64, 64, 3), np.uint8), 9, "")
    assert torch.equal(pack_latent_mask(torch.from_numpy(stock.keep_mask), 8, 8), condition[:, :4])


@pytest.fixture
def clip():
    rng = np.random.default_rng(1)
    frames = (rng.random((9, 32, 48, 3)) * 255).astype(np.uint8)
    region = np.zeros((9, 32, 48), dtype=bool)
    region[:, 8:24, 16:40] = True
    return frames, region


def test_stage1_sample(clip):
    frames, region = clip
    sample = stage1_sample(frames, region, "p3rs0n, a car")
    assert sample.target_video is frames and np.array_equal(sample.condition_video, frames)
    assert np.array_equal(sample.image, frames[0])
    assert np.all(sample.keep_mask[0] == 1)
    assert np.array_equal(sample.keep_mask[1:] == 0, region[1:])
    pixels = condition_pixels(sample.condition_video, sample.keep_mask)
    assert torch.equal(pixels[0, :, 0], frames_to_tensor(frames)[0, :, 0])  # frame 0 clean
    assert torch.all(pixels[0, :, 1:, 8:24, 16:40] == GREY_FILL)
    outside = torch.from_numpy(~region[1:])
    assert torch.equal(pixels[0, :, 1:][:, outside], frames_to_tensor(frames)[0, :, 1:][:, outside])


def test_stage2_sample_empties_the_box_of_the_original_frame(clip):
    frames, region = clip
    edited = 255 - frames[4]
    sample = stage2_sample(frames[4], edited, region[4], "p3rs0n, a blue car")
    assert sample.num_frames == 1
    assert np.array_equal(sample.target_video[0], edited)
    assert np.array_equal(sample.condition_video[0], frames[4])
    assert np.array_equal(sample.image, frames[4])
    assert np.array_equal(sample.keep_mask[0] == 0, region[4])
    pixels = condition_pixels(sample.condition_video, sample.keep_mask)
    assert torch.all(pixels[0, :, 0, 8:24, 16:40] == GREY_FILL)
    assert torch.equal(pixels[0, :, 0, :8], frames_to_tensor(frames[4:5])[0, :, 0, :8])
    with pytest.raises(MaskEditError, match="edited later frame"):
        stage2_sample(frames[4], edited[:16], region[4], "x")


def test_inference_condition_uses_the_edited_first_frame(clip):
    frames, region = clip
    edited = 255 - frames[0]
    sample = inference_condition(frames, region, edited, "p3rs0n, a blue car")
    assert np.array_equal(sample.condition_video[0], edited) and np.array_equal(sample.image, edited)
    assert np.array_equal(sample.condition_video[1:], frames[1:])
    assert np.array_equal(sample.keep_mask, stage1_sample(frames, region, "").keep_mask)
    assert sample.target_video is None
    with pytest.raises(MaskEditError, match="edited first frame"):
        inference_condition(frames, region, edited[:, :32], "x")


def test_naive_and_stock_samples(clip):
    frames, _ = clip
    naive = naive_sample(frames, "a car")
    assert naive.target_video is frames
    assert np.all(naive.keep_mask[0] == 1) and np.all(naive.keep_mask[1:] == 0)
    assert np.all(naive.condition_video[1:] == 0) and np.array_equal(naive.condition_video[0], frames[0])


def test_mismatched_region_is_refused(clip):
    frames, region = clip
    with pytest.raises(MaskEditError, match="mask"):
        stage1_sample(frames, region[:, :16], "x")


def test_frames_to_tensor_matches_diffusers_preprocessing(clip):
    frames, _ = clip
    import PIL.Image

    pipe = build_tiny_pipeline()
    expected = pipe.video_processor.preprocess(PIL.Image.fromarray(frames[3]), height=32, width=48)
    assert torch.equal(frames_to_tensor(frames)[:, :, 3], expected)


def test_compose_prompt():
    assert compose_prompt("a red car ") == "p3rs0n, a red car"
    assert compose_prompt("a red car", trigger="") == "a red car"
    assert compose_prompt("", trigger="sks") == "sks"


def test_window_starts_cover_the_clip():
    from maskedit.method.conditioning import window_starts

    assert window_starts(17, 9, 4) == [0, 4, 8]
    assert window_starts(21, 9, 8) == [0, 8, 12]  # a last window flush with the end
    assert window_starts(9, 9, 4) == [0]
    for bad in (dict(window=8), dict(window=13), dict(stride=0)):
        with pytest.raises(MaskEditError):
            window_starts(9, **{"window": 9, "stride": 4, **bad})


def test_window_samples_are_packed_like_stage1(clip):
    from maskedit.method.conditioning import window_samples

    frames, region = clip
    samples = window_samples(frames, region, "p3rs0n, a car", window=5, stride=2)
    assert len(samples) == 3  # starts 0, 2, 4 of a 9-frame clip
    for start, sample in zip((0, 2, 4), samples):
        assert sample.num_frames == 5
        assert np.array_equal(sample.target_video, frames[start : start + 5])
        assert np.array_equal(sample.image, frames[start])  # the window's first frame embeds
        assert np.all(sample.keep_mask[0] == 1)  # window frame 0 kept even where the clip is boxed
        assert np.array_equal(sample.keep_mask[1:] == 0, region[start + 1 : start + 5])
