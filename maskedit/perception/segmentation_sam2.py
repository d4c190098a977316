"""SAM2 video segmentation through transformers' `Sam2VideoModel` (no `sam2` package, no torchvision).

Why transformers rather than Meta's `sam2` package: transformers is already a requirement (Wan's text and
image encoders); its SAM2 model loads with `from_pretrained` from a hub id or a local folder exactly like
our other models (so the tests' tiny random model takes the same path as real weights); and it needs no
torchvision. The `sam2` package requires torchvision and builds a CUDA extension; on a CPU torch the only
reachable torchvision wheels break `import diffusers`. transformers' SAM2 *processors* need torchvision
too, so this module does their small job itself: resize to the model's square input (bilinear,
antialiased), ImageNet normalisation, scaling clicks to that square, and upsampling the low-resolution
mask logits back to the frame (threshold 0).

Frames are preprocessed lazily, one at a time as the model asks for them, so a long clip does not need
F x 3 x 1024 x 1024 floats in memory; the image embedding of the frame being clicked is cached between
clicks (`image_mask`). `release()` drops the model and empties the CUDA cache.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Mapping

import numpy as np

from ..errors import MaskEditError, ModelUnavailable
from ..runtime import default_device, quiet_transformers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TINY_SAM2_IMAGE_SIZE = 128
TINY_SAM2 = dict(
    vision_config=dict(
        model_type="sam2_vision_model",
        backbone_config=dict(
            model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1,
            image_size=[TINY_SAM2_IMAGE_SIZE, TINY_SAM2_IMAGE_SIZE], blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
            global_attention_blocks=[3],
        ),
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[TINY_SAM2_IMAGE_SIZE // s] * 2 for s in (4, 8, 16)],
        fpn_hidden_size=128,
    ),
    prompt_encoder_config=dict(hidden_size=128, image_size=TINY_SAM2_IMAGE_SIZE, patch_size=16, mask_input_channels=4),
    mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                             iou_head_hidden_dim=16),
    image_size=TINY_SAM2_IMAGE_SIZE,
    num_maskmem=3,
    memory_attention_hidden_size=128,
    memory_attention_num_layers=1,
    memory_attention_feed_forward_hidden_size=64,
    memory_attention_rope_feat_sizes=[TINY_SAM2_IMAGE_SIZE // 16] * 2,
    memory_encoder_hidden_size=128,
    memory_encoder_output_channels=64,  # transformers hard-codes 64 for the memory cross-attention
    mask_downsampler_embed_dim=128,
    memory_fuser_num_layers=1,
    memory_fuser_embed_dim=128,
    memory_fuser_intermediate_dim=64,
)
"""A ~0.9M-parameter SAM2 video config (128x128 input) for tests and CPU smoke runs. The hidden size must be
a multiple of 64 above 64: transformers' memory attention assumes 64-wide memory and splits the
object pointer into hidden/64 tokens."""


SAM2_LARGE_ARCHITECTURE = dict(
    vision_config=dict(
        model_type="sam2_vision_model",
        backbone_config=dict(
            model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2,
            blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
            num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 16, 8],
            global_attention_blocks=[23, 33, 43],
        ),
        backbone_channel_list=[1152, 576, 288, 144],
    ),
)
"""SAM2.1 Hiera-L's layout (the rest as `Sam2VideoConfig()`'s defaults, 1024x1024 input), for real-size
random-weight benchmarks where the weights cannot be downloaded. `Sam2VideoConfig()` itself is Hiera-T."""


def build_random_sam2(architecture: str = "large", seed: int = 0):
    """A randomly initialised SAM2 of a real size ("tiny": Hiera-T, "large": Hiera-L), for timing only."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    if architecture not in ("tiny", "large"):
        raise MaskEditError(f"unknown SAM2 architecture {architecture!r}; choose tiny or large")
    torch.manual_seed(seed)
    config = Sam2VideoConfig(**(SAM2_LARGE_ARCHITECTURE if architecture == "large" else {}))
    return Sam2VideoModel(config).eval()


