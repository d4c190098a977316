"""The generalised I2V condition (METHOD.md §2, §4, §5, §6): samples and mask packing.

Wan2.1 I2V feeds its transformer `cat([noisy latents (16), mask (4), condition latents (16)])` per latent
frame. Every way MaskEdit uses the model is one choice of

- V_cond: the condition video, F frames of uint8 RGB (F, H, W, 3), F = 4k+1 (or 1 for a stage-2 sample);
- M_cond: the keep mask, float32 (F, H, W), 1.0 = keep/known, 0.0 = generate;
- the target video (training only) and the image for the CLIP image embedding, and the prompt.

The generate regions of V_cond are filled with `GREY_FILL` (0.0 in [-1, 1], mid grey) *before* the VAE
encodes it (`condition_pixels`), never zeroed in latent space. `pack_latent_mask` turns M_cond into Wan's
4-channel latent mask; training and generation both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MaskEditError
from .masks import keep_mask_from_region

GREY_FILL = 0.0
"""Value of generate regions of V_cond in [-1, 1] pixel space (RGB 127.5, mid grey)."""

from ..defaults import DEFAULT_TRIGGER  # noqa: E402,F401  (one definition, torch-free)
"""Trigger token put in front of every caption (reference code of the paper)."""

IMAGE_VIEWS = ("full", "crop")
"""What the CLIP image encoder sees: the whole frame squashed to its input size ("full", Wan's own code and the
reference) or diffusers' `CLIPImageProcessor` view (short side resized, centre crop: "crop")."""

METHOD_IMAGE_VIEW = "full"
"""The method's view, in training and generation alike: at 832x480 the crop view never sees 42% of the width."""


def clean_trigger(trigger: str | None) -> str:
    """The trigger token without surrounding spaces and trailing commas: the reference code's literal prefix
    "p3rs0n, " (or "p3rs0n,") is the trigger "p3rs0n" (`compose_prompt` puts the ", " back)."""
    return str(trigger or "").strip().rstrip(",").strip()


def compose_prompt(caption: str, trigger: str = DEFAULT_TRIGGER) -> str:
    """`"p3rs0n, a red car on a road"` from a caption; an empty trigger gives the caption alone. A trigger typed
    as the reference's prefix ("p3rs0n," / "p3rs0n, ") gives the same prompt (`clean_trigger`)."""
    caption = caption.strip()
    trigger = clean_trigger(trigger)
    if not trigger:
        return caption
    return f"{trigger}, {caption}" if caption else trigger


@dataclass
class ConditionSample:
    """One use of the model: a training sample (with `target_video`) or a generation request.

    condition_video: (F, H, W, 3) uint8 RGB, the unfilled V_cond (the fill happens in `condition_pixels`).
    keep_mask: (F, H, W) float32 in {0, 1}; 1 = keep this pixel of V_cond, 0 = generate it.
    image: (H, W, 3) uint8, the frame whose CLIP embedding conditions the model.
    prompt: the full prompt, trigger included.
    target_video: (F, H, W, 3) uint8, what the model must produce (training), or None.
    """

    condition_video: np.ndarray
    keep_mask: np.ndarray
    image: np.ndarray
    prompt: str
    target_video: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.condition_video.shape[0])

    @property
    def height(self) -> int:
        return int(self.condition_video.shape[1])

    @property
    def width(self) -> int:
        return int(self.condition_video.shape[2])


def _clip_keep_mask(edit_region: np.ndarray) -> np.ndarray:
    """Keep mask of the clip samples: frame 0 all ones, later frames 0 inside the edit region."""
    keep = keep_mask_from_region(edit_region)
    keep[0] = 1.0
    return keep


