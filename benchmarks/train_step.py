"""Seconds per LoRA training step and peak memory, for the memory options of maskedit.memory.offload.

Cases (each: --warmup untimed steps, then the median of --repeats timed steps of `LoraTrainer.train_step()`):
- the full clip (49x832x480 → 20,280 tokens), bf16 and fp8 base weights;
- a 9-frame window (4,680 tokens) with 0 / 16 / 32 / 38 of 40 blocks swapped (the paper's Table 4),
  bf16 and fp8;
- the low-cost preset's training (window + 38 swapped + fp8 + activations offloaded).
All with gradient checkpointing (needed for the full clip; bitwise the same gradients). Beside each:
peak `torch.cuda.max_memory_allocated` and the MFU, from a FLOP count of the step (forward + backward
of a frozen-base LoRA step: forward, input gradients, attention backward; the checkpointing recompute
is not counted) against the card's dense bf16 peak.

On a GPU the model is the real Wan2.1-I2V-14B transformer config with random weights built directly on
the device (meta-device init, then materialised there; nothing is downloaded). On a CPU it is the
tiny model (a smoke test: the same code, scaled: swap counts map onto its 2 blocks).

    python benchmarks/train_step.py                 # GPU: real size; CPU: tiny smoke test
    python benchmarks/train_step.py --quick         # fewer cases (what run_all uses)
    python benchmarks/train_step.py --write         # also put the table into benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS, machine, write_section  # noqa: E402,F401  (generate/run_all import them from here)
from maskedit.method.lora import ADAPTER_NAME  # noqa: E402
from maskedit.models.cards import CARDS  # noqa: E402
from maskedit.models.loading import REAL_TRANSFORMER_14B, TINY_TRANSFORMER  # noqa: E402
from maskedit.models.presets import NUM_BLOCKS_14B, get_preset  # noqa: E402
from maskedit.method.training import EncodedSample, LoraTrainer, TrainConfig  # noqa: E402

TEXT_TOKENS, IMAGE_TOKENS = 512, 257
NOT_MEASURED = "Real-size (Wan2.1-I2V-14B config) figures: not yet measured on a GPU."

# dense bf16 peak (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("L40", 181e12), ("RTX 4090", 165e12), ("RTX 6000 Ada", 364e12), ("A10G", 70e12),
             ("L4", 121e12), ("B200", 2250e12)]
PEAK_BF16[:0] = [("RTX PRO 6000 Blackwell Server", CARDS["rtx-pro-6000-server"].bf16_tflops * 1e12),
                 ("RTX PRO 6000 Blackwell", CARDS["rtx-pro-6000"].bf16_tflops * 1e12)]  # a ZeroGPU card (whole: a
# `large` call is half of it, so its MFU here reads half what it is)


# ----- shared by the benchmark scripts -----------------------------------------------------------------
def card_peak_flops(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key, flops in PEAK_BF16:
        if key in name:
            return flops
    return None


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> str:
    device = torch.device(device)
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}"


def random_transformer(config: dict, device, dtype, seed: int = 0):
    """A WanTransformer3DModel of `config` with random weights made directly on `device` (meta-device
    construction, then each parameter materialised there: no full-size copy anywhere else)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    device = torch.device(device)
    with init_empty_weights(include_buffers=False):  # the RoPE tables stay real (computed on the CPU)
        model = WanTransformer3DModel(**config)
    generator = torch.Generator(device).manual_seed(seed)
    for module_name, module in model.named_modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            value = torch.empty(param.shape, device=device, dtype=dtype)
            full = f"{module_name}.{name}"
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:]) if "scale_shift_table" not in full else param.shape[-1]
                value.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
            elif name == "weight":
                value.fill_(1.0)
            else:
                value.zero_()
            module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
    model.to(device)  # the buffers
    return model.eval()


