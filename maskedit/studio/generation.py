"""Generating one edit in the app: the step-reporting driver, the preset's generation options on a shared
pipe, and the quality report."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MaskEditError
from ..models.presets import GenerateSettings


WORKER_NAME = "maskedit-generation"  # the thread that denoises (one per running generation)


def run_generation(pipe, prepared_dir, edited_frame, caption: str, out_dir, settings: GenerateSettings, *,
                   lora_path=None, trigger=None, fit=False, stop_file=None, preset=None, preview=None) -> Iterator[dict]:
    """Generate an edit with `settings` (method, steps, CFG, shift, seed, LoRA scale, sampler) and write its files; yields {"kind": "warning", "message"} for a preset option that
    cannot be used here (generation goes on without it), {"kind": "phase", "phase"} as each phase begins
    ("encoding", "denoising", "decoding", then "writing" the files), {"kind": "step", "step", "total_steps", "seconds"}
    per denoising step and finally {"kind": "done", "edited", "side_by_side", "report"}.

    The pipe gets exactly the given LoRA (or none): an adapter left by another session is removed.
    preset: a preset name (or `presets.Preset`) whose generation options apply — its speed LoRA (stacked
    with the edit LoRA), attention backend and VAE tiling (`apply_preset_options`); None: none of them.
    preview: a `preview.PreviewSettings` — a fast preview (`preview.generate_preview`: its speed LoRA stacked
    on the edit LoRA for its steps/CFG/shift, removed afterwards) instead of the full render; the preset's
    own speed LoRA is not used then."""
    from ..workflow import generate, prepare
    from ..method.conditioning import DEFAULT_TRIGGER
    from ..method.experts import is_two_expert, load_edit_lora, unload_expert_loras
    from ..method.lora import read_metadata, unload_lora

    settings.validate()
    generate.check_guidance_scale_2(pipe, settings.guidance_scale_2)
    method, lora_scale = settings.method, settings.lora_scale
    started = time.perf_counter()
    prepared = prepare.load_prepared(prepared_dir)
    edited = prepare.load_edited_frame(edited_frame, prepared.width, prepared.height, fit, prepared.source_size,
                                       "edited first frame")
    if lora_path:
        load_edit_lora(pipe, lora_path, float(lora_scale))  # one file, or a two-expert (Wan2.2) LoRA's pair
        if trigger is None:
            trigger = read_metadata(lora_path).get("trigger")
    else:
        (unload_expert_loras if is_two_expert(pipe) else unload_lora)(pipe)
    trigger = DEFAULT_TRIGGER if trigger is None else trigger
    options = apply_preset_options(pipe, preset, float(lora_scale), use_speed=method != "no-lora" and preview is None)
    for message in options["warnings"]:
        yield {"kind": "warning", "message": message}
    speed_weight = options["speed_lora_weight"]
    closed = threading.Event()  # this generator was closed (the caller cancelled): the worker stops too

    def should_stop() -> bool:
        return closed.is_set() or (stop_file is not None and Path(stop_file).exists())

    results: queue.Queue = queue.Queue()

    def work():
        try:
            if preview is not None:
                from ..workflow.preview import generate_preview

                frames = generate_preview(pipe, prepared, edited, caption, preview, seed=int(settings.seed),
                                          lora_scale=float(lora_scale), method=method, trigger=trigger,
                                          callback=lambda e: results.put(("step", e)), should_stop=should_stop,
                                          on_phase=lambda name: results.put(("phase", name)))
            else:
                frames = generate.generate_edit(
                    pipe, prepared, edited, caption, steps=int(settings.steps),
                    guidance_scale=float(settings.guidance_scale), flow_shift=float(settings.flow_shift),
                    seed=int(settings.seed), lora_scale=float(lora_scale), method=method, trigger=trigger,
                    callback=lambda e: results.put(("step", e)), should_stop=should_stop,
                    on_phase=lambda name: results.put(("phase", name)), speed_lora_weight=speed_weight, sampler=settings.sampler,
                    guidance_scale_2=settings.guidance_scale_2)
            results.put(("frames", frames))
        except BaseException as error:  # re-raised in the caller's thread
            results.put(("error", error))

    thread = threading.Thread(target=work, daemon=True, name=WORKER_NAME)
    thread.start()
    phases = PhaseClock()
    try:
        while True:
            kind, value = results.get()
            if kind == "step":
                yield {"kind": "step", "step": value.step, "total_steps": value.total_steps, "seconds": value.seconds}
            elif kind == "phase":
                phases.enter(value)
                yield {"kind": "phase", "phase": value}
            elif kind == "error":
                raise value
            else:
                frames = value
                break
    finally:  # a cancelled caller closes this generator: the worker stops after its current step, then the pipe is free
        closed.set()
        thread.join()
    phases.enter("writing")
    yield {"kind": "phase", "phase": "writing"}
    outputs = generate.write_edit_outputs(out_dir, prepared, frames)
    phases.enter(None)
    report = {"method": method, "frames": int(frames.shape[0]), "width": prepared.width, "height": prepared.height,
              "fps": prepared.fps, "background_psnr_db": outputs.background_psnr, "seconds": time.perf_counter() - started,
              "steps": int(settings.steps), "guidance_scale": float(settings.guidance_scale),
              "guidance_scale_2": None if settings.guidance_scale_2 is None else float(settings.guidance_scale_2),
              "flow_shift": float(settings.flow_shift), "sampler": settings.sampler, "seed": int(settings.seed), "lora_scale": float(lora_scale), "lora": Path(lora_path).name if lora_path else None,
              "preset": options["preset"], "speed_lora": options["speed_lora"], "options": options["notes"],
              "warnings": options["warnings"], "phase_seconds": phases.seconds}
    if preview is not None:
        report.update(steps=int(preview.steps), guidance_scale=float(preview.guidance_scale),
                      flow_shift=float(preview.flow_shift), speed_lora=preview.speed_lora, preview=preview.describe())
    Path(out_dir, "report.json").write_text(json.dumps(report, indent=2, default=str))
    yield {"kind": "done", "edited": str(outputs.edited), "side_by_side": str(outputs.side_by_side), "report": report}


class PhaseClock:
    """Seconds each phase of a render took ({"encoding": s, "denoising": s, "decoding": s, "writing": s})."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._phase, self._since = None, time.perf_counter()

    def enter(self, phase: str | None) -> None:
        now = time.perf_counter()
        if self._phase is not None:
            self.seconds[self._phase] = round(self.seconds.get(self._phase, 0.0) + now - self._since, 3)
        self._phase, self._since = phase, now


