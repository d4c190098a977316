"""Block swapping, fp8 base weights and activation offload (maskedit.memory.offload) on the tiny model.

Swapped / checkpointed / activation-offloaded training must give LoRA gradients bitwise equal to the
plain run on the same device; fp8 within a stated tolerance. A dropped weight is an *empty* tensor on every
device, so any use of a swapped-out weight (forward or backward) fails here on CPU too. The bitwise, fp8 and
encoder-offload tests run on the CPU and, where a CUDA GPU is present, on it as well (the pipeline loaded on the
CPU and placed as the CLI places it: `offload.place_pipeline`, the streamer before the move).
"""

import numpy as np
import pytest
import torch

from maskedit.method.lora import add_lora
from maskedit.models.loading import TINY_TRANSFORMER, build_tiny_pipeline
from maskedit.memory.offload import (ENCODER_NAMES, BlockStreamer, apply_memory_options, dequantize_fp8, encoder_offload,
                              place_pipeline, quantize_fp8)
from maskedit.method.training import LoraTrainer, TrainConfig, clip_items

from conftest import make_synthetic_clip

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the cuda case runs where one is present"))]

LAYERS = 4  # more blocks than the stock tiny model, so that prefetching and resident blocks are exercised

FP8_GRADIENT_COSINE = 0.99  # fp8 tolerance: gradient direction (measured ≈ 0.999)
FP8_GRADIENT_RELATIVE = 0.10  # ‖g_fp8 − g‖ / ‖g‖ over all LoRA gradients (measured ≈ 0.05)
FP8_LOSS_RELATIVE = 0.01  # per-step loss (measured ≤ 0.3 %)


def four_block_pipe():
    from diffusers import WanTransformer3DModel

    pipe = build_tiny_pipeline()
    torch.manual_seed(3)
    pipe.transformer = WanTransformer3DModel(**{**TINY_TRANSFORMER, "num_layers": LAYERS}).eval()
    return pipe


@pytest.fixture(scope="module")
def items():
    frames, region = make_synthetic_clip()
    return clip_items(frames, region, "p3rs0n, a box")


def run_steps(items, steps=3, device="cpu", **config):
    pipe = four_block_pipe()
    if device != "cpu":  # loaded on the CPU, then placed on the GPU as the CLI does
        place_pipeline(pipe, device, config.get("blocks_to_swap", 0), config.get("fp8", False),
                       offload_encoders=config.get("offload_encoders", False))
    trainer = LoraTrainer(pipe, items, TrainConfig(steps=steps, checkpoint_every=0, **config), device=device)
    losses = [trainer.train_step()]
    grads = [p.grad.clone() for p in trainer.params]
    losses += [trainer.train_step() for _ in range(steps - 1)]
    return trainer, losses, grads, [p.detach().clone() for p in trainer.params]


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="module")
def plain(items, device):
    return run_steps(items, device=device)


@pytest.mark.parametrize("config", [
    dict(gradient_checkpointing=True),
    dict(blocks_to_swap=1),
    dict(blocks_to_swap=2),
    dict(blocks_to_swap=LAYERS),
    dict(blocks_to_swap=3, activation_offload=True),
    dict(gradient_checkpointing=True, activation_offload=True),
    dict(offload_encoders=True),
    dict(blocks_to_swap=2, offload_encoders=True),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_swapped_and_checkpointed_training_is_bitwise_plain(items, plain, config, device):
    _, losses0, grads0, params0 = plain
    trainer, losses, grads, params = run_steps(items, device=device, **config)
    assert losses == losses0
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads))  # LoRA gradients of step 1, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(params0, params))  # and the LoRA after 3 steps
    streamer = trainer.memory.streamer if trainer.memory else None
    if config.get("offload_encoders"):  # encoded with the encoders in CPU memory; all of them off the device now
        offload = encoder_offload(trainer.pipe)
        assert offload.stats["loads"] == 4 and not offload.resident  # VAE twice (target, condition), umT5, CLIP
        assert all(p.numel() == 0 for name in ENCODER_NAMES for p in getattr(trainer.pipe, name).parameters())
    if config.get("blocks_to_swap"):
        assert streamer.stats["loads"] == 3 * 2 * config["blocks_to_swap"]  # forward + recompute, per step
        assert streamer.stats["max_materialised"] <= 2  # the block in use and the one prefetched
        assert not streamer._loaded  # all dropped after each backward


