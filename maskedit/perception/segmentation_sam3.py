"""SAM 3 through transformers: a sentence → every instance it names, tracked through the clip
(`Sam3VideoModel`: detector + tracker), and clicks → tracked masks (its tracker, SAM2's session API).

One checkpoint folder (the gated hub repo `facebook/sam3`, or a local copy in transformers format:
config.json, model.safetensors, tokenizer files) serves both: the click tracker is the video model's own
tracker given the detector's ViT backbone and the tracker neck as its vision encoder (`shared_tracker`), so
the 446M-parameter backbone is held once. Like the SAM2 module (which this one extends), no torchvision:
transformers' SAM 3 processors need it, so this module resizes to the model's square input (bilinear,
antialiased when shrinking), normalises with mean = std = 0.5, tokenizes with the checkpoint's
`CLIPTokenizer` (32 tokens, padded) and upsamples the low-resolution mask logits itself (threshold 0).

Text results (`find_instances`): one `TextInstance` per object SAM 3 tracked — its detection score, its
masks on every frame (bit-packed while held: F x H x W/8 bytes), its area on frame 0 — highest score first,
at most `limits.MAX_OBJECTS`. Objects the model's own hot-start heuristics removed are left out; within the
prompt, a pixel claimed by two objects goes to the one the tracker is surest of on that frame (as transformers'
`Sam3VideoProcessor.postprocess_outputs` does).

Mask NMS, hole filling and speck removal in transformers' SAM 3 need a kernel downloaded from the hub at first
use (`kernels-community/cv-utils`); MaskEdit downloads no code, so they are skipped (set
MASKEDIT_SAM3_KERNELS=1 to let transformers fetch it) and results may differ slightly from Meta's demo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import MaskEditError
from ..limits import MAX_OBJECTS, check_text_prompt
from ..runtime import default_device, quiet_transformers
from .segmentation_prompts import check_frames
from .segmentation_sam2 import Sam2Segmenter, LazyFrames, load_checkpoint

DEFAULT_SAM3_MODEL = "facebook/sam3"
"""SAM 3 (848M parameters, 1008x1008 input) in transformers format; gated: accept its licence on the hub first."""
SAM3_HUB_PAGE = "https://huggingface.co/facebook/sam3"
SAM3_MEAN = SAM3_STD = (0.5, 0.5, 0.5)  # Sam3ImageProcessor's normalisation of [0, 1] pixels
TEXT_TOKENS = 32  # SAM 3's text encoder reads prompts padded to 32 tokens

# ----- a tiny random SAM 3 for tests and CPU smoke runs

TINY_SAM3_IMAGE_SIZE = 56  # a multiple of the patch size 14: a 4x4 token grid
_GRID = TINY_SAM3_IMAGE_SIZE // 14
_WIDTH = 128  # the tracker's memory attention needs a multiple of 64 above 64 (as in TINY_SAM2)
TINY_SAM3_WORDS = ("person", "car", "dog", "cat", "ball", "box", "disk")
_TINY_VISION = dict(
    model_type="sam3_vision_model",
    backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, image_size=TINY_SAM3_IMAGE_SIZE, patch_size=14,
                         pretrain_image_size=TINY_SAM3_IMAGE_SIZE, window_size=2, global_attn_indexes=[1]),
    fpn_hidden_size=_WIDTH,
    scale_factors=[4.0, 2.0, 1.0, 0.5],
    backbone_feature_sizes=[[_GRID * 4] * 2, [_GRID * 2] * 2, [_GRID] * 2],
)
TINY_SAM3 = dict(
    detector_config=dict(
        model_type="sam3",
        vision_config=_TINY_VISION,
        text_config=dict(model_type="clip_text_model", vocab_size=600, hidden_size=32, intermediate_size=64,
                         projection_dim=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=TEXT_TOKENS, hidden_act="gelu"),
        geometry_encoder_config=dict(hidden_size=_WIDTH, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=_WIDTH, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=_WIDTH, num_layers=1, num_queries=2, num_attention_heads=2,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=_WIDTH, num_upsampling_stages=3, num_attention_heads=2),
    ),
    tracker_config=dict(
        model_type="sam3_tracker_video",
        vision_config=_TINY_VISION,
        prompt_encoder_config=dict(hidden_size=_WIDTH, image_size=TINY_SAM3_IMAGE_SIZE, patch_size=14,
                                   mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=_WIDTH, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
        image_size=TINY_SAM3_IMAGE_SIZE, num_maskmem=3, max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=_WIDTH, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[_GRID, _GRID],
        memory_encoder_hidden_size=_WIDTH, memory_encoder_output_channels=64, mask_downsampler_embed_dim=_WIDTH,
        memory_fuser_num_layers=1, memory_fuser_embed_dim=_WIDTH, memory_fuser_intermediate_dim=64,
    ),
    low_res_mask_size=4 * _GRID,  # the detector's masks feed the tracker: 4x its token grid
    # random weights score every query ~0.25 (below the real 0.5 / 0.7) and the hot-start heuristics drop random
    # masklets: with these every query (2) is an object from frame 0 on, so the text path has something to track
    score_threshold_detection=0.0,
    new_det_thresh=0.0,
    hotstart_delay=0,
)
"""A ~4.2M-parameter SAM 3 video config (56x56 input, 2 queries) for tests and CPU smoke runs (~0.2 s for 9 small
frames). Its detection thresholds are 0 and hot-start is off, so random weights find 2 instances of any text."""


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP's 256 printable stand-ins for the bytes 0..255 (byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    table = dict(zip(printable, map(chr, printable)))
    table.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return [table[b] for b in range(256)]


def build_tiny_sam3_tokenizer(words: tuple[str, ...] = TINY_SAM3_WORDS):
    """A CLIP BPE tokenizer built in code (no files, no network): the 256 byte symbols and their end-of-word
    forms, merges that make each of `words` one token, and the two specials. Any text tokenizes (unknown
    words fall back to bytes); ids stay below TINY_SAM3's vocabulary of 600."""
    from transformers import CLIPTokenizer

    symbols = _byte_alphabet()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    merges = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_TOKENS)


