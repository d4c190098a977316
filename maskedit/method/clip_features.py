"""CLIP image features of frames through the base's own image encoder (the one already in the pipe), for the
paper's Table 1 measures (`media.metrics.clip_measures`: CLIP score and input similarity).

    features = clip_image_features(pipe, frames)   # float32 (F, D), unit length; None on a base without one

The feature of a frame is the encoder's pooled output (`pooler_output`: the class token after the final layer
norm; Wan2.1's encoder is an open-CLIP ViT-H/14 vision tower without its projection) of the frame's "full" view —
the whole frame squashed to the encoder's input size, as the method conditions on it (`conditioning.
full_view_pixels`). The paper's figures come from its own CLIP model, so these numbers compare methods with each
other here, not with the paper's table.
"""

from __future__ import annotations

import numpy as np
import torch

from .conditioning import full_view_pixels

FEATURE_BATCH = 8
"""Frames per encoder call."""
FEATURE_NAME = "pooled CLIP image embedding of the base's own image encoder (full-frame view)"


def has_image_encoder(pipe) -> bool:
    """True when the pipe carries a CLIP image encoder (Wan2.1 I2V); Wan2.2-I2V-A14B has none."""
    return getattr(pipe, "image_encoder", None) is not None and getattr(pipe, "image_processor", None) is not None


@torch.no_grad()
def clip_image_features(pipe, frames: np.ndarray, batch: int = FEATURE_BATCH) -> np.ndarray | None:
    """Unit-length float32 (N, D) features of uint8 frames (N, H, W, 3) or one frame (H, W, 3); None when the pipe
    has no image encoder (`has_image_encoder`). Runs on the pipe's execution device in the encoder's dtype."""
    if not has_image_encoder(pipe):
        return None
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    processor, encoder = pipe.image_processor, pipe.image_encoder
    size = (processor.crop_size["height"], processor.crop_size["width"])
    device = pipe._execution_device
    dtype = next(encoder.parameters()).dtype
    features = []
    for start in range(0, len(frames), batch):
        pixels = torch.cat([full_view_pixels(frame, size, processor.image_mean, processor.image_std)
                            for frame in frames[start:start + batch]])
        pooled = encoder(pixel_values=pixels.to(device, dtype)).pooler_output.float()
        features.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    return torch.cat(features).numpy()
