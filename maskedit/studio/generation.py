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
                   lora_path=None, trigger=None, fit=False, stop_file=None, preset=None, preview=None,
                   window_frames: int | None = None, handover_frames: int | None = None,
                   trained_handover: int | None = None, max_windows: int | None = None) -> Iterator[dict]:
    """Generate an edit with `settings` (method, steps, CFG, shift, seed, LoRA scale, sampler; compositing onto the
    source after decoding, `workflow.generate.composite_edit`, recorded as report["composite"]) and write its files; yields {"kind": "warning", "message"} for a preset option that
    cannot be used here (generation goes on without it), {"kind": "phase", "phase"} as each phase of a one-window
    render begins ("encoding", "denoising", "decoding", then "writing" the files; their seconds are the report's
    "phase_seconds"), {"kind": "step", "step", "total_steps", "seconds"}
    per denoising step and finally {"kind": "done", "edited", "side_by_side", "report"}.

    The pipe gets exactly the given LoRA (or none): an adapter left by another session is removed.
    preset: a preset name (or `presets.Preset`) whose generation options apply — its speed LoRA (stacked
    with the edit LoRA), attention backend and VAE tiling (`apply_preset_options`); None: none of them.
    preview: a `preview.PreviewSettings` — a fast preview (`preview.generate_preview`: its speed LoRA stacked
    on the edit LoRA for its steps/CFG/shift, removed afterwards) instead of the full render; the preset's
    own speed LoRA is not used then.
    window_frames / handover_frames: a clip longer than one window is generated window by window
    (`workflow.long_clip`): at most `max_windows` windows in this call (the app: one per GPU call), continuing after
    the windows already in out_dir for the same inputs; it yields {"kind": "step", "window", ...} per denoising step,
    {"kind": "window", "window", "windows", "preview", "seconds"} per window and "done" (with the seams in the
    report) once the last window is assembled. trained_handover: the hand-over the LoRA was trained for."""
    from ..workflow import generate, prepare
    from ..method.conditioning import DEFAULT_TRIGGER
    from ..method.experts import is_two_expert, load_edit_lora, unload_expert_loras
    from ..method.lora import read_metadata, unload_lora

    settings.validate()
    generate.check_guidance_scale_2(pipe, settings.guidance_scale_2)
    method, lora_scale = settings.method, settings.lora_scale
    started = time.perf_counter()
    prepared = prepare.load_prepared(prepared_dir)
    generate.check_composite(prepared, settings)  # compositing on a tight mask the clip does not have
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
    stop_requested = (lambda: Path(stop_file).exists()) if stop_file is not None else (lambda: False)
    phases = PhaseClock()  # seconds of each phase of a one-window render (the report's "phase_seconds")
    info: dict = {}  # what the run used and did (generate_edit fills it: negative prompt, step cache counts)
    generation = dict(steps=int(settings.steps), guidance_scale=float(settings.guidance_scale),
                      flow_shift=float(settings.flow_shift), seed=int(settings.seed), lora_scale=float(lora_scale),
                      method=method, trigger=trigger, speed_lora_weight=speed_weight, sampler=settings.sampler,
                      guidance_scale_2=settings.guidance_scale_2, negative_prompt=settings.negative_prompt,
                      step_cache=settings.step_cache, step_cache_threshold=settings.step_cache_threshold)
    if window_frames is not None and prepared.num_frames > window_frames:
        if preview is not None:
            raise MaskEditError("the preview renders one window; this clip is longer: generate it (window by window)")
        long_done = None
        for event in run_long_windows(pipe, prepared, edited, caption, out_dir, {**generation, "compositing": settings},
                                      stop_requested, window_frames, handover_frames, trained_handover, max_windows,
                                      lora_id=str(lora_path)):
            if event["kind"] != "done":
                yield event
            else:
                long_done = event
        if long_done is None:
            return
        outputs = long_done["outputs"]
        composite_record = generate.composite_settings_record(settings)  # window by window (`long_clip.finish_window`)
    else:
        def work(report, should_stop):
            def on_phase(name: str) -> None:
                report(name, "phase")

            if preview is not None:
                from ..workflow.preview import generate_preview

                frames = generate_preview(pipe, prepared, edited, caption, preview, seed=int(settings.seed),
                                          lora_scale=float(lora_scale), method=method, trigger=trigger,
                                          callback=report, should_stop=should_stop,
                                          negative_prompt=settings.negative_prompt, info=info, on_phase=on_phase)
            else:
                frames = generate.generate_edit(pipe, prepared, edited, caption, callback=report,
                                                should_stop=should_stop, info=info, on_phase=on_phase, **generation)
            info.update(generate.edit_clip_measures(pipe, prepared, edited, frames))  # the paper's Table 1 measures
            return frames

        frames = None
        for kind, value in in_worker(work, stop_requested):
            if kind == "phase":
                phases.enter(value)
                yield {"kind": "phase", "phase": value}
            elif kind == "step":
                yield {"kind": "step", "step": value.step, "total_steps": value.total_steps, "seconds": value.seconds}
            else:
                frames = value
        phases.enter("writing")
        yield {"kind": "phase", "phase": "writing"}
        composited = generate.composite_edit(prepared, edited, frames, settings)  # off: the frames as they are
        outputs = generate.write_edit_outputs(out_dir, prepared, composited.frames, composited.record)
        composite_record = composited.record
        phases.enter(None)
    report = {"method": method, "frames": int(prepared.num_frames), "width": prepared.width, "height": prepared.height,
              "fps": prepared.fps, "background_psnr_db": outputs.background_psnr, "seconds": time.perf_counter() - started,
              "steps": int(settings.steps), "guidance_scale": float(settings.guidance_scale),
              "guidance_scale_2": None if settings.guidance_scale_2 is None else float(settings.guidance_scale_2),
              "flow_shift": float(settings.flow_shift), "sampler": settings.sampler, "seed": int(settings.seed), "lora_scale": float(lora_scale), "lora": Path(lora_path).name if lora_path else None,
              "preset": options["preset"], "speed_lora": options["speed_lora"], "options": options["notes"],
              "warnings": options["warnings"], "phase_seconds": phases.seconds, **info}
    report["composite"] = composite_record  # compositing: its settings and the generated video's figures
    if preview is not None:  # the preview's own settings: its steps, CFG, shift, speed LoRA and (always) Euler
        report.update(steps=int(preview.steps), guidance_scale=float(preview.guidance_scale),
                      flow_shift=float(preview.flow_shift), speed_lora=preview.speed_lora, sampler=preview.sampler,
                      preview=preview.describe())
    if hasattr(outputs, "seams"):  # a long clip: its windows and seams (`media.seams`)
        report.update(windows=outputs.windows, window_frames=window_frames, handover_frames=handover_frames,
                      seams=outputs.seams.to_dict(), seam_lines=outputs.seams.lines())
    Path(out_dir, "report.json").write_text(json.dumps(report, indent=2, default=str))
    yield {"kind": "done", "edited": str(outputs.edited), "side_by_side": str(outputs.side_by_side), "report": report}


