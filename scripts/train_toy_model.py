"""Train a small Wan2.1-architecture image-to-video model on toy clips (`maskedit.tools.toyworld`), resumably.

The model has the real model's classes and layout — `AutoencoderKLWan` (16 latent channels, 8x spatial and
4x temporal compression), `WanTransformer3DModel` with image cross-attention (`added_kv_proj_dim` set, 36
input channels), a small UMT5 text encoder and a small CLIP vision encoder — at toy size (`TOY_*` below,
about 24 MB of float32 safetensors), so every MaskEdit code path runs on it unchanged.

Phases (each resumable from the work folder; a rerun with the same settings continues where it stopped):
1. data: render `--clips` toy clips (seeds 0..N−1, random scenes) and `--heldout` held-out clips (seeds
   from 1,000,000), cached in the work folder;
2. vae: train the VAE for reconstruction (L1 + MSE + a small KL) on random `--vae-frames` windows;
3. stats: per-channel mean/std of the trained latents → the VAE config's `latents_mean`/`latents_std`
   (the pipeline normalises with them, so they must match what the transformer was trained on);
4. transformer: flow matching as a *stock* I2V model only: condition = [first frame, grey…] with the stock
   mask [1, 0, …], the clip's caption (10% dropped for CFG), CLIP embedding of the first frame. Never
   MaskEdit's masks: the method benchmark must test what the LoRA learns, not what pretraining saw.
   Text and image encoders stay frozen at their random initialisation (fixed feature extractors);
5. eval + save: reconstruction PSNR of the VAE, next-frame PSNR (frame 1) and clip PSNR (frames 1..F−1)
   of stock-I2V samples on held-out clips against copying the first frame and against an untrained
   transformer of the same size; the diffusers folder (`models.load_pipeline(folder)` loads it), a model
   card README.md and training_report.json.

Targets one H100-class GPU: with the defaults the VAE gets ≤ 4 minutes and the transformer ≤ 6 minutes
(time caps, `--vae-minutes`, `--transformer-minutes`; the learning-rate schedule follows whichever of steps
and time runs out first). On CPU pretraining is not practical (REFERENCE.md: ~15 dB after 15 minutes);
`--smoke` runs a few steps of every phase with the tiny test configs to check the whole path:

    python scripts/train_toy_model.py --out models/toy                 # GPU: the real run (~10-12 min)
    python scripts/train_toy_model.py --smoke --out /tmp/toy-smoke     # CPU: every phase, seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from maskedit.tools import toyworld  # noqa: E402
from maskedit.method.conditioning import condition_pixels, frames_to_tensor, pack_latent_mask, stock_condition  # noqa: E402
from maskedit.media.metrics import psnr  # noqa: E402
from maskedit.models.loading import (  # noqa: E402
    TINY_IMAGE_ENCODER, TINY_TEXT_ENCODER, TINY_TRANSFORMER, TINY_VAE, tiny_tokenizer,
)
from maskedit.method.pipeline import TEXT_TOKENS, MaskEditPipeline  # noqa: E402
from maskedit.runtime import quiet_transformers  # noqa: E402

TOY_VAE = dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
"""3.2 M parameters: ×8 spatial, ×4 temporal, 16 latent channels like Wan2.1's VAE."""
TOY_TRANSFORMER = dict(
    TINY_TRANSFORMER, num_attention_heads=4, attention_head_dim=32, ffn_dim=512, num_layers=8,
    added_kv_proj_dim=128, rope_max_seq_len=1024,
)
"""2.6 M parameters, 8 blocks of 4 heads x 32; text_dim/image_dim from the tiny encoders (32 / 16)."""
TOY_TEXT_ENCODER = TINY_TEXT_ENCODER
TOY_IMAGE_ENCODER = TINY_IMAGE_ENCODER
TOY_FLOW_SHIFT = 5.0
HELDOUT_SEED = 1_000_000
CAPTION_DROPOUT = 0.1
STATE = "state.json"


