"""Two-expert bases (Wan2.2-I2V-A14B layout) on the tiny two-expert model: loading, parity with the stock
pipeline, expert routing of training and generation, per-expert LoRA files loaded by stock diffusers."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from safetensors.torch import load_file

from conftest import make_synthetic_clip
from maskedit.method.conditioning import inference_condition, stage1_sample, stock_condition
from maskedit.errors import MaskEditError
from maskedit.method.experts import (
    EXPERTS, HIGH_NOISE, LOW_NOISE, TwoExpertTrainer, expert_comfyui_name, expert_for_timestep, expert_module,
    expert_weight_name, is_two_expert, load_expert_loras, make_trainer, sample_in_range, save_expert_loras,
)
from maskedit.method.lora import ADAPTER_NAME, lora_state_dict
from maskedit.models.loading import (
    TINY_WAN22, build_tiny_two_expert_pipeline, load_pipeline, save_tiny_two_expert_pipeline,
    tiny_two_expert_components,
)
from maskedit.method.pipeline import MaskEditPipeline
from maskedit.method.training import LoraTrainer, TrainConfig, TrainItem

FRAMES, SIZE = 9, 64
CALL = dict(negative_prompt="blurry", height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=4,
            guidance_scale=5.0, guidance_scale_2=3.0)


def generate(pipe, output_type="np", **kwargs):
    return pipe(generator=torch.Generator().manual_seed(0), output_type=output_type, **{**CALL, **kwargs}).frames


def first_frame():
    return make_synthetic_clip()[0][0]


def train_items():
    frames, region = make_synthetic_clip()
    return [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))]


def config(steps=6, **changes):
    return TrainConfig(**{**dict(steps=steps, learning_rate=1e-2, rank=4, alpha=4.0, checkpoint_every=0), **changes})


class ForwardLog:
    """Records (module name, timestep) of every forward of both experts."""

    def __init__(self, pipe):
        self.calls = []
        self.handles = [
            expert_module(pipe, expert).register_forward_pre_hook(self._hook(expert), with_kwargs=True)
            for expert in EXPERTS
        ]

    def _hook(self, expert):
        def hook(module, args, kwargs):
            self.calls.append((expert, kwargs["timestep"].detach().float().flatten().tolist()))
        return hook

    def close(self):
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-expert pipeline after 6 alternating steps (3 per expert), its LoRA folder, and the
    per-step log of which expert saw which timestep."""
    pipe = build_tiny_two_expert_pipeline()
    trainer = TwoExpertTrainer(pipe, train_items(), config(6), device="cpu")
    log = ForwardLog(pipe)
    snapshots = []
    events = []
    for event in trainer.run():
        events.append(event)
        snapshots.append({e: {k: v.clone() for k, v in lora_state_dict(expert_module(pipe, e)).items()} for e in EXPERTS})
    log.close()
    folder = tmp_path_factory.mktemp("wan22_lora")
    save_expert_loras(pipe, folder, {"base_model": TINY_WAN22, "trigger": "p3rs0n"})
    return pipe, folder, log.calls, snapshots, events


def test_tiny_two_expert_model_has_the_wan22_layout_and_reloads_through_the_real_loading_code(tmp_path):
    pipe = build_tiny_two_expert_pipeline()
    assert is_two_expert(pipe) and pipe.config.boundary_ratio == 0.9 and pipe.image_encoder is None
    for expert in EXPERTS:
        module = expert_module(pipe, expert)
        assert module.config.in_channels == 36 and module.config.image_dim is None
        assert module.blocks[0].attn2.add_k_proj is None  # no image cross-attention in Wan2.2
    assert not torch.equal(pipe.transformer.blocks[0].attn1.to_q.weight, pipe.transformer_2.blocks[0].attn1.to_q.weight)

    save_tiny_two_expert_pipeline(tmp_path / "wan22")
    loaded = load_pipeline(str(tmp_path / "wan22"), device="cpu")
    assert isinstance(loaded.pipe, MaskEditPipeline) and is_two_expert(loaded.pipe) and loaded.pipe.image_encoder is None
    frames, region = make_synthetic_clip()
    sample = inference_condition(frames, region, frames[0], "p3rs0n, a box")
    kwargs = dict(prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask)
    assert np.allclose(generate(loaded.pipe, **kwargs), generate(pipe, **kwargs), atol=1e-4)
    assert load_pipeline(TINY_WAN22, device="cpu").is_tiny


