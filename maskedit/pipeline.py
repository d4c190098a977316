"""`MaskEditPipeline`: diffusers' Wan I2V pipeline with a condition video and a keep mask.

Relies on diffusers 0.42.x `WanImageToVideoPipeline`: we override `prepare_latents` (the one place
the parent builds its condition) and wrap `__call__`; the denoising loop is the parent's. With
`condition_video` and `condition_mask` left out the pipeline *is* the parent (tests prove it bit for bit).
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from .runtime import quiet_transformers

with quiet_transformers():
    from diffusers import WanImageToVideoPipeline
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
    from diffusers.utils.torch_utils import randn_tensor

from .conditioning import condition_pixels, frames_to_tensor, latent_keep_mask, pack_latent_mask
from .errors import MaskEditError

TEXT_TOKENS = 512
"""Wan's image cross-attention assumes the text part of its context is exactly this many tokens."""


def as_uint8_frames(video) -> np.ndarray:
    """A list of PIL images or an (F, H, W, 3) uint8 array → (F, H, W, 3) uint8 array."""
    if isinstance(video, np.ndarray):
        frames = video
    else:
        frames = np.stack([np.asarray(frame.convert("RGB")) for frame in video])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MaskEditError(f"condition_video must be (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    return frames


class MaskEditPipeline(WanImageToVideoPipeline):
    """Wan2.1 I2V with a generalised condition (METHOD.md §2) and the feature-blending baseline (§8).

    Extra `__call__` arguments (all optional):
        condition_video: F frames (list of PIL images or (F, H, W, 3) uint8), F = 4k+1. Sets height,
            width and num_frames; `image` defaults to its first frame.
        condition_mask: (F, H, W) array or tensor, 1 = keep, 0 = generate. Generate regions of
            condition_video are filled with mid grey before the VAE encodes it.
        blend_source_video, blend_keep_mask: feature-level blending (paper Eq. 3). After every step,
            z = z_pred·(1−M) + z_src·M with z_src the source video's latents noised to the next step's
            noise level (with the initial noise) and M the latent keep mask of `blend_keep_mask`
            ((F, H, W), 1 = take from the source).
    """

    _condition: tuple[np.ndarray, np.ndarray] | None = None
    _blend: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(
        self,
        image=None,
        prompt=None,
        negative_prompt=None,
        *,
        condition_video=None,
        condition_mask=None,
        blend_source_video=None,
        blend_keep_mask=None,
        **kwargs,
    ):
        if (condition_video is None) != (condition_mask is None):
            raise MaskEditError("condition_video and condition_mask go together: pass both or neither")
        if (blend_source_video is None) != (blend_keep_mask is None):
            raise MaskEditError("blend_source_video and blend_keep_mask go together: pass both or neither")
        self._check_text_length(kwargs.get("max_sequence_length", TEXT_TOKENS))

        self._condition = None
        if condition_video is not None:
            frames = as_uint8_frames(condition_video)
            keep = np.asarray(condition_mask.cpu() if torch.is_tensor(condition_mask) else condition_mask)
            if keep.shape != frames.shape[:3]:
                raise MaskEditError(
                    f"condition_mask is {keep.shape} but condition_video is {frames.shape[:3]} (frames, height, width)"
                )
            for name, value in (("num_frames", frames.shape[0]), ("height", frames.shape[1]), ("width", frames.shape[2])):
                if kwargs.get(name, value) != value:
                    raise MaskEditError(f"{name}={kwargs[name]} does not match condition_video ({value})")
                kwargs[name] = value
            if image is None:
                image = PIL.Image.fromarray(frames[0])
            self._condition = (frames, keep.astype(np.float32))

        self._blend = None
        user_callback = kwargs.get("callback_on_step_end")
        if blend_source_video is not None:
            self._blend = self._prepare_blend(blend_source_video, blend_keep_mask)
            kwargs["callback_on_step_end"] = self._blend_callback(user_callback)
            inputs = list(kwargs.get("callback_on_step_end_tensor_inputs", ["latents"]))
            kwargs["callback_on_step_end_tensor_inputs"] = inputs if "latents" in inputs else inputs + ["latents"]
        try:
            return super().__call__(image, prompt, negative_prompt, **kwargs)
        finally:
            self._condition = None
            self._blend = None

    def _check_text_length(self, max_sequence_length: int) -> None:
        has_image_kv = getattr(self.transformer.config, "added_kv_proj_dim", None) is not None
        if has_image_kv and max_sequence_length != TEXT_TOKENS:
            raise MaskEditError(
                f"this Wan I2V model needs max_sequence_length={TEXT_TOKENS}: its image cross-attention splits "
                "the context at that length"
            )

    def encode_video_latents(self, pixels: torch.Tensor, device, dtype=torch.float32) -> torch.Tensor:
        """(B, 3, F, H, W) pixels in [-1, 1] → normalised latents (B, 16, k+1, H/8, W/8), argmax (mode)
        of the VAE posterior, `(z − latents_mean) / latents_std` as in the parent's `prepare_latents`."""
        vae_device = next(self.vae.parameters()).device
        latents = retrieve_latents(self.vae.encode(pixels.to(vae_device, self.vae.dtype)), sample_mode="argmax")
        latents = latents.to(device=device, dtype=dtype)
        mean = torch.tensor(self.vae.config.latents_mean).view(1, -1, 1, 1, 1).to(device, dtype)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1, 1).to(device, dtype)
        return (latents - mean) * inv_std

    def prepare_latents(
        self,
        image,
        batch_size,
        num_channels_latents=16,
        height=480,
        width=832,
        num_frames=81,
        dtype=None,
        device=None,
        generator=None,
        latents=None,
        last_image=None,
    ):
        if self._condition is None:
            outputs = super().prepare_latents(
                image, batch_size, num_channels_latents, height, width, num_frames, dtype, device, generator,
                latents, last_image,
            )
        else:
            if last_image is not None or self.config.expand_timesteps:
                raise MaskEditError("condition_video cannot be combined with last_image or Wan2.2's expand_timesteps")
            outputs = self._prepare_condition_latents(
                batch_size, num_channels_latents, height, width, num_frames, dtype, device, generator, latents
            )
        if self._blend is not None:
            self._blend = (*self._blend, outputs[0].clone())
        return outputs

    def _prepare_condition_latents(
        self, batch_size, num_channels_latents, height, width, num_frames, dtype, device, generator, latents
    ):
        """Mirror of the parent's `prepare_latents` with V_cond and M_cond from `self._condition`."""
        frames, keep = self._condition
        num_latent_frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        latent_height = height // self.vae_scale_factor_spatial
        latent_width = width // self.vae_scale_factor_spatial
        shape = (batch_size, num_channels_latents, num_latent_frames, latent_height, latent_width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)

        pixels = condition_pixels(frames, keep)
        latent_condition = self.encode_video_latents(pixels, device, dtype).repeat(batch_size, 1, 1, 1, 1)
        mask = pack_latent_mask(torch.from_numpy(keep), latent_height, latent_width, self.vae_scale_factor_temporal)
        mask = mask.repeat(batch_size, 1, 1, 1, 1).to(latent_condition.device)
        return latents, torch.concat([mask, latent_condition], dim=1)

    def _prepare_blend(self, source_video, keep_mask) -> tuple[torch.Tensor, torch.Tensor]:
        frames = as_uint8_frames(source_video)
        keep = torch.from_numpy(np.asarray(keep_mask, dtype=np.float32))
        device = self._execution_device
        source = self.encode_video_latents(frames_to_tensor(frames), device)
        spatial = self.vae_scale_factor_spatial
        mask = latent_keep_mask(keep, frames.shape[1] // spatial, frames.shape[2] // spatial, self.vae_scale_factor_temporal)
        return source, mask.to(device)

    def _blend_callback(self, user_callback):
        def blend(pipe, step, timestep, callback_kwargs):
            source, mask, noise = self._blend
            sigma = self.scheduler.sigmas[step + 1].to(source.device, source.dtype)
            noised_source = (1.0 - sigma) * source + sigma * noise
            latents = callback_kwargs["latents"]
            callback_kwargs["latents"] = latents * (1.0 - mask) + noised_source.to(latents.dtype) * mask
            if user_callback is not None:
                outputs = user_callback(pipe, step, timestep, callback_kwargs) or {}
                callback_kwargs.update(outputs)
            return callback_kwargs

        return blend