@dataclass
class Settings:
    out: str
    work: str
    smoke: bool = False
    width: int = 64
    height: int = 64
    frames: int = 17
    clips: int = 4000
    heldout: int = 32
    workers: int = 0
    seed: int = 0
    vae_steps: int = 8000
    vae_minutes: float = 4.0
    vae_batch: int = 16
    vae_frames: int = 9
    vae_lr: float = 5e-4
    kl_weight: float = 1e-4
    transformer_steps: int = 30000
    transformer_minutes: float = 6.0
    transformer_batch: int = 32
    transformer_lr: float = 3e-4
    timestep_shift: float = 3.0
    warmup: int = 200
    checkpoint_every: int = 500
    eval_steps: int = 20
    eval_guidance: float = 1.0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    amp: bool = True

    def fingerprint(self) -> str:
        """What must match for a work folder to be resumed (not budgets, device or output path)."""
        keys = ("smoke", "width", "height", "frames", "clips", "heldout", "seed", "vae_batch", "vae_frames",
                "vae_lr", "kl_weight", "transformer_batch", "transformer_lr", "timestep_shift", "warmup")
        return hashlib.sha256(json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def parse_args(argv) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the trained diffusers pipeline and its model card")
    parser.add_argument("--work", help="folder for data and checkpoints (default: OUT/../<name>-work)")
    parser.add_argument("--smoke", action="store_true", help="tiny configs, a few steps of every phase (CPU check)")
    parser.add_argument("--fresh", action="store_true", help="ignore (delete) checkpoints in the work folder")
    defaults = Settings(out="", work="")
    for name, value in asdict(defaults).items():
        if name in ("out", "work", "smoke", "amp"):
            continue
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=None, help=f"(default {value}; smoke: smaller)")
    parser.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    args = parser.parse_args(argv)
    out = Path(args.out)
    settings = Settings(out=str(out), work=args.work or str(out.parent / f"{out.name}-work"), smoke=args.smoke)
    if args.smoke:
        settings.__dict__.update(
            frames=9, clips=6, heldout=2, vae_steps=2, vae_batch=2, vae_frames=5, vae_minutes=5.0,
            transformer_steps=3, transformer_batch=2, transformer_minutes=5.0, warmup=1, checkpoint_every=2,
            eval_steps=2,
        )
    for name in asdict(defaults):
        value = getattr(args, name, None)
        if value is not None and name not in ("out", "work", "smoke"):
            setattr(settings, name, value)
    settings.amp = not args.no_amp
    toyworld.check_geometry(settings.width, settings.height, settings.frames)
    toyworld.check_geometry(settings.width, settings.height, settings.vae_frames)
    settings.fresh = args.fresh
    return settings


# ----- components


def configs(settings: Settings) -> dict:
    if settings.smoke:
        return dict(vae=TINY_VAE, transformer=TINY_TRANSFORMER, text=TINY_TEXT_ENCODER, image=TINY_IMAGE_ENCODER)
    return dict(vae=TOY_VAE, transformer=TOY_TRANSFORMER, text=TOY_TEXT_ENCODER, image=TOY_IMAGE_ENCODER)


def new_transformer(settings: Settings, seed: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**configs(settings)["transformer"])


def build_pipeline(settings: Settings) -> MaskEditPipeline:
    """A fresh pipeline of the toy (or, with --smoke, tiny) configs; encoders frozen, eval mode."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    cfg = configs(settings)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(settings.seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **cfg["text"])).eval()
    torch.manual_seed(settings.seed + 1)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(**cfg["image"])).eval()
    size = cfg["image"]["image_size"]
    with quiet_transformers():
        image_processor = CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})
    torch.manual_seed(settings.seed + 2)
    vae = AutoencoderKLWan(**cfg["vae"])
    transformer = new_transformer(settings, settings.seed + 3)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=TOY_FLOW_SHIFT)
    pipe = MaskEditPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                            image_processor=image_processor, image_encoder=image_encoder, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    for module in (text_encoder, image_encoder):
        module.requires_grad_(False)
    return pipe.to(settings.device)


# ----- data


def _render(args) -> tuple[np.ndarray, str]:
    seed, width, height, frames = args
    clip = toyworld.render_clip(seed, width, height, frames)
    return clip.frames, clip.caption()


def render_bank(seeds: list[int], settings: Settings) -> tuple[np.ndarray, list[str]]:
    """(N, F, H, W, 3) uint8 clips and their captions, rendered in parallel."""
    jobs = [(seed, settings.width, settings.height, settings.frames) for seed in seeds]
    workers = settings.workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 8:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_render, jobs, chunksize=16)
    else:
        results = [_render(job) for job in jobs]
    return np.stack([r[0] for r in results]), [r[1] for r in results]


def load_data(settings: Settings, work: Path, log) -> dict:
    path = work / "data.npz"
    if path.exists():
        data = np.load(path)
        return dict(train=data["train"], heldout=data["heldout"], train_captions=list(data["train_captions"]),
                    heldout_captions=list(data["heldout_captions"]))
    started = time.perf_counter()
    train, train_captions = render_bank(list(range(settings.clips)), settings)
    heldout, heldout_captions = render_bank([HELDOUT_SEED + i for i in range(settings.heldout)], settings)
    tmp = work / "data.tmp.npz"
    np.savez(tmp, train=train, heldout=heldout, train_captions=np.array(train_captions),
             heldout_captions=np.array(heldout_captions))
    os.replace(tmp, path)
    log(f"data: rendered {len(train)} + {len(heldout)} held-out clips in {time.perf_counter() - started:.1f} s")
    return dict(train=train, heldout=heldout, train_captions=train_captions, heldout_captions=heldout_captions)


def to_pixels(clips: np.ndarray, device) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 → (B, 3, F, H, W) float32 in [-1, 1] (the pipeline's arithmetic)."""
    return torch.cat([frames_to_tensor(clip) for clip in clips]).to(device)


