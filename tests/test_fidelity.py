"""Issue 11: the places where the method must match the reference on real weights, proven on the tiny model.

The CLIP view, the same condition latents in training and generation, feature blending (Eq. 3) at every step,
the samplers, the stage-2 balance with windows, and a pipeline diffusers' conventions accept.
"""

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanImageToVideoPipeline

from maskedit.method.conditioning import (
    ConditionSample, frames_to_tensor, inference_condition, latent_keep_mask, stage1_sample, stage2_sample,
)
from maskedit.errors import MaskEditError
from maskedit.method.masks import keep_mask_from_region
from maskedit.method.pipeline import DEFAULT_SAMPLER, MaskEditPipeline, reference_sigmas, use_sampler
from maskedit.method.training import CLIP_SLOT, STAGE2_REPEATS, TrainItem, encode_samples, epoch_order, stage2_items

REPO = Path(__file__).resolve().parents[1]
FRAMES, SIZE = 9, 64


@pytest.fixture(scope="module")
def pipe():
    from maskedit.models.loading import build_tiny_pipeline

    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(3)
    frames = (rng.random((FRAMES, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    region = np.zeros((FRAMES, SIZE, SIZE), dtype=bool)
    region[:, 16:48, 8:40] = True
    return frames, region


def transformer_inputs(pipe):
    """A forward pre-hook recording every transformer call's keyword inputs; returns (calls, handle)."""
    calls = []

    def spy(module, args, kwargs):
        calls.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()})

    return calls, pipe.transformer.register_forward_pre_hook(spy, with_kwargs=True)


# ----- 3. what the image encoder sees


def landscape_frame(height=64, width=128):
    """Red left quarter, blue right quarter, green middle: a centre crop sees only green."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[:, : width // 4] = (255, 0, 0)
    frame[:, width // 4 : 3 * width // 4] = (0, 255, 0)
    frame[:, 3 * width // 4 :] = (0, 0, 255)
    return frame


def encoder_pixels(pipe, image, view):
    seen = []
    handle = pipe.image_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True)
    try:
        pipe.encode_image(PIL.Image.fromarray(image), torch.device("cpu"), view=view)
    finally:
        handle.remove()
    return seen[0]


def test_full_view_sees_the_whole_landscape_frame(pipe):
    frame = landscape_frame()
    processor = pipe.image_processor
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    full = encoder_pixels(pipe, frame, "full") * std + mean  # back to [0, 1] RGB
    size = pipe.image_encoder.config.image_size
    assert full.shape == (1, 3, size, size)
    # Wan's `CLIPModel.visual`: the whole frame in [-1, 1], bicubic to the encoder's size, back to [0, 1]
    wan = F.interpolate(torch.from_numpy(frame).float().permute(2, 0, 1)[None] / 127.5 - 1.0, size=(size, size),
                        mode="bicubic", align_corners=False) * 0.5 + 0.5
    assert torch.allclose(full, wan, atol=1e-6)
    left, right = full[0, :, :, 1], full[0, :, :, -2]
    assert (left[0] > 0.9).all() and (left[2] < 0.1).all()  # red at the left edge
    assert (right[2] > 0.9).all() and (right[0] < 0.1).all()  # blue at the right edge

    crop = encoder_pixels(pipe, frame, "crop") * std + mean
    assert (crop[0, 1] > 0.9).all()  # diffusers' centre crop sees only the green middle
    assert pipe.encode_image(PIL.Image.fromarray(frame)).shape == pipe.encode_image(frame, view="full").shape


def test_crop_view_is_diffusers_bit_for_bit(pipe):
    frame = landscape_frame()
    stock = WanImageToVideoPipeline.encode_image(pipe, PIL.Image.fromarray(frame), torch.device("cpu"))
    assert torch.equal(pipe.encode_image(PIL.Image.fromarray(frame), torch.device("cpu"), view="crop"), stock)
    assert torch.equal(pipe.encode_image(PIL.Image.fromarray(frame), torch.device("cpu")), stock)  # outside a call


def test_training_and_generation_use_the_same_image_view(pipe, clip):
    frames, region = clip
    encoded = encode_samples(pipe, [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))])[0]
    condition = inference_condition(frames, region, frames[0], "p3rs0n, a box")
    calls, handle = transformer_inputs(pipe)
    try:
        pipe(prompt=condition.prompt, condition_video=condition.condition_video, condition_mask=condition.keep_mask,
             num_inference_steps=1, guidance_scale=1.0, output_type="latent", generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert torch.equal(calls[0]["encoder_hidden_states_image"], encoded.image_embeds)
    crop = pipe.encode_image(PIL.Image.fromarray(frames[0]), view="crop")
    assert not torch.equal(crop, encoded.image_embeds)  # the method's default is the full view, not diffusers'


# ----- 6. the same condition latents in training and generation


def test_condition_latents_are_equal_in_training_and_generation_with_vae_tiling(pipe, clip):
    frames, region = clip
    encoded = encode_samples(pipe, [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))])[0]  # tiling off
    condition = inference_condition(frames, region, frames[0], "p3rs0n, a box")  # frame 0 unedited: same V_cond
    pipe.vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                           tile_sample_stride_width=16)  # what a preset's vae_tiling does, at the tiny size
    calls, handle = transformer_inputs(pipe)
    try:
        pipe(prompt=condition.prompt, condition_video=condition.condition_video, condition_mask=condition.keep_mask,
             num_inference_steps=1, guidance_scale=1.0, output_type="latent", generator=torch.Generator().manual_seed(0))
        assert pipe.vae.use_tiling  # decoding keeps its tiling
        tiled = pipe.vae.encode(frames_to_tensor(frames)).latent_dist.mode()
    finally:
        handle.remove()
        pipe.vae.disable_tiling()
    untiled = pipe.vae.encode(frames_to_tensor(frames)).latent_dist.mode()
    assert not torch.equal(tiled, untiled)  # tiling does change an encode at this size
    assert torch.equal(calls[0]["hidden_states"][:, 16:], encoded.condition)


# ----- 5. feature-level blending (paper Eq. 3) at every step


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_blending_holds_for_the_state_the_sampler_carries(pipe, clip, sampler):
    frames, region = clip
    keep = keep_mask_from_region(region)
    use_sampler(pipe, sampler, 5.0)
    source = pipe.encode_video_latents(frames_to_tensor(frames), torch.device("cpu"))
    mask = latent_keep_mask(torch.from_numpy(keep), SIZE // 8, SIZE // 8).bool().expand_as(source)
    checked = []

    def check(p, step, timestep, kwargs):
        _, _, noise = p._blend
        sigmas = p.scheduler.sigmas
        after = (1 - sigmas[step + 1]) * source + sigmas[step + 1] * noise
        assert torch.equal(kwargs["latents"][mask], after[mask])  # the sample handed to the next step
        carried = getattr(p.scheduler, "last_sample", None)  # UniPC's corrected current sample (its history)
        if carried is not None and step > 0:
            now = (1 - sigmas[step]) * source + sigmas[step] * noise
            assert torch.equal(carried[mask], now[mask]), f"step {step}: {(carried - now)[mask].abs().max()}"
        checked.append(step)
        return kwargs

    try:
        latents = pipe(image=PIL.Image.fromarray(frames[0]), prompt="a box", height=SIZE, width=SIZE, num_frames=FRAMES,
                       num_inference_steps=4, guidance_scale=5.0, output_type="latent", blend_source_video=frames,
                       blend_keep_mask=keep, callback_on_step_end=check,
                       generator=torch.Generator().manual_seed(0)).frames
    finally:
        use_sampler(pipe, "unipc", 5.0)
    assert checked == [0, 1, 2, 3]
    assert torch.equal(latents[mask], source[mask])  # sigma 0 at the end: the source itself where kept
    assert not torch.equal(latents[~mask], source[~mask])


def test_feature_blend_needs_the_naive_lora(pipe, clip):
    from maskedit.workflow.generate import generate_edit
    from maskedit.workflow.prepare import PreparedClip
    from maskedit.media.video import Clip

    frames, region = clip
    prepared = PreparedClip(Clip(frames, 8.0, []), region)
    with pytest.raises(MaskEditError, match="naive baseline's LoRA"):
        generate_edit(pipe, prepared, frames[0], "a box", steps=1, method="feature-blend")


# ----- 7. samplers


def test_each_sampler_is_selectable_and_euler_follows_the_reference_schedule(pipe, clip):
    from maskedit.workflow.generate import generate_edit
    from maskedit.workflow.prepare import PreparedClip
    from maskedit.media.video import Clip

    frames, region = clip
    prepared = PreparedClip(Clip(frames, 8.0, []), region)
    outputs = {}
    for sampler, kind in (("euler", FlowMatchEulerDiscreteScheduler), ("unipc", UniPCMultistepScheduler)):
        calls, handle = transformer_inputs(pipe)
        try:
            outputs[sampler] = generate_edit(pipe, prepared, frames[0], "a box", steps=3, guidance_scale=1.0,
                                             method="no-lora", sampler=sampler, flow_shift=5.0)
        finally:
            handle.remove()
        assert isinstance(pipe.scheduler, kind)
        timesteps = torch.stack([call["timestep"][0] for call in calls]).float()
        if sampler == "euler":  # DiffSynth FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True)
            base = torch.linspace(1, 0, 4)[:-1]
            reference = 5 * base / (1 + 4 * base) * 1000
            assert torch.allclose(timesteps, reference, atol=1e-3), (timesteps, reference)
            assert pipe.scheduler.sigmas[-1] == 0
    assert not np.array_equal(outputs["euler"], outputs["unipc"])
    assert DEFAULT_SAMPLER == "euler"
    with pytest.raises(MaskEditError, match="sampler"):
        generate_edit(pipe, prepared, frames[0], "a box", steps=1, method="no-lora", sampler="ddim")
    assert reference_sigmas(2) == [1.0, 0.5]


def test_use_sampler_keeps_a_repositorys_unipc_config(pipe):
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                             solver_order=3)
    use_sampler(pipe, "euler", 5.0)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 5.0
    use_sampler(pipe, "unipc", 7.0)
    assert pipe.scheduler.config.solver_order == 3 and pipe.scheduler.config.flow_shift == 7.0
    use_sampler(pipe, "unipc", 5.0)


def test_presets_state_the_sampler():
    from maskedit.models.presets import PRESETS, Preset

    assert Preset.__dataclass_fields__["sampler"].default == DEFAULT_SAMPLER
    for preset in PRESETS.values():
        assert f"sampler: {preset.sampler}" in preset.describe()


# ----- 4. stage-2 balance, with and without temporal windows


def dummy_sample(tag: int) -> ConditionSample:
    frame = np.full((1, 16, 16, 3), tag, dtype=np.uint8)
    return ConditionSample(frame, np.ones((1, 16, 16), np.float32), frame[0], f"sample {tag}", frame)


@pytest.mark.parametrize("windows, edited", [(1, 1), (7, 1), (11, 1), (7, 3)])
def test_stage2_keeps_the_reference_share_whatever_the_windows(windows, edited):
    clip_list = [TrainItem(dummy_sample(i)) for i in range(windows)]
    frames = [dummy_sample(100 + k) for k in range(edited)]
    items = stage2_items(clip_list, frames)
    repeats, slots = [item.repeats for item in items], [item.slot for item in items]
    seen_windows = []
    for epoch in range(2 * windows):
        order = epoch_order(repeats, epoch, seed=0, slots=slots)
        clip_draws = [i for i in order if i < windows]
        assert len(order) == 1 + STAGE2_REPEATS * edited  # the reference's epoch: one clip + 9 per frame
        assert len(clip_draws) == 1
        for k in range(edited):
            assert order.count(windows + k) == STAGE2_REPEATS
        seen_windows += clip_draws
    share = 1 - 1 / (1 + STAGE2_REPEATS * edited)
    assert share == pytest.approx(0.9) if edited == 1 else share > 0.9
    for start in range(0, 2 * windows, windows):  # each window once per pass of the windows
        assert sorted(seen_windows[start:start + windows]) == list(range(windows))
    if windows > 1:
        assert all(slot == CLIP_SLOT for slot in slots[:windows])


def test_epoch_order_without_slots_is_unchanged():
    # the schedule every stage-1 run (and its checkpoints) was made with: each item `repeats` times, shuffled
    order = [i for i, r in enumerate([1, 9, 9]) for _ in range(r)]
    perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(5 * 100_003 + 2))
    assert epoch_order([1, 9, 9], 2, 5) == [order[i] for i in perm.tolist()]


def test_train_edit_lora_balances_windowed_stage2(tiny_pipe, monkeypatch, synthetic_clip, tmp_path):
    """The stage-2 trainer that `train_edit_lora` builds with windows draws one window + 9 edited-frame samples
    per epoch (today's code drew every window: 3 + 9, 75%)."""
    from maskedit.workflow import prepare, train
    from maskedit.method import experts
    from maskedit.method import training
    from maskedit.method.training import TrainConfig
    from maskedit.media.video import Clip

    frames, region = synthetic_clip
    prepared = prepare.PreparedClip(Clip(frames, 8.0, []), region)
    built = []

    original = training.LoraTrainer.__init__

    def recording_init(self, pipe, items, config, *args, **kwargs):  # whoever builds it (experts.make_trainer)
        built.append(items)
        original(self, pipe, items, config, *args, **kwargs)

    monkeypatch.setattr(training.LoraTrainer, "__init__", recording_init)
    events = list(train.train_edit_lora(tiny_pipe, prepared, "a box", TrainConfig(steps=1), tmp_path / "lora",
                                          edited_later={4: frames[4]}, later_captions={4: "a blue box"}, window=5,
                                          window_stride=2, stage2_epochs=1))
    assert isinstance(events[-1], train.EditTrainingDone) and events[-1].metadata["stage2_steps"] == 10
    stage1, stage2 = built
    assert len(stage1) == 3  # windows at frames 0, 2, 4
    order = epoch_order([i.repeats for i in stage2], 0, 0, [i.slot for i in stage2])
    assert len(order) == 10 and sum(stage2[i].sample.num_frames == 5 for i in order) == 1
    assert [stage2[i].sample.prompt for i in order].count("p3rs0n, a blue box") == 9


# ----- 8. diffusers conventions


def test_call_signature_holds_every_parameter_of_the_parent():
    ours = inspect.signature(MaskEditPipeline.__call__).parameters
    parent = inspect.signature(WanImageToVideoPipeline.__call__).parameters
    assert "kwargs" not in ours
    assert list(ours)[: len(parent)] == list(parent)  # same names, same order (positional calls keep working)
    for name in ("condition_video", "condition_mask", "blend_source_video", "blend_keep_mask", "image_view", "sigmas"):
        assert ours[name].default is None


def test_errors_are_value_errors(pipe):
    assert issubclass(MaskEditError, ValueError)
    with pytest.raises(ValueError, match="image_view"):
        pipe(prompt="x", image=PIL.Image.new("RGB", (SIZE, SIZE)), height=SIZE, width=SIZE, num_frames=FRAMES,
             image_view="square")


def test_public_api_at_the_package_top_loads_lazily():
    code = ("import sys, maskedit; assert 'torch' not in sys.modules, 'eager'; "
            "from maskedit import MaskEditPipeline, MaskEditError, train_edit_lora, generate_edit, load_pipeline; "
            "import maskedit.method.pipeline as p; assert MaskEditPipeline is p.MaskEditPipeline; "
            "assert issubclass(MaskEditError, ValueError); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
