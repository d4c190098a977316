"""SAM 3's speed and memory at real size without a GPU or its weights: the planner's meta-device dry run
(`planner.dry_run`) of the real `Sam3VideoConfig()` (what facebook/sam3 ships) in bfloat16.

    est = estimate_sam3(num_frames=49, width=832, height=480, objects=2)
    est.peak_gpu_bytes, est.frame_flops, est.seconds(get_card("h100"))     # a 49-frame edit's text prompt
    print(readme_rows())                                                    # the README's backends table rows

What runs on the meta device, exactly as the segmenter calls it per frame: the detector's ViT backbone and
FPN on a 1008x1008 frame plus the tracker neck (`get_vision_features`, `get_vision_features_for_tracker`),
the DETR detector for one text prompt (`detector_model(vision_embeds, text_embeds)`, 200 queries), and one
tracker step for every tracked object at once (memory attention over the 7 memories and the object pointers,
the SAM mask decoder, the memory encoder); the CLIP text encoder once per prompt. Clicks (`Sam3Segmenter`'s
tracker) run the same backbone and tracker step without the detector.

Modelled, not run: the tracker's memory bank (per frame and object, its memory features and position encoding,
64 x 72 x 72 each, and the 288x288 mask logits, bf16, held on the GPU for the clip); the masks MaskEdit keeps
in host memory (bit-packed, objects x frames x H x W / 8 bytes); the CUDA context and allocator slack (not
counted, as in the planner). Time: FLOPs / (the card's dense bf16 peak x `estimates.UTILISATION`), an
assumption until a GPU run measures it; the floor (100% of peak) is given too. The detector's mask NMS and hole
filling (a hub kernel MaskEdit does not fetch) are not run either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MaskEditError
from .cards import Card, get_card
from .estimates import UTILISATION

SAM3_MODEL = "facebook/sam3"
PATCH = 14
TEXT_TOKENS = 32
README_CARD = "h100"
README_CLIP = (49, 832, 480)  # frames, width, height: the method's clip
README_OBJECTS = (1, 4)


@dataclass
class SegmentationEstimate:
    """The dry run's figures for SAM 3 on one clip with `objects` tracked objects (see the module docstring).
    phases: {"vision", "text", "detector", "tracker"}: `planner.Phase` each (peak GPU bytes with the weights,
    FLOPs per call: vision, detector and tracker per frame, text per prompt)."""

    model: str
    num_frames: int
    width: int
    height: int
    objects: int
    parameters: int
    weights_bytes: int
    phases: dict
    memory_bank_bytes: int  # the tracker's memories for the whole clip (modelled)
    host_mask_bytes: int  # the masks MaskEdit keeps, bit-packed
    notes: list[str] = field(default_factory=list)

    @property
    def peak_gpu_bytes(self) -> int:
        """The largest phase (weights and activations) plus the clip's memory bank."""
        return max(p.peak_gpu_bytes for p in self.phases.values()) + self.memory_bank_bytes

    def frame_flops(self, text: bool = True) -> int:
        """FLOPs of one frame: backbone + tracker step (+ the detector for a text prompt)."""
        names = ("vision", "detector", "tracker") if text else ("vision", "tracker")
        return sum(self.phases[name].flops for name in names)

    def clip_flops(self, text: bool = True) -> int:
        return self.num_frames * self.frame_flops(text) + (self.phases["text"].flops if text else 0)

    def seconds(self, card: Card, text: bool = True, utilisation: float = UTILISATION) -> float:
        """Seconds for the whole clip on `card` at `utilisation` of its dense bf16 peak (1.0: the floor)."""
        return self.clip_flops(text) / (card.bf16_tflops * 1e12 * utilisation)


