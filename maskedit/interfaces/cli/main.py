"""`python -m maskedit`: prepare a clip, train its edit LoRA, generate the edited video.

The commands only parse arguments, call the workflow (`maskedit.workflow`) and render its events (tqdm bars, a few
lines of text). Errors a user can fix (MaskEditError) print `error: <message>` and exit with 2; an
interrupt (Ctrl-C) exits with 130 and keeps training checkpoints, so the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import importlib
from typing import TYPE_CHECKING

from ...method import masks
from ...method.composite import COMPOSITE_REGIONS, DEFAULT_FEATHER, DEFAULT_MASK_MARGIN, RING_WIDTH
from .common import PROG, DeprecatedFlag, HelpFormatter, paragraph
from ...defaults import (
    DEFAULT_HANDOVER_FRAMES, DEFAULT_MODEL_ID, DEFAULT_STAGE2_EPOCHS, DEFAULT_TRIGGER, DEFAULT_WINDOW_FRAMES,
    FP8_SCALINGS, NAIVE_LORA_FOLDER, OPTIMIZERS, SAMPLERS, STEP_CACHES, TIMESTEP_SAMPLERS, TINY,
)
from ...errors import MaskEditError
from ...workflow.lora_cache import CACHE_ENV
from ...models.presets import DEFAULT_PRESET, GENERATION_METHODS, NAIVE_LORA_METHODS, PRESETS, GenerateSettings, get_preset

if TYPE_CHECKING:
    from ...method.training import TrainConfig


class _Lazy:
    """A module imported on first use: `--help` and argument errors answer before torch is imported."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


prepare = _Lazy("maskedit.workflow.prepare")
train = _Lazy("maskedit.workflow.train")
generate = _Lazy("maskedit.workflow.generate")
training = _Lazy("maskedit.method.training")
experts = _Lazy("maskedit.method.experts")
models = _Lazy("maskedit.models.loading")

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXAMPLE = "examples/color_single"  # the bundled example the help's commands run on (examples/examples.json)
EXAMPLE_CAPTION = "a teal ringed triangle moving to the lower right"
EXAMPLE_EDIT = "a red ringed triangle moving to the lower right"
_FULL = PRESETS[DEFAULT_PRESET]  # METHOD.md §4's settings

OVERVIEW = f"""\
MaskEdit edits a whole video from one edited first frame: it trains a small mask-aware LoRA on your
clip (Wan2.1 image-to-video), then regenerates the region you marked so that it follows your edit
while the rest of the clip stays as it was.

The usual way, step by step (here on the bundled example, as written, from the repository's folder):
  1. {PROG} prepare --video {EXAMPLE}/clip.mp4 \\
         --mask-video {EXAMPLE}/mask.mp4 --frames 33 --width 320 --height 192 \\
         --out work/prepared
  2. edit work/prepared/first_frame.png in any image editor and save it, e.g. as edited.png
     ({EXAMPLE}/edited_first_frame.png is such an edit)
  3. {PROG} train --model tiny --prepared work/prepared --steps 10 \\
         --train-prompt "{EXAMPLE_CAPTION}" --out work/lora
  4. {PROG} generate --model tiny --prepared work/prepared \\
         --edited-frame {EXAMPLE}/edited_first_frame.png --lora work/lora --steps 4 \\
         --edit-prompt "{EXAMPLE_EDIT}" --out work/result
Or all at once, from an edit of the video's own first frame (it is conformed like the clip):
  {PROG} edit --model tiny --video {EXAMPLE}/clip.mp4 \\
      --mask-video {EXAMPLE}/mask.mp4 --frames 33 --width 320 --height 192 \\
      --edited-frame {EXAMPLE}/edited_first_frame.png --steps 10 --gen-steps 4 \\
      --train-prompt "{EXAMPLE_CAPTION}" \\
      --edit-prompt "{EXAMPLE_EDIT}" --out work/color_single

--train-prompt is the caption of the ORIGINAL first frame (training), --edit-prompt the EDITED one's
(generation). --model tiny is the built-in tiny model (random weights): it shows the workflow, not
the quality; leave it out on a CUDA GPU for Wan2.1-I2V-14B, and the small --steps for the preset's.
Run `{PROG} COMMAND --help` for each command's options."""


class _Interrupted(Exception):
    """Ctrl-C during training, with the message that says how to resume."""


# ----- the parser


def _add_clip_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clip and region to edit")
    group.add_argument("--video", required=True, metavar="V",
                       help="the clip: a video file (mp4, mov, webm, ...) or a folder of frames")
    region = group.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask-video", metavar="M",
                        help="mask of the object to edit (white = edit): a video, a folder of frames or one image, "
                             "made from the same clip; it is conformed like the clip and turned into loose boxes")
    region.add_argument("--box", metavar="x0,y0,x1,y1",
                        help="one box to edit on every frame, x1 and y1 exclusive, in pixels of the CONFORMED clip "
                             "(after --width/--height and cropping; default 832x480 or 480x832) or, with --box-in "
                             "source, of the source video")
    group.add_argument("--box-in", choices=("clip", "source"), default="clip",
                       help="the pixel grid of --box: the conformed clip's (default) or the source video's (mapped "
                            "through the same resize and centre crop as the frames)")
    group.add_argument("--frames", type=_frames_option, metavar="N|all",
                       help="frames to keep, 4k+1 (5, 9, 17, 33, 49, 81, … up to the source limit), or 'all'; a clip "
                            "longer than one window (--window-frames) is edited window by window; default: as many "
                            "as the clip has, up to 81")
    group.add_argument("--width", type=int, metavar="W",
                       help="width to conform to, a multiple of 16 (give --height too); default 832 (480 if portrait)")
    group.add_argument("--height", type=int, metavar="H", help="height to conform to, a multiple of 16; default 480 (832)")
    group.add_argument("--start", type=int, default=0, metavar="S", help="first source frame to use (default 0)")
    group.add_argument("--frame-mode", choices=("uniform", "first"), default="uniform",
                       help="pick frames spread over the clip (uniform, keeps its duration) or the first N (default uniform)")
    group.add_argument("--margin", type=float, default=masks.BOX_MARGIN,
                       help="growth of each mask box, a fraction of its size (default %(default)s = 10%%)")
    group.add_argument("--min-area", type=int, default=masks.MIN_COMPONENT_AREA, metavar="PIXELS",
                       help="mask specks smaller than this are ignored (default %(default)s)")


def _frames_option(text: str):
    """--frames: a whole number, or 'all' (every frame from --start on, the largest 4k+1)."""
    if str(text).strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor 'all'") from None


