"""Generating a clip longer than one window, window after window (METHOD.md §7b), resumable, in bounded memory.

    for event in generate_long_edit(pipe, prepared, edited_first, "a blue car on a road", "work/out",
                                    window_frames=81, handover_frames=1, callback=on_step):
        ...   # WindowDone per window, LongEditDone at the end (its outputs); on_step(WindowStep) per denoising step

Each window's condition is `method.windows.window_condition` (window 0: today's edit; later windows: the last O
generated frames of the previous window kept whole, the source with boxes emptied after them; the edited first
frame's CLIP image and caption in every window). A finished window's new frames go to `OUT/windows/NNNNN.npy` at
once, with `OUT/windows.json` saying how many are done for which inputs: a stop (or a crash) keeps them, and the
same call again continues from the next window. When the last window is done the clip is assembled frame by frame
into edited.mp4 and side_by_side.mp4 (the clip's frame count and frame rate) and measured (`media.seams`: seam jump,
colour drift, background PSNR per window), written to seams.json. Memory: one window's frames.

A clip of one window never comes here: `generate_clip` sends it to `generate.generate_edit`, unchanged.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..defaults import DEFAULT_NEGATIVE_PROMPT, DEFAULT_STEP_CACHE, DEFAULT_TRIGGER
from ..errors import MaskEditError
from ..media import clipstore
from ..media.files import write_text
from ..media.hashing import array_digest, json_digest
from ..media.seams import SeamMeter, SeamReport
from ..media.video import video_writer
from ..method.conditioning import METHOD_IMAGE_VIEW
from ..method.masks import keep_mask_from_region
from ..method.pipeline import DEFAULT_SAMPLER
from ..method.windows import (DEFAULT_HANDOVER_FRAMES, DEFAULT_WINDOW_FRAMES, Window, plan_windows,
                              stock_window_condition, window_condition)
from .generate import (DEFAULT_FLOW_SHIFT, DEFAULT_GENERATION_STEPS, DEFAULT_GUIDANCE_SCALE, EDITED_VIDEO,
                       SIDE_BY_SIDE_VIDEO, GenerationStep, GenerationStopped, check_generation, edit_prompt,
                       render_condition)
from .prepare import PreparedClip

WINDOWS_FOLDER = "windows"
STATE_JSON = "windows.json"
SEAMS_JSON = "seams.json"
PREVIEW_VIDEO = "so_far.mp4"
PREVIEW_WINDOWS = 2
"""The preview of the video so far shows at most this many of the latest windows (its cost stays one window's)."""


@dataclass
class WindowStep:
    """A denoising step of window `window` (0-based) of `windows`."""

    window: int
    windows: int
    step: int
    total_steps: int
    seconds: float


@dataclass
class WindowDone:
    """Window `window` is generated and saved; `frames_done` of `frames_total` clip frames exist. preview: an mp4 of
    the latest windows so far. seconds: this window's time; elapsed: since this call started."""

    window: int
    windows: int
    frames_done: int
    frames_total: int
    seconds: float
    elapsed: float
    preview: str | None = None


@dataclass
class LongEditOutputs:
    """The files of a finished long edit and its measurements (background_psnr: over every generated frame)."""

    edited: Path
    side_by_side: Path
    background_psnr: float
    seams: SeamReport
    windows: int


@dataclass
class LongEditDone:
    outputs: LongEditOutputs


LongEditEvent = WindowDone | LongEditDone


def check_handover(handover_frames: int, method: str, trained_handover: int | None) -> None:
    """Refuse a hand-over the model never learnt (METHOD.md §7b): O > 1 only with the mask-aware LoRA, trained with
    kept prefixes up to at least O frames (`trained_handover`, lora.json's `handover_frames`)."""
    if handover_frames <= 1:
        return
    if method != "mask-lora":
        raise MaskEditError(f"a hand-over of {handover_frames} frames is a condition only the mask-aware LoRA learns "
                            f"(with --handover-frames at training); use 1 hand-over frame with the {method} method")
    if trained_handover is None or trained_handover < handover_frames:
        trained = "without kept prefixes" if not trained_handover or trained_handover <= 1 else \
            f"for hand-overs of up to {trained_handover} frames"
        raise MaskEditError(f"a hand-over of {handover_frames} frames needs a LoRA trained for it, but this one was "
                            f"trained {trained}; train with --handover-frames {handover_frames} (training keeps "
                            "random prefixes of 1+4m frames whole) or generate with --handover-frames 1")


class LongEditRun:
    """The windows of one long generation in `folder`: which are done (for these inputs), their frames."""

    def __init__(self, folder: str | os.PathLike, windows: list[Window], fingerprint: str):
        self.folder = Path(folder)
        self.windows = windows
        self.fingerprint = fingerprint

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_JSON

    def window_path(self, index: int) -> Path:
        return self.folder / WINDOWS_FOLDER / f"{index:05d}.npy"

    def done(self) -> int:
        """How many leading windows are finished for these inputs (0 when the folder holds another run's)."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return 0
        if state.get("fingerprint") != self.fingerprint:
            return 0
        count = int(state.get("done", 0))
        while count and not all(self.window_path(j).is_file() for j in range(count)):
            count -= 1
        return count

    def reset(self) -> None:
        """Forget the windows of another run (or of this one, to start afresh)."""
        self.state_path.unlink(missing_ok=True)
        for path in (self.folder / WINDOWS_FOLDER).glob("*.npy"):
            path.unlink()

    def save(self, window: Window, frames: np.ndarray) -> None:
        """Window `window`'s new frames (its `new_frames`, uint8 (n, H, W, 3)); the state says it is done."""
        if frames.shape[0] != len(window.new_frames):
            raise MaskEditError(f"window {window.index} adds {len(window.new_frames)} frames, got {frames.shape[0]}")
        with clipstore.array_writer(self.window_path(window.index), frames.shape, np.uint8) as out:
            out[:] = frames
        write_text(self.state_path, json.dumps({"fingerprint": self.fingerprint, "done": window.index + 1,
                                                "windows": [[w.start, w.stop, w.handover] for w in self.windows]}))

    def frames(self, indices) -> np.ndarray:
        """Generated clip frames `indices` (increasing), read from the finished windows' files."""
        out = []
        for index in indices:
            window = next(w for w in self.windows if index in w.new_frames)
            out.append(clipstore.open_array(self.window_path(window.index))[index - window.new_frames.start])
        return np.stack(out)

    def window_frames(self, index: int) -> np.ndarray:
        """The new frames of finished window `index` (a read-only memory map)."""
        return clipstore.open_array(self.window_path(index))


def run_fingerprint(prepared: PreparedClip, edited_first_frame: np.ndarray, prompt: str, settings: dict,
                    windows: list[Window], lora_id: str | None) -> str:
    """What a long run's windows depend on: the clip (its size, and the frames and boxes where windows start: a
    digest of the whole clip would read all of it at every call), the edited frame, the prompt, the settings, the
    windows and the LoRA (`lora_id`: its file and time, given by the caller)."""
    starts = [w.start for w in windows] + [prepared.num_frames - 1]
    return json_digest(dict(shape=list(prepared.frames.shape), fps=prepared.fps,
                            frames=array_digest(np.asarray(prepared.frames[starts])),
                            region=array_digest(np.asarray(prepared.region[starts], dtype=bool)),
                            edited=array_digest(edited_first_frame), prompt=prompt, settings=settings,
                            windows=[[w.start, w.stop, w.handover] for w in windows], lora=lora_id))


def finish_window(window: Window, decoded: np.ndarray, prepared: PreparedClip, compositing=None,
                  edited_first_frame: np.ndarray | None = None) -> np.ndarray:
    """The frames window `window` adds to the clip, from its decoded output (uint8 (window frames, H, W, 3)): its
    frames after the hand-over (the clip keeps the previous window's generated frames there). The one place where
    each window's decoded frames are finished before they are saved: with `compositing` (a
    `presets.GenerateSettings` whose `composite` is on) they are composited onto the source there
    (`method.composite.composite`, per frame, so window by window equals the whole clip at once; the clip's frame 0
    is the edited first frame, whole, as `generate.composite_edit` does)."""
    frames = decoded[window.handover:]
    if compositing is None or not compositing.composite:
        return frames
    from ..method.composite import composite, grow_region

    start = window.start + window.handover
    source = np.array(prepared.frames[start:window.stop])
    if compositing.composite_region == "mask":
        region = grow_region(np.asarray(prepared.tight[start:window.stop], dtype=bool), compositing.composite_margin)
    else:
        region = np.array(prepared.region[start:window.stop], dtype=bool)
    if start == 0:  # window 0's frame 0: the user's edited first frame, whole
        source[0], region[0] = edited_first_frame, False
    return composite(source, frames, region, compositing.feather)


def generate_long_edit(
    pipe,
    prepared: PreparedClip,
    edited_first_frame: np.ndarray,
    caption: str,
    out_dir: str | os.PathLike,
    *,
    window_frames: int = DEFAULT_WINDOW_FRAMES,
    handover_frames: int = DEFAULT_HANDOVER_FRAMES,
    trained_handover: int | None = None,
    steps: int = DEFAULT_GENERATION_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    flow_shift: float = DEFAULT_FLOW_SHIFT,
    seed: int = 0,
    lora_scale: float = 1.0,
    method: str = "mask-lora",
    trigger: str = DEFAULT_TRIGGER,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    callback: Callable[[WindowStep], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    speed_lora_weight: float = 1.0,
    sampler: str = DEFAULT_SAMPLER,
    image_view: str = METHOD_IMAGE_VIEW,
    guidance_scale_2: float | None = None,
    step_cache: str = DEFAULT_STEP_CACHE,
    step_cache_threshold: float | None = None,
    resume: bool = True,
    max_windows: int | None = None,
    lora_id: str | None = None,
    preview: bool = True,
    compositing=None,
) -> Iterator[LongEditEvent]:
    """Generate a clip longer than one window into `out_dir`, window after window; a generator of events.

    The settings are `generate.generate_edit`'s (all checked before any work; window j is seeded `seed + j`, window 0
    as a one-window edit), plus window_frames (W, 4k+1) and
    handover_frames (O, 1+4m; O > 1 needs `trained_handover` >= O, `check_handover`). resume: continue after the
    windows already finished in out_dir for the same inputs (`run_fingerprint`); False starts afresh.
    max_windows: generate at most this many windows in this call (the app: one window per GPU call), then return
    (no LongEditDone unless the last window is done). callback(WindowStep) after every denoising step.
    should_stop() True stops within the current window
    (GenerationStopped, its message naming the windows kept). preview: write out_dir/so_far.mp4 after each window.
    compositing: a `presets.GenerateSettings` whose compositing fields apply to every window (`finish_window`;
    None or composite off: the decoded frames as they are).
    """
    check_generation(pipe, prepared.width, prepared.height, edited_first_frame, steps=steps,
                     guidance_scale=guidance_scale, flow_shift=flow_shift, lora_scale=lora_scale, seed=seed,
                     method=method, sampler=sampler, guidance_scale_2=guidance_scale_2,
                     speed_lora_weight=speed_lora_weight, negative_prompt=negative_prompt, step_cache=step_cache,
                     step_cache_threshold=step_cache_threshold)
    windows = plan_windows(prepared.num_frames, window_frames, handover_frames)
    check_handover(handover_frames, method, trained_handover)
    prompt = edit_prompt(caption, trigger, method)
    settings = dict(steps=steps, guidance_scale=guidance_scale, flow_shift=flow_shift, seed=seed,
                    lora_scale=lora_scale, method=method, negative_prompt=negative_prompt,
                    speed_lora_weight=speed_lora_weight, sampler=sampler, image_view=image_view,
                    guidance_scale_2=guidance_scale_2, step_cache=step_cache, step_cache_threshold=step_cache_threshold)
    out_dir = Path(out_dir)
    if compositing is not None and compositing.composite:
        from .generate import check_composite

        check_composite(prepared, compositing)
        composited = dict(region=compositing.composite_region, feather=compositing.feather,
                          margin=compositing.composite_margin)
    else:
        composited = None
    run = LongEditRun(out_dir, windows, run_fingerprint(prepared, edited_first_frame, prompt,
                                                        {**settings, "composite": composited}, windows, lora_id))
    done = run.done() if resume else 0
    if done == 0:
        run.reset()
    for name in (EDITED_VIDEO, SIDE_BY_SIDE_VIDEO, SEAMS_JSON):
        (out_dir / name).unlink(missing_ok=True)  # an earlier run's results must not pass for this one's
    started = time.perf_counter()
    todo = windows[done:] if max_windows is None else windows[done:done + max_windows]
    for window in todo:
        window_started = time.perf_counter()
        handover = run.frames(range(window.start, window.start + window.handover)) if window.handover else None
        condition, blend = _window_condition(prepared, window, edited_first_frame, prompt, method, handover)
        def on_step(event: GenerationStep, index: int = window.index) -> None:
            if callback is not None:
                callback(WindowStep(index, len(windows), event.step, event.total_steps, event.seconds))

        try:  # window j starts from seed + j: windows of the same shape never share their noise
            decoded = render_condition(pipe, condition, callback=on_step, should_stop=should_stop, blend=blend,
                                       source=prepared.frames[window.start:window.stop],
                                       **{**settings, "seed": seed + window.index})
        except GenerationStopped:
            kept = f"windows 1..{window.index} of {len(windows)} are kept" if window.index else "no window was finished"
            raise GenerationStopped(f"generation was stopped in window {window.index + 1} of {len(windows)}; {kept}; "
                                    "run it again with the same inputs to continue from the next window") from None
        run.save(window, finish_window(window, decoded, prepared, compositing, edited_first_frame))
        preview_path = _write_preview(run, window, prepared.fps) if preview else None
        now = time.perf_counter()
        yield WindowDone(window.index, len(windows), window.stop, prepared.num_frames, now - window_started,
                         now - started, preview_path)
    if run.done() == len(windows):
        yield LongEditDone(assemble(run, prepared, out_dir))


def _window_condition(prepared: PreparedClip, window: Window, edited_first_frame: np.ndarray, prompt: str,
                      method: str, handover: np.ndarray | None):
    """(condition, blend) of one window for `method`: the mask-aware condition (mask-lora), or the stock one with
    the hand-over kept (the baselines; feature-blend blends the window's source, the hand-over taken as source)."""
    if method == "mask-lora":
        return window_condition(prepared.frames, prepared.region, window, edited_first_frame, prompt, handover), None
    condition = stock_window_condition(window, edited_first_frame, prompt, handover)
    if method != "feature-blend":
        return condition, None
    source = np.array(prepared.frames[window.frames])
    keep = keep_mask_from_region(np.asarray(prepared.region[window.frames], dtype=bool))
    if handover is not None:
        source[: window.handover] = handover
        keep[: window.handover] = 1.0
    return condition, (source, keep)


def _write_preview(run: LongEditRun, window: Window, fps: float) -> str | None:
    """out_dir/so_far.mp4: the new frames of the latest `PREVIEW_WINDOWS` windows up to `window`."""
    path = run.folder / PREVIEW_VIDEO
    first = max(0, window.index - PREVIEW_WINDOWS + 1)
    height, width = run.window_frames(window.index).shape[1:3]
    with video_writer(path, width, height, fps) as send:
        for index in range(first, window.index + 1):
            send(run.window_frames(index))
    return str(path)


def assemble(run: LongEditRun, prepared: PreparedClip, out_dir: str | os.PathLike) -> LongEditOutputs:
    """Write edited.mp4 and side_by_side.mp4 (the clip's frames at its frame rate) from the finished windows, frame
    by frame, measuring the seams on the way (seams.json)."""
    out_dir = Path(out_dir)
    window_of = np.zeros(prepared.num_frames, np.int64)
    for window in run.windows:
        window_of[window.new_frames.start:window.stop] = window.index
    meter = SeamMeter([w.start + w.handover for w in run.windows[1:]], window_of)
    width, height, fps = prepared.width, prepared.height, prepared.fps
    with video_writer(out_dir / SIDE_BY_SIDE_VIDEO, 2 * width, height, fps) as both, \
            video_writer(out_dir / EDITED_VIDEO, width, height, fps) as edited:
        for window in run.windows:
            frames = run.window_frames(window.index)
            start = window.new_frames.start
            for part in clipstore.chunks(len(frames)):
                block = np.asarray(frames[part])
                source = np.asarray(prepared.frames[start + part.start:start + part.stop])
                region = np.asarray(prepared.region[start + part.start:start + part.stop], dtype=bool)
                edited(block)
                both(np.concatenate([source, block], axis=2))
                for offset in range(len(block)):
                    meter.add(start + part.start + offset, block[offset], source[offset], region[offset])
    report = meter.report()
    write_text(out_dir / SEAMS_JSON, json.dumps(report.to_dict(), indent=2, default=str))
    return LongEditOutputs(out_dir / EDITED_VIDEO, out_dir / SIDE_BY_SIDE_VIDEO, meter.overall_psnr(), report,
                           len(run.windows))


def generate_clip(pipe, prepared: PreparedClip, edited_first_frame: np.ndarray, caption: str,
                  out_dir: str | os.PathLike, *, window_frames: int = DEFAULT_WINDOW_FRAMES,
                  handover_frames: int = DEFAULT_HANDOVER_FRAMES, trained_handover: int | None = None,
                  callback: Callable | None = None, on_window: Callable[[WindowDone], None] | None = None,
                  resume: bool = True, lora_id: str | None = None, compositing=None, **settings):
    """Generate a clip of any length and write its files: a clip of one window exactly as before
    (`generate.generate_edit`, `generate.composite_edit`, then `generate.write_edit_outputs`; returns
    `EditOutputs`), a longer one window by window (`generate_long_edit`; returns `LongEditOutputs`, with its
    seams). settings: `generate_edit`'s keyword arguments; compositing: a `presets.GenerateSettings` whose
    compositing fields apply (None: not composited); callback gets a `GenerationStep` (one window) or a
    `WindowStep` (several) per denoising step; on_window(WindowDone) after each window of a long clip."""
    from .generate import composite_edit, generate_edit, write_edit_outputs

    windows = plan_windows(prepared.num_frames, window_frames, handover_frames)  # the window settings, checked
    if len(windows) == 1:
        frames = generate_edit(pipe, prepared, edited_first_frame, caption, callback=callback, **settings)
        if compositing is None:
            return write_edit_outputs(out_dir, prepared, frames)
        result = composite_edit(prepared, edited_first_frame, frames, compositing)
        return write_edit_outputs(out_dir, prepared, result.frames, result.record)
    events = generate_long_edit(pipe, prepared, edited_first_frame, caption, out_dir, window_frames=window_frames,
                                handover_frames=handover_frames, trained_handover=trained_handover,
                                callback=callback, resume=resume, lora_id=lora_id, compositing=compositing,
                                **settings)
    for event in events:
        if isinstance(event, WindowDone) and on_window is not None:
            on_window(event)
        elif isinstance(event, LongEditDone):
            return event.outputs
    raise MaskEditError("the long generation ended before its last window")