def apply_preset_options(pipe, preset, edit_weight: float = 1.0, use_speed: bool = True) -> dict:
    """Put a preset's generation options on the (shared) pipe: its speed LoRA beside the edit LoRA, its
    attention backend and VAE tiling; a pipe left with another preset's options gets them undone. An
    option that cannot be used here (a speed LoRA that is not on disk or in the hub cache offline, an
    attention backend not installed) is skipped with a warning: generation never fails for it.
    Returns {"preset", "speed_lora" (what is active, or None), "speed_lora_weight", "notes", "warnings"}."""
    from ..models.presets import get_preset
    from ..workflow.preview import stack_speed_lora as load_speed_lora  # one file, or HIGH,LOW on a two-expert base
    from ..workflow.preview import unload_preview_lora as unload_speed_lora  # from every expert
    from ..models.speed import enable_vae_tiling, has_speed_lora, set_attention_backend, set_lora_weights

    chosen = get_preset(preset) if isinstance(preset, str) else preset
    result = {"preset": getattr(chosen, "name", None), "speed_lora": None, "speed_lora_weight": 1.0, "notes": [],
              "warnings": []}
    spec = chosen.speed_lora if (chosen is not None and use_speed) else None
    loaded_spec = getattr(pipe, "_maskedit_speed_lora", None)
    if has_speed_lora(pipe) and (spec is None or loaded_spec != spec):
        unload_speed_lora(pipe, edit_weight)
        pipe._maskedit_speed_lora = None
    if spec:
        try:
            if not has_speed_lora(pipe):
                load_speed_lora(pipe, spec, chosen.speed_lora_weight, edit_weight)
                pipe._maskedit_speed_lora = spec
            else:
                set_lora_weights(pipe, edit_weight, chosen.speed_lora_weight)
            result.update(speed_lora=spec, speed_lora_weight=float(chosen.speed_lora_weight))
            result["notes"].append(f"speed LoRA {Path(spec).name} (weight {chosen.speed_lora_weight:g})")
        except MaskEditError as error:
            if has_speed_lora(pipe):
                unload_speed_lora(pipe, edit_weight)
            pipe._maskedit_speed_lora = None
            result["warnings"].append(f"the preset's speed LoRA could not be loaded, so this edit was generated "
                                      f"without it (use more steps and CFG > 1 for full quality): {error}")
    if chosen is None:
        return result
    backend = chosen.attention_backend or "native"
    if backend != (getattr(pipe, "_maskedit_attention", None) or "native"):
        try:
            set_attention_backend(pipe.transformer, backend)
            pipe._maskedit_attention = backend
            result["notes"].append(f"attention backend {backend}")
        except MaskEditError as error:
            result["warnings"].append(f"{error}; the default attention is used")
    enable_vae_tiling(pipe, bool(chosen.vae_tiling))
    if chosen.vae_tiling:
        result["notes"].append("VAE tiling")
    if chosen.compile:
        result["notes"].append("compile skipped in the app (not on ZeroGPU; the first step would be slow)")
    return result


def format_report(report: dict) -> str:
    """The quality report as Markdown."""
    psnr = report.get("background_psnr_db")
    psnr_text = "–" if psnr is None or (isinstance(psnr, float) and np.isnan(psnr)) else (
        "identical (∞ dB)" if psnr == float("inf") else f"{psnr:.2f} dB")
    phases = report.get("phase_seconds") or {}
    phase_text = " · ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
    return (f"| what | this render |\n|---|---|\n| method | {report['method']} |\n"
            f"| background PSNR (outside the boxes, frames 1..) | {psnr_text} |\n"
            f"| frames | {report['frames']} at {report['width']}x{report['height']}, {report['fps']:g} fps |\n"
            f"| time | {report['seconds']:.1f} s ({report['steps']} steps, CFG {report['guidance_scale']:g}"
            + (f" / low-noise {report['guidance_scale_2']:g}" if report.get("guidance_scale_2") is not None else "")
            + ", "
            f"shift {report['flow_shift']:g}, {report['sampler']} sampler, seed {report['seed']}) |"
            + (f"\n| phases | {phase_text} |" if phase_text else "")
            + (f"\n| preset | {report['preset']} |" if report.get("preset") else "")
            + (f"\n| options | {', '.join(report['options'])} |" if report.get("options") else "")
            + "".join(f"\n| ⚠️ | {w} |" for w in report.get("warnings") or []))