def _add_window_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clips longer than one window (METHOD.md §7b)")
    group.add_argument("--window-frames", type=int, metavar="W",
                       help="frames of one window (4k+1); a longer clip is trained on windows across the whole clip "
                            f"and generated window after window (default: the preset's; {DEFAULT_WINDOW_FRAMES}, the "
                            "base's length, for full)")
    group.add_argument("--handover-frames", type=int, default=DEFAULT_HANDOVER_FRAMES, metavar="O",
                       help="generated frames each window hands to the next, kept whole (1+4m; default %(default)s). "
                            "More than 1 needs a LoRA trained with the same option (training then also keeps "
                            "random prefixes of 1+4m frames whole)")


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="NAME",
                        help=f"'{TINY}' (built-in, random weights, for trying the workflow), a hub id or a local "
                             f"diffusers folder; default: {DEFAULT_MODEL_ID} with a CUDA GPU, else '{TINY}'. "
                             "Bases: Wan2.1-I2V-14B-480P/720P, Wan2.2-I2V-A14B (two experts; 'tiny-wan2.2' is its "
                             "built-in stand-in); presets take 1280x720 on a 720P base")
    group = parser.add_argument_group("preset and memory")
    group.add_argument("--preset", choices=list(PRESETS),
                       help=f"named settings ({', '.join(PRESETS)}); options given explicitly win (default {DEFAULT_PRESET}; "
                            "see `python -m maskedit presets`)")
    group.add_argument("--blocks-to-swap", type=int, metavar="N",
                       help="transformer blocks (of 40) kept in CPU memory and streamed to the GPU (default: the preset's)")
    group.add_argument("--fp8", action=argparse.BooleanOptionalAction, default=None,
                       help="store the base model's block weights in fp8 (the LoRA stays full precision; default: the preset's)")
    group.add_argument("--fp8-scaling", choices=FP8_SCALINGS,
                       help="row: fp8 weights with a scale per output row (ours); none: a plain fp8 cast (the "
                            "reference code's) (default: the preset's; row)")
    group.add_argument("--offload-encoders", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the VAE and the text/image encoders in CPU memory, on the GPU only while they run "
                            "(same results, less GPU memory; default: the preset's)")


def _add_train_options(parser: argparse.ArgumentParser, steps_flag: str) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--trigger", default=DEFAULT_TRIGGER,
                       help="token put before the prompt while training and generating (default %(default)s)")
    group.add_argument("--edited-later", action="append", default=[], metavar="K=PATH",
                       help="an edited later frame K of the prepared clip (1..frames-1) for stage 2; repeat for "
                            "more frames (`prepare --export-frames` writes the frames to edit)")
    group.add_argument("--later-prompt", action="append", default=[], metavar="K=TEXT",
                       help="caption of edited later frame K: stage 2 trains each frame under its own caption "
                            "(default: captioned by Florence-2 when it is available, else required)")
    group.add_argument("--caption-model", default=None, metavar="ID|DIR",
                       help="Florence-2 (transformers format, hub id or folder) that captions what was not given "
                            "(default: florence-community/Florence-2-large)")
    group.add_argument(steps_flag, dest="train_steps", type=int, metavar="N",
                       help=f"stage-1 training steps (default: the preset's; {_FULL.train_steps} for full)")
    group.add_argument("--stage2-epochs", type=int, default=DEFAULT_STAGE2_EPOCHS, metavar="N",
                       help="stage-2 epochs when --edited-later is given; each is the clip once plus every edited "
                            "frame 9 times (default %(default)s)")
    group.add_argument("--lr", type=float, help=f"learning rate (default: the preset's; {_FULL.learning_rate} for full)")
    group.add_argument("--rank", type=int, help=f"LoRA rank (default: the preset's; {_FULL.rank} for full)")
    group.add_argument("--window", type=int, metavar="N",
                       help="train on overlapping N-frame windows (4k+1, e.g. 9) instead of the whole clip; 0 = whole "
                            "clip (default: the preset's; whole clip for full)")
    group.add_argument("--window-stride", type=int, metavar="N", help="frames between window starts (default: the preset's; 4)")
    group.add_argument("--timestep-sampler", choices=TIMESTEP_SAMPLERS,
                       help="training noise levels: uniform (the reference's), shifted (through --timestep-shift; on "
                            "Wan2.2 each expert draws it inside its own range) or logit_normal (default: the "
                            "preset's; uniform, shifted on Wan2.2)")
    group.add_argument("--timestep-shift", type=float, metavar="S",
                       help="the shift of --timestep-sampler shifted (default: the preset's; the flow shift on Wan2.2)")
    group.add_argument("--optimizer", choices=OPTIMIZERS,
                       help="adamw (fp32 state, ours) or adamw8bit (bitsandbytes' 8-bit state, the reference code's "
                            "fp8 recipe; needs `pip install bitsandbytes`) (default: the preset's; adamw)")
    group.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                       help="recompute activations in backward (same gradients, less memory; default: the preset's)")
    group.add_argument("--activation-offload", action=argparse.BooleanOptionalAction, default=None,
                       help="keep checkpointed activations in CPU memory (default: the preset's)")
    group.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    group.add_argument("--no-resume", action="store_true",
                       help="start training afresh instead of resuming from the checkpoints in --out (or a cached run)")
    group.add_argument("--no-cache", action="store_true",
                       help="neither reuse nor store a cached LoRA: always train (the cache holds finished and stopped "
                            "runs keyed by the clip, boxes, caption, trigger, model and settings)")
    group.add_argument("--cache-dir", metavar="DIR",
                       help=f"folder of the LoRA cache (default: ${CACHE_ENV}, else ~/.cache/maskedit/loras)")


def _add_generate_options(parser: argparse.ArgumentParser, steps_flag: str) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument(steps_flag, dest="gen_steps", type=int, metavar="N",
                       help=f"denoising steps (default: the preset's; {GenerateSettings.steps} for full)")
    group.add_argument("--cfg", type=float,
                       help=f"classifier-free guidance scale (default: the preset's; {GenerateSettings.guidance_scale:g} for full)")
    group.add_argument("--shift", type=float,
                       help=f"flow shift of the scheduler (default: the preset's; {GenerateSettings.flow_shift:g} for full)")
    group.add_argument("--guidance-scale-2", type=float, metavar="CFG",
                       help="two-expert bases (Wan2.2-A14B) only: the low-noise expert's guidance scale, for the "
                            "steps below the boundary (default: the same as --cfg)")
    group.add_argument("--lora-scale", type=float, help="strength of the LoRA (default: the preset's; 1.0)")
    group.add_argument("--sampler", choices=SAMPLERS,
                       help="euler (flow-matching Euler with the reference code's schedule) or unipc (Wan's default "
                            "solver) (default: the preset's; euler)")
    group.add_argument("--speed-lora", metavar="FILE|ID",
                       help="a step/CFG-distilled Wan2.1-I2V LoRA stacked with the edit LoRA (a .safetensors file, a "
                            "folder, or owner/repo/file.safetensors), for few steps at CFG 1; 'none' for none "
                            "(default: the preset's)")
    group.add_argument("--speed-lora-weight", type=float, help="weight of the speed LoRA (default: the preset's; 1.0)")
    group.add_argument("--attention", metavar="BACKEND",
                       help="diffusers attention backend: native, flash, _flash_3, sage, flex, _native_cudnn, ... "
                            "where installed (default: the preset's; native)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the transformer blocks (slow first step; default: the preset's)")
    group.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=None,
                       help="decode the video in tiles (less memory; default: the preset's)")
    group.add_argument("--negative-prompt", metavar="reference|wan|TEXT",
                       help="negative prompt: reference (the reference code's English list, the method's), wan "
                            "(Wan's Chinese default) or the text itself (default: the preset's; reference)")
    group.add_argument("--step-cache", choices=STEP_CACHES,
                       help="skip transformer evaluations a cache can stand in for: off (exact), magcache or "
                            "teacache (the reference's rule, threshold 0.275) (default: the preset's)")
    group.add_argument("--step-cache-threshold", type=float, metavar="T",
                       help="the step cache's threshold; higher skips more (default: magcache 0.12, teacache 0.275)")
    group = parser.add_argument_group(
        "compositing (after decoding)",
        paragraph("Keep the background exactly: outside the region the video is the source clip, bit for bit before the "
        "mp4 encode; inside, the generated pixels, blended across a feathered border. It cuts off anything the "
        "model drew outside the region (a shadow, a reflection): the report shows how much that was."))
    group.add_argument("--composite", nargs="?", const="boxes", choices=COMPOSITE_REGIONS, metavar="boxes|mask",
                       help="composite the generated region onto the source: on the loose boxes (--composite, or "
                            "--composite boxes) or on the tight mask grown by --composite-margin (--composite mask; "
                            "the clip's region must come from a mask). Default: off (every pixel generated)")
    group.add_argument("--feather", type=int, metavar="PX",
                       help=f"pixels of blend inside the region's border, 0 = a hard cut (default {DEFAULT_FEATHER})")
    group.add_argument("--composite-margin", type=int, metavar="PX",
                       help=f"with --composite mask: pixels the tight mask is grown by (default {DEFAULT_MASK_MARGIN})")