def build_tiny_sam2(seed: int = 0):
    """A randomly initialised tiny `Sam2VideoModel` (TINY_SAM2), in eval mode on the CPU."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(seed)
    return Sam2VideoModel(Sam2VideoConfig(**TINY_SAM2)).eval()


def save_tiny_sam2(path: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny SAM2 as a transformers folder (loadable by `load_segmenter("sam2", model_id=path)`)."""
    build_tiny_sam2(seed).save_pretrained(str(path))
    return str(path)


class Sam2Unavailable(ModelUnavailable):
    """SAM2 weights could not be loaded; `reason` is the short why (the message adds what to do)."""

    @staticmethod
    def describe(reason: str, model_id: str) -> str:
        return (f"could not load SAM2 from {model_id!r}: {reason}. Give a local folder of a SAM2.1 checkpoint in "
                "transformers format (config.json + model.safetensors), a hub id you can reach (e.g. "
                "facebook/sam2.1-hiera-large), or use the offline segmenter (--backend fallback)")


def load_checkpoint(model_id: str, download: bool, load, unavailable, what: str, upgrade: str,
                    model_type: str | None = None):
    """`load(local_only)` for a hub id or local folder, its failures turned into `unavailable(reason, model_id)`
    (a MaskEditError whose message says what to do): a path that does not exist, a checkpoint whose config.json
    is not of `model_type` (transformers would otherwise build a random model from a foreign config), transformers
    without `what` (`upgrade` says how to get it), weights that cannot be read or fetched (not cached while
    downloading is off, gated, offline). A hub id is looked for on the hub only when it answers
    (`runtime.hub_files_only`: seconds offline, not minutes of retries)."""
    local = os.path.isdir(model_id)
    if not local and (model_id.startswith((".", os.sep, "~")) or model_id.count("/") > 1):
        raise unavailable(f"the folder {model_id} does not exist", model_id)
    from ..runtime import hub_files_only, missing_offline

    files_only, offline = hub_files_only(model_id) if download else (True, None)  # no hub: seconds, not minutes
    try:
        if model_type is not None:
            from transformers import PretrainedConfig

            found = PretrainedConfig.get_config_dict(model_id, local_files_only=files_only)[0]
            if found.get("model_type") != model_type:
                raise unavailable(f"it is a {found.get('model_type') or 'unknown'} checkpoint, not {model_type}",
                                  model_id)
        return load(files_only)
    except MaskEditError:  # already says what is wrong (a foreign checkpoint, missing files)
        raise
    except ImportError as error:
        raise unavailable(f"transformers has no {what} ({error}); {upgrade}", model_id) from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0][:300].rstrip(".") if str(error).strip() else type(error).__name__
        if not (download or local):
            reason = "its weights are not in the local Hugging Face cache, and downloading was off"
        elif offline and not local:
            reason = missing_offline(offline)
        raise unavailable(reason, model_id) from None


class LazyFrames(Mapping):
    """What `Sam2VideoInferenceSession.processed_frames` holds, computed on access: index → (3, S, S)."""

    def __init__(self, frames: np.ndarray, preprocess):
        self.frames = frames
        self.preprocess = preprocess

    def __getitem__(self, index: int):
        if not 0 <= index < len(self.frames):
            raise KeyError(index)
        return self.preprocess(self.frames[index])

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(range(len(self.frames)))