# ----- training helpers


def lr_factor(step: int, steps: int, elapsed: float, seconds: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% over whichever runs out first: steps or time."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(step / max(1, steps), elapsed / max(1e-9, seconds)))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def autocast(settings: Settings):
    enabled = settings.amp and settings.device.startswith("cuda")
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled) if enabled else torch.autocast("cpu", enabled=False)


def save_checkpoint(path: Path, module, optimizer, step: int, elapsed: float, losses: list[float]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "elapsed": elapsed, "losses": torch.tensor(losses, dtype=torch.float64)}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, module, optimizer) -> tuple[int, float, list[float]]:
    if not path.exists():
        return 0, 0.0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), float(state["elapsed"]), state["losses"].tolist()


def run_phase(name, settings, work, module, optimizer, steps, minutes, lr, step_fn, log) -> dict:
    """The shared loop: resume, step until steps or time are used up, checkpoint, report."""
    path = work / f"{name}.pt"
    step, elapsed, losses = load_checkpoint(path, module, optimizer)
    if step:
        log(f"{name}: resumed at step {step} ({elapsed:.0f} s done)")
    seconds = minutes * 60.0
    module.train()
    started = time.perf_counter() - elapsed
    saved = step
    try:
        while step < steps and elapsed < seconds:
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(step, steps, elapsed, seconds, settings.warmup)
            loss = step_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"{name}: the loss became {value} at step {step}; lower the learning rate")
            losses.append(value)
            step += 1
            elapsed = time.perf_counter() - started
            if step % max(1, settings.checkpoint_every) == 0:
                save_checkpoint(path, module, optimizer, step, elapsed, losses)
                saved = step
            if step % 100 == 0 or step == 1 or settings.smoke:
                log(f"{name}: step {step} loss {np.mean(losses[-100:]):.4f} ({elapsed:.0f} s)")
    finally:  # also on an interrupt: the next run resumes from here
        if step != saved or not path.exists():
            save_checkpoint(path, module, optimizer, step, elapsed, losses)
    module.eval()
    tail = losses[-min(len(losses), 100):]
    return dict(steps=step, seconds=round(elapsed, 1), final_loss=float(np.mean(tail)) if tail else float("nan"),
                first_loss=float(losses[0]) if losses else float("nan"))


# ----- phase 2: the VAE


def train_vae(pipe, data, settings, work, log) -> dict:
    vae, device = pipe.vae, settings.device
    clips = data["train"]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)

    def step_fn(step):
        rng = np.random.default_rng([settings.seed, 1, step])
        index = rng.integers(0, len(clips), settings.vae_batch)
        start = rng.integers(0, settings.frames - settings.vae_frames + 1, settings.vae_batch)
        batch = np.stack([clips[i, s:s + settings.vae_frames] for i, s in zip(index, start)])
        flip = rng.random(settings.vae_batch) < 0.5
        batch[flip] = batch[flip][:, :, :, ::-1]
        x = to_pixels(batch, device)
        generator = torch.Generator(device=device).manual_seed(settings.seed * 1_000_003 + step)
        with autocast(settings):
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator, device=device,
                                                             dtype=posterior.mean.dtype)
            recon = vae.decode(z).sample
        error = recon.float() - x
        kl = 0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1.0 - posterior.logvar.float()).mean()
        return error.abs().mean() + (error ** 2).mean() + settings.kl_weight * kl

    return run_phase("vae", settings, work, vae, optimizer, settings.vae_steps, settings.vae_minutes, settings.vae_lr,
                     step_fn, log)