def tokens(config: dict, frames: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(latent frames, latent height, latent width, transformer tokens) for a clip."""
    t, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    p = config["patch_size"]
    return t, h, w, (t // p[0]) * (h // p[1]) * (w // p[2])


def step_flops(config: dict, n: int, rank: int = 16) -> tuple[float, float]:
    """(forward FLOPs, training-step FLOPs) of the transformer on n video tokens, batch 1.

    Linear layers: 2·in·out per token. Attention: 4·n·m·d (QKᵀ and AV) for n queries and m keys.
    A frozen-base LoRA step = forward + backward, the backward = input gradients of every linear layer
    (as much as its forward), 2x the attention forward, and the LoRA weight gradients; the
    checkpointing recompute is not counted (model FLOPs, as MFU is usually defined)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    ffn, layers = config["ffn_dim"], config["num_layers"]
    ctx = TEXT_TOKENS + IMAGE_TOKENS
    per_block_linear = n * 2 * (4 * d * d + 2 * d * d + 2 * d * ffn)  # self q,k,v,o; cross q,o; ffn
    per_block_linear += 2 * d * d * 2 * ctx  # cross k,v (text) and add_k, add_v (image)
    per_block_attention = 4 * n * n * d + 4 * n * ctx * d
    lora = n * 2 * rank * (8 * 2 * d + 2 * (d + ffn))  # A and B of the 10 adapted layers
    embed = n * 2 * (config["in_channels"] * math.prod(config["patch_size"]) * d + d * config["out_channels"] * math.prod(config["patch_size"]))
    embed += 2 * TEXT_TOKENS * (config["text_dim"] * d + d * d)
    forward = layers * (per_block_linear + per_block_attention + lora) + embed
    backward = layers * (per_block_linear + 2 * per_block_attention + 2 * lora) + embed
    return forward, forward + backward


# ----- the benchmark ---------------------------------------------------------------------------------
def parse_args(argv):
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="real14b" if gpu else "tiny", choices=["real14b", "tiny"],
                        help="real14b: Wan2.1-I2V-14B config, random weights, on the device (default on GPU)")
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer cases (full clip bf16, window 0/38 swapped, low-cost)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--write", action="store_true", help=f"put the table into {RESULTS.name}")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def cases(args, num_layers: int):
    """(label, frames, width, height, TrainConfig overrides) per case."""
    real = args.model == "real14b"
    width, height, clip = (832, 480, 49) if real else (64, 64, 9)
    window = 9 if real else 5

    def swap(k):  # the paper's counts of 40 blocks, mapped onto this model
        return k if num_layers == NUM_BLOCKS_14B else min(num_layers, round(k * num_layers / NUM_BLOCKS_14B))

    def swapped(k):
        return f"{k}/40 swapped" + ("" if num_layers == NUM_BLOCKS_14B else f" (→ {swap(k)}/{num_layers})")

    base = "bf16" if args.device.type == "cuda" else "fp32"
    low = get_preset("low-cost")
    rows = [(f"full clip {clip}x{width}x{height}, {base}", clip, width, height, dict())]
    swaps = (0, 38) if args.quick else (0, 16, 32, 38)
    rows += [(f"window {window}f, {swapped(k)}, {base}", window, width, height, dict(blocks_to_swap=swap(k))) for k in swaps]
    if not args.quick:
        rows.append((f"full clip {clip}x{width}x{height}, fp8", clip, width, height, dict(fp8=True)))
        rows += [(f"window {window}f, {swapped(k)}, fp8", window, width, height, dict(blocks_to_swap=swap(k), fp8=True))
                 for k in (0, 38)]
    rows.append((f"low-cost preset (window {window}f, {swapped(low.blocks_to_swap)}, fp8, act. offload)", window, width,
                 height, dict(blocks_to_swap=swap(low.blocks_to_swap), fp8=low.fp8, activation_offload=low.activation_offload)))
    # bf16 cases first: fp8 cases leave the (random) base dequantised from fp8 when they are undone
    return sorted(rows, key=lambda row: bool(row[4].get("fp8")))


def random_sample(config, frames, width, height, device, dtype, seed=0) -> EncodedSample:
    t, h, w, _ = tokens(config, frames, width, height)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, t, h, w, generator=g)
    condition = torch.cat([torch.ones(1, 4, t, h, w), torch.randn(1, 16, t, h, w, generator=g)], dim=1)
    prompt = torch.randn(1, TEXT_TOKENS, config["text_dim"], generator=g)
    image = torch.randn(1, IMAGE_TOKENS, config["image_dim"], generator=g) if config.get("image_dim") else None
    move = lambda x: None if x is None else x.to(device, dtype)  # noqa: E731
    return EncodedSample(latents.to(device), condition.to(device), move(prompt), move(image))