def _check_video_and_region(frames: np.ndarray, edit_region: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MaskEditError(f"expected frames of shape (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if edit_region.shape != frames.shape[:3]:
        raise MaskEditError(
            f"the mask is {edit_region.shape} (frames, height, width) but the clip is {frames.shape[:3]}; "
            "conform the mask with the clip (or use --fit)"
        )


def stage1_sample(frames: np.ndarray, edit_region: np.ndarray, prompt: str) -> ConditionSample:
    """Stage 1 (METHOD.md §4): learn the clip's motion with the mask.

    frames: (F, H, W, 3) uint8, the input clip (also the target). edit_region: (F, H, W) bool, the loose
    boxes (True = region to edit). V_cond is the clip, frame 0 clean; M_cond keeps frame 0 and everything
    outside the boxes of frames 1..F-1. The image embedding comes from the clean first frame.
    """
    _check_video_and_region(frames, edit_region)
    return ConditionSample(frames, _clip_keep_mask(edit_region), frames[0], prompt, target_video=frames)


def window_starts(num_frames: int, window: int = 9, stride: int = 4) -> list[int]:
    """First frames of overlapping temporal windows (METHOD.md §7): every `stride` frames while a whole
    window fits, plus one window flush with the clip's end when the stride does not land there."""
    if window < 1 or (window - 1) % 4 or window > num_frames:
        raise MaskEditError(f"a training window must be 4k+1 frames and at most the clip's {num_frames}, got {window}")
    if stride < 1:
        raise MaskEditError(f"the window stride must be at least 1, got {stride}")
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


def window_samples(
    frames: np.ndarray, edit_region: np.ndarray, prompt: str, window: int = 9, stride: int = 4
) -> list[ConditionSample]:
    """Low-cost training (METHOD.md §7): stage-1 samples of overlapping `window`-frame slices of the clip.

    Each window is packed like a whole clip: its own frame 0 clean and kept (it also gives the image
    embedding), its later frames boxed. Inference is unchanged (the whole clip).
    """
    _check_video_and_region(frames, edit_region)
    return [
        stage1_sample(frames[start : start + window], edit_region[start : start + window], prompt)
        for start in window_starts(frames.shape[0], window, stride)
    ]


def naive_sample(frames: np.ndarray, prompt: str) -> ConditionSample:
    """Naive LoRA baseline (METHOD.md §8): train on the clip with the stock condition (first frame only)."""
    stock = stock_condition(frames[0], frames.shape[0], prompt)
    stock.target_video = frames
    return stock


def stage2_sample(
    original_frame: np.ndarray, edited_frame: np.ndarray, edit_region: np.ndarray, prompt: str
) -> ConditionSample:
    """Stage 2 (METHOD.md §5): a single-frame sample that teaches the look of an edited later frame.

    original_frame, edited_frame: (H, W, 3) uint8 of the same size; edit_region: (H, W) bool, the box of
    that frame. Target = the edited frame; V_cond = the *original* frame with its box emptied; M_cond =
    0 inside the box on this sample's only frame; image embedding from the original frame.
    """
    if original_frame.shape != edited_frame.shape:
        raise MaskEditError(
            f"the edited later frame is {edited_frame.shape[1]}x{edited_frame.shape[0]} but the clip is "
            f"{original_frame.shape[1]}x{original_frame.shape[0]}; resize it to match (or use --fit)"
        )
    _check_video_and_region(original_frame[None], edit_region[None])
    keep = keep_mask_from_region(edit_region[None])
    return ConditionSample(original_frame[None], keep, original_frame, prompt, target_video=edited_frame[None])


def inference_condition(
    frames: np.ndarray, edit_region: np.ndarray, edited_first_frame: np.ndarray, prompt: str
) -> ConditionSample:
    """Generation (METHOD.md §6): stage-1 mask, V_cond = clip with boxes emptied and frame 0 = the edit.

    edited_first_frame: (H, W, 3) uint8, the user's edit of frame 0; it also gives the image embedding.
    """
    _check_video_and_region(frames, edit_region)
    if edited_first_frame.shape != frames.shape[1:]:
        raise MaskEditError(
            f"the edited first frame is {edited_first_frame.shape[1]}x{edited_first_frame.shape[0]} but the clip "
            f"is {frames.shape[2]}x{frames.shape[1]}; resize it to match (or use --fit)"
        )
    condition = frames.copy()
    condition[0] = edited_first_frame
    return ConditionSample(condition, _clip_keep_mask(edit_region), edited_first_frame, prompt)


def stock_condition(first_frame: np.ndarray, num_frames: int, prompt: str) -> ConditionSample:
    """Stock Wan I2V: V_cond = [first frame, empty…], M_cond = [ones, zeros…]."""
    video = np.zeros((num_frames, *first_frame.shape), dtype=np.uint8)
    video[0] = first_frame
    keep = np.zeros(video.shape[:3], dtype=np.float32)
    keep[0] = 1.0
    return ConditionSample(video, keep, first_frame, prompt)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 → (1, 3, F, H, W) float32 in [-1, 1], the same arithmetic as diffusers'
    VideoProcessor (x / 255, then 2x − 1), so frame 0 matches the stock pipeline bit for bit."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32) / 255.0
    pixels = 2.0 * pixels - 1.0
    return pixels.permute(3, 0, 1, 2).unsqueeze(0)


def full_view_pixels(
    image: np.ndarray, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """The CLIP input of the "full" view, as Wan's `CLIPModel.visual` computes it: the whole (H, W, 3) uint8
    frame in [-1, 1], bicubic-resized (align_corners=False, no antialias) to `size` = (height, width), mapped
    back to [0, 1] and normalised by the encoder's `mean`/`std`. Returns float32 (1, 3, height, width)."""
    pixels = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]  # a copy: inputs may be read-only
    pixels = (pixels / 255.0 - 0.5) / 0.5
    pixels = F.interpolate(pixels, size=tuple(size), mode="bicubic", align_corners=False)
    pixels = pixels * 0.5 + 0.5
    mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std


def condition_pixels(condition_video: np.ndarray, keep_mask: np.ndarray) -> torch.Tensor:
    """V_cond ready for the VAE: (1, 3, F, H, W) float32 in [-1, 1], generate regions = `GREY_FILL`.

    condition_video: (F, H, W, 3) uint8; keep_mask: (F, H, W) float in {0, 1}.
    """
    if keep_mask.shape != condition_video.shape[:3]:
        raise MaskEditError(
            f"the condition mask is {tuple(keep_mask.shape)} but the condition video is "
            f"{tuple(condition_video.shape[:3])} (frames, height, width); they must match"
        )
    pixels = frames_to_tensor(condition_video)
    keep = torch.from_numpy(np.ascontiguousarray(keep_mask) > 0.5)[None, None]
    return torch.where(keep, pixels, torch.full_like(pixels, GREY_FILL))


def pack_latent_mask(
    keep_mask: torch.Tensor, latent_height: int, latent_width: int, temporal_stride: int = 4
) -> torch.Tensor:
    """Pixel keep mask → Wan's 4-channel latent mask, as the transformer sees it.

    keep_mask: (F, H, W) or (B, F, H, W), 1 = keep, with F = 4k+1 (F = 1 for a single-frame sample).
    Returns float32 (B, 4, k+1, latent_height, latent_width): each frame is downsampled with nearest
    interpolation; frame 0 is repeated `temporal_stride` times to fill latent frame 0, and latent frame
    j ≥ 1, channel c holds pixel frame 4(j−1)+1+c. With the stock mask [1, 0, …] this is exactly what
    `WanImageToVideoPipeline.prepare_latents` builds.
    """
    if keep_mask.ndim == 3:
        keep_mask = keep_mask.unsqueeze(0)
    batch, num_frames = keep_mask.shape[:2]
    if (num_frames - 1) % temporal_stride:
        raise MaskEditError(f"a condition mask needs 4k+1 frames, got {num_frames}")
    small = F.interpolate(keep_mask.to(torch.float32), size=(latent_height, latent_width), mode="nearest")
    first = small[:, :1].repeat_interleave(temporal_stride, dim=1)
    small = torch.cat([first, small[:, 1:]], dim=1)
    small = small.view(batch, -1, temporal_stride, latent_height, latent_width)
    return small.transpose(1, 2)


def latent_keep_mask(keep_mask: torch.Tensor, latent_height: int, latent_width: int, temporal_stride: int = 4):
    """Per-latent keep mask (B, 1, k+1, h, w) for latent blending: a latent pixel counts as kept only if
    every pixel frame packed into it is kept (the minimum over the mask's 4 channels)."""
    packed = pack_latent_mask(keep_mask, latent_height, latent_width, temporal_stride)
    return packed.amin(dim=1, keepdim=True)
