"""`MaskEditPipeline`: diffusers' Wan I2V pipeline with a condition video and a keep mask.

Relies on diffusers 0.42.x `WanImageToVideoPipeline`: we override `prepare_latents` (the one place the parent
builds its condition) and `encode_image` (the CLIP view), and wrap `__call__` with the parent's explicit
parameters plus ours; the denoising loop is the parent's. With `condition_video` and `condition_mask` left out
(and the default crop view) the pipeline *is* the parent (tests prove it bit for bit).

Samplers (`use_sampler`): "euler" is the reference code's flow-matching Euler (DiffSynth's schedule, pass
`sigmas=reference_sigmas(steps)`), "unipc" Wan's own default multistep solver.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch

from ..runtime import quiet_transformers

with quiet_transformers():
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanImageToVideoPipeline
    from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
    from diffusers.image_processor import PipelineImageInput
    from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
    from diffusers.utils.torch_utils import randn_tensor

from .conditioning import (
    IMAGE_VIEWS, METHOD_IMAGE_VIEW, condition_pixels, frames_to_tensor, full_view_pixels, latent_keep_mask,
    pack_latent_mask,
)
from ..defaults import DEFAULT_SAMPLER, SAMPLERS  # noqa: F401  (part of this module's API)
from ..errors import MaskEditError
from ..memory.offload import encoder_offload, release_offloaded_encoders

TEXT_TOKENS = 512
"""Wan's image cross-attention assumes the text part of its context is exactly this many tokens."""

DEFAULT_SIZE = (480, 832)
"""(height, width) the parent pipeline defaults to when neither they nor a condition video are given."""
DEFAULT_NUM_FRAMES = 81


def reference_sigmas(steps: int) -> list[float]:
    """The reference code's (DiffSynth `FlowMatchScheduler(sigma_min=0, extra_one_step=True)`) unshifted noise
    levels for `steps` steps: linspace(1, 0, steps + 1) without the last; the scheduler applies the shift
    (σ' = s·σ / (1 + (s − 1)·σ)) and appends the final 0. Pass as `sigmas=` with the "euler" sampler."""
    if steps < 1:
        raise MaskEditError(f"the number of sampling steps is {steps}; give at least 1")
    return np.linspace(1.0, 0.0, steps + 1)[:-1].tolist()


def make_scheduler(sampler: str, shift: float, config: dict | None = None):
    """A flow-matching scheduler for `sampler` ("euler" or "unipc") with flow shift `shift`; `config` (a
    scheduler config of the same class) keeps its other settings."""
    if sampler not in SAMPLERS:
        raise MaskEditError(f"the sampler {sampler!r} is unknown; use one of {', '.join(SAMPLERS)}")
    if not shift > 0:
        raise MaskEditError(f"the flow shift is {shift}; give a positive one, e.g. 5")
    if sampler == "euler":
        if config is not None:
            return FlowMatchEulerDiscreteScheduler.from_config(config, shift=shift)
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if config is not None:
        return UniPCMultistepScheduler.from_config(config, flow_shift=shift)
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)


def scheduler_sampler(scheduler) -> str | None:
    """"euler" / "unipc" for the scheduler classes behind `SAMPLERS`, else None."""
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return "euler"
    if isinstance(scheduler, UniPCMultistepScheduler):
        return "unipc"
    return None


def use_sampler(pipe, sampler: str, shift: float) -> None:
    """Give `pipe` the scheduler of `sampler` with flow shift `shift`. A scheduler of the same kind keeps its
    config (e.g. the model repository's UniPC settings); the config of the one replaced is kept on the pipe
    so that switching back restores it."""
    saved = pipe.__dict__.setdefault("_sampler_configs", {})
    current = scheduler_sampler(pipe.scheduler)
    if current is not None:
        saved[current] = dict(pipe.scheduler.config)
    pipe.scheduler = make_scheduler(sampler, shift, saved.get(sampler))