def run_case(transformer, config, args, label, frames, width, height, overrides):
    device = args.device
    sample = random_sample(config, frames, width, height, device, transformer.dtype)
    train = TrainConfig(steps=args.warmup + args.repeats, gradient_checkpointing=True, checkpoint_every=0, **overrides)
    holder = types.SimpleNamespace(transformer=transformer)
    started = time.perf_counter()
    trainer = LoraTrainer(holder, None, train, device=device, encoded=[sample])
    setup = time.perf_counter() - started
    reset_peak(device)
    times = []
    try:
        for i in range(train.steps):
            sync(device)
            t0 = time.perf_counter()
            loss = trainer.train_step()
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        peak = peak_gib(device)
    finally:
        if trainer.memory is not None:
            trainer.memory.remove(transformer)
        transformer.disable_gradient_checkpointing()
        transformer.delete_adapters(ADAPTER_NAME)
        del trainer
        reset_peak(device)
    seconds = statistics.median(times)
    n = tokens(config, frames, width, height)[3]
    _, flops = step_flops(config, n)
    peak_flops = card_peak_flops(device)
    mfu = f"{flops / seconds / peak_flops:.1%}" if peak_flops else "–"
    return dict(case=label, tokens=n, seconds=seconds, peak=peak, tflop=flops / 1e12, mfu=mfu, setup=setup,
                loss=loss, frames=frames, width=width, height=height, overrides=overrides)


def main(argv=None, transformer=None) -> list[dict]:
    """Run the cases; `transformer` (built by `random_transformer` for this model and device) saves a rebuild."""
    args = parse_args(argv)
    real = args.model == "real14b"
    config = dict(REAL_TRANSFORMER_14B if real else TINY_TRANSFORMER)
    dtype = torch.bfloat16 if args.device.type == "cuda" else torch.float32
    started = time.perf_counter()
    transformer = transformer if transformer is not None else random_transformer(config, args.device, dtype)
    build = time.perf_counter() - started
    rows = []
    for label, frames, width, height, overrides in cases(args, config["num_layers"]):
        rows.append(run_case(transformer, config, args, label, frames, width, height, overrides))
        print(f"  {rows[-1]['case']}: {rows[-1]['seconds']:.3f} s/step, peak {rows[-1]['peak']} GiB", flush=True)
    text = table(rows, args, config, build)
    print(text)
    if args.write:
        write_section("train_step", text)
        print(f"written to {RESULTS}")
    return rows


def table(rows, args, config, build) -> str:
    real = args.model == "real14b"
    model = "Wan2.1-I2V-14B config, random weights" if real else "tiny model (smoke test, 2 blocks)"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    dtype = "bf16" if args.device.type == "cuda" else "float32"
    lines = [
        "## Training step (benchmarks/train_step.py)",
        "",
        f"{model}; {args.device.type} {dtype}, {torch.get_num_threads()} threads; {machine()}; median of "
        f"{args.repeats} steps after {args.warmup} warm-up; gradient checkpointing on; model built on the "
        f"device in {build:.1f} s; {when}",
        "",
        "| case | tokens | s/step | peak GiB | TFLOP/step | MFU | setup s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['tokens']:,} | {r['seconds']:.3f} | {r['peak']} | {r['tflop']:.3g} | {r['mfu']} "
                     f"| {r['setup']:.1f} |")
    lines.append("")
    lines.append("MFU: model FLOPs of the step (forward + input gradients + attention backward + LoRA gradients; "
                 "recompute not counted) / time / the card's dense bf16 peak. Paper (RTX 4090, 9-frame windows, "
                 "0/16/32/38 swapped): 25,097 / 16,305 / 9,987 / 7,617 MB.")
    if not real or args.device.type != "cuda":
        lines.append("")
        lines.append(f"**{NOT_MEASURED}** This table is the CPU smoke run of the same code on the tiny model.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