@torch.no_grad()
def raw_latents(vae, clips: np.ndarray, device, batch: int = 16) -> torch.Tensor:
    """Posterior modes (N, 16, T, h, w) of uint8 clips (N, F, H, W, 3), unnormalised, float32 on the CPU."""
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents

    out = []
    for i in range(0, len(clips), batch):
        x = to_pixels(clips[i:i + batch], device)
        out.append(retrieve_latents(vae.encode(x), sample_mode="argmax").float().cpu())
    return torch.cat(out)


def set_latent_stats(pipe, data, settings, log) -> dict:
    """latents_mean / latents_std of the trained VAE over the training clips, written into its config."""
    sample = data["train"][: min(len(data["train"]), 512)]
    latents = raw_latents(pipe.vae, sample, settings.device)
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    pipe.vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean],
                                latents_std=[round(float(v), 5) for v in std])
    log(f"stats: latent mean {mean.abs().mean():.3f} (|.| avg), std {std.mean():.3f} (avg) over {len(sample)} clips")
    return dict(latents_mean=pipe.vae.config.latents_mean, latents_std=pipe.vae.config.latents_std)


# ----- phase 4: the transformer (stock I2V only)


@torch.no_grad()
def encode_for_transformer(pipe, clips: np.ndarray, captions: list[str], settings, batch: int = 16) -> dict:
    """Cached model inputs: normalised target latents, stock condition (mask 4 + latents 16), prompt and
    image embeddings — exactly what `WanImageToVideoPipeline` feeds the transformer for stock I2V."""
    device = settings.device
    num_frames, height, width = clips.shape[1:4]
    spatial, temporal = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
    stock = stock_condition(clips[0, 0], num_frames, "")
    mask = pack_latent_mask(torch.from_numpy(stock.keep_mask), height // spatial, width // spatial, temporal)
    latents, conditions, prompts, images = [], [], [], []
    for i in range(0, len(clips), batch):
        chunk = clips[i:i + batch]
        latents.append(pipe.encode_video_latents(to_pixels(chunk, device), device).cpu())
        cond_pixels = torch.cat([condition_pixels(stock_condition(c[0], num_frames, "").condition_video,
                                                  stock.keep_mask) for c in chunk])
        cond = pipe.encode_video_latents(cond_pixels.to(device), device).cpu()
        conditions.append(torch.cat([mask.expand(len(chunk), -1, -1, -1, -1), cond], dim=1))
        embeds, _ = pipe.encode_prompt(list(captions[i:i + batch]), do_classifier_free_guidance=False,
                                       max_sequence_length=TEXT_TOKENS, device=device)
        prompts.append(embeds.cpu())
        images.append(pipe.encode_image([PIL.Image.fromarray(c[0]) for c in chunk], device).cpu())
    empty, _ = pipe.encode_prompt("", do_classifier_free_guidance=False, max_sequence_length=TEXT_TOKENS, device=device)
    return dict(latents=torch.cat(latents), condition=torch.cat(conditions), prompt=torch.cat(prompts),
                image=torch.cat(images), empty=empty.cpu())


def train_transformer(pipe, data, settings, work, log) -> dict:
    device = settings.device
    started = time.perf_counter()
    cache = encode_for_transformer(pipe, data["train"], data["train_captions"], settings)
    cache = {k: v.to(device) for k, v in cache.items()}
    log(f"transformer: encoded {len(data['train'])} clips in {time.perf_counter() - started:.1f} s")
    transformer = pipe.transformer
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=settings.transformer_lr, betas=(0.9, 0.99),
                                  weight_decay=0.01)
    count = cache["latents"].shape[0]

    def step_fn(step):
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + 500_000 + step)
        index = torch.randint(0, count, (settings.transformer_batch,), generator=generator).to(device)
        x1 = cache["latents"][index]
        prompt = cache["prompt"][index]
        drop = (torch.rand(len(index), generator=generator) < CAPTION_DROPOUT).to(device)
        prompt = torch.where(drop.view(-1, 1, 1), cache["empty"].expand_as(prompt), prompt)
        t = torch.rand(len(index), generator=generator)
        s = settings.timestep_shift
        t = (s * t / (1 + (s - 1) * t)).to(device)
        noise = torch.randn(x1.shape, generator=generator).to(device)
        sigma = t.view(-1, 1, 1, 1, 1)
        noisy = (1.0 - sigma) * x1 + sigma * noise
        with autocast(settings):
            prediction = transformer(
                hidden_states=torch.cat([noisy, cache["condition"][index]], dim=1),
                timestep=t * 1000.0, encoder_hidden_states=prompt,
                encoder_hidden_states_image=cache["image"][index], return_dict=False,
            )[0]
        return F.mse_loss(prediction.float(), noise - x1)

    report = run_phase("transformer", settings, work, transformer, optimizer, settings.transformer_steps,
                       settings.transformer_minutes, settings.transformer_lr, step_fn, log)
    report["encode_seconds"] = round(time.perf_counter() - started - report["seconds"], 1)
    return report