def as_uint8_frames(video) -> np.ndarray:
    """A list of PIL images or an (F, H, W, 3) uint8 array → (F, H, W, 3) uint8 array."""
    if isinstance(video, np.ndarray):
        frames = video
    else:
        frames = np.stack([np.asarray(frame.convert("RGB")) for frame in video])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MaskEditError(f"condition_video must be (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    return frames


def _as_uint8_image(image) -> np.ndarray:
    """A PIL image or an (H, W, 3) uint8 array → (H, W, 3) uint8 array (for the full CLIP view)."""
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise MaskEditError(
            f"the full image view takes PIL images or (H, W, 3) uint8 arrays, got {array.shape} {array.dtype}; "
            "use image_view='crop' for other image types"
        )
    return array


@contextlib.contextmanager
def untiled_encoding(vae):
    """Encode without VAE tiling whatever the VAE's tiling setting (decoding keeps it): the condition and the
    target latents are then the same in training and generation, whichever presets tile (METHOD.md §6)."""
    tiling = getattr(vae, "use_tiling", False)
    vae.use_tiling = False
    try:
        yield
    finally:
        vae.use_tiling = tiling


class MaskEditPipeline(WanImageToVideoPipeline):
    """Wan2.1 I2V with a generalised condition (METHOD.md §2) and the feature-blending baseline (§8).

    `__call__` takes every parameter of `WanImageToVideoPipeline.__call__` (same meaning), plus:
        condition_video: F frames (list of PIL images or (F, H, W, 3) uint8), F = 4k+1. Sets height,
            width and num_frames (given ones must match); `image` defaults to its first frame.
        condition_mask: (F, H, W) array or tensor, 1 = keep, 0 = generate. Generate regions of
            condition_video are filled with mid grey before the VAE encodes it (never tiled).
        blend_source_video, blend_keep_mask: feature-level blending (paper Eq. 3). After every step,
            z = z_pred·(1−M) + z_src·M with z_src the source video's latents noised to the next step's
            noise level (with the initial noise) and M the latent keep mask of `blend_keep_mask`
            ((F, H, W), 1 = take from the source). With UniPC the corrector's rebuilt sample is blended
            too, so the state the solver carries holds Eq. 3 at every step.
        image_view: what the CLIP image encoder sees: "full" squashes the whole frame to the encoder's size
            (bicubic, as Wan's code and the reference), "crop" is diffusers' `image_processor` (short side
            resized, centre crop). None: "full" with a condition video (the method), else "crop" (the parent).
        sigmas: the unshifted noise levels of the schedule (e.g. `reference_sigmas(steps)` with the Euler
            sampler), one per step; None keeps the scheduler's own schedule.
    height, width and num_frames default to 480, 832 and 81 (the parent's) unless a condition video sets them.
    """

    _condition: tuple[np.ndarray, np.ndarray] | None = None
    _blend: tuple[torch.Tensor, torch.Tensor] | None = None
    _image_view: str = "crop"

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput | None = None,
        prompt: str | list[str] = None,
        negative_prompt: str | list[str] = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        guidance_scale_2: float | None = None,
        num_videos_per_prompt: int | None = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        last_image: torch.Tensor | None = None,
        output_type: str | None = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[int, int], None] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int = TEXT_TOKENS,
        condition_video: list[PIL.Image.Image] | np.ndarray | None = None,
        condition_mask: np.ndarray | torch.Tensor | None = None,
        blend_source_video: list[PIL.Image.Image] | np.ndarray | None = None,
        blend_keep_mask: np.ndarray | torch.Tensor | None = None,
        image_view: str | None = None,
        sigmas: list[float] | None = None,
    ) -> WanPipelineOutput | tuple:
        if (condition_video is None) != (condition_mask is None):
            raise MaskEditError("condition_video and condition_mask go together: pass both or neither")
        if (blend_source_video is None) != (blend_keep_mask is None):
            raise MaskEditError("blend_source_video and blend_keep_mask go together: pass both or neither")
        if image_view is not None and image_view not in IMAGE_VIEWS:
            raise MaskEditError(f"image_view must be one of {', '.join(IMAGE_VIEWS)}, got {image_view!r}")
        self._check_text_length(max_sequence_length)
        if sigmas is not None:
            self._check_sigmas(sigmas, num_inference_steps)

        condition = None
        if condition_video is not None:
            frames = as_uint8_frames(condition_video)
            keep = np.asarray(condition_mask.cpu() if torch.is_tensor(condition_mask) else condition_mask)
            if keep.shape != frames.shape[:3]:
                raise MaskEditError(
                    f"condition_mask is {keep.shape} but condition_video is {frames.shape[:3]} (frames, height, width)"
                )
            given = {"num_frames": num_frames, "height": height, "width": width}
            for (name, value), actual in zip(given.items(), frames.shape[:3]):
                if value is not None and value != actual:
                    raise MaskEditError(f"{name}={value} does not match condition_video ({actual})")
            num_frames, height, width = frames.shape[:3]
            if image is None and image_embeds is None:
                image = PIL.Image.fromarray(frames[0])
            condition = (frames, keep.astype(np.float32))
        height = DEFAULT_SIZE[0] if height is None else height
        width = DEFAULT_SIZE[1] if width is None else width
        num_frames = DEFAULT_NUM_FRAMES if num_frames is None else num_frames

        blend = None
        if blend_source_video is not None:
            blend = self._prepare_blend(blend_source_video, blend_keep_mask)
            if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
                callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
            inputs = list(callback_on_step_end_tensor_inputs)
            callback_on_step_end_tensor_inputs = inputs if "latents" in inputs else inputs + ["latents"]
            callback_on_step_end = self._blend_callback(callback_on_step_end)

        self._condition, self._blend = condition, blend
        self._image_view = image_view or (METHOD_IMAGE_VIEW if condition is not None else "crop")
        with contextlib.ExitStack() as scope:
            if blend is not None:
                scope.enter_context(self._blended_corrector())
            if sigmas is not None:
                scope.enter_context(self._schedule_sigmas(sigmas))
            try:
                return super().__call__(
                    image, prompt, negative_prompt, height, width, num_frames, num_inference_steps, guidance_scale,
                    guidance_scale_2, num_videos_per_prompt, generator, latents, prompt_embeds,
                    negative_prompt_embeds, image_embeds, last_image, output_type, return_dict, attention_kwargs,
                    callback_on_step_end, callback_on_step_end_tensor_inputs, max_sequence_length,
                )
            finally:
                self._condition = None
                self._blend = None
                self._image_view = "crop"

    def maybe_free_model_hooks(self) -> None:
        """The parent's (called at the end of every `__call__`, after the VAE decode), then the offloaded
        encoders off the GPU (`offload.EncoderOffload`; the VAE decoded last)."""
        super().maybe_free_model_hooks()
        release_offloaded_encoders(self)

    def _check_text_length(self, max_sequence_length: int) -> None:
        has_image_kv = getattr(getattr(self.transformer, "config", None), "added_kv_proj_dim", None) is not None
        if has_image_kv and max_sequence_length != TEXT_TOKENS:
            raise MaskEditError(
                f"this Wan I2V model needs max_sequence_length={TEXT_TOKENS}: its image cross-attention splits "
                "the context at that length"
            )

    def _check_sigmas(self, sigmas, num_inference_steps: int) -> None:
        if "sigmas" not in inspect.signature(self.scheduler.set_timesteps).parameters:
            raise MaskEditError(f"the scheduler {type(self.scheduler).__name__} takes no sigmas; leave them out")
        if len(sigmas) != num_inference_steps:
            raise MaskEditError(f"{len(sigmas)} sigmas were given for {num_inference_steps} steps; give one per step")

    def encode_image(self, image: PipelineImageInput, device: torch.device | None = None,
                     view: str | None = None) -> torch.Tensor:
        """CLIP image tokens (penultimate hidden states, (B, tokens, image_dim)) of `image` (a PIL image, an
        (H, W, 3) uint8 array, or a list of them) as seen through `view` ("full" or "crop"; None: this call's
        view, "crop" outside a call — the parent's)."""
        view = view or self._image_view
        if view not in IMAGE_VIEWS:
            raise MaskEditError(f"image view must be one of {', '.join(IMAGE_VIEWS)}, got {view!r}")
        if view == "crop":
            return super().encode_image(image, device)
        device = device or self._execution_device
        images = image if isinstance(image, (list, tuple)) else [image]
        crop = self.image_processor.crop_size
        size = (crop["height"], crop["width"])
        pixels = torch.cat([
            full_view_pixels(_as_uint8_image(one), size, self.image_processor.image_mean, self.image_processor.image_std)
            for one in images
        ])
        outputs = self.image_encoder(pixel_values=pixels.to(device), output_hidden_states=True)
        return outputs.hidden_states[-2]

    def encode_video_latents(self, pixels: torch.Tensor, device, dtype=torch.float32) -> torch.Tensor:
        """(B, 3, F, H, W) pixels in [-1, 1] → normalised latents (B, 16, k+1, H/8, W/8), argmax (mode)
        of the VAE posterior, `(z − latents_mean) / latents_std` as in the parent's `prepare_latents`.
        Never tiled (`untiled_encoding`): training and generation encode alike whatever the tiling setting."""
        vae_device = next(self.vae.parameters()).device
        with untiled_encoding(self.vae):
            latents = retrieve_latents(self.vae.encode(pixels.to(vae_device, self.vae.dtype)), sample_mode="argmax")
        offload = encoder_offload(self)
        if offload is not None:
            offload.drop("vae")  # with encoder offload the VAE is on the GPU only while it encodes
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
            self._blend = (*self._blend[:2], outputs[0].clone())
        return outputs

    def condition_latents(self, condition_video: np.ndarray, condition_mask: np.ndarray, device=None,
                          dtype=torch.float32) -> torch.Tensor:
        """The 20 condition channels the transformer sees beside the noisy latents: cat([packed mask (4),
        normalised latents of the grey-filled V_cond (16)]) as (1, 20, k+1, H/8, W/8). Training
        (`training.encode_samples`) and generation both build them here."""
        device = device or self._execution_device
        num_frames, height, width = condition_video.shape[:3]
        spatial = self.vae_scale_factor_spatial
        pixels = condition_pixels(condition_video, condition_mask)
        latent_condition = self.encode_video_latents(pixels, device).to(dtype)
        mask = pack_latent_mask(torch.from_numpy(np.ascontiguousarray(condition_mask)), height // spatial,
                                width // spatial, self.vae_scale_factor_temporal)
        return torch.cat([mask.to(latent_condition.device, latent_condition.dtype), latent_condition], dim=1)

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
        condition = self.condition_latents(frames, keep, device, dtype)
        return latents, condition.repeat(batch_size, 1, 1, 1, 1)

    def _prepare_blend(self, source_video, keep_mask) -> tuple[torch.Tensor, torch.Tensor]:
        if scheduler_sampler(self.scheduler) is None:
            raise MaskEditError(
                f"feature blending supports the {' and '.join(SAMPLERS)} samplers, not {type(self.scheduler).__name__}"
            )
        frames = as_uint8_frames(source_video)
        keep = torch.from_numpy(np.asarray(keep_mask, dtype=np.float32))
        device = self._execution_device
        source = self.encode_video_latents(frames_to_tensor(frames), device)
        spatial = self.vae_scale_factor_spatial
        mask = latent_keep_mask(keep, frames.shape[1] // spatial, frames.shape[2] // spatial, self.vae_scale_factor_temporal)
        return source, mask.to(device)

    def blend_latents(self, latents: torch.Tensor, sigma) -> torch.Tensor:
        """Paper Eq. 3 at noise level `sigma`: latents·(1−M) + ((1−σ)·z_src + σ·noise)·M (during a blending call)."""
        source, mask, noise = self._blend
        sigma = torch.as_tensor(sigma).to(source.device, source.dtype)
        noised_source = (1.0 - sigma) * source + sigma * noise
        return latents * (1.0 - mask) + noised_source.to(latents.dtype) * mask

    def _blend_callback(self, user_callback):
        def blend(pipe, step, timestep, callback_kwargs):
            callback_kwargs["latents"] = self.blend_latents(callback_kwargs["latents"], self.scheduler.sigmas[step + 1])
            if user_callback is not None:
                outputs = user_callback(pipe, step, timestep, callback_kwargs) or {}
                callback_kwargs.update(outputs)
            return callback_kwargs

        return blend

    @contextlib.contextmanager
    def _blended_corrector(self):
        """UniPC's corrector rebuilds the current sample from the previous one (its own history), undoing the
        blend the callback applied; blend what it returns at the current noise level, so the sample it keeps
        (`last_sample`) and predicts from holds Eq. 3. Euler has no corrector: nothing to do."""
        scheduler = self.scheduler
        corrector = getattr(scheduler, "multistep_uni_c_bh_update", None)
        if corrector is None:
            yield
            return

        def blended(*args, **kwargs):
            return self.blend_latents(corrector(*args, **kwargs), scheduler.sigmas[scheduler.step_index])

        scheduler.multistep_uni_c_bh_update = blended
        try:
            yield
        finally:
            del scheduler.multistep_uni_c_bh_update

    @contextlib.contextmanager
    def _schedule_sigmas(self, sigmas):
        """Make the parent's `scheduler.set_timesteps(steps, device=…)` use `sigmas` for this call."""
        scheduler = self.scheduler
        set_timesteps = scheduler.set_timesteps

        def with_sigmas(num_inference_steps=None, device=None, **kwargs):
            return set_timesteps(device=device, sigmas=list(sigmas), **kwargs)

        scheduler.set_timesteps = with_sigmas
        try:
            yield
        finally:
            del scheduler.set_timesteps