def estimate_sam3(num_frames: int = 49, width: int = 832, height: int = 480, objects: int = 1,
                  attention: str = "flash", config=None) -> SegmentationEstimate:
    """Dry-run SAM 3 at real size (`config`: a `Sam3VideoConfig`, default the real one) for a clip of
    `num_frames` frames of width x height with `objects` tracked objects; a few seconds on a CPU."""
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    from .planner import dry_run

    if num_frames < 1 or width < 1 or height < 1 or not 1 <= objects <= 200:
        raise MaskEditError("estimate_sam3 needs at least 1 frame, a positive size and 1..200 objects")
    config = config or Sam3VideoConfig()
    size = int(config.detector_config.vision_config.backbone_config.image_size)
    grid = size // PATCH
    tracker_config = config.tracker_config
    state: dict = {}

    def empty(*shape, dtype=torch.bfloat16):
        return torch.empty(*shape, device="meta", dtype=dtype)

    def vision(model):
        state["vision"] = model.detector_model.get_vision_features(empty(1, 3, size, size))
        state["tracker"] = model.get_vision_features_for_tracker(state["vision"])

    def text(model):
        ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device="meta")
        state["mask"] = torch.ones(1, TEXT_TOKENS, dtype=torch.long, device="meta")
        state["text"] = model.detector_model.get_text_features(input_ids=ids, attention_mask=state["mask"],
                                                               return_dict=True)

    def detector(model):
        decoder = model.detector_model.detr_decoder
        rpb = type(decoder)._get_rpb_matrix  # its grid comes from a tensor's values, which meta tensors lack
        decoder._get_rpb_matrix = lambda boxes, shape: rpb(decoder, boxes, (grid, grid))
        try:
            model.detector_model(vision_embeds=state["vision"], text_embeds=state["text"],
                                 attention_mask=state["mask"])
        finally:
            del decoder._get_rpb_matrix

    def tracker(model):
        step = model.tracker_model
        width_ = tracker_config.memory_attention_hidden_size
        memory = tracker_config.memory_encoder_output_channels
        pointers = tracker_config.max_object_pointers_in_encoder * (width_ // memory)
        tokens = grid * grid
        bank = tracker_config.num_maskmem * tokens + pointers
        current = empty(tokens, objects, width_)
        remembered = empty(bank, objects, memory)
        conditioned = step.memory_attention(current_vision_features=current, memory=remembered,
                                            current_vision_position_embeddings=current,
                                            memory_posision_embeddings=remembered, num_object_pointer_tokens=pointers)
        top = conditioned.reshape(objects, tokens, width_).transpose(1, 2).reshape(objects, width_, grid, grid)
        features = state["tracker"][0]
        high = [f.expand(-1, objects, -1).permute(1, 2, 0).reshape(objects, f.shape[-1], *s)
                for f, s in zip(features[:-1], step.backbone_feature_sizes[:-1])]
        out = step._single_frame_forward(image_embeddings=[*high, top], multimask_output=False)
        step._encode_new_memory(current, out.high_res_masks, out.object_score_logits, False)

    from ..runtime import quiet_transformers

    built = {}

    def build():
        with quiet_transformers():
            built["model"] = Sam3VideoModel(config).eval()
        return built["model"]

    phases = dry_run(build, {"vision": vision, "text": text, "detector": detector, "tracker": tracker},
                     attention=attention)
    parameters = sum(p.numel() for p in built["model"].parameters())
    weights = sum(p.numel() * p.element_size() for p in built["model"].parameters())
    low = int(config.low_res_mask_size)
    per_frame_object = 2 * (2 * tracker_config.memory_encoder_output_channels * grid * grid + low * low)
    return SegmentationEstimate(
        SAM3_MODEL, num_frames, width, height, objects, parameters, weights, phases,
        memory_bank_bytes=num_frames * objects * per_frame_object,
        host_mask_bytes=num_frames * objects * height * ((width + 7) // 8),
        notes=[f"input {size}x{size}, {config.detector_config.detr_decoder_config.num_queries} queries, "
               f"{tracker_config.num_maskmem} memories, bfloat16, {attention} attention"])


def readme_rows(card: str = README_CARD) -> str:
    """The README's SAM 3 rows of the backends table: text and clicks for README_OBJECTS objects on the method's
    clip (README_CLIP), peak GPU memory and seconds on `card` (estimates)."""
    chosen = get_card(card)
    frames, width, height = README_CLIP
    rows = []
    for objects in README_OBJECTS:
        est = estimate_sam3(frames, width, height, objects)
        for text, what in ((True, "text"), (False, "clicks")):
            rows.append(
                f"| SAM 3, {what}, {objects} object{'s' if objects > 1 else ''} | {frames}x{width}x{height} | "
                f"{est.peak_gpu_bytes / 1e9:.1f} GB | {est.frame_flops(text) / 1e12:.1f} TFLOP | "
                f"{est.seconds(chosen, text):.1f} s ({est.seconds(chosen, text, 1.0):.1f} s floor) |")
    return "\n".join(rows)