def _add_edit_prompt(parser: argparse.ArgumentParser) -> None:
    """--edit-prompt (required), and its old spelling --prompt (deprecated: `train` used it for the other caption)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--edit-prompt", metavar="TEXT",
                       help="caption of the EDITED first frame, for generation (never trained on)")
    group.add_argument("--prompt", dest="edit_prompt", action=DeprecatedFlag, new="--edit-prompt",
                       meaning="the caption of the EDITED first frame", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=OVERVIEW, formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    from .segment import add_caption_parser, add_segment_parser  # one-way: they import cli_common, never cli

    add_segment_parser(commands)

    prepare = commands.add_parser(
        "prepare", formatter_class=HelpFormatter, help="conform a clip and its region to edit; writes first_frame.png to edit",
        description=paragraph("Conform a clip (4k+1 frames, a multiple-of-16 size) and the region to edit (a mask video, "
                    "turned into loose boxes, or one box), and write them to a folder with first_frame.png, the "
                    "frame to edit."),
        epilog=f"example:\n  {PROG} prepare --video clip.mp4 --mask-video mask.mp4 --frames 49 --out work/prepared\n"
               f"  {PROG} prepare --video clip.mp4 --box 300,120,560,400 --out work/prepared\n\n"
               "writes: clip.mp4, boxes.mp4 (white = edit), first_frame.png, clip.npz and boxes.npz (exact copies),\n"
               "prepared.json; with --export-frames also frames/NNN.png.",
    )
    _add_clip_options(prepare)
    prepare.add_argument("--fit", action="store_true",
                         help="resize and centre-crop a mask of another size to the clip instead of refusing it")
    prepare.add_argument("--export-frames", action="store_true",
                         help="also write every conformed frame as frames/NNN.png (to edit later frames for stage 2)")
    prepare.add_argument("--preset", choices=list(PRESETS),
                         help="take the frame count and size of a preset when --frames / --width --height are not given")
    prepare.add_argument("--out", required=True, metavar="DIR", help="folder to write the prepared clip to")
    prepare.set_defaults(handler=cmd_prepare)

    train = commands.add_parser(
        "train", formatter_class=HelpFormatter, help="train the edit LoRA on a prepared clip",
        description=paragraph("Train the mask-aware LoRA on a prepared clip: stage 1 learns the clip's motion around the "
                    "boxes; with --edited-later, stage 2 also learns the look of edited later frames. "
                    "Interrupted runs resume from their checkpoints when run again."),
        epilog=f"example:\n  {PROG} train --prepared work/prepared --train-prompt \"a red car on a road\" --out work/lora\n"
               f"  {PROG} train --prepared work/prepared --train-prompt \"a red car on a road\" \\\n"
               "      --edited-later 24=frame24_edited.png --later-prompt 24=\"a blue car on a road\" --out work/lora\n\n"
               "--train-prompt describes the ORIGINAL first frame (left out: Florence-2 captions it, or training stops\n"
               "and asks for it); --later-prompt K=TEXT the edited frame K (left out: captioned the same way).\n"
               "writes: lora.safetensors (diffusers), lora_comfyui.safetensors (ComfyUI), lora.json, and\n"
               "checkpoints/ (a rerun resumes from them; delete them when done to save space).\n\n"
               "baseline: --naive trains the paper's naive-LoRA baseline instead (same settings; give it its\n"
               f"own --out) and `generate --method naive-lora --lora THAT_DIR` uses it:\n"
               f"  {PROG} train --naive --prepared work/prepared --train-prompt \"a red car on a road\" --out work/naive",
    )
    train.add_argument("--prepared", required=True, metavar="DIR", help="folder written by `prepare`")
    train.add_argument("--train-prompt", metavar="TEXT",
                       help="caption of the ORIGINAL first frame (default: captioned by Florence-2 when it is "
                            "available, else required)")
    train.add_argument("--prompt", dest="train_prompt", action=DeprecatedFlag, new="--train-prompt",
                       meaning="the caption of the ORIGINAL first frame", help=argparse.SUPPRESS)
    train.add_argument("--naive", action="store_true",
                       help="train the naive-LoRA baseline instead: the stock image-to-video condition (first frame "
                            "only; the boxes are not used) on the clip, no stage 2; for `generate --method naive-lora`")
    _add_train_options(train, "--steps")
    _add_window_options(train)
    _add_model_option(train)
    train.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    train.add_argument("--fit", action="store_true", help="resize and centre-crop edited later frames of another size")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the LoRA files and checkpoints")
    train.set_defaults(handler=cmd_train)

    generate = commands.add_parser(
        "generate", formatter_class=HelpFormatter, help="generate the edited video from an edited first frame",
        description=paragraph("Generate the edited clip: the edited first frame leads, the region outside the boxes follows "
                    "the original clip. Needs the LoRA from `train` for the default method."),
        epilog=f"example:\n  {PROG} generate --prepared work/prepared --edited-frame edited.png \\\n"
               "      --edit-prompt \"a blue car on a road\" --lora work/lora --out work/result\n\n"
               "--edit-prompt describes the EDITED first frame.\n"
               "writes: edited.mp4 and side_by_side.mp4 (original | edit).\n"
               "methods: mask-lora (the paper's), no-lora (stock image-to-video, no LoRA needed),\n"
               "feature-blend (the latent-blending baseline, paper Eq. 3: stock image-to-video with the LoRA of\n"
               "`train --naive`, given as --lora, plus the source blended outside the boxes), naive-lora (stock\n"
               "image-to-video with the LoRA of `train --naive`, given as --lora).",
    )
    generate.add_argument("--prepared", required=True, metavar="DIR", help="folder written by `prepare`")
    generate.add_argument("--edited-frame", required=True, metavar="PATH",
                          help="the edited first frame (prepared or source size; see --fit)")
    _add_edit_prompt(generate)
    generate.add_argument("--lora", metavar="DIR|FILE", nargs="+",
                          help="the folder `train` wrote, or a .safetensors LoRA file; for a two-expert base "
                               "(Wan2.2-A14B) also its two files, …high_noise… and …low_noise…, in either order")
    generate.add_argument("--method", choices=GENERATION_METHODS, default="mask-lora",
                          help="how to generate (default %(default)s); naive-lora needs --lora from `train --naive`")
    generate.add_argument("--trigger", help=f"trigger token (default: the LoRA's, else {DEFAULT_TRIGGER})")
    _add_generate_options(generate, "--steps")
    _add_window_options(generate)
    generate.add_argument("--no-resume", action="store_true",
                          help="a long clip: generate every window afresh instead of continuing after the windows "
                               "already finished in --out for the same inputs")
    _add_model_option(generate)
    generate.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    generate.add_argument("--seeds", metavar="S,S,...",
                          help="generate once per seed into OUT/seed_S/; under `accelerate launch` / `torchrun` the "
                               "seeds are spread over the processes (one GPU each)")
    generate.add_argument("--fit", action="store_true",
                          help="resize and centre-crop an edited frame of another size to the clip")
    generate.add_argument("--preview", action="store_true",
                          help="a fast preview: the edit LoRA plus the step-distilled --speed-lora (or the preset's, "
                               "or $MASKEDIT_SPEED_LORA), 4 steps at CFG 1; run again without it for the full render")
    generate.add_argument("--out", required=True, metavar="DIR", help="folder for edited.mp4 and side_by_side.mp4")
    generate.set_defaults(handler=cmd_generate)

    edit = commands.add_parser(
        "edit", formatter_class=HelpFormatter, help="all in one: prepare, train and generate",
        description="Prepare the clip, train its LoRA and generate the edited video in one go.",
        epilog=f"example:\n  {PROG} edit --video clip.mp4 --box 300,120,560,400 --edited-frame edited.png \\\n"
               "      --train-prompt \"a red car on a road\" --edit-prompt \"a blue car on a road\" --out work/result\n"
               f"  {PROG} edit --video clip.mp4 --box 600,240,1120,800 --box-in source ...   # a box in the source's pixels\n\n"
               "--edit-prompt describes the EDITED first frame (generation); training uses the caption of the ORIGINAL\n"
               "one: --train-prompt, or Florence-2's when it is available (else it stops and asks for it).\n"
               "writes: edited.mp4, side_by_side.mp4, lora.safetensors, lora_comfyui.safetensors, lora.json,\n"
               "prepared/ (for `generate` with other settings) and checkpoints/ (a rerun resumes from them).\n"
               f"--method naive-lora: the naive-LoRA baseline instead; its LoRA goes to\n"
               f"OUT/{NAIVE_LORA_FOLDER}/.",
    )
    _add_clip_options(edit)
    edit.add_argument("--edited-frame", required=True, metavar="PATH",
                      help="the edited first frame: the conformed size, or the source video's size (conformed like "
                           "the clip); see --fit")
    _add_edit_prompt(edit)
    edit.add_argument("--train-prompt", metavar="TEXT",
                      help="caption of the ORIGINAL first frame, for training (default: captioned by Florence-2 when "
                           "it is available, else required; never --edit-prompt)")
    edit.add_argument("--method", choices=("mask-lora", *NAIVE_LORA_METHODS), default="mask-lora",
                      help="mask-lora (the paper's; default), naive-lora (the baseline: a LoRA trained with the "
                           f"stock first-frame condition, in OUT/{NAIVE_LORA_FOLDER}/, then stock "
                           "image-to-video) or feature-blend (that LoRA plus feature-level blending, paper Eq. 3)")
    _add_train_options(edit, "--steps")
    _add_generate_options(edit, "--gen-steps")
    _add_window_options(edit)
    _add_model_option(edit)
    edit.add_argument("--seed", type=int, default=0, help="random seed of training and generation (default %(default)s)")
    edit.add_argument("--fit", action="store_true",
                      help="resize and centre-crop a mask or edited frames of another size to the clip")
    edit.add_argument("--out", required=True, metavar="DIR", help="folder for all results")
    edit.set_defaults(handler=cmd_edit)

    presets = commands.add_parser("presets", formatter_class=HelpFormatter, help="list the named presets and their settings",
                                  description="The named presets and every setting each one holds.")
    presets.set_defaults(handler=cmd_presets)
    add_caption_parser(commands)
    from .plan import add_plan_parser  # the planner's dry run (its own module)

    add_plan_parser(commands)
    return parser


# ----- commands


def cmd_presets(args) -> int:
    print("\n\n".join(preset.describe() for preset in PRESETS.values()))
    return 0


def cmd_prepare(args) -> int:
    _apply_preset(args)
    prepared = _prepare(args, store=args.out)
    prepare.save_prepared(prepared, args.out, export_frames=args.export_frames)
    out = Path(args.out)
    print(_describe(prepared, args))
    print(f"wrote {out}: clip.mp4, boxes.mp4 (white = edit), {prepare.FIRST_FRAME}"
          + (f", {prepare.FRAMES_FOLDER}/" if args.export_frames else ""))
    print(f"next: edit {out / prepare.FIRST_FRAME}, then run\n"
          f"  {PROG} train --prepared {out} --train-prompt \"caption of the first frame\" --out LORA_DIR")
    return 0


def cmd_train(args) -> int:
    from ...memory.distributed import init_distributed, shutdown

    _apply_preset(args)
    prepared = prepare.load_prepared(args.prepared)
    print(_describe(prepared, args))
    later = _edited_later(args, prepared)
    if args.naive and later:
        raise MaskEditError("--naive trains the baseline on the clip alone (no stage 2): leave out --edited-later")
    config = _train_config(args, prepared.num_frames)
    _check_window_size(args, args.model or models.default_model(), prepared)
    caption = _training_captions(args, prepared, later, args.train_prompt)
    distributed = init_distributed()  # several processes under `accelerate launch` / `torchrun`
    try:
        loaded = _load_model(args.model or models.default_model(), args)
        _train(loaded, prepared, caption, config, args, later, Path(args.out), distributed)
    finally:
        shutdown(distributed)
    out = Path(args.out)
    print(f"next: {PROG} generate --prepared {args.prepared} --edited-frame EDITED.png "
          f"--edit-prompt \"caption of the edited frame\" --lora {out}" + (" --method naive-lora" if args.naive else "")
          + " --out RESULT_DIR")
    return 0


def cmd_generate(args) -> int:
    from ...method.experts import load_edit_lora
    from ...method.lora import read_metadata

    lora_path = _lora_argument(args.lora) if args.lora else None
    first_file = lora_path[0] if isinstance(lora_path, list) else lora_path  # its folder's lora.json describes it
    metadata = read_metadata(first_file) if lora_path else {}
    model = args.model or metadata.get("base_model") or models.default_model()
    _apply_preset(args, model)  # the defaults of the base that generates, the LoRA's when --model is left out
    prepared = prepare.load_prepared(args.prepared)
    edited = prepare.load_edited_frame(args.edited_frame, prepared.width, prepared.height, args.fit,
                                       prepared.source_size, "edited first frame")
    _check_generate_args(args)
    _check_composite(prepared, args)
    args.preview_settings = _preview_settings(args) if getattr(args, "preview", False) else None
    if lora_path is None and args.method == "mask-lora":
        raise MaskEditError(
            "the mask-lora method needs the LoRA that `train` wrote: add --lora LORA_DIR "
            "(or use --method no-lora to generate without one)"
        )
    if lora_path is None and args.method in NAIVE_LORA_METHODS:
        raise MaskEditError(
            f"the {args.method} method needs the LoRA that `train --naive` wrote: add --lora NAIVE_LORA_DIR "
            "(or use --method no-lora to generate without one)"
        )
    _check_lora_kind(args.method, metadata, first_file)
    trigger = args.trigger if args.trigger is not None else metadata.get("trigger", DEFAULT_TRIGGER)
    if args.model and metadata.get("base_model") not in (None, args.model):
        print(f"note: the LoRA was trained on {metadata['base_model']}, not {args.model}")
    print(_describe(prepared, args))
    _check_window_size(args, model, prepared)
    args.trained_handover = _trained_handover(metadata)
    if prepared.num_frames > args.window_frames:  # a hand-over the LoRA never learnt: refused before the model loads
        from ...workflow.long_clip import check_handover

        check_handover(args.handover_frames, args.method, args.trained_handover)
    seeds = _seeds(args.seeds) if args.seeds else None
    if seeds is not None:
        from ...memory.distributed import process_share, use_local_device

        use_local_device()  # each launched process on its own GPU
        seeds = process_share(seeds)
        if not seeds:
            print("no seed left for this process")
            return 0
    loaded = _load_model(model, args)
    if lora_path is not None:
        from ...workflow.lora_checks import check_edit_lora_fits

        check_edit_lora_fits(loaded.pipe, lora_path)  # from the headers: a file that cannot fit is never read
        load_edit_lora(loaded.pipe, lora_path, args.lora_scale)
        args.lora_id = _lora_id(lora_path)
        print(f"LoRA: {' + '.join(map(str, lora_path)) if isinstance(lora_path, list) else lora_path}")
    if seeds is None:
        return _generate(loaded, prepared, edited, args, trigger, Path(args.out))
    for seed in seeds:
        args.seed = seed
        _generate(loaded, prepared, edited, args, trigger, Path(args.out) / f"seed_{seed}")
    return 0


def _check_composite(prepared, args) -> None:
    try:
        generate.check_composite(prepared, args.generate_settings)
    except MaskEditError as error:
        raise MaskEditError(f"{error} (--composite mask needs --mask-video; --composite alone uses the boxes)") from None


def _lora_argument(values: list[str]):
    """--lora's path (a folder or file, `experts.resolve_lora_path`), or [high-noise file, low-noise file] for
    two files (`experts.expert_pair`: told apart by name); checked before any model loads."""
    from ...method.experts import EXPERTS, expert_pair

    if len(values) == 1:
        return experts.resolve_lora_path(values[0])
    if len(values) != 2:
        raise MaskEditError(f"--lora takes one folder or file, or the two files of a two-expert LoRA; got {len(values)}")
    files = [experts.resolve_lora_path(value) for value in values]
    if any(path.is_dir() for path in files):
        raise MaskEditError("--lora with two values takes two .safetensors files (…high_noise… and …low_noise…)")
    pair = expert_pair(files)
    return [pair[expert] for expert in EXPERTS]


def _check_lora_kind(method: str, metadata: dict, lora_path) -> None:
    """Refuse a LoRA whose lora.json says it was trained for the other condition (mask-aware vs naive); a LoRA
    without lora.json (from elsewhere) is taken as given."""
    if not metadata or lora_path is None:
        return
    naive = generate.is_naive_lora(metadata)
    if method in NAIVE_LORA_METHODS and not naive and metadata.get("trainer") == "maskedit":
        raise MaskEditError(
            f"{lora_path.parent} holds a mask-aware LoRA, but --method {method} needs one trained with the stock "
            "condition: train it with `train --naive` into its own folder (or use --method mask-lora)"
        )
    if method == "mask-lora" and naive:
        raise MaskEditError(
            f"{lora_path.parent} holds a naive-baseline LoRA (trained with `train --naive`): use --method naive-lora "
            "with it, or give the mask-aware LoRA for mask-lora"
        )


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise MaskEditError(f"--seeds {text!r} must be whole numbers separated by commas, e.g. 0,1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise MaskEditError(f"--seeds {text!r} must list at least one seed, each once")
    return seeds


def cmd_edit(args) -> int:
    _apply_preset(args)
    out = Path(args.out)
    prepared = _prepare(args, store=out / "prepared")
    print(_describe(prepared, args))
    edited = prepare.load_edited_frame(args.edited_frame, prepared.width, prepared.height, args.fit,
                                       prepared.source_size, "edited first frame")
    later = _edited_later(args, prepared)
    args.naive = args.method in NAIVE_LORA_METHODS
    config = _train_config(args, prepared.num_frames)
    _check_generate_args(args)
    _check_window_size(args, args.model or models.default_model(), prepared)
    args.trained_handover = config.handover_frames
    _check_composite(prepared, args)
    caption = _training_captions(args, prepared, later, args.train_prompt)
    args.edit_caption = args.edit_prompt
    loaded = _load_model(args.model or models.default_model(), args)
    prepare.save_prepared(prepared, out / "prepared")
    generate.remove_edit_outputs(out)
    if args.naive and later:
        raise MaskEditError(f"--method {args.method} trains the baseline on the clip alone (no stage 2): leave out "
                            "--edited-later")
    metadata = _train(loaded, prepared, caption, config, args, later, out / NAIVE_LORA_FOLDER if args.naive else out)
    args.lora_id = f"{metadata.get('created')}:{metadata.get('final_loss')}"  # a new LoRA generates afresh
    return _generate(loaded, prepared, edited, args, args.trigger, out)


# ----- shared steps

# command-line option → preset field; an option left out takes the preset's value
_PRESET_OPTIONS = {
    "train_steps": "train_steps", "lr": "learning_rate", "rank": "rank", "window": "window",
    "window_stride": "window_stride", "gradient_checkpointing": "gradient_checkpointing",
    "activation_offload": "activation_offload", "blocks_to_swap": "blocks_to_swap", "fp8": "fp8",
    "offload_encoders": "offload_encoders",
    "gen_steps": "generation_steps", "cfg": "guidance_scale", "shift": "flow_shift", "lora_scale": "lora_scale",
    "speed_lora": "speed_lora", "speed_lora_weight": "speed_lora_weight", "attention": "attention_backend",
    "compile": "compile", "vae_tiling": "vae_tiling", "sampler": "sampler", "guidance_scale_2": "guidance_scale_2",
    "negative_prompt": "negative_prompt", "step_cache": "step_cache", "step_cache_threshold": "step_cache_threshold",
    "timestep_sampler": "timestep_sampler", "timestep_shift": "timestep_shift", "optimizer": "optimizer",
    "fp8_scaling": "fp8_scaling",
    "window_frames": "window_frames",
}


def _apply_preset(args, model: str | None = None) -> None:
    """Fill every option the user left out from the preset (`full` unless --preset), adapted to the base that
    runs: `model` (generate: --model, else the LoRA's lora.json base_model), else --model, else the default
    model; with an explicit --preset also the clip's frame count and size when --frames / --width --height are
    not given."""
    from ...models.bases import adapt_preset, base_for_name

    preset = get_preset(getattr(args, "preset", None) or DEFAULT_PRESET)
    model = model or getattr(args, "model", None) or models.default_model()
    preset = adapt_preset(preset, base_for_name(model))
    args.preset_settings = preset
    args.steps_given = getattr(args, "train_steps", None) is not None
    for option, field in _PRESET_OPTIONS.items():
        if hasattr(args, option) and getattr(args, option) is None:
            setattr(args, option, getattr(preset, field))
    if getattr(args, "speed_lora", None) in ("none", ""):
        args.speed_lora = None
    if getattr(args, "preset", None) and hasattr(args, "frames"):
        if args.frames is None:
            args.frames = preset.num_frames
            args.frames_from_preset = True  # an upper bound: a shorter clip keeps what it has
        if args.width is None and args.height is None:
            args.width, args.height = preset.width, preset.height


def _prepare(args, store=None) -> prepare.PreparedClip:
    """The prepared clip of --video and its region; a clip longer than one window keeps its arrays in `store`."""
    def prepare_frames(num_frames):
        return prepare.prepare_clip(
            args.video, mask_video=args.mask_video, box=args.box, num_frames=num_frames, width=args.width,
            height=args.height, start=args.start, frame_mode=args.frame_mode, margin=args.margin,
            min_area=args.min_area, fit=args.fit, store=store, box_in=args.box_in,
        )

    if args.frames == "all":
        return prepare_frames(prepare.all_frames(args.video, args.start))
    try:
        return prepare_frames(args.frames)
    except MaskEditError as error:
        if not getattr(args, "frames_from_preset", False) or "frames" not in str(error):
            raise
        prepared = prepare_frames(None)  # the clip is shorter than the preset's frame count: keep all it has
        if prepared.num_frames > args.frames:
            raise
        prepared.notes.append(f"the preset's {args.frames} frames are more than the clip has: {prepared.num_frames} kept")
        return prepared


def _describe(prepared: prepare.PreparedClip, args=None) -> str:
    from ...media.clipstore import mean_over_frames
    from ...method.windows import plan_windows

    lines = [f"note: {note}" for note in prepared.notes]
    share = mean_over_frames(prepared.region, 1 if prepared.num_frames > 1 else 0)
    lines.append(f"clip: {prepared.num_frames} frames, {prepared.width}x{prepared.height}, {prepared.fps:g} fps; "
                 f"the boxes cover {share:.0%} of the frames")
    window = getattr(args, "window_frames", None)
    if window and prepared.num_frames > window:
        windows = plan_windows(prepared.num_frames, window, getattr(args, "handover_frames", 1))
        lines.append(f"long clip: {len(windows)} windows of up to {window} frames, {windows[1].handover} hand-over "
                     "frame(s) each (trained on windows across the whole clip, generated window after window)")
    return "\n".join(lines)


def _check_window_size(args, model, prepared) -> None:
    """The window settings (`windows.check_window_settings`) and the size one window gives the model
    (`models.check_clip_size`), before any model loads."""
    from ...method.windows import plan_windows

    windows = plan_windows(prepared.num_frames, args.window_frames, args.handover_frames)
    models.check_clip_size(model, windows[0].num_frames, prepared.width, prepared.height)


def _lora_id(lora_path) -> str:
    """A LoRA's identity for a long run's resume check: its file(s), sizes and modification times."""
    files = lora_path if isinstance(lora_path, list) else [lora_path]
    return ";".join(f"{Path(f).resolve()}:{Path(f).stat().st_size}:{Path(f).stat().st_mtime_ns}" for f in files
                    if Path(f).is_file())


def _trained_handover(metadata: dict) -> int | None:
    """The hand-over a LoRA was trained for (lora.json's handover_frames; 1 for MaskEdit's LoRAs of short clips),
    None when unknown (a LoRA from elsewhere)."""
    if "handover_frames" in (metadata or {}):
        return int(metadata["handover_frames"])
    return 1 if (metadata or {}).get("trainer") == "maskedit" else None


def _training_captions(args, prepared, later: dict, caption: str | None) -> str:
    """The caption of the original first frame, and the edited later frames' (kept on args.later_captions):
    given ones, else Florence-2's (`captioning.training_captions`), else a clear error — never the edit's."""
    from ...perception.captioning import load_captioner, training_captions

    given = {}
    for entry in args.later_prompt:
        key, text = entry.split("=", 1) if "=" in entry else ("", "")
        if not text.strip():
            raise MaskEditError(f"--later-prompt {entry!r} needs the form K=TEXT, e.g. 24=\"a blue car on a road\"")
        index = prepare.parse_frame_index(key, prepared.num_frames)
        if index in given:
            raise MaskEditError(f"frame {index} is given twice in --later-prompt; give each frame once")
        given[index] = text.strip()
    captions = training_captions(prepared.frames[0], later, caption, given,
                                 load=lambda: load_captioner(args.caption_model, device=getattr(args, "device", None)))
    for note in captions.notes:
        print(note, flush=True)
    args.later_captions = captions.later
    return captions.caption


def _edited_later(args, prepared) -> dict:
    later = {}
    for entry in args.edited_later:
        if "=" not in entry:
            raise MaskEditError(f"--edited-later {entry!r} needs the form K=PATH, e.g. 24=frame24_edited.png")
        key, path = entry.split("=", 1)
        index = prepare.parse_frame_index(key, prepared.num_frames)
        if index in later:
            raise MaskEditError(f"frame {index} is given twice in --edited-later; give each frame once")
        later[index] = prepare.load_edited_frame(path, prepared.width, prepared.height, args.fit,
                                                 prepared.source_size, f"edited frame {index}")
    return later


# option (argparse dest) → maskedit.limits setting; options left out (None) take the preset's value later
_LIMITED_OPTIONS = {
    "train_steps": "train_steps", "gen_steps": "generation_steps", "lr": "learning_rate", "rank": "rank",
    "alpha": "alpha", "cfg": "guidance_scale", "shift": "flow_shift", "frames": "num_frames", "width": "width",
    "height": "height", "seed": "seed", "start": "start", "margin": "margin", "min_area": "min_area",
    "lora_scale": "lora_scale", "speed_lora_weight": "speed_lora_weight", "window": "window",
    "window_stride": "window_stride", "stage2_epochs": "stage2_epochs", "guidance_scale_2": "guidance_scale_2",
    "blocks_to_swap": "blocks_to_swap",
    "step_cache_threshold": "step_cache_threshold", "timestep_shift": "timestep_shift",
    "window_frames": "window_frames", "handover_frames": "handover_frames",
    "feather": "feather", "composite_margin": "composite_margin",
}


def _check_limits(args) -> None:
    """Every number given on the command line within its documented range (maskedit.limits), the prompts not
    empty and each --edited-later frame once: checked before anything is read or loaded."""
    from ...limits import check, check_prompt, check_unique_frames

    for dest, name in _LIMITED_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None and value != "all":
            flag = {"train_steps": "--steps", "gen_steps": "--gen-steps" if args.command == "edit" else "--steps"}
            check(name, value, flag.get(dest, "--" + dest.replace("_", "-")))
    for dest in ("edit_prompt", "train_prompt"):
        if getattr(args, dest, None) is not None:
            check_prompt(getattr(args, dest), f"--{dest.replace('_', '-')} text")
    if getattr(args, "handover_frames", None) is not None:
        from ...method.windows import check_window_settings

        check_window_settings(DEFAULT_WINDOW_FRAMES if args.window_frames is None else args.window_frames,
                              args.handover_frames)
    for seed in _seeds(args.seeds) if getattr(args, "seeds", None) else ():
        check("seed", seed, "--seeds")
    if getattr(args, "point", None):  # `segment --point`, repeated
        check("points", len(args.point), "--point")
    keys = [entry.split("=", 1)[0].strip() for entry in getattr(args, "edited_later", None) or [] if "=" in entry]
    check_unique_frames([int(key) if key.lstrip("-").isdigit() else key for key in keys], "--edited-later frame")


def _train_config(args, num_frames: int | None = None) -> TrainConfig:
    """The run's TrainConfig: the preset's (`Preset.train_config`) with the options given on the command line. A
    clip longer than one window trains `windows.long_clip_steps` steps unless --steps is given (the preset's steps
    per window)."""
    from ...method.windows import long_clip_steps, plan_windows

    alpha = args.alpha if args.alpha is not None else float(args.rank)
    steps = args.train_steps
    window_frames = getattr(args, "window_frames", None) or DEFAULT_WINDOW_FRAMES
    handover_frames = getattr(args, "handover_frames", None) or DEFAULT_HANDOVER_FRAMES
    if not getattr(args, "steps_given", True) and num_frames is not None and num_frames > window_frames:
        steps = long_clip_steps(steps, len(plan_windows(num_frames, window_frames, 1)))
        print(f"training: {steps} steps ({args.train_steps} per window of the clip; --steps sets them)", flush=True)
    config = args.preset_settings.train_config(
        window_frames=window_frames, handover_frames=handover_frames,
        steps=steps, learning_rate=args.lr, rank=args.rank, alpha=alpha, seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing, activation_offload=args.activation_offload,
        blocks_to_swap=args.blocks_to_swap, fp8=args.fp8, offload_encoders=bool(args.offload_encoders),
        window=args.window or 0,
        window_stride=args.window_stride, stage2_epochs=args.stage2_epochs,
        condition="stock" if getattr(args, "naive", False) else "mask", timestep_sampler=args.timestep_sampler,
        timestep_shift=args.timestep_shift, optimizer=args.optimizer, fp8_scaling=args.fp8_scaling)
    training.check_optimizer(config)  # a missing package is said before any model loads
    return config


def _check_generate_args(args) -> None:
    """The generation options as `GenerateSettings` (its checks), naming the flag in the message; kept as
    args.generate_settings."""
    if args.composite is None and (args.feather is not None or args.composite_margin is not None):
        flag = "--feather" if args.feather is not None else "--composite-margin"
        raise MaskEditError(f"{flag} sets how --composite blends, and compositing is off: add --composite "
                            f"(or leave {flag} out)")
    if args.composite == "boxes" and args.composite_margin is not None:
        raise MaskEditError("--composite-margin grows the tight mask of --composite mask; the loose boxes are "
                            "used as they are: leave it out, or use --composite mask")
    composite = dict(composite=args.composite is not None, composite_region=args.composite or "boxes")
    composite.update({name: getattr(args, name) for name in ("feather", "composite_margin")
                      if getattr(args, name) is not None})
    try:
        args.generate_settings = GenerateSettings(
            steps=args.gen_steps, guidance_scale=args.cfg, flow_shift=args.shift, lora_scale=args.lora_scale,
            seed=args.seed, method=getattr(args, "method", "mask-lora"), guidance_scale_2=args.guidance_scale_2,
            negative_prompt=args.negative_prompt, step_cache=args.step_cache,
            step_cache_threshold=args.step_cache_threshold, **composite)
    except MaskEditError as error:
        flags = {"generation steps": "--gen-steps" if args.command == "edit" else "--steps", "guidance scale": "--cfg", "flow shift": "--shift",
                 "method": "--method", "negative prompt": "--negative-prompt"}
        flag = next((f for words, f in flags.items() if words in str(error)), None)
        raise MaskEditError(f"{error} ({flag})" if flag else str(error)) from None


def _load_model(name: str, args=None):
    from ...models.loading import default_device, load_pipeline

    low_noise_cfg = GenerateSettings(guidance_scale_2=getattr(args, "guidance_scale_2", None))
    if name in (TINY, DEFAULT_MODEL_ID, models.WAN21_720P_MODEL_ID):  # one transformer, known by name: refused
        _check_base_option(low_noise_cfg, False)                       # before the model loads
    print(f"loading model {name} ...", flush=True)
    swap, fp8 = (getattr(args, "blocks_to_swap", 0) or 0), bool(getattr(args, "fp8", False))
    offload = bool(getattr(args, "offload_encoders", False))
    device = default_device()
    if (swap or fp8 or offload) and device != "cpu":
        import torch

        from ...memory.offload import encoder_offload, place_pipeline

        # load on the CPU, then stream / quantise the blocks: the whole transformer never sits on the GPU
        loaded = load_pipeline(name, device="cpu", dtype=torch.bfloat16)
        setup = place_pipeline(loaded.pipe, device, swap, fp8, offload_encoders=offload,
                               fp8_scaling=getattr(args, "fp8_scaling", None) or "row")
        if setup is not None:
            print(f"memory: {setup.streamer.describe()}", flush=True)
        if offload:
            print(f"memory: {encoder_offload(loaded.pipe).describe()}", flush=True)
    else:
        loaded = load_pipeline(name)
    print(f"model: {loaded.description}", flush=True)
    from ...models.bases import base_for_pipeline

    print(base_for_pipeline(loaded.pipe, loaded.name).banner(), flush=True)
    from ...method.experts import is_two_expert

    _check_base_option(low_noise_cfg, is_two_expert(loaded.pipe))  # before any training or generation
    if args is not None and hasattr(args, "gen_steps"):
        _apply_generation_options(loaded.pipe, args)
    return loaded


def _check_base_option(settings: GenerateSettings, two_experts: bool) -> None:
    try:
        settings.check_base(two_experts)
    except MaskEditError as error:
        raise MaskEditError(f"{error} (--guidance-scale-2)") from None


def _apply_generation_options(pipe, args) -> None:
    """Attention backend, compile and VAE tiling of the preset / options (the speed LoRA is loaded later,
    after the edit LoRA)."""
    from ...models.speed import compile_blocks, enable_vae_tiling, set_attention_backend

    if args.attention and args.attention not in ("native", "default"):
        print(f"attention: {set_attention_backend(pipe.transformer, args.attention)}")
    enable_vae_tiling(pipe, bool(args.vae_tiling))
    if args.compile:
        print(f"compiling {compile_blocks(pipe.transformer)} transformer modules (the first step is slow)")


def _load_speed_lora(pipe, args) -> None:
    from ...workflow.preview import stack_speed_lora

    if args.speed_lora:
        stack_speed_lora(pipe, args.speed_lora, args.speed_lora_weight, args.lora_scale)
        print(f"speed LoRA: {args.speed_lora} (weight {args.speed_lora_weight:g})")


def _train(loaded, prepared, caption, config, args, later, out: Path, distributed=None) -> dict:
    """Train (or reuse) the LoRA through `train.train_cached` (the app's path too) into `out`, with a
    progress bar; returns its lora.json metadata."""
    from tqdm import tqdm

    from ...workflow.lora_cache import CacheNote, LoraCache
    from ...workflow.train import train_cached

    cache = None if getattr(args, "no_cache", False) else LoraCache(getattr(args, "cache_dir", None) or None)
    events = train_cached(loaded.pipe, prepared, caption, config, cache=cache, trigger=args.trigger,
                          base_model=loaded.name, edited_later=later, resume=not args.no_resume, out_dir=out,
                          distributed=distributed, later_captions=getattr(args, "later_captions", None),
                          edit_caption=getattr(args, "edit_caption", None),
                          negative_prompt=getattr(args, "negative_prompt", None))
    bar = None
    encoding_since = None
    try:
        for event in events:
            if isinstance(event, train.EditTrainingEncoding):
                (bar.write if bar else print)(f"{event.message} (VAE, text and image encoders; once per run) ...")
                encoding_since = time.perf_counter()
            elif isinstance(event, CacheNote):
                if event.kind != "off":
                    if bar:
                        bar.write(event.message)
                    else:
                        print(event.message, flush=True)
            elif isinstance(event, train.EditTrainingNote):
                (bar.write if bar else print)(event.message)
            elif isinstance(event, train.EditTrainingStage):
                if bar:
                    bar.close()
                if encoding_since is not None:
                    print(f"encoded in {time.perf_counter() - encoding_since:.1f} s", flush=True)
                    encoding_since = None
                # one time per step: tqdm's own rate (s/step) and elapsed<left
                bar = tqdm(total=event.total_steps, initial=event.start_step, desc=f"training stage {event.stage}",
                           unit="step", dynamic_ncols=True)
            elif isinstance(event, training.StepEvent):
                bar.update(1)
                bar.set_postfix(loss=f"{event.loss:.4f}")
                if event.step == event.total_steps:
                    bar.set_description(f"{bar.desc}: done; saving")
            elif isinstance(event, train.EditTrainingStopped):
                raise MaskEditError(f"training stopped at step {event.step}; run the same command again to resume")
            elif isinstance(event, train.EditTrainingDone):
                if bar:
                    bar.close()
                    bar = None
                loss = event.metadata.get("final_loss")
                print(f"saved the LoRA: {event.lora_path}" + (f" (final loss {loss:.4f})" if loss is not None else ""))
                return event.metadata
    except KeyboardInterrupt:
        if bar:
            bar.close()
        events.close()
        raise _Interrupted(f"interrupted: training checkpoints are kept in {out / training.CHECKPOINTS_FOLDER}"
                           + ("" if cache is None else " and in the LoRA cache")
                           + "; run the same command again to resume") from None
    finally:
        if bar:
            bar.close()
        events.close()
    raise MaskEditError("training ended without saving a LoRA")


def _generate(loaded, prepared, edited_first, args, trigger, out: Path) -> int:
    from tqdm import tqdm

    from ...method.windows import plan_windows
    from ...models.step_cache import StepCacheStats
    from ...workflow.long_clip import generate_clip

    windows = plan_windows(prepared.num_frames, args.window_frames, args.handover_frames)
    preview = getattr(args, "preview_settings", None)
    if preview is not None and len(windows) > 1:
        raise MaskEditError(f"--preview renders one window, and this clip has {len(windows)}: preview a part of it "
                            f"(--frames {args.window_frames} with --start), or leave --preview out")
    if len(windows) == 1:
        generate.remove_edit_outputs(out)
    if preview is None:
        _load_speed_lora(loaded.pipe, args)
    info: dict = {}  # what the run used and did (negative prompt, step cache counts)
    settings = dict(steps=args.gen_steps, guidance_scale=args.cfg, flow_shift=args.shift, seed=args.seed,
                    lora_scale=args.lora_scale, method=getattr(args, "method", "mask-lora"), trigger=trigger,
                    negative_prompt=args.negative_prompt,
                    speed_lora_weight=args.speed_lora_weight if args.speed_lora else 1.0, sampler=args.sampler,
                    guidance_scale_2=args.guidance_scale_2, step_cache=args.step_cache,
                    step_cache_threshold=args.step_cache_threshold)
    steps = preview.steps if preview else args.gen_steps
    phases = _PhasePrinter()
    bar = None
    frames = None

    def on_step(event) -> None:
        if hasattr(event, "window"):  # a long clip: windows finished before (a resumed run) count as done
            bar.n = event.window * event.total_steps + event.step
            bar.refresh()
            bar.set_postfix(s_per_step=f"{event.seconds:.2f}", window=f"{event.window + 1}/{event.windows}")
        else:
            bar.update(1)  # one time per step: tqdm's rate (s/step), from the first step on (the encoding is its own)

    def on_window(event) -> None:
        bar.write(f"window {event.window + 1} of {event.windows} done ({event.frames_done} of "
                  f"{event.frames_total} frames, {event.seconds:.1f} s)")

    def on_phase(name: str) -> None:
        nonlocal bar
        if name == "denoising":
            phases.ended()
            bar = tqdm(total=steps, desc="previewing" if preview else "denoising", unit="step", dynamic_ncols=True)
        else:
            if bar is not None:
                bar.close()
            phases.begin({"encoding": "encoding the prompt, the edited frame and the condition",
                          "decoding": "decoding the video (VAE)"}[name])

    try:
        if preview:
            frames = _generate_preview(loaded, prepared, edited_first, args, trigger, preview, on_step, info,
                                       on_phase)
        elif len(windows) == 1:
            frames = generate.generate_edit(loaded.pipe, prepared, edited_first, args.edit_prompt, callback=on_step,
                                            info=info, on_phase=on_phase, **settings)
        else:
            bar = tqdm(total=args.gen_steps * len(windows), desc="generating", unit="step", dynamic_ncols=True)
            outputs = generate_clip(
                loaded.pipe, prepared, edited_first, args.edit_prompt, out, window_frames=args.window_frames,
                handover_frames=args.handover_frames, trained_handover=getattr(args, "trained_handover", None),
                callback=on_step, on_window=on_window, resume=not getattr(args, "no_resume", False),
                lora_id=getattr(args, "lora_id", None), compositing=args.generate_settings, **settings)
        phases.ended()
    finally:
        if bar is not None:
            bar.close()
    record = None
    if frames is not None:
        result = generate.composite_edit(prepared, edited_first, frames, args.generate_settings)
        outputs = generate.write_edit_outputs(out, prepared, result.frames, result.record)
        record = result.record
    print(f"wrote {outputs.edited} and {outputs.side_by_side}"
          + (f" ({generate.EDITED_JSON} says how)" if record is not None else ""))
    if preview:
        print(f"{preview.describe()}; run the same command without --preview for the full render")
    print(f"background PSNR (outside the boxes, frames 1..): {outputs.background_psnr:.2f} dB")
    if record is not None:
        _print_composite(record)
    elif args.generate_settings.composite:
        print(f"compositing: {generate.describe_composite(generate.composite_settings_record(args.generate_settings))}"
              " — window by window")
    if frames is not None:
        measures = generate.edit_clip_measures(loaded.pipe, prepared, edited_first, frames)
        if measures["clip_score"] is None:
            print(f"CLIP score and input similarity: {measures['clip_note']}")
        else:
            print(f"CLIP score (vs the edited first frame): {measures['clip_score']:.4f}; input similarity (vs the "
                  f"source frames): {measures['input_similarity']:.4f} — {measures['clip_note']}")
    if info:
        print(f"negative prompt: {info['negative_prompt']}; {StepCacheStats.from_dict(info).describe()}")
    if len(windows) > 1:
        print(f"seams ({len(windows)} windows; seam jump 1.0 = seamless, colour drift ΔE of the edit region from "
              "window 1; seams.json has them all):")
        for line in outputs.seams.lines():
            print(f"  {line}")
    if loaded.is_tiny and loaded.name == TINY:
        print("(the tiny model has random weights: the video shows the workflow, not the method's quality)")
    return 0


def _print_composite(record: dict) -> None:
    """What compositing did, and how the generated video differed from the source just outside the region."""
    print(f"compositing: {generate.describe_composite(record)}")
    print(f"the generated video against the source (frames 1..): {record['background_psnr_generated_db']:.2f} dB "
          f"outside the boxes; {record['ring_psnr_generated_db']:.2f} dB in the {RING_WIDTH}-pixel ring just outside "
          f"the region (mean |difference| {record['ring_mean_abs_diff_generated']:.1f} of 255)"
          + (" — what compositing replaced by the source" if record["on"] else ""))
    if record["note"]:
        print(f"note: {record['note']}")


def _preview_settings(args):
    """The preview's settings, checked before any model loads (no speed LoRA: what to set)."""
    from ...workflow.preview import preview_settings

    return preview_settings(args.preset_settings, speed_lora=args.speed_lora)


def _generate_preview(loaded, prepared, edited_first, args, trigger, settings, on_step, info=None, on_phase=None):
    from ...workflow.preview import generate_preview

    return generate_preview(
        loaded.pipe, prepared, edited_first, args.edit_prompt, settings, seed=args.seed, lora_scale=args.lora_scale,
        method=getattr(args, "method", "mask-lora"), callback=on_step, trigger=trigger,
        negative_prompt=args.negative_prompt, info=info, on_phase=on_phase,
    )


class _PhasePrinter:
    """Prints "<what> ..." as a phase of a render begins and "  done in N s" as it ends (the steps have their bar)."""

    def __init__(self):
        self.since = None

    def begin(self, words: str) -> None:
        self.ended()
        print(f"{words} ...", flush=True)
        self.since = time.perf_counter()

    def ended(self) -> None:
        if self.since is not None:
            print(f"  done in {time.perf_counter() - self.since:.1f} s", flush=True)
            self.since = None


# ----- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else EXIT_ERROR)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        _check_limits(args)
        return args.handler(args)
    except MaskEditError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except _Interrupted as interrupted:
        print(f"\n{interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            print("error: the GPU ran out of memory; use fewer frames (--frames) or a smaller size "
                  "(--width/--height), or a GPU with more memory", file=sys.stderr)
            return EXIT_ERROR
        raise