# ----- phase 5: evaluation


@torch.no_grad()
def evaluate(pipe, data, settings, log) -> dict:
    """VAE reconstruction PSNR; next-frame (frame 1) and clip (frames 1..F−1) PSNR of stock I2V samples from
    the first frame + caption on held-out clips, for the trained transformer, an untrained one of the same
    size, and copying the first frame."""
    device = settings.device
    clips, captions = data["heldout"], data["heldout_captions"]

    def through_vae(videos):
        latents = raw_latents(pipe.vae, videos, device)
        out = []
        for i in range(0, len(videos), 8):
            video = pipe.vae.decode(latents[i:i + 8].to(device)).sample
            out.append(np.clip(np.round((video.float().cpu().permute(0, 2, 3, 4, 1).numpy() + 1) * 127.5), 0, 255))
        return np.concatenate(out).astype(np.uint8)

    recon = through_vae(clips)

    def sample(transformer_name):
        videos = []
        for i, (clip, caption) in enumerate(zip(clips, captions)):
            out = pipe(image=PIL.Image.fromarray(clip[0]), prompt=caption, negative_prompt="",
                       num_frames=settings.frames, height=settings.height, width=settings.width,
                       num_inference_steps=settings.eval_steps, guidance_scale=settings.eval_guidance,
                       generator=torch.Generator().manual_seed(settings.seed + i), output_type="np")
            videos.append(np.clip(np.round(out.frames[0] * 255.0), 0, 255).astype(np.uint8))
        return np.stack(videos)

    with quiet_transformers():
        trained = sample("trained")
        original = pipe.transformer
        pipe.transformer = new_transformer(settings, settings.seed + 999).to(device).eval()
        try:
            untrained = sample("untrained")
        finally:
            pipe.transformer = original
    copied = np.repeat(clips[:, :1], clips.shape[1], axis=1)
    copied_vae = through_vae(copied)  # the same, but paying the VAE's loss like every model output

    def scores(videos):
        return dict(next_frame_psnr=round(psnr(videos[:, 1], clips[:, 1]), 2),
                    clip_psnr=round(psnr(videos[:, 1:], clips[:, 1:]), 2))

    report = dict(
        heldout_clips=len(clips), eval_steps=settings.eval_steps, eval_guidance=settings.eval_guidance,
        reconstruction_psnr=round(psnr(recon, clips), 2),
        reconstruction_next_frame_psnr=round(psnr(recon[:, 1], clips[:, 1]), 2),
        trained=scores(trained), untrained=scores(untrained), copy_first_frame=scores(copied),
        copy_first_frame_vae=scores(copied_vae),
    )
    log(f"eval: {json.dumps(report)}")
    return report


# ----- saving


