"""Loading Wan2.1-I2V pipelines, and the tiny random model that tests, the offline app and benchmarks share.

`load_pipeline("tiny")` builds a complete, randomly initialised Wan I2V pipeline in a fraction of a second
with no download; any other name is a hub id or a local diffusers-format folder, loaded with
`MaskEditPipeline.from_pretrained` exactly as real weights are. Tiny configs live here and nowhere else.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass

import torch

from ..errors import MaskEditError
from ..method.pipeline import MaskEditPipeline
from ..runtime import default_device, quiet_transformers

from ..defaults import DEFAULT_MODEL_ID, TINY  # noqa: E402  (one definition, torch-free)

TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=36,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=16,
    added_kv_proj_dim=32,  # the real model's image K/V layout (add_k_proj / add_v_proj)
    rope_max_seq_len=1024,  # the real model's: the rotary table caps latent frames, rows and columns (no weights)
)
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_TEXT_ENCODER = dict(d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, relative_attention_num_buckets=8)
TINY_IMAGE_ENCODER = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=4,
    projection_dim=16,
)
TINY_SIZE = (64, 64)
"""(width, height) the tiny model is exercised at: 8x8 latents, 4x4 patches per latent frame."""

REAL_TRANSFORMER_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
)
"""Wan2.1-I2V-14B-480P transformer config, for real-size random-weight benchmarks."""

REAL_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
"""Wan2.1 VAE (`AutoencoderKLWan`, float32; both 14B I2V models share it)."""
REAL_TEXT_ENCODER = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
)
"""umT5-XXL encoder (`UMT5EncoderModel`, bfloat16 on a GPU)."""
REAL_IMAGE_ENCODER = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu",
)
"""CLIP ViT-H/14 vision tower (`CLIPVisionModel`, float32; Wan reads its penultimate hidden states)."""


@dataclass(frozen=True)
class ModelSpec:
    """A known base model's component configs, written in code so that planning needs no download."""

    model_id: str
    transformer: dict
    vae: dict
    text_encoder: dict
    image_encoder: dict | None
    default_size: tuple[int, int]  # (width, height) the model was trained at
    transformer_2: dict | None = None  # the low-noise expert of a two-expert model (Wan2.2-A14B)
    boundary_ratio: float | None = None  # with transformer_2: timesteps ≥ ratio·1000 go to `transformer`


KNOWN_MODELS: dict[str, ModelSpec] = {
    spec.model_id: spec
    for spec in (
        ModelSpec(DEFAULT_MODEL_ID, REAL_TRANSFORMER_14B, REAL_VAE, REAL_TEXT_ENCODER, REAL_IMAGE_ENCODER, (832, 480)),
        ModelSpec("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", REAL_TRANSFORMER_14B, REAL_VAE, REAL_TEXT_ENCODER,
                  REAL_IMAGE_ENCODER, (1280, 720)),
    )
}
"""Wan2.1-I2V-14B 480P and 720P (same architecture, trained at different sizes)."""


def transformer_config(model: str) -> dict | None:
    """The transformer config of `model` (tiny, a known hub id, or a local diffusers folder); None if unknown."""
    if model == TINY:
        return dict(TINY_TRANSFORMER)
    if model in KNOWN_MODELS:
        return dict(KNOWN_MODELS[model].transformer)
    path = os.path.join(str(model), "transformer", "config.json")
    if os.path.isfile(path):
        import json

        with open(path) as handle:
            return json.load(handle)
    return None