def run_long_windows(pipe, prepared, edited, caption: str, out_dir, generation: dict, stop_requested,
                     window_frames: int, handover_frames: int | None, trained_handover: int | None,
                     max_windows: int | None, lora_id: str | None = None) -> Iterator[dict]:
    """`workflow.long_clip.generate_long_edit` in the worker thread (`in_worker`), its events as dicts: "step" (with
    "window"), "window" after each window, "done" with the `LongEditOutputs` once the last one is assembled."""
    from ..defaults import DEFAULT_HANDOVER_FRAMES
    from ..workflow.long_clip import LongEditDone, WindowDone, WindowStep, generate_long_edit

    def work(report, should_stop):
        for event in generate_long_edit(pipe, prepared, edited, caption, out_dir, window_frames=window_frames,
                                        handover_frames=handover_frames or DEFAULT_HANDOVER_FRAMES,
                                        trained_handover=trained_handover, callback=report, should_stop=should_stop,
                                        max_windows=max_windows, lora_id=lora_id, **generation):
            report(event)

    for _, value in in_worker(work, stop_requested):
        if isinstance(value, WindowStep):
            yield {"kind": "step", "window": value.window, "windows": value.windows, "step": value.step,
                   "total_steps": value.total_steps, "seconds": value.seconds}
        elif isinstance(value, WindowDone):
            yield {"kind": "window", "window": value.window, "windows": value.windows, "preview": value.preview,
                   "seconds": value.seconds, "frames_done": value.frames_done, "frames_total": value.frames_total}
        elif isinstance(value, LongEditDone):
            yield {"kind": "done", "outputs": value.outputs}


def in_worker(work, stop_requested) -> Iterator[tuple]:
    """Run `work(report, should_stop)` in a worker thread (the denoising), yielding (kind, event) for every
    `report(event, kind="step")` it makes (e.g. "phase" as a phase begins) and finally ("result", what it returned);
    its exception is raised here. Closing this
    generator (a cancelled caller) makes should_stop() True, so the worker stops after its current step, and waits
    for it: the pipe is then free for the next call."""
    closed = threading.Event()  # this generator was closed (the caller cancelled): the worker stops too

    def should_stop() -> bool:
        return closed.is_set() or stop_requested()

    results: queue.Queue = queue.Queue()

    def run():
        try:
            results.put(("result", work(lambda event, kind="step": results.put((kind, event)), should_stop)))
        except BaseException as error:  # re-raised in the caller's thread
            results.put(("error", error))

    thread = threading.Thread(target=run, daemon=True, name=WORKER_NAME)
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "error":
                raise value
            yield kind, value
            if kind == "result":
                return
    finally:  # a cancelled caller closes this generator: the worker stops after its current step, then the pipe is free
        closed.set()
        thread.join()


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