def test_fp8_training_is_close_to_plain(items, plain, device):
    _, losses0, grads0, _ = plain
    trainer, losses, grads, _ = run_steps(items, device=device, fp8=True)
    flat0, flat = torch.cat([g.flatten() for g in grads0]), torch.cat([g.flatten() for g in grads])
    assert torch.nn.functional.cosine_similarity(flat0, flat, dim=0) >= FP8_GRADIENT_COSINE
    assert (flat - flat0).norm() / flat0.norm() <= FP8_GRADIENT_RELATIVE
    assert all(abs(a - b) <= FP8_LOSS_RELATIVE * abs(a) for a, b in zip(losses0, losses))
    assert not torch.equal(flat0, flat)  # fp8 really is in use
    assert trainer.memory.streamer.stats["device_store_bytes"] > 0
    assert all(p.dtype == torch.float32 for p in trainer.params)  # the LoRA is not quantised


def test_fp8_quantisation_error_bound():
    torch.manual_seed(0)
    weight = torch.randn(64, 48) * torch.logspace(-4, 0, 64)[:, None]  # rows of very different scales
    values, scale = quantize_fp8(weight)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    back = dequantize_fp8(values, scale, torch.float32)
    row_max = weight.abs().amax(dim=1, keepdim=True)
    assert ((back - weight).abs() <= row_max * 2.0 ** -4).all()  # 3 mantissa bits, per-row scale
    assert torch.equal(dequantize_fp8(*quantize_fp8(torch.zeros(3, 4)), torch.float32), torch.zeros(3, 4))


