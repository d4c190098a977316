"""Clips longer than one window in the app (METHOD.md §7b): the clip's window settings, the boxes' overlay written a
chunk at a time, and generation window by window — each window its own GPU call (on ZeroGPU one `@spaces.GPU` call
per window), a Cancel keeps the finished windows and Generate (or Resume) with the same inputs continues from the
next one, while the page shows the windows done, the video so far and the estimate for the rest.

Mixed into `studio.service.Studio` (uses its gpu, gpu_lock, sub and the session state)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MaskEditError
from ..workflow import session
from .inputs import GenerateResult
from .state import SessionState

LONG_RUN_FILE = "long_run.json"  # in the session folder: the results folder of the latest long generation


@dataclass
class WindowProgress:
    """After each window of a long generation: windows done of all, the video so far (mp4), seconds per window (this
    call's mean) and the estimate for the rest."""

    done: int
    windows: int
    preview: str | None
    seconds_per_window: float
    eta_s: float

    def markdown(self) -> str:
        from .progress import format_eta

        line = f"**Window {self.done} of {self.windows} done** · {self.seconds_per_window:.0f} s per window"
        if self.done < self.windows:
            line += f" · about {format_eta(self.eta_s)} for the other {self.windows - self.done}"
        return line + ".  \nThe video so far (its latest windows) is on the left; Cancel keeps the finished " \
                      "windows and Resume continues from the next one."


class LongGeneration:
    """The Studio's long-clip methods."""

    @staticmethod
    def windows(st: SessionState) -> tuple[int, int]:
        """(window frames, hand-over frames) of the session (`set_windows`; 81 and 1 until set)."""
        return int(st.window_frames), int(st.handover_frames)

    def set_windows(self, st: SessionState, window_frames=None, handover_frames=None) -> str:
        """The session's windows for clips longer than one window (None: keep the current); checked
        (`windows.check_window_settings`). Returns a line saying what they make of the loaded clip."""
        from ..method.windows import check_window_settings, plan_windows

        window, handover = self.windows(st)
        window, handover = check_window_settings(window if window_frames in (None, "") else window_frames,
                                                 handover if handover_frames in (None, "") else handover_frames)
        st.window_frames, st.handover_frames = window, handover
        try:
            frames = int(json.loads((self.sub(st, session.CLIP_FOLDER) / "clip.json").read_text())
                         ["source"]["num_frames"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"Windows of {window} frames, {handover} hand-over frame(s)."
        count = len(plan_windows(frames, window, handover))
        return (f"Windows of {window} frames, {handover} hand-over frame(s): the {frames}-frame clip is "
                + ("one window." if count == 1 else f"{count} windows."))

    @staticmethod
    def write_long_overlay(path: Path, prepared) -> None:
        """The Segment tab's overlay (boxes drawn on the frames) of a long clip, a chunk of frames at a time."""
        from ..media import clipstore
        from ..media.video import video_writer
        from ..method import masks
        from ..perception.segmentation import overlay_frames

        with video_writer(path, prepared.width, prepared.height, prepared.fps) as send:
            for part in clipstore.chunks(prepared.num_frames):
                region = np.asarray(prepared.region[part], dtype=bool)
                send(overlay_frames(np.asarray(prepared.frames[part]), region, masks.find_loose_boxes(region, 0.0, 0)))

    def long_results_folder(self, st: SessionState) -> Path:
        """Where the next long generation runs: the latest one's folder while it is unfinished (its windows are kept
        and `workflow.long_clip` continues them when the inputs are the same, or starts afresh there), else a new
        results folder."""
        record = Path(st.folder) / LONG_RUN_FILE
        try:
            folder = Path(json.loads(record.read_text())["folder"])
            if folder.is_dir() and not (folder / "edited.mp4").is_file() and \
                    session.is_inside(folder, self.sub(st, session.RESULTS_FOLDER)):
                return folder
        except (OSError, ValueError, KeyError):
            pass
        st.results += 1
        folder = self.sub(st, session.RESULTS_FOLDER) / str(st.results)
        record.write_text(json.dumps({"folder": str(folder)}))
        return folder

    def long_generate_events(self, st: SessionState, prepared_dir: Path, prompt: str, settings, *, lora,
                             stop_file: Path, preset, windows: tuple[int, int], num_frames: int) -> Iterator[tuple]:
        """A long generation, one GPU call per window: ("warning", text), ("step", (step, total)) over all windows,
        ("window", WindowProgress) after each window, and finally ("result", GenerateResult). A Cancel between or
        inside windows ends it with a MaskEditError saying Resume continues."""
        from ..method.lora import read_metadata
        from ..method.windows import plan_windows
        from ..workflow.long_clip import check_handover

        window_frames, handover_frames = windows
        planned = plan_windows(num_frames, window_frames, handover_frames)
        metadata = read_metadata(lora) if lora else {}
        trained = int(metadata["handover_frames"]) if "handover_frames" in metadata else \
            (1 if metadata.get("trainer") == "maskedit" else None)
        check_handover(handover_frames, settings.method, trained)  # before any GPU call
        out = self.long_results_folder(st)
        total = len(planned) * int(settings.steps)
        timings: list[float] = []
        warned = False
        while True:
            if stop_file.exists():
                raise MaskEditError("generation was cancelled; the finished windows are kept in this session: "
                                    "Resume (or Generate with the same inputs) continues from the next window")
            finished = None
            yield from self.wait_for_gpu(stop_file)  # cancellable while another call holds the model
            try:
                started = time.perf_counter()
                for event in self.gpu.generate(str(prepared_dir), st.edited, prompt, str(out), settings,
                                               lora_path=lora, stop_file=str(stop_file), preset=preset or None,
                                               window_frames=window_frames, handover_frames=handover_frames,
                                               trained_handover=trained, max_windows=1):
                    if event["kind"] == "warning":
                        if not warned:
                            yield "warning", event["message"]
                    elif event["kind"] == "step":
                        done_steps = event["window"] * int(settings.steps) + event["step"]
                        yield "step", (done_steps, total)
                        yield "progress", ((done_steps, total), f"window {event['window'] + 1} of {len(planned)}: "
                                           f"denoising step {event['step']} / {event['total_steps']}")
                    elif event["kind"] == "window":
                        finished = event
                    elif event["kind"] == "done":
                        from .generation import format_report, session_reports

                        caption = f"#{out.name} · {settings.method} · seed {int(settings.seed)} · {prompt[:60]}"
                        self.remember_result(st, event["edited"], caption)
                        (Path(st.folder) / LONG_RUN_FILE).unlink(missing_ok=True)
                        yield "result", GenerateResult(event["edited"], event["side_by_side"],
                                                       format_report(event["report"],
                                                                     session_reports(out.parent, exclude=out)),
                                                       event["report"])
                        return
                warned = True
            finally:
                self.gpu_lock.release()
            if finished is None:
                raise MaskEditError("a window's GPU call ended without a window; see the server log")
            timings.append(time.perf_counter() - started)
            mean = sum(timings) / len(timings)
            done = finished["window"] + 1
            yield "window", WindowProgress(done, len(planned), finished.get("preview"), mean,
                                           mean * (len(planned) - done))