class Sam2Segmenter:
    """SAM2 (transformers `Sam2VideoModel`) behind the `maskedit.perception.segmentation.Segmenter` interface.

    SAM 3's click tracker (`Sam3TrackerVideoModel`) has the same session API; `segmentation_sam3.Sam3Segmenter`
    reuses this class with its own normalisation (`mean`, `std`) and session class (`_session_class`)."""

    name = "sam2"
    title = "SAM2"  # in labels and messages
    approximate = False
    note = None
    supports_text = False  # clicks only; text prompts need SAM 3
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # the processor's normalisation of [0, 1] pixels

    def __init__(self, model, device: str = "cpu", dtype=None, model_id: str = "sam2"):
        import torch

        self.model = model
        self.device = str(device)
        self.dtype = dtype or next(model.parameters()).dtype
        self.model_id = model_id
        self.image_size = int(model.config.image_size if not isinstance(model.config.image_size, (list, tuple))
                              else model.config.image_size[0])
        shown = os.path.basename(os.path.normpath(model_id)) if os.path.isdir(model_id) else model_id
        self.label = f"{self.title} ({shown}, {self.device})"  # a local folder by its name: no server paths
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)
        self._image_key = None
        self._image_session = None

    @classmethod
    def from_pretrained(cls, model_id: str, device: str | None = None, dtype=None, download: bool = True):
        """Load a SAM2/SAM2.1 checkpoint in transformers format from a hub id or a local folder.

        dtype defaults to bfloat16 on CUDA and float32 elsewhere. Raises MaskEditError with what to do
        when it cannot be loaded.
        """
        import torch

        device = device or default_device()
        dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)

        def load(local_only: bool):
            from transformers import Sam2VideoModel

            with quiet_transformers():
                return Sam2VideoModel.from_pretrained(model_id, dtype=dtype, local_files_only=local_only)

        model = load_checkpoint(model_id, download, load, Sam2Unavailable, "Sam2VideoModel",
                                "pip install -U 'transformers>=5'", model_type="sam2_video")
        model = model.to(device).eval()
        return cls(model, device, dtype, model_id)

    # -- the interface

    def image_mask(self, frame: np.ndarray, points, labels, *, box=None, object_ids=None) -> np.ndarray:
        """The objects' union on one frame, bool (H, W). The frame's image embedding is computed on the
        first call and reused while the same frame is clicked again."""
        import torch

        from .segmentation_prompts import check_frames, prompts_by_object

        self._check_alive()
        frame = check_frames(np.asarray(frame)[None])[0]
        height, width = frame.shape[:2]
        objects = prompts_by_object(points, labels, height, width, object_ids=object_ids, box=box)
        key = (frame.shape, hashlib.blake2b(frame.tobytes(), digest_size=16).digest())
        if key != self._image_key or self._image_session is None:
            self._image_session = self._session(frame[None])
            self._image_key = key
        session = self._image_session
        session.reset_tracking_data()  # keeps the cached image features
        with torch.inference_mode():
            self._add_prompts(session, objects, 0, height, width)
            # no memory encoding: this frame's mask is not tracked anywhere from this session
            output = self.model(inference_session=session, frame_idx=0, run_mem_encoder=False)
            return self._to_mask(output.pred_masks, height, width)

    def propagate(self, frames: np.ndarray, points, labels, frame_index: int = 0, *, box=None, object_ids=None,
                  progress=None) -> np.ndarray:
        """The objects' union on every frame, bool (F, H, W): SAM2's memory tracks forward from the
        prompted frame to the end, then backward to frame 0."""
        per_object = self.propagate_objects(frames, points, labels, frame_index, box=box, object_ids=object_ids,
                                            progress=progress)
        return np.logical_or.reduce(list(per_object.values()))

    def propagate_objects(self, frames: np.ndarray, points, labels, frame_index: int = 0, *, box=None,
                          object_ids=None, progress=None) -> dict[int, np.ndarray]:
        """Each object on every frame, {object id: bool (F, H, W)} in the order the objects were first named;
        one tracking session for all of them (forward from the prompted frame, then backward to frame 0)."""
        import torch

        from .segmentation_prompts import check_frame_index, check_frames, prompts_by_object

        self._check_alive()
        frames = check_frames(frames)
        num_frames, height, width = frames.shape[:3]
        frame_index = check_frame_index(frame_index, num_frames)
        objects = prompts_by_object(points, labels, height, width, object_ids=object_ids, box=box)
        result = {object_id: np.zeros((num_frames, height, width), dtype=bool) for object_id in objects}
        done = set()
        session = self._session(frames)
        try:
            with torch.inference_mode():
                self._add_prompts(session, objects, frame_index, height, width)
                self.model(inference_session=session, frame_idx=frame_index)
                for reverse in (False, True):
                    if reverse and frame_index == 0:
                        break
                    for output in self.model.propagate_in_video_iterator(
                            inference_session=session, start_frame_idx=frame_index, reverse=reverse):
                        index = int(output.frame_idx)
                        found = self._to_masks(output.pred_masks, height, width)
                        for object_id, mask in zip(output.object_ids, found):
                            result[int(object_id)][index] = mask
                        if index not in done:
                            done.add(index)
                            if progress:
                                progress(len(done), num_frames)
        finally:
            session.reset_inference_session()
            del session
            self._empty_cache()
        return result

    def release(self) -> None:
        """Drop the model, its cached image session and the CUDA memory they held."""
        self.model = None
        self._image_session = None
        self._image_key = None
        gc.collect()
        self._empty_cache()

    # -- helpers

    def _check_alive(self) -> None:
        if self.model is None:
            raise MaskEditError(f"this {self.title} segmenter was released; load it again (load_segmenter)")

    def _empty_cache(self) -> None:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _preprocess(self, frame: np.ndarray):
        """(H, W, 3) uint8 → (3, S, S) normalised, on the model's device and dtype."""
        import torch
        import torch.nn.functional as F

        pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None].float()
        size = self.image_size
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=pixels.shape[-1] > size or pixels.shape[-2] > size)
        pixels = (pixels[0] / 255.0 - self._mean.to(pixels.device)) / self._std.to(pixels.device)
        return pixels.to(self.dtype)

    @staticmethod
    def _session_class():
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        return Sam2VideoInferenceSession

    def _session(self, frames: np.ndarray):
        session = self._session_class()(
            video=None, video_height=int(frames.shape[1]), video_width=int(frames.shape[2]),
            inference_device=self.device, inference_state_device=self.device, video_storage_device=self.device,
            dtype=self.dtype,
        )
        session.processed_frames = LazyFrames(frames, self._preprocess)
        return session

    def _add_prompts(self, session, objects: dict, frame_index: int, height: int, width: int) -> None:
        """Clicks (and the box, as SAM2's corner points labelled 2 and 3) scaled to the model's input."""
        import torch

        scale = np.array([self.image_size / width, self.image_size / height])
        for object_id, prompt in objects.items():
            coords = [np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2) * scale]
            point_labels = [np.asarray(prompt.labels, dtype=np.int64).reshape(-1)]
            if prompt.box is not None:
                x0, y0, x1, y1 = prompt.box
                coords.insert(0, np.array([[x0, y0], [x1, y1]]) * scale)
                point_labels.insert(0, np.array([2, 3]))
            index = session.obj_id_to_idx(int(object_id))
            session.add_point_inputs(index, frame_index, {
                "point_coords": torch.tensor(np.concatenate(coords), dtype=torch.float32)[None, None],
                "point_labels": torch.tensor(np.concatenate(point_labels), dtype=torch.int32)[None, None],
            })
            session.remove_mask_inputs(index, frame_index)
        session.obj_with_new_inputs = [int(object_id) for object_id in objects]

    def _to_masks(self, logits, height: int, width: int) -> np.ndarray:
        """Low-resolution mask logits (objects, 1, h, w) → each object's mask at (height, width), bool (objects, H, W)."""
        import torch.nn.functional as F

        logits = logits.float()
        logits = F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return (logits > 0)[:, 0].cpu().numpy()

    def _to_mask(self, logits, height: int, width: int) -> np.ndarray:
        """Low-resolution mask logits (objects, 1, h, w) → the objects' union at (height, width), bool."""
        return self._to_masks(logits, height, width).any(axis=0)