def _forward_backward(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = transformer(
        hidden_states=torch.randn(1, 36, 3, 8, 8, generator=g), timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
        encoder_hidden_states_image=torch.randn(1, 17, 16, generator=g), return_dict=False,
    )[0]
    out.square().mean().backward()
    return [p.grad.clone() for n, p in transformer.named_parameters() if "lora_" in n]


def test_swapping_without_checkpointing_is_exact_and_cleans_up():
    reference = four_block_pipe().transformer
    add_lora(reference)
    grads0 = _forward_backward(reference)
    transformer = four_block_pipe().transformer
    add_lora(transformer)
    streamer = BlockStreamer(transformer, "cpu", blocks_to_swap=3)
    assert torch.equal(torch.cat([g.flatten() for g in grads0]),
                       torch.cat([g.flatten() for g in _forward_backward(transformer)]))
    assert not streamer._loaded  # released when backward ended


def test_a_forward_only_offloader_is_caught_by_the_empty_placeholders(monkeypatch):
    # Negative control: dropping weights right after each forward (what a forward-only offloader does)
    # breaks backward without checkpointing; the empty placeholder makes that an error on CPU as well.
    def forward_only(self, index):
        def hook(module, args, output):
            self._drop(index)
        return hook

    monkeypatch.setattr(BlockStreamer, "_post_hook", forward_only)
    transformer = four_block_pipe().transformer
    add_lora(transformer)
    BlockStreamer(transformer, "cpu", blocks_to_swap=2)
    with pytest.raises(RuntimeError):
        _forward_backward(transformer)


def test_generation_with_swapping_is_bitwise_and_fp8_is_close():
    from maskedit.method.conditioning import inference_condition

    frames, region = make_synthetic_clip()
    condition = inference_condition(frames, region, frames[0], "p3rs0n, a box")

    def generate(pipe):
        return pipe(condition_video=condition.condition_video, condition_mask=condition.keep_mask,
                    prompt=condition.prompt, num_inference_steps=2, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    pipe = four_block_pipe()
    add_lora(pipe.transformer)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a non-zero LoRA, so that it takes part
    state = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    reference = generate(pipe)
    setup = apply_memory_options(pipe.transformer, "cpu", blocks_to_swap=3)
    managed = [entry.param for entries in setup.streamer._managed.values() for entry in entries]
    assert managed and all(p.numel() == 0 for p in managed)  # weights are out between uses
    assert np.array_equal(generate(pipe), reference)
    assert all(p.numel() == 0 for p in managed)
    setup.remove(pipe.transformer)
    assert all(torch.equal(state[k], v) for k, v in pipe.transformer.state_dict().items())  # restored exactly
    assert np.array_equal(generate(pipe), reference)

    setup = apply_memory_options(pipe.transformer, "cpu", blocks_to_swap=2, fp8=True)
    fp8 = generate(pipe)
    setup.remove(pipe.transformer)
    assert not np.array_equal(fp8, reference)
    assert np.abs(fp8 - reference).mean() < 0.005  # fp8 generation: mean abs difference in [0, 1] (measured 0.0015)


def test_trainers_in_sequence_reuse_or_undo_the_memory_options(items):
    reference = four_block_pipe().transformer
    add_lora(reference)
    state = reference.state_dict()
    pipe = four_block_pipe()
    first = LoraTrainer(pipe, items, TrainConfig(steps=1, blocks_to_swap=2, checkpoint_every=0))
    first.train()
    second = LoraTrainer(pipe, items, TrainConfig(steps=2, blocks_to_swap=2, checkpoint_every=0))  # stage 2 does this
    assert second.memory.streamer is first.memory.streamer  # kept, not rebuilt from the placeholders
    second.train()
    third = LoraTrainer(pipe, items, TrainConfig(steps=3, checkpoint_every=0))  # no memory options: undone
    assert third.memory is None and not pipe.transformer.blocks[3]._forward_pre_hooks
    third.train()
    after = pipe.transformer.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state if "lora_" not in k)  # the base, bit for bit


def test_a_lora_loaded_into_a_swapped_transformer(tmp_path):
    from maskedit.method.conditioning import inference_condition
    from maskedit.method.lora import load_lora, save_lora

    frames, region = make_synthetic_clip()
    condition = inference_condition(frames, region, frames[0], "p3rs0n, a box")
    trained = four_block_pipe()
    add_lora(trained.transformer)
    with torch.no_grad():
        for name, p in trained.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    save_lora(trained, tmp_path, {})

    def generate(pipe):
        return pipe(condition_video=condition.condition_video, condition_mask=condition.keep_mask,
                    prompt=condition.prompt, num_inference_steps=2, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    plain = four_block_pipe()
    load_lora(plain, tmp_path)
    swapped = four_block_pipe()
    setup = place_pipeline(swapped, "cpu", blocks_to_swap=3)
    assert setup.streamer.blocks_to_swap == 3 and place_pipeline(four_block_pipe(), "cpu") is None
    load_lora(swapped, tmp_path)  # the adapter is added to layers whose weights are out
    assert np.array_equal(generate(swapped), generate(plain))


def weights_on_device(pipe) -> dict[str, set[str]]:
    """Per encoder: the names of the parameters holding their values (the others are empty placeholders)."""
    return {name: {n for n, p in getattr(pipe, name).named_parameters() if p.numel()} for name in ENCODER_NAMES}


@pytest.mark.parametrize("device", DEVICES)
def test_offloaded_encoders_hold_weights_only_inside_their_calls_and_generation_is_bitwise(monkeypatch, device):
    from maskedit.memory import offload as offload_module
    from maskedit.method.conditioning import inference_condition

    frames, region = make_synthetic_clip()
    condition = inference_condition(frames, region, frames[0], "p3rs0n, a box")

    def generate(pipe):
        return pipe(condition_video=condition.condition_video, condition_mask=condition.keep_mask,
                    prompt=condition.prompt, negative_prompt="blurry", num_inference_steps=2, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    reference = generate(four_block_pipe().to(device))
    pipe = four_block_pipe()
    state = {name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()} for name in ENCODER_NAMES}
    elements = {name: sum(t.numel() for t in [*getattr(pipe, name).parameters(), *getattr(pipe, name).buffers()])
                for name in ENCODER_NAMES}  # tied weights once
    names = {name: {n for n, _ in getattr(pipe, name).named_parameters()} for name in ENCODER_NAMES}
    copies = []  # every host → device copy the offload makes: (tensor elements)
    real_to_device = offload_module.to_device
    monkeypatch.setattr(offload_module, "to_device", lambda t, d: copies.append(t.numel()) or real_to_device(t, d))
    assert place_pipeline(pipe, device, blocks_to_swap=2, offload_encoders=True) is not None
    offload = encoder_offload(pipe)
    assert set(offload.layers) == {"text_encoder", "image_encoder"}  # streamed layer by layer
    layer_names = {}  # (encoder, layer index) → its parameter names
    for name, layers in offload.layers.items():
        module = getattr(pipe, name)
        prefix = {id(m): n for n, m in module.named_modules()}
        for index, layer in enumerate(layers):
            layer_names[name, index] = {f"{prefix[id(layer)]}.{n}" for n, _ in layer.named_parameters()}
    streamed = {name: set().union(*(v for (n, _), v in layer_names.items() if n == name)) for name in offload.layers}
    nothing = dict.fromkeys(ENCODER_NAMES, set())
    assert weights_on_device(pipe) == nothing  # nothing on the device at rest

    expected, seen = {}, []  # what ran → the weights that must be on the device then; (what ran, the weights there)

    def spy(what):
        return lambda *_: seen.append((what, weights_on_device(pipe)))

    for name in ("text_encoder", "image_encoder"):  # the encoder's own weights, none of its layers
        getattr(pipe, name).register_forward_pre_hook(spy(name))
        expected[name] = {**nothing, name: names[name] - streamed[name]}
        for index, layer in enumerate(offload.layers[name]):  # and its layers one at a time
            layer.register_forward_pre_hook(spy((name, index)))
            expected[name, index] = {**nothing, name: names[name] - streamed[name] | layer_names[name, index]}
    for child in ("encoder", "decoder"):  # the whole VAE while it encodes or decodes
        getattr(pipe.vae, child).register_forward_pre_hook(spy(f"vae.{child}"))
        expected[f"vae.{child}"] = {**nothing, "vae": names["vae"]}
    pipe.transformer.register_forward_pre_hook(spy("transformer"))
    expected["transformer"] = nothing  # none beside the transformer
    assert np.array_equal(generate(pipe), reference)  # bit for bit

    for what, present in seen:
        assert present == expected[what], what
    ran = [what for what, _ in seen]
    assert ran.count("text_encoder") == 2 and ran.count("image_encoder") == 1  # prompt + negative prompt; the image
    assert ran.count("transformer") == 4 and "vae.encoder" in ran and ran[-1] == "vae.decoder"
    assert all(ran.count(("text_encoder", i)) == 2 for i in range(len(offload.layers["text_encoder"])))
    assert weights_on_device(pipe) == nothing  # all off again after the call
    assert offload.stats["loads"] == offload.stats["drops"] == 5  # umT5 ×2, CLIP, VAE encode, VAE decode
    assert sum(copies) == 2 * elements["text_encoder"] + elements["image_encoder"] + 2 * elements["vae"]

    offload.remove()
    assert encoder_offload(pipe) is None
    for name in ENCODER_NAMES:  # full weights back, bit for bit, no hook left
        module = getattr(pipe, name)
        assert all(torch.equal(state[name][k], v.cpu()) for k, v in module.state_dict().items())
    assert np.array_equal(generate(pipe), reference)


def test_encoder_offload_is_kept_by_later_trainers_and_survives_a_failing_call():
    from maskedit.memory.offload import enable_encoder_offload
    from maskedit.method.training import release_encoders, restore_encoders

    pipe = four_block_pipe()
    offload = enable_encoder_offload(pipe, "cpu")
    assert enable_encoder_offload(pipe, "cpu") is offload  # a second trainer keeps it (no second store)
    ids = torch.tensor([[5, 6, 7, 0]])
    reference = four_block_pipe().text_encoder(ids).last_hidden_state
    assert torch.equal(pipe.text_encoder(ids).last_hidden_state, reference)
    assert not offload.resident and all(p.numel() == 0 for p in pipe.text_encoder.parameters())
    with pytest.raises((IndexError, RuntimeError)):
        pipe.text_encoder(torch.tensor([[5, 6, 10**9]]))  # an id out of the vocabulary: the forward raises
    assert not offload.resident  # dropped all the same
    restore_encoders(pipe)
    release_encoders(pipe)  # no-ops on offloaded encoders: nothing comes back whole
    assert all(p.numel() == 0 for name in ENCODER_NAMES for p in getattr(pipe, name).parameters())
    assert pipe._execution_device == torch.device("cpu")
    offload.remove()
    assert torch.equal(pipe.text_encoder(ids).last_hidden_state, reference)


def test_the_cli_loads_a_pipeline_with_its_encoders_in_cpu_memory(monkeypatch, capsys):
    """`--offload-encoders` (or a preset with it) on a GPU machine: loaded on the CPU, then placed with the
    encoders in CPU memory (the GPU is stood in for by the CPU: the placement is recorded, then made on the CPU)."""
    from maskedit.interfaces.cli import main as cli
    from maskedit.models import loading as models
    from maskedit.memory import offload as offload_module

    calls = []

    def place(pipe, device, blocks_to_swap=0, fp8=False, offload_encoders=False, fp8_scaling="row"):
        calls.append((device, blocks_to_swap, fp8, offload_encoders))
        return place_pipeline(pipe, "cpu", blocks_to_swap, fp8, offload_encoders=offload_encoders,
                              fp8_scaling=fp8_scaling)

    monkeypatch.setattr(models, "default_device", lambda: "cuda")
    monkeypatch.setattr(offload_module, "place_pipeline", place)
    for flags, expected in (([], True), (["--no-offload-encoders", "--blocks-to-swap", "1"], False)):
        args = cli.build_parser().parse_args(["generate", "--prepared", "p", "--edited-frame", "e.png", "--edit-prompt", "p",
                                              "--out", "o", "--model", "tiny", "--preset", "24gb", *flags])
        cli._apply_preset(args)
        loaded = cli._load_model("tiny", args)
        assert calls[-1][0] == "cuda" and calls[-1][3] is expected
        assert (encoder_offload(loaded.pipe) is not None) is expected
        assert ("in CPU memory" in capsys.readouterr().out) is expected


def test_no_cuda_streams_or_pinned_memory_at_a_zerogpu_start_up(monkeypatch):
    """A Space places its weights at start-up, in spaces' main process, where the CUDA runtime must not start:
    the streamer then makes no side stream and pins nothing (inside a call the runtime is up)."""
    from maskedit.memory import offload

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert offload.cuda_runtime_usable()
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert not offload.cuda_runtime_usable()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a call's worker
    assert offload.cuda_runtime_usable()