def format_report(report: dict, others: list[dict] | None = None) -> str:
    """The quality report as Markdown: the method, background PSNR, the paper's CLIP score and input similarity
    (or why they are unavailable), frames, time and settings; with `others` (earlier reports of this session, newest
    first) a side-by-side table of every method's measures."""
    from ..models.step_cache import StepCacheStats

    settings = (f"{report['steps']} steps, CFG {report['guidance_scale']:g}"
                + (f" / low-noise {report['guidance_scale_2']:g}" if report.get("guidance_scale_2") is not None else "")
                + f", shift {report['flow_shift']:g}, {report['sampler']} sampler, seed {report['seed']}"
                + (f", negative prompt {report['negative_prompt']}" if report.get("negative_prompt") else ""))
    lines = ["| what | this render |", "|---|---|", f"| method | {report['method']} |",
             f"| background PSNR (outside the boxes, frames 1..) | {_psnr_text(report.get('background_psnr_db'))} |",
             f"| CLIP score (each frame vs the edited first frame, frames 1..) | {_clip_text(report, 'clip_score')} |",
             f"| input similarity (each frame vs its source frame, frames 1..) | "
             f"{_clip_text(report, 'input_similarity')} |",
             f"| frames | {report['frames']} at {report['width']}x{report['height']}, {report['fps']:g} fps |",
             f"| time | {report['seconds']:.1f} s ({settings}) |"]
    phases = report.get("phase_seconds") or {}
    if phases:
        lines.append(f"| phases | {' · '.join(f'{name} {seconds:.1f} s' for name, seconds in phases.items())} |")
    if "evaluations" in report:
        lines.append(f"| transformer evaluations | {StepCacheStats.from_dict(report).describe()} |")
    if report.get("preset"):
        lines.append(f"| preset | {report['preset']} |")
    if report.get("options"):
        lines.append(f"| options | {', '.join(report['options'])} |")
    if report.get("windows"):
        lines.append(f"| windows | {report['windows']} of up to {report['window_frames']} frames, "
                     f"{report['handover_frames']} hand-over frame(s) |")
    lines += [f"| seams | {line} |" for line in report.get("seam_lines") or []]
    lines += composite_rows(report.get("composite"))
    lines += [f"| ⚠️ | {w} |" for w in report.get("warnings") or []]
    if report.get("clip_note"):
        lines += ["", f"CLIP measures: {report['clip_note']}."]
    if others:
        lines += ["", "**This session's results, side by side** (newest first)", "",
                  "| # | method | background PSNR | CLIP score | input similarity | steps | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for number, row in [("this", report)] + [(r.get("result", "–"), r) for r in others]:
            lines.append(f"| {number} | {row.get('method')} | {_psnr_text(row.get('background_psnr_db'))} | "
                         f"{_clip_text(row, 'clip_score')} | {_clip_text(row, 'input_similarity')} | "
                         f"{row.get('steps', '–')} | {float(row.get('seconds', float('nan'))):.1f} |")
    return "\n".join(lines)


def _psnr_text(psnr) -> str:
    if psnr is None or (isinstance(psnr, float) and np.isnan(psnr)):
        return "–"
    return "identical (∞ dB)" if psnr == float("inf") else f"{psnr:.2f} dB"


def _clip_text(report: dict, key: str) -> str:
    value = report.get(key)
    if value is None:
        return "unavailable (no CLIP image encoder in this base)" if report.get("clip_note") else "–"
    return f"{value:.4f}"


def session_reports(results_folder, exclude=None, limit: int = 12) -> list[dict]:
    """The report.json of this session's earlier results (results/<n>/report.json), newest first, each with its
    number as "result"; `exclude`: the folder of the current result."""
    folders = [f for f in Path(results_folder).glob("*") if f.is_dir() and f.name.isdigit() and f != exclude]
    reports = []
    for folder in sorted(folders, key=lambda f: int(f.name), reverse=True)[:limit]:
        try:
            reports.append({**json.loads((folder / "report.json").read_text()), "result": int(folder.name)})
        except (OSError, ValueError):
            continue
    return reports


def composite_rows(record: dict | None) -> list[str]:
    """The report's compositing rows (Markdown table rows): whether the output was composited, and how the
    generated video differed from the source outside the boxes and just outside the region (the ring compositing
    replaces; a long clip's windows report no ring). [] without a record."""
    if not record:
        return []

    def db(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "–"
        return "∞ dB" if value == float("inf") else f"{value:.2f} dB"

    from ..workflow.generate import describe_composite

    rows = [f"| compositing | {describe_composite(record)} |"]
    if "ring_psnr_generated_db" in record:
        rows += [f"| generated video vs the source, outside the boxes (frames 1..) | "
                 f"{db(record.get('background_psnr_generated_db'))} |",
                 f"| … in the {record.get('ring_px')} px ring just outside the region | "
                 f"{db(record.get('ring_psnr_generated_db'))} (mean difference "
                 f"{record.get('ring_mean_abs_diff_generated', float('nan')):.1f} of 255)"
                 + (" — compositing replaced it by the source" if record.get("on") else "") + " |"]
    return rows + ([f"| ⚠️ | {record['note']} |"] if record.get("note") else [])
