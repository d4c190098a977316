"""Overhead of MaskEdit's training and generation steps against bare diffusers + peft, same model, same process.

What it measures (median seconds over --repeats, after --warmup untimed rounds):
- training step: `LoraTrainer.train_step()` vs a bare flow-matching step written below with diffusers +
  peft only (a second transformer over the same weights, its own rank-16 LoRA on the same layers, AdamW
  lr 1e-4 / betas (0.9, 0.99) / wd 0.01, MSE against noise − x1, grad clip 1.0), on the same cached inputs;
- generation step: one denoising step of `MaskEditPipeline` with condition_video/condition_mask vs stock
  `diffusers.WanImageToVideoPipeline` built from the same components (no LoRA on either), same
  prompt, size, frames and CFG;
- generation call: the whole call (condition encoding + all steps, latents out), for information.
Ours and the reference are interleaved (which one goes first alternates each round), so drift in clock
speed or cache state hits both alike. The goal is ours/reference ≤ 1.1 for the two step rows.

    python benchmarks/core_overhead.py                       # tiny random model, CPU (or CUDA if present)
    python benchmarks/core_overhead.py --model Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --steps 3 --repeats 3
    python benchmarks/core_overhead.py --write               # also append the table to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine  # noqa: E402
from maskedit.method.conditioning import compose_prompt, inference_condition, stage1_sample  # noqa: E402
from maskedit.method.lora import LORA_TARGET_MODULES  # noqa: E402
from maskedit.method.masks import box_region  # noqa: E402
from maskedit.models.loading import TINY, load_pipeline  # noqa: E402
from maskedit.method.training import LoraTrainer, TrainConfig, TrainItem  # noqa: E402

GOAL = 1.1  # for the rows below; other rows are for information
GOAL_ROWS = ("training step", "generation step")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=TINY, help="'tiny' (default) or a diffusers folder / hub id of Wan2.1 I2V")
    parser.add_argument("--size", default=None, help="WxH (default 64x64 for tiny, 832x480 otherwise)")
    parser.add_argument("--frames", type=int, default=None, help="4k+1 frames (default 9 for tiny, 49 otherwise)")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps per generation call (at least 2)")
    parser.add_argument("--guidance", type=float, default=5.0, help="CFG scale (> 1: two transformer calls a step)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="transformer dtype (default bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="in both training steps")
    parser.add_argument("--write", action="store_true", help=f"append the table to {RESULTS.name}")
    args = parser.parse_args(argv)
    tiny = args.model == TINY
    width, height = (int(v) for v in (args.size or ("64x64" if tiny else "832x480")).lower().split("x"))
    args.width, args.height = width, height
    args.frames = args.frames or (9 if tiny else 49)
    args.dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    if args.steps < 2 or args.repeats < 1 or args.warmup < 0:
        parser.error("need --steps >= 2, --repeats >= 1, --warmup >= 0")
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(ours, reference, args, device) -> dict:
    """`warmup + repeats` rounds of one `ours()` and one `reference()` call, ours first in even rounds and the
    reference first in odd ones, so drift (clock, caches, other load) hits both alike. Each call returns
    {row name: seconds}; the result is {side: [that dict, with "peak" bytes on CUDA, per timed round]}."""
    results = {"ours": [], "reference": []}
    for round_ in range(args.warmup + args.repeats):
        pair = [("ours", ours), ("reference", reference)]
        for side, fn in pair if round_ % 2 == 0 else pair[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result = fn()
            if device.type == "cuda":
                result["peak"] = torch.cuda.max_memory_allocated(device)
            if round_ >= args.warmup:
                results[side].append(result)
    return results


def synthetic_clip(args):
    """A fixed random clip, a centred box region on every frame, and an 'edited' first frame."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
    w, h = args.width, args.height
    region = box_region(h, w, (w // 4, h // 4, 3 * w // 4, 3 * h // 4), args.frames)
    return frames, region, 255 - frames[0]


def generation_case(pipe, args, frames, region, edited, device):
    """Per-step time: `callback_on_step_end` stamps the clock (after a CUDA sync) at the end of every step;
    the gap between two consecutive stamps is exactly one loop iteration (transformer with and without the
    prompt, scheduler step), free of the setup before the loop and the decode after it. A call gives
    steps − 1 gaps; its median is one sample, robust to a stray slow step. The whole call is timed too."""
    from diffusers import WanImageToVideoPipeline

    stock = WanImageToVideoPipeline(**pipe.components)
    stock.set_progress_bar_config(disable=True)
    condition = inference_condition(frames, region, edited, compose_prompt("a red car on a road"))
    common = dict(image=PIL.Image.fromarray(condition.image), prompt=condition.prompt, height=args.height,
                  width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                  guidance_scale=args.guidance, output_type="latent")
    call_name = f"generation call ({args.steps} steps, no decode)"

    def timed_call(pipeline, **extra):
        stamps = []

        def stamp(_pipe, _step, _timestep, callback_kwargs):
            sync(device)
            stamps.append(time.perf_counter())
            return callback_kwargs

        sync(device)
        start = time.perf_counter()
        pipeline(**common, **extra, generator=torch.Generator().manual_seed(0), callback_on_step_end=stamp)
        sync(device)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        return {"generation step": statistics.median(gaps), call_name: time.perf_counter() - start}

    def ours():
        return timed_call(pipe, condition_video=condition.condition_video, condition_mask=condition.keep_mask)

    return interleave(ours, lambda: timed_call(stock), args, device)


def shared_weight_copy(module):
    """A second module tree over the same (frozen) weight tensors: same weights, no second copy in memory.
    peft then wraps this tree's layers with its own adapter, independent of ours."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def training_case(pipe, args, frames, region, device):
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    reference_model = shared_weight_copy(pipe.transformer)  # before our adapter is added
    config = TrainConfig(gradient_checkpointing=args.gradient_checkpointing)
    trainer = LoraTrainer(pipe, [TrainItem(stage1_sample(frames, region, compose_prompt("a red car")))], config)
    sample = trainer.samples[0]  # cached inputs: the encoding is not what is timed

    # The bare diffusers + peft loop.
    reference_model.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=LORA_TARGET_MODULES))
    cast_training_params(reference_model, dtype=torch.float32)  # LoRA weights in fp32, as diffusers' scripts do
    if args.gradient_checkpointing:
        reference_model.enable_gradient_checkpointing()
    reference_model.train()
    params = [p for p in reference_model.parameters() if p.requires_grad]
    assert len(params) == len(trainer.params), "both LoRAs must cover the same layers"
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.01)
    dtype = reference_model.dtype
    x1, condition = sample.latents, sample.condition
    text, image = sample.prompt_embeds.to(dtype), sample.image_embeds.to(dtype)

    def reference_step():
        t = torch.rand(1, device=device)
        noise = torch.randn_like(x1)
        x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x1 + t.view(-1, 1, 1, 1, 1) * noise
        prediction = reference_model(
            hidden_states=torch.cat([x_t, condition], dim=1).to(dtype), timestep=t * 1000,
            encoder_hidden_states=text, encoder_hidden_states_image=image, return_dict=False,
        )[0]
        loss = F.mse_loss(prediction.float(), (noise - x1).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item()  # as ours: the step ends with the loss on the host

    def timed(step):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        return {"training step": time.perf_counter() - start}

    return interleave(lambda: timed(trainer.train_step), lambda: timed(reference_step), args, device)


def table(measurements: list[dict], args, device) -> str:
    """One markdown table; a row per measured name, median seconds per side, ratio ours/reference."""
    cuda = device.type == "cuda"
    header = (f"{args.model}, {args.width}x{args.height}, {args.frames} frames, {args.steps} denoising steps, "
              f"CFG {args.guidance}, {device.type} {str(args.dtype).replace('torch.', '')}, "
              f"{torch.get_num_threads()} threads, median of {args.repeats} (warmup {args.warmup}); {machine()}")
    columns = ["case", "ours (s)", "reference (s)", "ratio", "goal"]
    columns += ["ours peak (GiB)", "reference peak (GiB)"] if cuda else []
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for results in measurements:
        for name in results["ours"][0]:
            if name == "peak":
                continue
            ours, ref = (statistics.median(r[name] for r in results[side]) for side in ("ours", "reference"))
            goal = f"≤ {GOAL}" if name in GOAL_ROWS else "(info)"
            cells = [name, f"{ours:.4f}", f"{ref:.4f}", f"{ours / ref:.3f}", goal]
            if cuda:
                cells += [f"{max(r['peak'] for r in results[side]) / 2**30:.2f}" for side in ("ours", "reference")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe = load_pipeline(args.model, args.device, args.dtype).pipe
    if args.model == TINY:  # built in float32: cast the transformer as from_pretrained(torch_dtype=) would
        keep_fp32 = pipe.transformer._keep_in_fp32_modules
        for name, param in pipe.transformer.named_parameters():
            if not any(module in name for module in keep_fp32):
                param.data = param.data.to(args.dtype)
    frames, region, edited = synthetic_clip(args)

    # Generation first: training adds a LoRA to the shared transformer (and moves the encoders off a GPU).
    generation = generation_case(pipe, args, frames, region, edited, device)
    training = training_case(pipe, args, frames, region, device)

    text = table([training, generation], args, device)
    print(text)
    if args.write:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        entry = f"\n## {stamp}\n\n{text}\n"
        if not RESULTS.exists():
            entry = "# Benchmark results\n\nAppended by `python benchmarks/core_overhead.py --write`.\n" + entry
        with RESULTS.open("a") as out:
            out.write(entry)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