def test_ti2v_5b_is_refused_before_any_weights_load(tmp_path):
    folder = tmp_path / "ti2v"
    folder.mkdir()
    index = {"_class_name": "WanImageToVideoPipeline", "expand_timesteps": True, "boundary_ratio": None,
             "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MaskEditError, match="TI2V-5B.*no mask channels"):
        load_pipeline(str(folder), device="cpu")


@pytest.mark.parametrize("guidance_scale_2", [3.0, None])
def test_no_condition_is_bit_identical_to_the_stock_two_expert_pipeline(guidance_scale_2):
    components = tiny_two_expert_components()
    ours, stock = MaskEditPipeline(**components), WanImageToVideoPipeline(**components)
    for pipe in (ours, stock):
        pipe.set_progress_bar_config(disable=True)
    image = PIL.Image.fromarray(first_frame())
    call = dict(image=image, prompt="a red car", guidance_scale_2=guidance_scale_2)
    for output_type in ("latent", "np"):
        expected = generate(stock, output_type, **call)
        got = generate(ours, output_type, **call)
        assert torch.equal(got, expected) if output_type == "latent" else np.array_equal(got, expected)
    sample = stock_condition(first_frame(), FRAMES, "a red car")
    got = generate(ours, prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask,
                   guidance_scale_2=guidance_scale_2)
    assert np.array_equal(got, generate(stock, **call))
    if guidance_scale_2 is None:  # None means the high-noise scale, as in diffusers
        assert torch.equal(generate(ours, "latent", **call), generate(ours, "latent", **{**call, "guidance_scale_2": 5.0}))


def generate_edit_latents(pipe, prepared, **settings) -> torch.Tensor:
    """The final latents (what the VAE decodes) of `generate.generate_edit` (no-lora) on the tiny clip, 4 steps
    at shift 5 (timesteps 999, 937 | 833, 625)."""
    from maskedit.workflow import generate, prepare

    seen, decode = [], pipe.vae.decode

    def capture(z, *args, **kwargs):
        seen.append(z.detach().clone())
        return decode(z, *args, **kwargs)

    pipe.vae.decode = capture
    try:
        generate.generate_edit(pipe, prepared, prepared.frames[0], "a box", steps=4, method="no-lora", sampler="unipc",
                              **settings)
    finally:
        del pipe.vae.decode
    return seen[-1]


@pytest.fixture(scope="module")
def prepared_clip(tmp_path_factory):
    from maskedit.workflow import generate, prepare
    from maskedit.media.video import write_video

    folder = tmp_path_factory.mktemp("gs2")
    frames, _ = make_synthetic_clip()
    write_video(folder / "clip.mp4", frames, 8)
    return prepare.prepare_clip(folder / "clip.mp4", box="10,10,40,40", width=SIZE, height=SIZE, num_frames=FRAMES)


def test_guidance_scale_2_changes_only_the_low_noise_steps(prepared_clip):
    pipe = build_tiny_two_expert_pipeline()
    pipe.set_progress_bar_config(disable=True)
    log = ForwardLog(pipe)
    default = generate_edit_latents(pipe, prepared_clip, guidance_scale=5.0)
    log.close()
    assert {e for e, _ in log.calls} == {HIGH_NOISE, LOW_NOISE}  # boundary 0.9: two steps each
    changed = generate_edit_latents(pipe, prepared_clip, guidance_scale=5.0, guidance_scale_2=1.5)
    assert not torch.equal(changed, default)
    assert torch.equal(generate_edit_latents(pipe, prepared_clip, guidance_scale=5.0, guidance_scale_2=5.0), default)

    pipe.register_to_config(boundary_ratio=0.5)  # every step (τ ≥ 625) now runs the high-noise expert
    log = ForwardLog(pipe)
    all_high = generate_edit_latents(pipe, prepared_clip, guidance_scale=5.0)
    log.close()
    assert {e for e, _ in log.calls} == {HIGH_NOISE}
    for scale in (1.0, 1.5, 12.0):
        assert torch.equal(generate_edit_latents(pipe, prepared_clip, guidance_scale=5.0, guidance_scale_2=scale),
                           all_high)
    assert not torch.equal(generate_edit_latents(pipe, prepared_clip, guidance_scale=2.0), all_high)


def test_guidance_scale_2_is_refused_for_one_transformer_and_out_of_range(prepared_clip):
    from maskedit.models.loading import build_tiny_pipeline

    one, two = build_tiny_pipeline(), build_tiny_two_expert_pipeline()
    forwards = [ForwardLog(two)]
    calls = []
    hook = one.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(MaskEditError, match="guidance_scale_2 .*one transformer"):
        generate_edit_latents(one, prepared_clip, guidance_scale_2=3.0)
    for bad in (0.5, float("nan"), 31.0):
        with pytest.raises(MaskEditError, match=r"guidance scale \(two-expert bases\) \(guidance_scale_2\)"):
            generate_edit_latents(two, prepared_clip, guidance_scale_2=bad)
    hook.remove()
    assert calls == [] and forwards[0].calls == []  # refused before any denoising step


@pytest.mark.parametrize("sampler", ["uniform", "shifted", "logit_normal"])
def test_expert_timestep_sampling_stays_in_range_and_keeps_the_distribution(sampler):
    config_ = TrainConfig(timestep_sampler=sampler, timestep_shift=5.0)
    generator = torch.Generator().manual_seed(0)
    high = torch.cat([sample_in_range(config_, generator, 0.9, 1.0) for _ in range(2000)])
    low = torch.cat([sample_in_range(config_, generator, 0.0, 0.9) for _ in range(2000)])
    assert bool((high >= 0.9).all() and (high <= 1.0).all() and (low >= 0.0).all() and (low < 0.9).all())
    # the truncated distribution is the full one conditioned on the range: compare with rejection sampling
    from maskedit.method.training import sample_timesteps

    reference = torch.cat([sample_timesteps(config_, generator) for _ in range(20000)])
    for drawn, keep in ((high, reference >= 0.9), (low, reference < 0.9)):
        assert abs(drawn.mean().item() - reference[keep].mean().item()) < 0.02


def test_each_expert_trains_only_on_its_own_timestep_range(trained):
    pipe, _, calls, snapshots, events = trained
    assert [e.expert for e in events] == [HIGH_NOISE, LOW_NOISE] * 3
    assert [e.step for e in events] == list(range(1, 7)) and events[-1].total_steps == 6
    training_calls = calls  # one transformer forward per step (the loss), recorded in order
    assert [expert for expert, _ in training_calls] == [e.expert for e in events]
    for expert, timesteps in training_calls:
        assert all((t >= 900.0) == (expert == HIGH_NOISE) for t in timesteps), (expert, timesteps)
        assert all(expert_for_timestep(pipe, t) == expert for t in timesteps)
    # every step changes the trained expert's LoRA and leaves the other's untouched
    previous = None
    for event, snapshot in zip(events, snapshots):
        other = LOW_NOISE if event.expert == HIGH_NOISE else HIGH_NOISE
        if previous is not None:
            assert any(not torch.equal(snapshot[event.expert][k], previous[event.expert][k]) for k in snapshot[event.expert])
            assert all(torch.equal(snapshot[other][k], previous[other][k]) for k in snapshot[other])
        previous = snapshot


def test_generation_routes_each_step_to_the_right_expert_with_its_lora(trained):
    pipe, folder, *_ = trained
    log = ForwardLog(pipe)
    generate(pipe, image=PIL.Image.fromarray(first_frame()), prompt="p3rs0n, a box")
    log.close()
    timesteps = [(expert, ts[0]) for expert, ts in log.calls]
    assert {e for e, _ in timesteps} == {HIGH_NOISE, LOW_NOISE}  # 4 steps at shift 5: 999, 937 | 833, 625
    assert all(expert_for_timestep(pipe, t) == expert for expert, t in timesteps)
    # each expert carries its own trained LoRA, active
    for expert in EXPERTS:
        module = expert_module(pipe, expert)
        assert module.active_adapters() == [ADAPTER_NAME]
    swapped = build_tiny_two_expert_pipeline()
    load_expert_loras(swapped, folder)
    for expert in EXPERTS:
        a, b = lora_state_dict(expert_module(pipe, expert)), lora_state_dict(expert_module(swapped, expert))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_per_expert_files_load_in_stock_diffusers_and_reproduce_the_trained_output(trained):
    pipe, folder, *_ = trained
    meta = json.loads((folder / "lora.json").read_text())
    assert meta["base_model"] == TINY_WAN22 and meta["boundary_ratio"] == 0.9
    assert meta["experts"][HIGH_NOISE]["file"] == "lora_high_noise.safetensors"
    assert meta["experts"][LOW_NOISE]["component"] == "transformer_2" and meta["experts"][LOW_NOISE]["timesteps"] == [0.0, 900.0]

    image = PIL.Image.fromarray(first_frame())
    expected = generate(pipe, "latent", image=image, prompt="p3rs0n, a box")
    stock = WanImageToVideoPipeline(**tiny_two_expert_components())
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(str(folder), weight_name=expert_weight_name(HIGH_NOISE), adapter_name="edit")
    stock.load_lora_weights(str(folder), weight_name=expert_weight_name(LOW_NOISE), adapter_name="edit",
                            load_into_transformer_2=True)
    assert torch.equal(generate(stock, "latent", image=image, prompt="p3rs0n, a box"), expected)

    # the files are not interchangeable: each expert needs its own
    crossed = WanImageToVideoPipeline(**tiny_two_expert_components())
    crossed.set_progress_bar_config(disable=True)
    crossed.load_lora_weights(str(folder), weight_name=expert_weight_name(LOW_NOISE), adapter_name="edit")
    crossed.load_lora_weights(str(folder), weight_name=expert_weight_name(HIGH_NOISE), adapter_name="edit",
                              load_into_transformer_2=True)
    assert not torch.equal(generate(crossed, "latent", image=image, prompt="p3rs0n, a box"), expected)

    # ComfyUI-style export: original-Wan keys, no image K/V; stock diffusers reads them too
    comfy = WanImageToVideoPipeline(**tiny_two_expert_components())
    comfy.set_progress_bar_config(disable=True)
    for expert in EXPERTS:
        keys = load_file(str(folder / expert_comfyui_name(expert))).keys()
        assert all(k.startswith("diffusion_model.blocks.") for k in keys)
        assert not any("img" in k or "add_k" in k or "add_v" in k for k in keys)
        comfy.load_lora_weights(str(folder), weight_name=expert_comfyui_name(expert), adapter_name="edit",
                                load_into_transformer_2=expert == LOW_NOISE)
    assert torch.allclose(generate(comfy, "latent", image=image, prompt="p3rs0n, a box"), expected, atol=1e-5)


def test_expert_lora_errors_are_clear(trained, tmp_path):
    _, folder, *_ = trained
    from maskedit.models.loading import build_tiny_pipeline

    with pytest.raises(MaskEditError, match="one transformer"):
        load_expert_loras(build_tiny_pipeline(), folder)
    (tmp_path / expert_weight_name(HIGH_NOISE)).write_bytes((folder / expert_weight_name(HIGH_NOISE)).read_bytes())
    with pytest.raises(MaskEditError, match="lora_low_noise.safetensors"):
        load_expert_loras(build_tiny_two_expert_pipeline(), tmp_path)
    with pytest.raises(MaskEditError, match="at least 2"):
        TwoExpertTrainer(build_tiny_two_expert_pipeline(), train_items(), config(1), device="cpu")


def test_interrupted_two_expert_run_resumes_bit_identically(tmp_path):
    whole = build_tiny_two_expert_pipeline()
    TwoExpertTrainer(whole, train_items(), config(5, checkpoint_every=2), tmp_path / "a", device="cpu").train()

    part = build_tiny_two_expert_pipeline()
    first = TwoExpertTrainer(part, train_items(), config(5, checkpoint_every=2), tmp_path / "b", device="cpu")
    first.train(should_stop=lambda: first.state.step >= 3)
    assert first.state.step == 3
    resumed_pipe = build_tiny_two_expert_pipeline()
    second = TwoExpertTrainer(resumed_pipe, train_items(), config(5, checkpoint_every=2), tmp_path / "b", device="cpu")
    assert second.resume() and second.state.step == 3 and second.next_expert() == LOW_NOISE
    second.train()
    for expert in EXPERTS:
        a, b = lora_state_dict(expert_module(whole, expert)), lora_state_dict(expert_module(resumed_pipe, expert))
        assert all(torch.equal(a[k], b[k]) for k in a), expert


def test_make_trainer_picks_the_trainer_for_the_base():
    from maskedit.models.loading import build_tiny_pipeline

    assert type(make_trainer(build_tiny_pipeline(), train_items(), config(2), device="cpu")) is LoraTrainer
    assert type(make_trainer(build_tiny_two_expert_pipeline(), train_items(), config(2), device="cpu")) is TwoExpertTrainer


@pytest.mark.skipif(not os.environ.get("MASKEDIT_WAN22_PATH"),
                    reason="set MASKEDIT_WAN22_PATH to a local Wan2.2-I2V-A14B diffusers folder to run")
def test_real_wan22_weights_load_as_two_experts_and_generate():
    loaded = load_pipeline(os.environ["MASKEDIT_WAN22_PATH"])
    assert is_two_expert(loaded.pipe) and loaded.pipe.image_encoder is None
    frames, region = make_synthetic_clip(num_frames=5, height=256, width=256)
    sample = inference_condition(frames, region, frames[0], "p3rs0n, a box")
    out = loaded.pipe(prompt=sample.prompt, condition_video=sample.condition_video, condition_mask=sample.keep_mask,
                      num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np").frames
    assert out.shape == (1, 5, 256, 256, 3) and np.isfinite(out).all()
