"""Seconds per denoising step: ours vs stock `WanImageToVideoPipeline`, and the fast-generation options.

Rows (per-step time = median gap between consecutive `callback_on_step_end` stamps, after a sync, so
condition encoding and decoding are left out; peak = `torch.cuda.max_memory_allocated` of the call):
- ours vs stock: `MaskEditPipeline` with condition_video / condition_mask against stock
  `WanImageToVideoPipeline(**same components)` at equal settings (size, frames, CFG, no LoRA), in the
  same process, interleaved; ratio goal ≤ 1.0;
- the edit LoRA at CFG 5 (the `full` preset's step), and edit + speed LoRA at CFG 1 (one transformer
  pass a step: the distilled generation of the `zerogpu` preset; a random rank-64 LoRA stands in);
- fp8 base weights, and 38 of 40 blocks swapped + fp8 (the `low-cost` preset's generation);
- each attention backend installed besides the default; `torch.compile` of the blocks (GPU, not --quick);
- VAE decode of the clip with tiling off / on;
- the whole `zerogpu` generation call (33x640x368, 4 steps, CFG 1, both LoRAs), decode included.

On a GPU: the real Wan2.1-I2V-14B transformer config with random weights built on the device, the real
Wan VAE and a ViT-H CLIP vision config (random); prompts as random embeddings (no text encoder). On a
CPU: the tiny model, as a smoke test.

    python benchmarks/generate.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_step import (  # noqa: E402
    NOT_MEASURED, RESULTS, TEXT_TOKENS, machine, peak_gib, random_transformer, reset_peak, sync, write_section,
)

from maskedit.method.conditioning import inference_condition  # noqa: E402
from maskedit.method.lora import ADAPTER_NAME, LORA_TARGET_MODULES, add_lora  # noqa: E402
from maskedit.method.masks import box_region  # noqa: E402
from maskedit.models.loading import REAL_TRANSFORMER_14B, TINY_TRANSFORMER  # noqa: E402
from maskedit.memory.offload import BlockStreamer  # noqa: E402
from maskedit.models.presets import get_preset  # noqa: E402
from maskedit.models.speed import (  # noqa: E402
    SPEED_ADAPTER, available_attention_backends, compile_blocks, enable_vae_tiling, set_attention_backend, set_lora_weights,
    uncompile_blocks,
)

REAL_CLIP_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                        image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")


def parse_args(argv):
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="real14b" if gpu else "tiny", choices=["real14b", "tiny"])
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps per timed call (≥ 2)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of ours vs stock")
    parser.add_argument("--quick", action="store_true", help="no compile row, one backend at most")
    parser.add_argument("--compile", action="store_true", help="also the compile row on CPU")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write", action="store_true", help=f"put the table into {RESULTS.name}")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def build_pipelines(args, transformer=None):
    """(ours, stock, transformer config, (width, height, frames)) sharing every component."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline

    from maskedit.method.pipeline import MaskEditPipeline
    from maskedit.runtime import quiet_transformers

    device = args.device
    if args.model == "tiny":
        from maskedit.models.loading import build_tiny_pipeline

        components = build_tiny_pipeline().components
        components.update(tokenizer=None, text_encoder=None)
        if transformer is not None:
            components["transformer"] = transformer.to(device)
        config, size = dict(TINY_TRANSFORMER), (64, 64, 9)
    else:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        config, size = dict(REAL_TRANSFORMER_14B), (832, 480, 49)
        transformer = transformer or random_transformer(config, device, torch.bfloat16)
        with torch.device(device):
            torch.manual_seed(0)
            vae = AutoencoderKLWan().eval()
            image_encoder = CLIPVisionModel(CLIPVisionConfig(**REAL_CLIP_VISION)).eval()
        with quiet_transformers():
            processor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
        components = dict(tokenizer=None, text_encoder=None, vae=vae, image_encoder=image_encoder,
                          image_processor=processor, transformer=transformer,
                          scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                            flow_shift=5.0))
    ours = MaskEditPipeline(**components).to(device)
    stock = WanImageToVideoPipeline(**ours.components)
    for pipe in (ours, stock):
        pipe.set_progress_bar_config(disable=True)
    return ours, stock, config, size


