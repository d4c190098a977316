"""Captions for training prompts: Florence-2 `<DETAILED_CAPTION>` through transformers (METHOD.md §4, §5).

The method's prompt is the trigger token + a detailed caption of the first frame (stage 1, inference) or
of each edited later frame (stage 2). As the reference code, we caption with Florence-2 `<DETAILED_CAPTION>`
(at most 256 new tokens, as the reference; 3 beams, Florence-2's sample setting), strip the opening "The image shows " (that one only), then
prefix the trigger with `maskedit.method.conditioning.compose_prompt`.

    captioner = load_captioner()                    # florence-community/Florence-2-large, or a folder
    captioner.describe(frame)                       # "a red car driving on a road ..."
    captioner.caption(frame)                        # "p3rs0n, a red car driving on a road ..."
    captioner.release()                             # free the GPU for the video model

When the captioner cannot be loaded (no network, no weights), `load_captioner` raises MaskEditError
saying that the user must type the prompt; there is no offline fallback caption.
The checkpoint must be in transformers' native Florence-2 format (the `florence-community/` conversions);
the original `microsoft/Florence-2-*` repositories need `trust_remote_code` and are not supported.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..method.conditioning import DEFAULT_TRIGGER, compose_prompt
from ..errors import MaskEditError, ModelUnavailable

from ..defaults import DEFAULT_CAPTION_MODEL  # noqa: E402,F401  (one definition, torch-free)
CAPTION_TASK = "<DETAILED_CAPTION>"
MAX_NEW_TOKENS = 256
"""New tokens per caption: the reference's 256 (Florence-2's own example uses 1,024)."""
NUM_BEAMS = 3

REFERENCE_OPENING = "The image shows "
"""The one opening the reference code strips from Florence-2's `<DETAILED_CAPTION>` (METHOD.md §4)."""


def clean_caption(text: str) -> str:
    """A Florence-2 caption as the reference code uses it: special tokens and extra whitespace removed, then the
    opening "The image shows " stripped — that opening only, as the reference does, so the prompts match its.

    "The image shows a red car on a road." → "a red car on a road."; "The image is a close-up of a cat." stays as
    it is (the reference keeps it); a caption that is only the opening stays as it is.
    """
    text = " ".join(str(text).replace("<s>", " ").replace("</s>", " ").replace("<pad>", " ").split())
    if text.startswith(REFERENCE_OPENING) and len(text) > len(REFERENCE_OPENING):
        text = text[len(REFERENCE_OPENING):]
    return text.strip()


class Captioner:
    """Florence-2 (`Florence2ForConditionalGeneration` + its processor) captioning frames."""

    def __init__(self, model, processor, device: str = "cpu", dtype=None, model_id: str = "florence2",
                 task: str = CAPTION_TASK, max_new_tokens: int = MAX_NEW_TOKENS, num_beams: int = NUM_BEAMS):
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.processor = processor
        self.device = str(device)
        self.dtype = dtype or next(model.parameters()).dtype
        self.model_id = model_id
        self.task = task
        self.label = f"Florence-2 ({model_id}, {self.device})"

    def describe(self, image: np.ndarray) -> str:
        """The cleaned caption of one (H, W, 3) uint8 RGB image (no trigger)."""
        return self.describe_many([image])[0]

    def describe_many(self, images) -> list[str]:
        """Cleaned captions of several images (one generate call)."""
        import torch
        from PIL import Image

        if self.model is None:
            raise MaskEditError("this captioner was released; load it again (load_captioner)")
        pictures = []
        for image in images:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise MaskEditError(f"expected an (H, W, 3) uint8 RGB image to caption, got {image.shape} {image.dtype}")
            pictures.append(Image.fromarray(image))
        if not pictures:
            return []
        inputs = self.processor(images=pictures, text=[self.task] * len(pictures), return_tensors="pt", padding=True)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                            do_sample=False)
        # <DETAILED_CAPTION> is plain text (Florence-2's "pure_text" post-processing only drops <s>/</s>).
        return [clean_caption(text) for text in self.processor.batch_decode(generated, skip_special_tokens=True)]

    def caption(self, image: np.ndarray, trigger: str = DEFAULT_TRIGGER) -> str:
        """The training prompt of an image: the trigger token + its cleaned caption."""
        return compose_prompt(self.describe(image), trigger)

    def captions(self, images, trigger: str = DEFAULT_TRIGGER) -> list[str]:
        """`caption` for several images (e.g. the edited later frames of stage 2)."""
        return [compose_prompt(text, trigger) for text in self.describe_many(images)]

    def release(self) -> None:
        """Drop the model and free its (GPU) memory."""
        self.model = None
        self.processor = None
        gc.collect()
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()


