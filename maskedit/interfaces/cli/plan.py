"""`python -m maskedit plan`: will this edit fit my GPU? The planner's dry run (maskedit.models.planner), offline.

    python -m maskedit plan --preset 24gb --gpu 4090
    python -m maskedit plan --preset full --frames 81 --size 1280x720 \
        --model Wan-AI/Wan2.1-I2V-14B-720P-Diffusers --gpu h100 --json
    python -m maskedit plan --preset zerogpu --gpu zerogpu-large   # a ZeroGPU call: memory less its margin
"""

from __future__ import annotations

import argparse
import json
import os
import re

from ...errors import MaskEditError
from ...defaults import DEFAULT_HANDOVER_FRAMES, DEFAULT_MODEL_ID, DEFAULT_WINDOW_FRAMES, STEP_CACHES
from ...models.estimates import UTILISATION
from ...models.presets import DEFAULT_PRESET, PRESETS

GB = 1e9  # decimal, as cards are sold: the one unit `plan` prints

# option → preset field: the settings flags `train` takes, with the same names
SETTINGS = {
    "window": "window", "window_stride": "window_stride", "blocks_to_swap": "blocks_to_swap", "fp8": "fp8",
    "gradient_checkpointing": "gradient_checkpointing", "activation_offload": "activation_offload", "rank": "rank",
    "train_steps": "train_steps", "gen_steps": "generation_steps", "cfg": "guidance_scale", "vae_tiling": "vae_tiling",
    "offload_encoders": "offload_encoders", "step_cache": "step_cache",
}


def add_plan_parser(commands) -> None:
    """Register the `plan` command on an argparse sub-parser collection."""
    from ...models.cards import ATTENTION_BACKENDS
    from ...models.zerogpu import card_names

    plan = commands.add_parser(
        "plan", help="estimate GPU memory, FLOPs and time of an edit before running it (no GPU needed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dry-run an edit at the real model's size on the CPU (no weights, no GPU) and print, per phase, "
                    "the peak GPU and host memory, the FLOPs and the time floor on a card; then whether it fits "
                    "and, if not, the quickest preset that would.",
        epilog="examples:\n  python -m maskedit plan --preset 24gb --gpu 4090\n"
               "  python -m maskedit plan --preset full --frames 81 --size 1280x720 \\\n"
               "      --model Wan-AI/Wan2.1-I2V-14B-720P-Diffusers --gpu h100 --json\n\n"
               "Estimates: checked against the paper's RTX 4090 figures, not yet against a GPU of ours.",
    )
    plan.add_argument("--model", default=DEFAULT_MODEL_ID, help="a known hub id (Wan2.1-I2V-14B 480P or 720P, Wan2.2-I2V-A14B; their configs are "
                      "written in code) or a local diffusers folder (its config files are read, not its weights) "
                      "(default %(default)s)")
    plan.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET, help="named settings (default %(default)s)")
    plan.add_argument("--frames", type=int, metavar="N",
                      help="frames of the clip (4k+1; default: the preset's); past one window (--window-frames) the "
                           "clip is planned window by window: per-window peaks, total time, host and disk use")
    plan.add_argument("--window-frames", type=int, metavar="W",
                      help=f"frames of one window of a long clip (4k+1; default: the preset's, {DEFAULT_WINDOW_FRAMES} "
                           "for full)")
    plan.add_argument("--handover-frames", type=int, default=DEFAULT_HANDOVER_FRAMES, metavar="O",
                      help="hand-over frames between windows (default %(default)s)")
    plan.add_argument("--size", metavar="WxH", help="clip size, e.g. 832x480 (default: the preset's)")
    plan.add_argument("--gpu", choices=card_names(), default="h100",
                      help="the card judged: its memory to fit in and its speed for the time; zerogpu-large / zerogpu-xlarge: one ZeroGPU call of that size "
                           "(default %(default)s)")
    plan.add_argument("--gpu-memory", type=float, metavar="GB",
                      help="memory to fit in, decimal GB as cards are sold (default: the --gpu card's; a ZeroGPU "
                           "size's less the margin its calls keep free)")
    plan.add_argument("--attention", choices=ATTENTION_BACKENDS, default="flash",
                      help="attention kernel to model (default %(default)s: what SDPA uses on a GPU in bf16)")
    plan.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    plan.add_argument("--no-alternatives", action="store_true",
                      help="do not dry-run the other presets when this one does not fit")
    group = plan.add_argument_group("settings (as for `train`; default: the preset's)")
    group.add_argument("--window", type=int, metavar="N", help="frames per training window (4k+1), 0 = whole clip")
    group.add_argument("--window-stride", type=int, metavar="N")
    group.add_argument("--blocks-to-swap", type=int, metavar="N", help="transformer blocks (of 40) streamed from CPU")
    group.add_argument("--fp8", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--activation-offload", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--offload-encoders", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--rank", type=int)
    group.add_argument("--steps", dest="train_steps", type=int, metavar="N", help="training steps")
    group.add_argument("--gen-steps", type=int, metavar="N", help="denoising steps")
    group.add_argument("--cfg", type=float, help="guidance scale (CFG > 1 runs the transformer twice per step)")
    group.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--step-cache", choices=STEP_CACHES,
                       help="step caching of generation: the time floor counts only the evaluations it runs in full")
    plan.set_defaults(handler=cmd_plan)