CARD = """---
library_name: diffusers
pipeline_tag: image-to-video
tags: [wan, image-to-video, toy, maskedit]
---
# MaskEdit toy Wan2.1-architecture I2V model{smoke_title}

A {params_m:.1f} M-parameter image-to-video model with the classes and layout of Wan2.1-I2V
(`AutoencoderKLWan`, `WanTransformer3DModel` with image cross-attention, UMT5 text and CLIP vision encoders),
trained from scratch on procedural toy clips so that MaskEdit's offline demo and its method benchmark have
a model that has learned *something* about video. It knows nothing of the real world.
{smoke_note}
## Data
- {clips} toy clips (`maskedit.tools.toyworld.random_scene`, seeds 0..{last_seed}), {width}x{height}, {frames} frames:
  gradient + low-frequency texture backgrounds (half of them panning), one or two textured objects moving,
  spinning, pulsing and turning along smooth paths, sometimes crossing; captions from the scene (shapes,
  colours, patterns, directions of motion).
- {heldout} held-out clips (seeds from {heldout_seed}) for the figures below.

## Training ({device}; total {total_minutes:.1f} min)
| phase | steps | time | first loss | final loss (mean of last 100) |
|---|---|---|---|---|
| VAE (L1 + MSE + {kl_weight:g}·KL, {vae_frames}-frame windows, batch {vae_batch}, lr {vae_lr:g}) | {vae_steps} | {vae_seconds:.0f} s | {vae_first:.4f} | {vae_final:.4f} |
| transformer (flow matching, stock I2V condition only, batch {transformer_batch}, lr {transformer_lr:g}, t-shift {timestep_shift:g}) | {transformer_steps} | {transformer_seconds:.0f} s | {transformer_first:.4f} | {transformer_final:.4f} |

The transformer only ever saw Wan's stock I2V condition (first frame + grey, mask [1, 0, …]) — never
MaskEdit's masks — so an edit LoRA trained on it is tested on what the LoRA learns. Text and image encoders
are random and frozen (fixed feature extractors). The VAE config's `latents_mean`/`latents_std` are the
per-channel statistics of the trained VAE's latents.

## Results on {heldout} held-out clips ({eval_steps} UniPC steps, CFG {eval_guidance:g})
| | next-frame PSNR (frame 1) | clip PSNR (frames 1..{last_frame}) |
|---|---|---|
| VAE reconstruction (ceiling) | {recon_next:.2f} dB | {recon:.2f} dB (all frames) |
| **trained model** (first frame + caption) | {trained_next:.2f} dB | {trained_clip:.2f} dB |
| untrained model of the same size | {untrained_next:.2f} dB | {untrained_clip:.2f} dB |
| copying the first frame | {copy_next:.2f} dB | {copy_clip:.2f} dB |
| copying the first frame, through the VAE | {copy_vae_next:.2f} dB | {copy_vae_clip:.2f} dB |

Every model output passes through the VAE, so frame 1 (which barely moves) cannot beat an exact copy of
frame 0 unless the VAE's reconstruction does; the copy through the VAE is the like-for-like baseline for
motion. Samples are stochastic and a first frame leaves some motion open (speed, wobble), so PSNR against
the one true future penalises any plausible but different motion.

## Use
```python
from maskedit.models.loading import load_pipeline
pipe = load_pipeline("{out_name}").pipe      # a folder; 64x64 (multiples of 16), 4k+1 frames
```
Reproduce: `python scripts/train_toy_model.py {smoke_flag}--out {out_name}` (resumable; settings in training_report.json).
"""