def build_tiny_sam3(seed: int = 0):
    """A randomly initialised tiny `Sam3VideoModel` (TINY_SAM3), in eval mode on the CPU."""
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    torch.manual_seed(seed)
    tokenizer = build_tiny_sam3_tokenizer()
    config = dict(TINY_SAM3)
    config["detector_config"] = dict(config["detector_config"], text_config=dict(
        config["detector_config"]["text_config"], bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    return Sam3VideoModel(Sam3VideoConfig(**config)).eval()


def save_tiny_sam3(path: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny SAM 3 and its tokenizer as a transformers folder (loadable by
    `load_segmenter("sam3", sam3_model=path)`, like `facebook/sam3`)."""
    build_tiny_sam3(seed).save_pretrained(str(path))
    build_tiny_sam3_tokenizer().save_pretrained(str(path))
    return str(path)


class Sam3Unavailable(MaskEditError):
    """SAM 3 could not be loaded; `reason` is the short why (the message adds what to do)."""

    def __init__(self, reason: str, model_id: str):
        self.reason = reason
        self.model_id = model_id
        super().__init__(
            f"could not load SAM 3 from {model_id!r}: {reason}. SAM 3's weights are gated: accept the licence at "
            f"{SAM3_HUB_PAGE}, log in (`hf auth login`) and download them (`hf download {DEFAULT_SAM3_MODEL}`), or "
            "give a local folder of a SAM 3 checkpoint in transformers format (config.json, model.safetensors, "
            "tokenizer files) with --sam3-model; it needs transformers >= 5.1"
        )


def shared_tracker(video_model):
    """The video model's click tracker as a `Sam3TrackerVideoModel` whose vision encoder is the detector's ViT
    backbone with the tracker neck: what `Sam3TrackerVideoModel.from_pretrained` builds from the same folder,
    without a second copy of the weights. The video model itself is not changed (shallow copies)."""
    import copy

    vision = copy.copy(video_model.detector_model.vision_encoder)
    vision._modules = dict(vision._modules)  # its own submodule table: the detector keeps its neck
    vision.neck = video_model.tracker_neck
    tracker = copy.copy(video_model.tracker_model)
    tracker._modules = dict(tracker._modules)
    tracker.vision_encoder = vision
    return tracker


@dataclass
class TextInstance:
    """One object a text prompt found: its SAM 3 object id, detection score (0..1) and masks on every frame,
    bit-packed along x (`packed`: uint8 (F, H, ceil(W / 8))); `masks` unpacks them (bool (F, H, W))."""

    object_id: int
    score: float
    packed: np.ndarray
    width: int

    @property
    def masks(self) -> np.ndarray:
        return np.unpackbits(self.packed, axis=-1, count=self.width).astype(bool)

    @property
    def area0(self) -> int:
        """Pixels of the object on frame 0 (0 when it appears later)."""
        return int(np.unpackbits(self.packed[0], axis=-1, count=self.width).sum())

    @property
    def frames_found(self) -> int:
        return int(self.packed.reshape(len(self.packed), -1).any(axis=1).sum())


class Sam3Segmenter(Sam2Segmenter):
    """SAM 3: `find_instances` (text) and the `Segmenter` interface for clicks (its tracker)."""

    name = "sam3"
    title = "SAM 3"
    supports_text = True
    mean, std = SAM3_MEAN, SAM3_STD

    def __init__(self, video_model, tokenizer, device: str = "cpu", dtype=None, model_id: str = "sam3",
                 max_objects: int = 2 * MAX_OBJECTS):
        super().__init__(shared_tracker(video_model), device, dtype, model_id)
        detector_size = video_model.config.detector_config.vision_config.backbone_config.image_size
        if int(detector_size) != self.image_size:
            raise Sam3Unavailable(f"its detector reads {detector_size}px frames but its tracker {self.image_size}px",
                                  model_id)
        self.video_model = video_model
        self.tokenizer = tokenizer
        video_model.max_num_objects = min(int(video_model.max_num_objects), int(max_objects))  # bounds memory and time

    @classmethod
    def from_pretrained(cls, model_id: str, device: str | None = None, dtype=None, download: bool = True):
        """Load SAM 3 (video model + tokenizer) from a hub id or local folder. dtype defaults to bfloat16 on CUDA
        and float32 elsewhere. Raises Sam3Unavailable (a MaskEditError saying what to do) when it cannot."""
        import torch

        device = device or default_device()
        dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)

        def load(local_only: bool):
            from transformers import CLIPTokenizer, Sam3VideoModel
            from transformers.models.sam3_video import modeling_sam3_video

            if os.environ.get("MASKEDIT_SAM3_KERNELS") != "1" and modeling_sam3_video.cv_utils_kernel is None:
                modeling_sam3_video.cv_utils_kernel = False  # "tried, unavailable": no code download from the hub
            with quiet_transformers():
                tokenizer = CLIPTokenizer.from_pretrained(model_id, local_files_only=local_only)
                if len(tokenizer) <= 2:  # from_pretrained makes an empty one when the files are missing
                    raise Sam3Unavailable("it has no tokenizer files (tokenizer.json or vocab.json + merges.txt)",
                                          model_id)
                model = Sam3VideoModel.from_pretrained(model_id, dtype=dtype, local_files_only=local_only)
            return model, tokenizer

        model, tokenizer = load_checkpoint(model_id, download, load, Sam3Unavailable, "Sam3VideoModel",
                                           "pip install -U 'transformers>=5.1'", model_type="sam3_video")
        return cls(model.to(device).eval(), tokenizer, device, dtype, model_id)

    @staticmethod
    def _session_class():
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        return Sam3TrackerVideoInferenceSession

    def find_instances(self, frames: np.ndarray, text: str, *, max_instances: int = MAX_OBJECTS,
                       progress=None) -> list[TextInstance]:
        """Every instance of `text` in the clip (uint8 (F, H, W, 3)), tracked from frame 0 to the end: at most
        `max_instances`, highest detection score first ([] when SAM 3 finds none). progress(done, total) after
        each frame SAM 3 hands back (with hot-start on, the first ones come in a burst after 15 frames)."""
        import torch
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        self._check_alive()
        frames = check_frames(frames)
        text = check_text_prompt(text)
        num_frames, height, width = frames.shape[:3]
        session = Sam3VideoInferenceSession(video=None, video_height=height, video_width=width,
                                            inference_device=self.device, inference_state_device=self.device,
                                            video_storage_device=self.device, dtype=self.dtype)
        session.processed_frames = LazyFrames(frames, self._preprocess)
        prompt = session.add_prompt(text)
        tokens = self.tokenizer(text, return_tensors="pt", padding="max_length", max_length=TEXT_TOKENS,
                                truncation=True)
        session.prompt_input_ids[prompt] = tokens.input_ids.to(self.device)
        session.prompt_attention_masks[prompt] = tokens.attention_mask.to(self.device)
        packed: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        try:
            with torch.inference_mode():
                outputs = self.video_model.propagate_in_video_iterator(inference_session=session, start_frame_idx=0)
                for done, output in enumerate(outputs, 1):
                    hidden = set(output.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
                    ids = [i for i in sorted(output.obj_id_to_mask) if i not in hidden]
                    if ids:
                        logits = torch.cat([output.obj_id_to_mask[i] for i in ids])[:, None]
                        surest = [float(output.obj_id_to_tracker_score.get(i, 0.0)) for i in ids]
                        found = without_overlaps(self._upsample(logits, height, width), surest)
                        for object_id, mask in zip(ids, found):
                            if not mask.any():
                                continue
                            if object_id not in packed:
                                packed[object_id] = np.zeros((num_frames, height, (width + 7) // 8), np.uint8)
                            packed[object_id][int(output.frame_idx)] = np.packbits(mask, axis=-1)
                            score = float(output.obj_id_to_score.get(object_id, 0.0))
                            scores[object_id] = max(scores.get(object_id, 0.0), score)
                    if progress:
                        progress(min(done, num_frames), num_frames)
            removed = set(session.hotstart_removed_obj_ids)
        finally:
            session.reset_state()
            del session
            self._empty_cache()
        found = [TextInstance(i, scores[i], packed[i], width) for i in packed if i not in removed]
        found.sort(key=lambda instance: (-instance.score, instance.object_id))
        return found[:max(0, int(max_instances))]

    def release(self) -> None:
        """Drop the video model, the tracker and the tokenizer, and the CUDA memory they held."""
        self.video_model = None
        self.tokenizer = None
        super().release()

    def _upsample(self, logits, height: int, width: int) -> np.ndarray:
        """Low-resolution logits (objects, 1, h, w) → bool (objects, height, width), bilinear then > 0 (as
        `Sam3VideoProcessor.postprocess_outputs`: straight to the frame size)."""
        import torch.nn.functional as F

        return (F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False) > 0)[:, 0] \
            .cpu().numpy()


def without_overlaps(found: np.ndarray, surest: list[float]) -> np.ndarray:
    """Masks bool (N, H, W) of one prompt with each pixel left to one object: the one with the highest
    score in `surest` (per object) among those that claim it."""
    if len(found) < 2:
        return found
    claims = np.where(found, np.asarray(surest, dtype=np.float32)[:, None, None], -np.inf)
    winner = claims.argmax(axis=0)
    return found & (winner[None] == np.arange(len(found))[:, None, None])
