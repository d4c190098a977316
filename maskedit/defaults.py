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
NAIVE_LORA_FOLDER = "naive_lora"
"""Where `edit --method naive-lora` keeps the baseline's LoRA (never over the mask-aware one)."""
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)
"""Wan2.1's default negative prompt (`sample_neg_prompt` in the Wan repository's shared config)."""