def machine_memory_bytes() -> int | None:
    """This machine's physical memory (bytes), or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def host_memory_line(needed_bytes: int, machine_bytes: int | None = None) -> str:
    """The plan's host-memory peak against this machine's memory, in GB."""
    machine_bytes = machine_memory_bytes() if machine_bytes is None else machine_bytes
    text = f"host memory: needs ≈ {needed_bytes / GB:.1f} GB"
    if machine_bytes is None:
        return text + " (this machine's memory is unknown)"
    verdict = "enough" if needed_bytes <= machine_bytes else "too little: use a machine with more memory, or fewer " \
                                                                "blocks in CPU memory / no --offload-encoders"
    return f"{text}; this machine has {machine_bytes / GB:.1f} GB: {verdict}"


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text)
    if not match:
        raise MaskEditError(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 832x480")
    return int(match.group(1)), int(match.group(2))


def cmd_plan(args) -> int:
    from ...models.planner import cheapest_fitting_preset, estimate, get_card

    size = parse_size(args.size)
    from ...models import zerogpu

    card = get_card(args.gpu)
    memory = args.gpu_memory if args.gpu_memory is not None else zerogpu.usable_gb(args.gpu, card.memory_gb)
    if memory <= 0:
        raise MaskEditError(f"--gpu-memory {memory:g} must be positive")
    overrides = {field: getattr(args, option) for option, field in SETTINGS.items() if getattr(args, option) is not None}
    if args.window_frames is None:
        args.window_frames = PRESETS[args.preset].window_frames
    if args.frames is not None and args.frames > args.window_frames:
        return _plan_long(args, size, card, memory, overrides)
    if not args.json:
        print(f"dry run of {args.model} with preset {args.preset} on the CPU (meta device; under a minute) ...",
              flush=True)
    plan = estimate(args.preset, args.frames, size, args.model, attention=args.attention, **overrides)
    alternative = None
    if not plan.fits(memory) and not args.no_alternatives:
        alternative = cheapest_fitting_preset(memory, plan.num_frames, (plan.width, plan.height), args.model,
                                              plans={args.preset: plan})
    if args.json:
        data = plan.to_dict(card, memory)
        data["preset_that_fits"] = alternative.preset.name if alternative else (args.preset if plan.fits(memory) else None)
        print(json.dumps(data, indent=2))
        return 0
    settings = plan.preset
    print(f"{plan.num_frames} frames at {plan.width}x{plan.height}; {settings.blocks_resident} of 40 blocks resident, "
          f"fp8 {'on' if settings.fp8 else 'off'}, checkpointing {'on' if settings.gradient_checkpointing else 'off'}"
          f"{' (activations offloaded)' if settings.activation_offload else ''}, "
          f"window {settings.window or 'whole clip'}, attention {plan.attention}")
    print(plan.table(card))  # GB = 10^9 bytes throughout, as cards are sold
    judged = card.name if args.gpu_memory is None else f"a {memory:g} GB card"
    print(f"GPU memory on {judged}: {plan.summary(memory)}")
    print(host_memory_line(plan.peak_host_bytes))
    run = plan.denoising_steps_run()
    cached = (f", {run:.4g} run in full with the {settings.step_cache} step cache"
              if settings.step_cache != "off" else "")
    floor = plan.time_floor_s(card)
    from ...studio.progress import format_eta  # the app's own way of writing a duration
    print(f"time on the {card.name}: ≈ {format_eta(floor / UTILISATION)} for the whole edit "
          f"({settings.train_steps} training steps, {settings.generation_steps} denoising steps{cached}) at "
          f"{UTILISATION:.0%} of its {card.bf16_tflops:g} TFLOPS bf16 peak (calibrated on published measurements, "
          f"`maskedit.models.estimates`); at least {format_eta(floor)} at the peak itself")
    if args.gpu.startswith("zerogpu-"):
        for line in zerogpu_lines(plan):
            print(line)
    if not plan.fits(memory):
        if alternative is not None:
            print(f"the {alternative.preset.name} preset fits: {alternative.summary(memory)}")
        elif not args.no_alternatives:
            print("no preset fits at this size: use fewer frames or a smaller size")
    for note in plan.notes:
        print(f"note: {note}")
    return 0


def zerogpu_lines(plan) -> list[str]:
    """What each ZeroGPU call of this plan needs: its peak, the size it takes (`zerogpu.size_for_peak`) and its
    step's seconds there at the calibrated utilisation (`estimates.UTILISATION`)."""
    from ...models import estimates, zerogpu

    entry = estimates.table_entry(plan)
    lines = [f"ZeroGPU ({zerogpu.SOURCE}); a call may plan {100 - zerogpu.MEMORY_MARGIN * 100:.0f}% of its memory:"]
    for kind, phase, words in (("training", "training step", "training chunk"),
                               ("generation", "denoising step", "render")):
        if phase not in entry["phase_details"]:
            continue
        peak = estimates.call_peak_bytes(entry, kind)
        size = zerogpu.size_for_peak(peak)
        if size is None:
            lines.append(f"  {words}: ≈ {peak / 1e9:.1f} GB: no ZeroGPU call holds it")
            continue
        seconds = estimates.step_seconds(entry, phase, zerogpu.SIZES[size].card)
        lines.append(f"  {words}: ≈ {peak / 1e9:.1f} GB → {zerogpu.describe(size)}; one {phase} ≈ {seconds:.1f} s "
                     f"at {estimates.UTILISATION:.0%} of its {zerogpu.SIZES[size].card.bf16_tflops:g} TFLOPS")
    return lines


def _plan_long(args, size, card, memory: float, overrides: dict) -> int:
    """`plan --frames N` past one window: one window's dry run scaled to the clip (`models.long_plan`)."""
    from ...limits import check
    from ...method.windows import check_window_settings
    from ...models.long_plan import estimate_long

    check("num_frames", args.frames, "--frames")
    check_window_settings(args.window_frames, args.handover_frames)
    steps = overrides.pop("train_steps", None)
    if not args.json:
        print(f"dry run of one {args.window_frames}-frame window of {args.model} with preset {args.preset} on the CPU "
              "(meta device; under a minute) ...", flush=True)
    plan = estimate_long(args.preset, args.frames, size, args.model, args.window_frames, args.handover_frames,
                         train_steps=steps, attention=args.attention, **overrides)
    if args.json:
        data = plan.window.to_dict(card, memory)
        data["long_clip"] = plan.to_dict(card)
        data["fits"] = plan.fits(memory)
        print(json.dumps(data, indent=2))
        return 0
    print(plan.window.table(card))
    print(plan.table(card))
    print(plan.window.summary(memory) + " (one window at a time, whatever the clip's length)")
    for note in plan.window.notes:
        print(f"note: {note}")
    return 0