def embeddings(config, device, dtype):
    g = torch.Generator().manual_seed(1)
    prompt = torch.randn(1, TEXT_TOKENS, config["text_dim"], generator=g).to(device, dtype)
    negative = torch.randn(1, TEXT_TOKENS, config["text_dim"], generator=g).to(device, dtype)
    return prompt, negative


def clip_inputs(width, height, frames):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    region = box_region(height, width, (width // 4, height // 4, 3 * width // 4, 3 * height // 4), frames)
    return inference_condition(video, region, 255 - video[0], "p3rs0n, a red car")


def timed_call(pipe, device, ours=True, steps=3, guidance=5.0, size=None, condition=None, embeds=None, latent=True):
    """One generation call; returns (median per-step seconds, whole-call seconds, peak GiB)."""
    stamps = []

    def stamp(_pipe, _step, _t, kwargs):
        sync(device)
        stamps.append(time.perf_counter())
        return kwargs

    prompt, negative = embeds
    extra = dict(condition_video=condition.condition_video, condition_mask=condition.keep_mask) if ours else dict(
        image=PIL.Image.fromarray(condition.image), width=size[0], height=size[1], num_frames=size[2])
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    pipe(prompt_embeds=prompt, negative_prompt_embeds=negative if guidance > 1 else None, num_inference_steps=steps,
         guidance_scale=guidance, generator=torch.Generator().manual_seed(0), callback_on_step_end=stamp,
         output_type="latent" if latent else "np", **extra)
    sync(device)
    whole = time.perf_counter() - start
    gaps = [b - a for a, b in zip(stamps, stamps[1:])] or [whole]
    return statistics.median(gaps), whole, peak_gib(device)


def add_speed_lora(transformer, rank=64, seed=5):
    """A random rank-64 adapter named like the speed LoRA (also on the image K/V, as distilled LoRAs are)."""
    from peft import LoraConfig

    targets = LORA_TARGET_MODULES.replace(r"attn2\.(to_q|to_k|to_v|to_out\.0)", r"attn2\.(to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), adapter_name=SPEED_ADAPTER)


def main(argv=None, transformer=None) -> list[dict]:
    args = parse_args(argv)
    device = args.device
    started = time.perf_counter()
    ours, stock, config, size = build_pipelines(args, transformer)
    build = time.perf_counter() - started
    width, height, frames = size
    condition = clip_inputs(width, height, frames)
    embeds = embeddings(config, device, ours.transformer.dtype)
    call = dict(device=device, steps=args.steps, size=size, condition=condition, embeds=embeds)
    rows = []

    def row(name, result, note="", ratio=""):
        step, whole, peak = result
        rows.append(dict(case=name, step=step, call=whole, peak=peak, ratio=ratio, note=note))
        print(f"  {name}: {step:.3f} s/step ({whole:.2f} s call), peak {peak}", flush=True)

    timed_call(ours, **call)  # warm-up (kernels, allocator)
    results = {"ours": [], "stock": []}
    for round_ in range(args.rounds):
        order = [("ours", ours, True), ("stock", stock, False)]
        for side, pipe, is_ours in order if round_ % 2 == 0 else order[::-1]:
            results[side].append(timed_call(pipe, ours=is_ours, **call))
    med = {side: tuple(statistics.median(r[i] for r in rs) if i < 2 else rs[-1][2] for i in range(3))
           for side, rs in results.items()}
    ratio = med["ours"][0] / med["stock"][0]
    row("stock WanImageToVideoPipeline, CFG 5", med["stock"])
    row("ours (mask condition), CFG 5", med["ours"], ratio=f"{ratio:.3f} (goal ≤ 1.0)")

    add_lora(ours.transformer)
    row("ours + edit LoRA, CFG 5 (full preset)", timed_call(ours, **call))
    edit_step = rows[-1]["step"]
    add_speed_lora(ours.transformer)
    set_lora_weights(ours, edit=1.0, speed=1.0)
    row("ours + edit + speed LoRA, CFG 1 (distilled)", timed_call(ours, guidance=1.0, **call))
    rows[-1]["ratio"] = f"{rows[-1]['step'] / edit_step:.3f} of the CFG-5 step"
    ours.transformer.delete_adapters(SPEED_ADAPTER)
    ours.set_adapters([ADAPTER_NAME], adapter_weights=[1.0])

    for label, swap, fp8 in (("fp8 base weights", 0, True), ("38/40 blocks swapped + fp8 (low-cost)", 38, True)):
        streamer = BlockStreamer(ours.transformer, device, blocks_to_swap=swap if config["num_layers"] == 40 else
                                 round(swap * config["num_layers"] / 40), fp8=fp8)
        try:
            row(f"ours + edit LoRA, CFG 5, {label}", timed_call(ours, **call))
        finally:
            streamer.remove()

    backends = [b for b in available_attention_backends() if b != "native"]
    if device.type != "cuda":
        backends = []  # CUDA kernels; flex attention compiles (slow, noisy) on a CPU
    for backend in backends[:1] if args.quick else backends:
        try:
            set_attention_backend(ours.transformer, backend)
            row(f"ours + edit LoRA, CFG 5, attention {backend}", timed_call(ours, **call))
        except Exception as error:  # a backend that imports but cannot run these shapes
            rows.append(dict(case=f"attention {backend}", step=float("nan"), call=float("nan"), peak="–", ratio="",
                             note=f"failed: {type(error).__name__}"))
        finally:
            set_attention_backend(ours.transformer, "native")

    if (device.type == "cuda" and not args.quick) or args.compile:  # --compile: also on a CPU / with --quick
        compile_started = time.perf_counter()
        compile_blocks(ours.transformer)
        timed_call(ours, **call)
        compile_seconds = time.perf_counter() - compile_started
        row("ours + edit LoRA, CFG 5, compiled blocks", timed_call(ours, **call), note=f"compile + first call {compile_seconds:.0f} s")
        uncompile_blocks(ours.transformer)
        torch._dynamo.reset()

    latents = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device=device, dtype=ours.vae.dtype)
    for tiled in (False, True):
        enable_vae_tiling(ours, tiled)
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            ours.vae.decode(latents, return_dict=False)
        sync(device)
        seconds = time.perf_counter() - t0
        rows.append(dict(case=f"VAE decode {frames}x{width}x{height}, tiling {'on' if tiled else 'off'}", step=float("nan"),
                         call=seconds, peak=peak_gib(device), ratio="", note=""))
    enable_vae_tiling(ours, False)

    zero = get_preset("zerogpu")
    zsize = (zero.width, zero.height, zero.num_frames) if args.model != "tiny" else size
    add_speed_lora(ours.transformer)
    set_lora_weights(ours, edit=zero.lora_scale, speed=zero.speed_lora_weight)
    enable_vae_tiling(ours, zero.vae_tiling)
    zcall = dict(call, size=zsize, condition=clip_inputs(*zsize), steps=zero.generation_steps)
    row(f"zerogpu generation call ({zsize[2]}x{zsize[0]}x{zsize[1]}, {zero.generation_steps} steps, CFG 1, decode)",
        timed_call(ours, guidance=zero.guidance_scale, latent=False, **zcall))
    ours.transformer.delete_adapters([SPEED_ADAPTER, ADAPTER_NAME])

    text = table(rows, args, build)
    print(text)
    if args.write:
        write_section("generate", text)
        print(f"written to {RESULTS}")
    return rows


def table(rows, args, build) -> str:
    real = args.model == "real14b"
    model = "Wan2.1-I2V-14B config, random weights" if real else "tiny model (smoke test)"
    dtype = "bf16" if args.device.type == "cuda" else "float32"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "## Generation (benchmarks/generate.py)",
        "",
        f"{model}; {args.device.type} {dtype}, {torch.get_num_threads()} threads; {machine()}; {args.steps} steps a call, "
        f"per-step time = median gap between step ends; ours vs stock interleaved over {args.rounds} rounds; "
        f"built in {build:.1f} s; {when}",
        "",
        "| case | s/step | s/call | peak GiB | ratio | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        step = "–" if r["step"] != r["step"] else f"{r['step']:.3f}"
        whole = "–" if r["call"] != r["call"] else f"{r['call']:.2f}"
        lines.append(f"| {r['case']} | {step} | {whole} | {r['peak']} | {r['ratio']} | {r['note']} |")
    if not real or args.device.type != "cuda":
        lines += ["", f"**{NOT_MEASURED}** This table is the CPU smoke run of the same code on the tiny model."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
