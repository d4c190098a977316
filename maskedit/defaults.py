"""Names and defaults that the command line and the app show before any model code is imported (`--help`
answers without importing torch). Each is defined here once; the modules that use them import them from here."""

DEFAULT_TRIGGER = "p3rs0n"
"""The trigger token composed into every training and generation prompt (conditioning.compose_prompt)."""
TINY = "tiny"
"""The built-in tiny model's name (random weights; models.build_tiny_pipeline)."""
DEFAULT_MODEL_ID = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
"""The real model loaded by default with a CUDA GPU."""
DEFAULT_WINDOW_STRIDE = 4
"""Frames between the starts of temporal training windows (METHOD.md §7) unless set otherwise."""
DEFAULT_WINDOW_FRAMES = 81
"""Frames of one window of the base (Wan2.1/2.2 I2V are trained on 81 frames at 16 fps): a longer clip is trained on
windows across it and generated window after window (METHOD.md §7b)."""
DEFAULT_HANDOVER_FRAMES = 1
"""Generated frames a window hands to the next (kept whole): with 1 every window's condition is the trained one."""
DEFAULT_STAGE2_EPOCHS = 10
"""Stage-2 epochs (METHOD.md §5) unless set otherwise."""
DEFAULT_CAPTION_MODEL = "florence-community/Florence-2-large"
"""The Florence-2 model that writes captions (captioning.load_captioner)."""
SAMPLERS = ("euler", "unipc")
"""Flow-matching Euler (the reference code's, DiffSynth) and UniPC (Wan's own default, diffusers' Wan repos)."""
DEFAULT_SAMPLER = "euler"
"""The method's sampler: the reference code samples with flow-matching Euler at shift 5, and Euler carries no
state between steps, so feature blending (paper Eq. 3) holds exactly."""
STEP_CACHES = ("off", "magcache", "teacache")
"""Step caching of generation (maskedit.models.step_cache): "off" (every transformer evaluation runs: exact),
"magcache" (diffusers' MagCache with MagCache's ratios for Wan2.1-I2V) or "teacache" (the reference's TeaCache
rule, built on diffusers' hooks)."""
DEFAULT_STEP_CACHE = "off"
"""Generation is exact unless a preset or the user turns step caching on."""
TIMESTEP_SAMPLERS = ("uniform", "shifted", "logit_normal")
"""Training timestep distributions (method.training.sample_timesteps): "uniform" t ~ U(0, 1) (the reference's,
METHOD.md §4), "shifted" (a uniform draw through the flow shift s: t = s·u / (1 + (s − 1)·u); Wan2.2's experts
train on it inside their σ ranges) and "logit_normal"."""
OPTIMIZERS = ("adamw", "adamw8bit")
"""LoRA optimizers: "adamw" (torch's AdamW, fp32 state: ours) and "adamw8bit" (bitsandbytes' AdamW8bit, 8-bit
blockwise state: the reference code's fp8 recipe, without its Kahan summation; method.training.make_optimizer)."""
FP8_SCALINGS = ("row", "none")
"""How fp8 base weights are stored: "row" (e4m3 with a float32 scale per output row: ours) or "none" (a plain
cast to e4m3, the reference code's; memory.offload.quantize_fp8)."""
NAIVE_LORA_FOLDER = "naive_lora"
"""Where `edit --method naive-lora` keeps the baseline's LoRA (never over the mask-aware one)."""
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)
"""Wan2.1's default negative prompt (`sample_neg_prompt` in the Wan repository's shared config)."""
REFERENCE_NEGATIVE_PROMPT = (
    "Overexposure, static, blurred details, subtitles, paintings, pictures, still, overall gray, worst quality, "
    "low quality, JPEG compression residue, ugly, mutilated, redundant fingers, poorly painted hands, poorly "
    "painted faces, deformed, disfigured, deformed limbs, fused fingers, cluttered background, three legs, a lot "
    "of people in the background, upside down"
)
"""The reference code's negative prompt (its `inference.py`; METHOD.md §6): a shortened English list, not Wan's."""
NEGATIVE_PROMPTS = {"reference": REFERENCE_NEGATIVE_PROMPT, "wan": WAN_NEGATIVE_PROMPT}
"""Named negative prompts: "reference" (the method's, METHOD.md §6) and "wan" (Wan's Chinese default)."""
DEFAULT_NEGATIVE_PROMPT = "reference"
"""The method's negative prompt: the reference code generated the paper's results with it."""


def negative_prompt_text(choice: str | None) -> str:
    """The text of a negative prompt: a name of NEGATIVE_PROMPTS ("reference", "wan") gives that prompt, None
    the method's default; anything else is taken as the prompt itself (stripped; "" = no negative prompt)."""
    if choice is None:
        return NEGATIVE_PROMPTS[DEFAULT_NEGATIVE_PROMPT]
    text = str(choice).strip()
    return NEGATIVE_PROMPTS.get(text.lower(), text)


def negative_prompt_name(choice: str | None) -> str:
    """How reports and lora.json name a negative prompt: its name when it is (or spells out) a named one, else
    "custom"."""
    text = negative_prompt_text(choice)
    return next((name for name, known in NEGATIVE_PROMPTS.items() if known == text), "custom")