def check_clip_size(model: str | dict | None, num_frames: int, width: int, height: int) -> None:
    """Refuse a clip the transformer of `model` (a name as for `load_pipeline`, or its transformer config)
    cannot serve, before any work starts (MaskEditError saying why; nothing to check for an unknown model).

    The rotary position table has `rope_max_seq_len` rows per axis: latent frames ((F − 1)/4 + 1) and
    patch rows/columns (H/16, W/16 with the Wan VAE's 8x and the 2x2 patches) must each fit in it.
    """
    config = transformer_config(model) if isinstance(model, str) else model
    if not config:
        return
    limit = int(config.get("rope_max_seq_len", 1024))
    patch_t, patch_h, patch_w = config.get("patch_size", (1, 2, 2))
    latent_frames = (num_frames - 1) // 4 + 1
    axes = {"latent frames": (latent_frames // patch_t, f"{num_frames} frames"),
            "patch rows": (height // (8 * patch_h), f"height {height}"),
            "patch columns": (width // (8 * patch_w), f"width {width}")}
    for axis, (count, what) in axes.items():
        if count > limit:
            raise MaskEditError(
                f"{what} gives {count} {axis}, more than the model's position table holds ({limit}); "
                "use fewer frames or a smaller size"
            )


@dataclass
class LoadedModel:
    """A pipeline and a one-line description of what it is, for banners and logs."""

    pipe: MaskEditPipeline
    name: str
    description: str
    is_tiny: bool


def tiny_tokenizer():
    """A small Unigram T5 tokenizer built in code (letters, digits, punctuation): saves and reloads."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + c, -1.0) for c in string.ascii_lowercase]
    pieces += [(c, -2.0) for c in string.ascii_lowercase + string.digits + ",.!?'-"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_components(seed: int = 0) -> dict:
    """Every component of a Wan2.1 I2V pipeline, tiny and randomly initialised from `seed`."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TINY_TEXT_ENCODER)).eval()
    torch.manual_seed(seed + 1)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(**TINY_IMAGE_ENCODER)).eval()
    size = TINY_IMAGE_ENCODER["image_size"]
    with quiet_transformers():
        from transformers import CLIPImageProcessor

        image_processor = CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    torch.manual_seed(seed + 3)
    transformer = WanTransformer3DModel(**TINY_TRANSFORMER).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return dict(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
        image_processor=image_processor, image_encoder=image_encoder, transformer=transformer,
    )


def build_tiny_pipeline(seed: int = 0, pipeline_class=MaskEditPipeline):
    """A complete tiny Wan I2V pipeline (`MaskEditPipeline` unless another class is given), on the CPU."""
    pipe = pipeline_class(**tiny_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny pipeline as a diffusers folder (loadable by `load_pipeline(path)`); returns the path."""
    build_tiny_pipeline(seed).save_pretrained(str(path))
    return str(path)


def load_pipeline(
    model: str = DEFAULT_MODEL_ID,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Load a pipeline by name: `"tiny"`, a local diffusers folder, or a hub id (cache or download).

    dtype defaults to bfloat16 on CUDA and float32 on CPU for the transformer and text encoder; the VAE
    and the CLIP image encoder stay float32 (Wan's recommendation). Raises MaskEditError with what to do
    when the model cannot be found or loaded.
    """
    device = device or default_device()
    if model == TINY:
        pipe = build_tiny_pipeline(seed)
        description = "built-in tiny model (random weights: shows the workflow, not the method's quality)"
        return LoadedModel(pipe.to(device), TINY, description, True)
    if model == TINY_WAN22:
        pipe = build_tiny_two_expert_pipeline(seed)
        description = "built-in tiny two-expert model like Wan2.2-I2V-A14B (random weights: shows the workflow only)"
        return LoadedModel(pipe.to(device), TINY_WAN22, description, True)

    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    try:
        pipe = _from_pretrained(model, dtype)
    except (OSError, ValueError, EnvironmentError) as error:
        path_like = model.startswith(("/", ".", "~")) or model.count("/") != 1  # a hub id is owner/name
        where = "folder" if os.path.isdir(model) else ("no such folder" if path_like else "hub id")
        raise MaskEditError(
            f"could not load the model {model!r} ({where}): {error}. Pass a local diffusers-format folder of a "
            f"Wan2.1 I2V model, a hub id you can reach, or --model {TINY} for the built-in small model."
        ) from None
    pipe.set_progress_bar_config(disable=True)
    is_tiny = pipe.transformer.config.num_layers <= TINY_TRANSFORMER["num_layers"] * 4
    description = f"{model} ({pipe.transformer.config.num_layers} blocks, {str(dtype).replace('torch.', '')})"
    return LoadedModel(pipe.to(device), model, description, is_tiny)


def _from_pretrained(model: str, dtype: torch.dtype) -> MaskEditPipeline:
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel

    from ..runtime import hub_files_only, missing_offline

    local = os.path.isdir(model)
    if not local and not os.path.exists(model) and "/" not in model:
        raise OSError("it is neither a folder nor a hub id of the form owner/name")
    files_only, offline = hub_files_only(model)  # without a reachable hub: the local cache only (seconds, not minutes)
    try:
        index = MaskEditPipeline.load_config(model, local_files_only=files_only)
    except (OSError, ValueError):
        if offline and not local:
            raise OSError(missing_offline(offline)) from None
        raise
    check_supported_layout(index, model)
    options = dict(local_files_only=files_only)
    with quiet_transformers():
        vae = AutoencoderKLWan.from_pretrained(model, subfolder="vae", dtype=torch.float32, **options)
        if not has_component(index, "image_encoder"):  # Wan2.2-I2V-A14B has no CLIP image encoder
            return MaskEditPipeline.from_pretrained(model, vae=vae, dtype=dtype, **options)
        image_encoder = CLIPVisionModel.from_pretrained(model, subfolder="image_encoder", dtype=torch.float32, **options)
        return MaskEditPipeline.from_pretrained(model, vae=vae, image_encoder=image_encoder, dtype=dtype, **options)


# ----- more bases: Wan2.1-I2V-14B-720P (same layout as 480P) and Wan2.2-I2V-A14B (two experts)

WAN21_720P_MODEL_ID = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
WAN22_I2V_MODEL_ID = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
TINY_WAN22 = "tiny-wan2.2"
"""The built-in tiny two-expert model (Wan2.2-I2V-A14B's layout, random weights)."""
WAN22_BOUNDARY_RATIO = 0.9
"""Wan2.2-I2V-A14B: timesteps ≥ 0.9·1000 go to `transformer` (high noise), the rest to `transformer_2`."""

TINY_TRANSFORMER_WAN22 = {**TINY_TRANSFORMER, "image_dim": None, "added_kv_proj_dim": None}
"""A tiny Wan2.2 I2V expert: the same 16 + 4 + 16 input channels, no image cross-attention."""
REAL_TRANSFORMER_A14B_EXPERT = {**REAL_TRANSFORMER_14B, "image_dim": None, "added_kv_proj_dim": None}
"""One expert of Wan2.2-I2V-A14B (each of the two is this 14B config), for real-size random-weight benchmarks."""
KNOWN_MODELS[WAN22_I2V_MODEL_ID] = ModelSpec(
    WAN22_I2V_MODEL_ID, REAL_TRANSFORMER_A14B_EXPERT, REAL_VAE, REAL_TEXT_ENCODER, None, (832, 480),
    transformer_2=REAL_TRANSFORMER_A14B_EXPERT, boundary_ratio=WAN22_BOUNDARY_RATIO,
)  # Wan2.2-I2V-A14B: two 14B experts, no CLIP image encoder, Wan2.1's VAE and umT5


def tiny_two_expert_components(seed: int = 0) -> dict:
    """Every component of a Wan2.2-I2V-A14B-style pipeline, tiny and random from `seed`: two experts
    (`transformer` high noise, `transformer_2` low noise) without image cross-attention, no CLIP image
    encoder, `boundary_ratio` 0.9. Shares the text encoder, VAE and scheduler of `tiny_components(seed)`."""
    from diffusers import WanTransformer3DModel

    components = tiny_components(seed)
    components.update(image_encoder=None, image_processor=None, boundary_ratio=WAN22_BOUNDARY_RATIO)
    torch.manual_seed(seed + 3)
    components["transformer"] = WanTransformer3DModel(**TINY_TRANSFORMER_WAN22).eval()
    torch.manual_seed(seed + 4)
    components["transformer_2"] = WanTransformer3DModel(**TINY_TRANSFORMER_WAN22).eval()
    return components


def build_tiny_two_expert_pipeline(seed: int = 0, pipeline_class=MaskEditPipeline):
    """A complete tiny two-expert (Wan2.2-style) pipeline on the CPU."""
    pipe = pipeline_class(**tiny_two_expert_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_two_expert_pipeline(path: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny two-expert pipeline as a diffusers folder (loadable by `load_pipeline(path)`)."""
    build_tiny_two_expert_pipeline(seed).save_pretrained(str(path))
    return str(path)


def has_component(model_index: dict, name: str) -> bool:
    """True when a diffusers `model_index.json` (as a dict) names a stored component `name`."""
    entry = model_index.get(name)
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


def check_supported_layout(model_index: dict, model: str) -> None:
    """Refuse, before any weights load, a Wan pipeline whose condition MaskEdit cannot carry.

    Wan2.2-TI2V-5B (`expand_timesteps`) puts the first frame's latent in place of the noise with a
    per-token timestep of 0 and has no mask channels: a mask-aware condition has nowhere to go."""
    if model_index.get("expand_timesteps"):
        raise ValueError(
            f"{model} is a Wan2.2-TI2V-5B-style model (expand_timesteps): its first frame replaces the noise and it "
            "has no mask channels, so the mask-aware condition cannot be given to it. Use Wan2.1-I2V-14B-480P/720P "
            "or Wan2.2-I2V-A14B"
        )


def default_model() -> str:
    """"tiny" without a CUDA GPU, else the real Wan2.1 I2V model."""
    import torch

    return DEFAULT_MODEL_ID if torch.cuda.is_available() else TINY
