"""MaskEditPipeline against diffusers' WanImageToVideoPipeline, bit for bit, on the tiny model."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import WanImageToVideoPipeline

from maskedit.method.conditioning import GREY_FILL, condition_pixels, inference_condition, pack_latent_mask, stock_condition
from maskedit.errors import MaskEditError
from maskedit.models.loading import tiny_components
from maskedit.method.pipeline import MaskEditPipeline

FRAMES, SIZE = 9, 64
CALL = dict(negative_prompt="blurry", height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=2, guidance_scale=5.0)


@pytest.fixture(scope="module")
def pipes():
    """Ours and the stock pipeline sharing the very same component objects."""
    components = tiny_components(seed=0)
    ours, stock = MaskEditPipeline(**components), WanImageToVideoPipeline(**components)
    for pipe in (ours, stock):
        pipe.set_progress_bar_config(disable=True)
    return ours, stock


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    frames = (rng.random((FRAMES, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    region = np.zeros((FRAMES, SIZE, SIZE), dtype=bool)
    region[:, 16:48, 8:40] = True
    return frames, region


def generate(pipe, output_type="np", **kwargs):
    kwargs = {**CALL, **kwargs}
    return pipe(generator=torch.Generator().manual_seed(0), output_type=output_type, **kwargs).frames


def test_no_condition_is_bit_identical_to_stock(pipes, clip):
    ours, stock = pipes
    image = PIL.Image.fromarray(clip[0][0])
    for output_type in ("latent", "np"):
        expected = generate(stock, output_type, image=image, prompt="a red car")
        got = generate(ours, output_type, image=image, prompt="a red car")
        assert np.array_equal(np.asarray(got), np.asarray(expected)) if output_type == "np" else torch.equal(got, expected)


def test_explicit_stock_condition_is_bit_identical_to_stock(pipes, clip):
    ours, stock = pipes
    sample = stock_condition(clip[0][0], FRAMES, "a red car")
    expected = generate(stock, image=PIL.Image.fromarray(sample.image), prompt=sample.prompt)
    got = generate(
        ours, prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask,
        image_view="crop",
    )  # image defaults to the condition's first frame; "crop" is diffusers' CLIP view
    assert np.array_equal(got, expected)
    as_pil = [PIL.Image.fromarray(f) for f in sample.condition_video]
    got_pil = generate(ours, prompt=sample.prompt, condition_video=as_pil, condition_mask=torch.from_numpy(sample.keep_mask),
                       image_view="crop")
    assert np.array_equal(got_pil, expected)


def test_transformer_sees_packed_mask_and_grey_filled_condition(pipes, clip):
    ours, _ = pipes
    frames, region = clip
    sample = inference_condition(frames, region, frames[0][::-1].copy(), "p3rs0n, a car")
    seen = {}

    def spy(module, args, kwargs):
        seen.setdefault("hidden", kwargs["hidden_states"].clone())

    encoded = []
    original_encode = ours.vae.encode

    def spy_encode(x, *args, **kwargs):
        encoded.append(x.clone())
        return original_encode(x, *args, **kwargs)

    handle = ours.transformer.register_forward_pre_hook(spy, with_kwargs=True)
    ours.vae.encode = spy_encode
    try:
        generate(ours, output_type="latent", prompt=sample.prompt, condition_video=sample.condition_video,
                 condition_mask=sample.keep_mask, guidance_scale=1.0)
    finally:
        handle.remove()
        del ours.vae.encode
    hidden = seen["hidden"]
    assert hidden.shape == (1, 36, 3, 8, 8)
    expected_mask = pack_latent_mask(torch.from_numpy(sample.keep_mask), 8, 8)
    assert torch.equal(hidden[:, 16:20], expected_mask)
    # The VAE saw V_cond with generate regions mid grey and frame 0 = the edited frame.
    pixels = encoded[0]
    assert torch.equal(pixels, condition_pixels(sample.condition_video, sample.keep_mask))
    assert torch.all(pixels[0, :, 1:][:, torch.from_numpy(region[1:])] == GREY_FILL)
    expected_cond = ours.encode_video_latents(pixels, torch.device("cpu"))
    assert torch.equal(hidden[:, 20:], expected_cond)


def test_condition_changes_output(pipes, clip):
    ours, _ = pipes
    frames, region = clip
    stock = stock_condition(frames[0], FRAMES, "a car")
    masked = inference_condition(frames, region, frames[0], "a car")
    a = generate(ours, prompt="a car", condition_video=stock.condition_video, condition_mask=stock.keep_mask)
    b = generate(ours, prompt="a car", condition_video=masked.condition_video, condition_mask=masked.keep_mask)
    assert not np.array_equal(a, b)


def test_feature_blending_extremes(pipes, clip):
    ours, _ = pipes
    frames, _ = clip
    kwargs = dict(image=PIL.Image.fromarray(frames[0]), prompt="a car")
    plain = generate(ours, "latent", **kwargs)
    nothing = generate(ours, "latent", blend_source_video=frames, blend_keep_mask=np.zeros(frames.shape[:3]), **kwargs)
    assert torch.equal(plain, nothing)
    everything = generate(ours, "latent", blend_source_video=frames, blend_keep_mask=np.ones(frames.shape[:3]), **kwargs)
    source = ours.encode_video_latents(condition_pixels(frames, np.ones(frames.shape[:3])), torch.device("cpu"))
    assert torch.equal(everything, source)  # the last step has sigma 0: all source


def test_user_callback_still_runs_with_blending(pipes, clip):
    ours, _ = pipes
    frames, region = clip
    steps = []
    generate(ours, "latent", image=PIL.Image.fromarray(frames[0]), prompt="a car", blend_source_video=frames,
             blend_keep_mask=(~region).astype(np.float32), callback_on_step_end=lambda p, i, t, kw: steps.append(i) or {})
    assert steps == [0, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(condition_video=np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)), "go together"),
        (dict(condition_video=np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), condition_mask=np.ones((FRAMES, 32, 32))), "condition_mask is"),
        (dict(condition_video=np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), condition_mask=np.ones((FRAMES, SIZE, SIZE)), num_frames=17), "num_frames"),
        (dict(max_sequence_length=256), "max_sequence_length=512"),
    ],
)
def test_bad_condition_arguments(pipes, kwargs, message):
    ours, _ = pipes
    call = {**CALL, **kwargs}
    call.setdefault("image", PIL.Image.new("RGB", (SIZE, SIZE)))
    with pytest.raises(MaskEditError, match=message):
        ours(prompt="x", **call)