def write_card(folder: Path, report: dict) -> None:
    s, vae, tr, ev = report["settings"], report["vae"], report["transformer"], report["eval"]
    text = CARD.format(
        smoke_title=" (SMOKE RUN — not trained)" if s["smoke"] else "",
        smoke_note=("\n**This folder comes from `--smoke`: a few steps of each phase with the tiny test configs, to "
                    "check the script. Its weights are effectively random.**\n" if s["smoke"] else ""),
        params_m=report["parameters"] / 1e6, clips=s["clips"], last_seed=s["clips"] - 1, width=s["width"],
        height=s["height"], frames=s["frames"], heldout=s["heldout"], heldout_seed=HELDOUT_SEED,
        device=report["device"], total_minutes=report["total_seconds"] / 60, kl_weight=s["kl_weight"],
        vae_frames=s["vae_frames"], vae_batch=s["vae_batch"], vae_lr=s["vae_lr"], vae_steps=vae["steps"],
        vae_seconds=vae["seconds"], vae_first=vae["first_loss"], vae_final=vae["final_loss"],
        transformer_batch=s["transformer_batch"], transformer_lr=s["transformer_lr"],
        timestep_shift=s["timestep_shift"], transformer_steps=tr["steps"], transformer_seconds=tr["seconds"],
        transformer_first=tr["first_loss"], transformer_final=tr["final_loss"], eval_steps=ev["eval_steps"],
        eval_guidance=ev["eval_guidance"], last_frame=s["frames"] - 1, recon_next=ev["reconstruction_next_frame_psnr"],
        recon=ev["reconstruction_psnr"], trained_next=ev["trained"]["next_frame_psnr"],
        trained_clip=ev["trained"]["clip_psnr"], untrained_next=ev["untrained"]["next_frame_psnr"],
        untrained_clip=ev["untrained"]["clip_psnr"], copy_next=ev["copy_first_frame"]["next_frame_psnr"],
        copy_clip=ev["copy_first_frame"]["clip_psnr"], out_name=folder.as_posix(),
        copy_vae_next=ev["copy_first_frame_vae"]["next_frame_psnr"], copy_vae_clip=ev["copy_first_frame_vae"]["clip_psnr"],
        smoke_flag="--smoke " if s["smoke"] else "",
    )
    (folder / "README.md").write_text(text)


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 2**20


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # so the phase's `finally` writes its checkpoint


def main(argv=None) -> int:
    settings = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # e.g. `timeout`: stop resumably
    work, out = Path(settings.work), Path(settings.out)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    state_path = work / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if settings.fresh or state.get("fingerprint") != settings.fingerprint():
        if state:
            log("work folder holds another run's state (or --fresh): starting afresh")
        for name in ("vae.pt", "transformer.pt", "data.npz", STATE):
            (work / name).unlink(missing_ok=True)
        state = {"fingerprint": settings.fingerprint(), "done": []}
        state_path.write_text(json.dumps(state, indent=1))  # so an interrupted first run resumes too

    def mark(phase, result):
        state[phase] = result
        state["done"] = sorted(set(state["done"]) | {phase})
        state_path.write_text(json.dumps(state, indent=1))

    log(f"device {settings.device}; work folder {work}; output {out}")
    data = load_data(settings, work, log)
    pipe = build_pipeline(settings)

    def finished(phase, steps, minutes):
        done = state.get(phase)
        return bool(done) and (done["steps"] >= steps or done["seconds"] >= minutes * 60.0)

    if not finished("vae", settings.vae_steps, settings.vae_minutes):
        mark("vae", train_vae(pipe, data, settings, work, log))
        state.pop("transformer", None)  # a changed VAE invalidates the transformer's training
        (work / "transformer.pt").unlink(missing_ok=True)
    else:
        load_checkpoint(work / "vae.pt", pipe.vae, torch.optim.AdamW(pipe.vae.parameters()))
        log(f"vae: done earlier ({state['vae']['steps']} steps)")
    pipe.vae.eval()
    pipe.vae.requires_grad_(False)
    mark("stats", set_latent_stats(pipe, data, settings, log))

    if not finished("transformer", settings.transformer_steps, settings.transformer_minutes):
        mark("transformer", train_transformer(pipe, data, settings, work, log))
    else:
        load_checkpoint(work / "transformer.pt", pipe.transformer, torch.optim.AdamW(pipe.transformer.parameters()))
        log(f"transformer: done earlier ({state['transformer']['steps']} steps)")
    pipe.transformer.eval()
    pipe.transformer.requires_grad_(False)

    evaluation = evaluate(pipe, data, settings, log)
    pipe.to("cpu")
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    parameters = sum(p.numel() for name in ("vae", "transformer", "text_encoder", "image_encoder")
                     for p in getattr(pipe, name).parameters())
    device_name = torch.cuda.get_device_name(0) if settings.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    report = dict(settings={k: v for k, v in asdict(settings).items() if k not in ("out", "work")},
                  device=device_name, parameters=parameters, vae=state["vae"], transformer=state["transformer"],
                  latents=state["stats"], eval=evaluation, total_seconds=round(time.perf_counter() - started, 1),
                  configs=configs(settings))
    (out / "training_report.json").write_text(json.dumps(report, indent=1))
    write_card(out, report)
    size = folder_megabytes(out)
    log(f"saved {out} ({size:.1f} MB of safetensors{', over the 30 MB goal' if size > 30 else ''}); model card README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