class CaptionerUnavailable(ModelUnavailable):
    """Florence-2 could not be loaded; `reason` is the short why (the message adds what to do)."""

    @staticmethod
    def describe(reason: str, model_id: str) -> str:
        return (f"could not load the captioner {model_id!r}: {reason}. No caption can be made automatically: type it "
                "yourself (--train-prompt \"a short description of the first frame\"), or give a local Florence-2 "
                "folder in transformers format (--caption-model)")


def load_captioner(model_id: str | None = None, device: str | None = None, dtype=None,
                   download: bool = True, max_new_tokens: int = MAX_NEW_TOKENS) -> Captioner:
    """Load Florence-2 from a hub id or a local folder (default DEFAULT_CAPTION_MODEL).

    dtype defaults to float16 on CUDA and float32 elsewhere. A hub id is fetched only when the hub answers
    (`runtime.hub_unreachable`, seconds); otherwise only the local cache is read. Raises CaptionerUnavailable (a
    MaskEditError) when it cannot be loaded: the message says why, whole, and tells the user to type the caption.
    """
    import torch

    from ..runtime import default_device, hub_files_only, missing_offline, quiet_transformers

    model_id = model_id or DEFAULT_CAPTION_MODEL
    device = device or default_device()
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    local = os.path.isdir(model_id)
    if not local and (model_id.startswith((".", os.sep, "~")) or model_id.count("/") > 1):
        raise CaptionerUnavailable(f"the folder {model_id} does not exist", model_id)
    files_only, offline = hub_files_only(model_id) if download else (True, None)
    try:
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        with quiet_transformers():
            processor = AutoProcessor.from_pretrained(model_id, local_files_only=files_only)
            model = Florence2ForConditionalGeneration.from_pretrained(model_id, dtype=dtype,
                                                                      local_files_only=files_only)
    except (ImportError, OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        if offline and not local:
            raise CaptionerUnavailable(missing_offline(offline), model_id) from None
        raise CaptionerUnavailable(first_line(error), model_id) from None
    return Captioner(model.to(device).eval(), processor, device, dtype, model_id, max_new_tokens=max_new_tokens)


def first_line(error: BaseException) -> str:
    """An exception's first line, whole (its type when it has no text)."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


# ----- a tiny random Florence-2, for tests and offline smoke runs

TINY_FLORENCE2_IMAGE_SIZE = 64
TINY_FLORENCE2_TEXT = dict(
    model_type="bart", max_position_embeddings=256, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
    decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, d_model=32, bos_token_id=0,
    pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0, dropout=0.0,
    attention_dropout=0.0, activation_dropout=0.0,
)
TINY_FLORENCE2_VISION = dict(
    depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 8], patch_padding=[3, 1], patch_prenorm=[False, True],
    embed_dim=[16, 32], num_heads=[1, 2], num_groups=[1, 2], window_size=4, projection_dim=32, drop_path_rate=0.0,
)
"""A ~90K-parameter Florence-2: 64x64 images → 2x2 patches + 1 pooled token = 5 image tokens."""


def _byte_level_alphabet() -> list[str]:
    """The 256 characters byte-level BPE (GPT-2, BART) maps bytes to."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def tiny_florence2_processor():
    """A Florence-2 processor built in code: a byte-level BART tokenizer (no merges) with the `<image>`
    token, and a PIL CLIP image processor at 64x64."""
    from transformers import BartTokenizer, Florence2Processor
    from transformers.models.clip import CLIPImageProcessorPil

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in _byte_level_alphabet():
        vocab.setdefault(char, len(vocab))
    vocab["<mask>"] = len(vocab)
    tokenizer = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    size = {"height": TINY_FLORENCE2_IMAGE_SIZE, "width": TINY_FLORENCE2_IMAGE_SIZE}
    image_processor = CLIPImageProcessorPil(size=size, crop_size=size, do_center_crop=False, image_seq_length=5)
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_florence2(seed: int = 0):
    """(model, processor): a randomly initialised tiny Florence-2 and its processor, on the CPU."""
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    processor = tiny_florence2_processor()
    tokenizer = processor.tokenizer
    config = Florence2Config(text_config=dict(TINY_FLORENCE2_TEXT, vocab_size=len(tokenizer)),
                             vision_config=TINY_FLORENCE2_VISION, image_token_id=tokenizer.image_token_id)
    torch.manual_seed(seed)
    return Florence2ForConditionalGeneration(config).eval(), processor


def save_tiny_florence2(path: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny Florence-2 and its processor to a folder (loadable by `load_captioner(path)`)."""
    model, processor = build_tiny_florence2(seed)
    model.save_pretrained(str(path))
    processor.save_pretrained(str(path))
    return str(path)


# ----- the caption rule of training (METHOD.md §4–§5)


@dataclass
class TrainingCaptions:
    """The captions of one edit (no trigger): `caption` of the ORIGINAL first frame (stage 1 trains on it),
    `later` {k: caption of edited later frame k} (stage 2), and `notes` saying which were made automatically."""

    caption: str
    later: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def training_captions(original_first_frame: np.ndarray, edited_later: dict | None = None,
                      caption: str | None = None, later_captions: dict | None = None,
                      load: Callable[[], "Captioner"] | None = None) -> TrainingCaptions:
    """Apply the reference's caption rule: stage 1 trains on the caption of the ORIGINAL first frame, stage 2
    on each edited later frame's own caption; generation uses the edited first frame's (not made here).

    original_first_frame: (H, W, 3) uint8; edited_later: {k: edited frame k (H, W, 3) uint8}. Given captions
    are kept; the missing ones are made by the captioner `load()` returns (Florence-2 `<DETAILED_CAPTION>`,
    loaded once, released after). When it cannot be loaded, MaskEditError asks for the captions: there is no
    fallback, least of all to the edit's caption (that would teach the LoRA the edit as the source's look).
    """
    edited_later = edited_later or {}
    given_later = {int(k): str(v).strip() for k, v in (later_captions or {}).items() if str(v).strip()}
    unknown = sorted(set(given_later) - set(edited_later))
    if unknown:
        raise MaskEditError(f"captions were given for frame(s) {', '.join(map(str, unknown))}, which are not among "
                            "the edited later frames; give each caption with its frame")
    caption = (caption or "").strip()
    missing_later = [k for k in sorted(edited_later) if k not in given_later]
    result = TrainingCaptions(caption, dict(given_later))
    if caption and not missing_later:
        return result
    what = ([] if caption else ["the ORIGINAL first frame (--train-prompt)"]) + (
        [f"edited later frame(s) {', '.join(map(str, missing_later))} (--later-prompt K=TEXT)"] if missing_later else [])
    def ask(error: MaskEditError) -> MaskEditError:
        why = (f"could not load the captioner {error.model_id!r}: {error.reason}"
               if isinstance(error, CaptionerUnavailable) else str(error))
        return MaskEditError(
            f"training needs the caption of {' and of '.join(what)}, and none could be made automatically ({why}); "
            "type it — not the edit's caption, which belongs to generation"
        )

    try:
        if load is None:
            raise MaskEditError("no captioner was given")
        captioner = load()
    except MaskEditError as error:
        raise ask(error) from None
    try:
        if not caption:
            result.caption = captioner.describe(original_first_frame)
            result.notes.append(f"caption of the original first frame ({captioner.label}): {result.caption}")
        for k, text in zip(missing_later, captioner.describe_many([edited_later[k] for k in missing_later])):
            result.later[k] = text
            result.notes.append(f"caption of edited frame {k} ({captioner.label}): {text}")
    except MaskEditError as error:  # a captioner that loads its model on first use (the app's GPU call) fails here
        raise ask(error) from None
    finally:
        captioner.release()
    return result
