"""The edit session service: one method per user action, gradio-free (the app and tests call it alike).

    studio = Studio(store, gpu, model_name="tiny", is_tiny=True)
    st = studio.session("browser-session-hash")
    studio.load_video(st, "clip.mp4", num_frames=17, size="320x192")
    studio.segment(st, "[[90, 96, 1]]", margin=0.1)               # or studio.use_mask(st, box="10,10,60,60")
    studio.segment_text(st, "the ball", margin=0.1)               # + every ball (SAM 3): the region is the union
    studio.set_edited_frame(st, "edited.png")
    for view in studio.train(st, TrainInputs("a red ball on a gradient")):
        ...                                                        # TrainView: loss rows, status, points, files
    result = studio.generate(st, "a blue ball on a gradient", GenerateSettings(steps=4))

GPU work goes through `gpu` (`GpuCalls`): the app passes its `@spaces.GPU` wrappers, tests and local runs
the plain functions. Background training (issue 8) runs in `BackgroundJob`s, one per session; the LoRA
cache is shared by every session (`cache_root`) or kept per session (None: <session>/train).
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ..workflow import lora_cache, prepare, session
from ..workflow.train import stage2_captions
from .background_job import BackgroundJob
from ..defaults import DEFAULT_HANDOVER_FRAMES, DEFAULT_TRIGGER, DEFAULT_WINDOW_FRAMES
from ..errors import MaskEditError
from ..method.experts import HIGH_NOISE
from ..media.files import display_path, paths_shown_relative_to
from ..runtime import release_memory
from ..limits import check, check_flag, check_text, check_unique_frames, value_or_default
from ..models.presets import NAIVE_LORA_METHODS, GenerateSettings, get_preset
from .background_training import BackgroundTraining
from .estimate import CallSizer, Estimates, clip_of, training_step_seconds
from .long_generation import LongGeneration
from .inputs import GenerateResult, GpuCalls, TrainInputs, TrainView, checkpoint_losses, lora_files  # noqa: F401
from .objects import SegmentObjects
from .previews import Previews
from .progress import RenderProgress, TrainProgress
from .runs import DEFAULT_CHUNK_SECONDS, ChunkRequest, train_in_chunks
from .state import PARTIAL, TRAINED, UPLOADED, SessionState

if TYPE_CHECKING:
    from ..media.video import Clip, SourceInfo

LOADING_FOLDER = "loading"  # a clip being loaded; it replaces the session's clip only once complete
GALLERY_SIZE = 12  # the session's latest results kept in the gallery
DEFAULT_SESSION_CACHE_GB = 4.0  # LoRA cache of one session (per-session caches), least recently used evicted first


class Studio(SegmentObjects, Previews, BackgroundTraining, Estimates, LongGeneration):
    """The sessions of one app: work folders, GPU calls, budgets, background jobs and the LoRA cache."""

    def __init__(self, store: session.SessionStore, gpu: GpuCalls, *, model_name: str, is_tiny: bool,
                 budget_s: float = DEFAULT_CHUNK_SECONDS, chunk_steps: int | None = None,
                 background_driver: str = "thread", cache_root: str | os.PathLike | None = None,
                 session_cache_bytes: int | None = None, allowed_roots: Callable[[], list] | None = None,
                 transformers: Callable[[], dict] | None = None, sizer: CallSizer | None = None):
        if background_driver not in ("thread", "session"):
            raise MaskEditError(f"background_driver must be 'thread' or 'session', not {background_driver!r}")
        self.store = store
        self.gpu = gpu
        self.model_name = model_name
        self.is_tiny = is_tiny
        self.budget_s = float(budget_s)
        self.chunk_steps = chunk_steps
        self.background_driver = background_driver  # "session" (ZeroGPU): the session's own calls drive the chunks
        self.cache_root = Path(cache_root) if cache_root else None  # None: one cache per session
        self.session_cache_bytes = session_cache_bytes or int(
            float(os.environ.get("MASKEDIT_SESSION_CACHE_GB") or DEFAULT_SESSION_CACHE_GB) * 1024 ** 3)
        self.extra_roots = allowed_roots or (lambda: [])
        self.transformers = transformers  # () -> uploads.base_transformers(pipe): uploads are checked against them
        self.sizer = sizer or CallSizer(model_name)  # the ZeroGPU size of each GPU call, from its plan
        self.jobs: dict[str, BackgroundJob] = {}  # each session folder's background run
        self.render_seconds: dict = {}  # (frames, width, height) → {phase: seconds} of the last render at that size
        self.gpu_lock = threading.Lock()  # one model: background chunks and GPU events take turns
        self.region_lock = threading.RLock()  # the sessions' edit-region files: one writer at a time (`objects`)

    # ----- sessions and paths
    def session(self, session_hash: str | None, state: SessionState | None = None) -> SessionState:
        """The state of a session (a new one, with its folder, when `state` is None or its folder is gone)."""
        if state is not None and Path(state.folder).is_dir():
            return state
        self.store.remove_stale()
        return SessionState(str(self.store.folder(session_hash or "local-" + os.urandom(8).hex())))

    def end_session(self, folder) -> None:
        """Stop the session's background run and delete its folder."""
        job = self.jobs.pop(str(folder), None)
        if job is not None:
            job.cancel()
            job.wait(30)  # the run writes into the folder until its current step ends
        self.store.remove(folder)

    def checked(self, st: SessionState, path, what: str) -> Path:
        path = getattr(path, "path", None) or (path.get("path") if isinstance(path, dict) else path)
        return session.check_path(path, [st.folder, *self.extra_roots()], what)

    def shown_path(self, st: SessionState, path) -> str | None:
        """`path` as the user may see it: relative to the session folder, or "LoRA cache/…" (never where on the
        server the folders are)."""
        if not path:
            return None
        with paths_shown_relative_to(st.folder):
            shown = display_path(path)
        root = self.cache(st).root.resolve()
        resolved = Path(path).resolve()
        return f"LoRA cache/{resolved.relative_to(root)}" if resolved.is_relative_to(root) else shown

    @staticmethod
    def sub(st: SessionState, name: str) -> Path:
        return Path(st.folder) / name

    def cache(self, st: SessionState) -> lora_cache.LoraCache:
        """The LoRA cache this session trains in: the shared one, or its own (train/<key>)."""
        if self.cache_root is not None:
            return lora_cache.LoraCache(self.cache_root)
        return lora_cache.LoraCache(self.sub(st, session.TRAIN_FOLDER), self.session_cache_bytes)

    def prepared_dir(self, st: SessionState) -> Path:
        folder = self.sub(st, session.PREPARED_FOLDER)
        if not (folder / prepare.PREPARED_JSON).is_file():
            raise MaskEditError("no region to edit yet: segment the object (step 2) or upload a mask video first")
        return folder

    # ----- 1. video
    def load_video(self, st: SessionState, video, num_frames: int | None = None, size: str | None = None,
                   start_s: float = 0.0, window_frames: int | None = None, handover_frames: int | None = None):
        """Read and conform a clip. num_frames: 4k+1, or 0/None for all of it from the start time (a clip longer
        than one window is edited window by window, METHOD.md §7b). size: "WxH" or "auto". start_s: seconds into
        the source (`limits`: 0..600). window_frames / handover_frames: the windows of a long clip (None: the
        session's, `set_windows`). Only the kept frames are decoded (`video.read_conformed`; a long clip straight
        into a memory-mapped file, never whole in memory). The new clip is read and written in a staging folder
        first: a call that fails (a file that is not a video, a setting out of range) leaves the session's clip,
        masks, prepared files, windows and LoRA as they were. Returns (preview mp4 path, Markdown notes, first
        frame uint8 (H, W, 3))."""
        return self._commit_clip(st, self._stage_clip(st, video, num_frames, size, start_s, window_frames,
                                                      handover_frames))

    def _stage_clip(self, st: SessionState, video, num_frames, size, start_s, window_frames=None,
                    handover_frames=None) -> "_StagedClip":
        """The clip read and conformed into the staging folder; the session is not touched (see load_video)."""
        from ..media import clipstore
        from ..media.video import probe_video, read_conformed, write_video
        from ..method.windows import check_window_settings

        if not video:
            raise MaskEditError("no video given: upload a clip (mp4, mov, webm, ...) or pick an example")
        count = None if num_frames is None or (not isinstance(num_frames, bool) and num_frames == 0) else check(
            "num_frames", num_frames, "frames")
        window, handover = self.windows(st)
        windows = check_window_settings(window if window_frames in (None, "") else window_frames,
                                        handover if handover_frames in (None, "") else handover_frames)
        width_height = session.parse_size(size)
        start_s = check("start_s", 0.0 if start_s is None else start_s, "start time")
        path = self.checked(st, video, "video")
        staging = self.sub(st, LOADING_FOLDER)
        shutil.rmtree(staging, ignore_errors=True)
        name = "video" + path.suffix.lower()
        try:
            staged_source = session.copy_into(staging / session.SOURCE_FOLDER, path, name)
            with paths_shown_relative_to(staging):
                info = probe_video(staged_source)
                start = int(round(start_s * info.fps))
                if count is None:
                    count = prepare.all_frames(staged_source, start)
                into = staging / session.CLIP_FOLDER / clipstore.FRAMES_FILE if clipstore.is_lazy(count) else None
                conformed, info = read_conformed(staged_source, count, *(width_height or (None, None)),
                                                 mode="uniform", start=start, into=into)
            source = {"video": str(self.sub(st, session.SOURCE_FOLDER) / name), "width": info.width,
                      "height": info.height, "frames": info.num_frames, "fps": info.fps, "frame_mode": "uniform",
                      "start": start, "num_frames": conformed.num_frames, "conformed_width": conformed.width,
                      "conformed_height": conformed.height}
            session.save_clip(staging / session.CLIP_FOLDER, conformed, source)
            write_video(staging / session.CLIP_FOLDER / "preview.mp4", conformed.frames, conformed.fps)
        except MaskEditError as error:  # named as the user uploaded it, not as the session stores it
            shutil.rmtree(staging, ignore_errors=True)
            raise MaskEditError(str(error).replace(f"{session.SOURCE_FOLDER}/{name}", path.name)) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return _StagedClip(staging, conformed, info, source, windows)

    def _commit_clip(self, st: SessionState, staged: "_StagedClip"):
        """Replace the session's clip by a staged one (its masks, prepared files and background run go)."""
        from ..method.windows import plan_windows

        self.cancel_background(st, "a new clip was loaded")
        for folder in (session.CLIP_FOLDER, session.PREPARED_FOLDER, session.SEGMENT_FOLDER, session.SOURCE_FOLDER):
            shutil.rmtree(self.sub(st, folder), ignore_errors=True)
        for folder in (session.CLIP_FOLDER, session.SOURCE_FOLDER):
            os.replace(staged.folder / folder, self.sub(st, folder))
        shutil.rmtree(staged.folder, ignore_errors=True)
        preview = self.sub(st, session.CLIP_FOLDER) / "preview.mp4"
        st.points, st.labels, st.objects, st.click_target = [], [], [], None
        st.window_frames, st.handover_frames = staged.windows
        conformed, info = staged.clip, staged.info
        changes = "; ".join(conformed.notes) or "nothing changed"
        notes = (f"**Clip:** {conformed.num_frames} frames, {conformed.width}x{conformed.height}, "
                 f"{conformed.fps:g} fps (source: {info.num_frames} frames, {info.width}x{info.height}, "
                 f"{info.fps:g} fps).  \n**Changed:** {changes}.")
        window_frames, handover_frames = staged.windows
        windows = plan_windows(conformed.num_frames, window_frames, handover_frames)
        if len(windows) > 1:
            notes += (f"  \n**Long clip:** {len(windows)} windows of up to {window_frames} frames sharing "
                      f"{handover_frames} frame(s): training draws windows from the whole clip, and generation runs "
                      "window after window (one GPU call each; Cancel keeps the finished windows).")
        return str(preview), notes, np.array(conformed.frames[0])

    def frame(self, st: SessionState, index: int) -> str:
        """Frame `index` of the conformed clip as a PNG (to edit elsewhere); returns its path."""
        from ..media.video import write_image

        k = check("frame_index", 0 if index is None else index, "frame")
        clip, _ = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        if not 0 <= k < clip.num_frames:
            raise MaskEditError(f"frame {k} is outside the clip's frames 0..{clip.num_frames - 1}")
        target = self.sub(st, "frames") / f"frame_{k:03d}.png"
        write_image(target, clip.frames[k])
        return str(target)

    # ----- 2. segment: `objects.SegmentObjects` (clicks, text, masks; the union of the objects)

    # ----- 3. edited frames and captions
    def set_edited_frame(self, st: SessionState, image, fit: bool = False) -> tuple[str, str]:
        """The edited first frame (clip size, or the source video's size; other sizes with `fit`).
        Returns (the frame as used, PNG path; a status line)."""
        from ..media.video import write_image

        if not image:
            raise MaskEditError("no edited first frame given: upload the edited frame 0")
        fit = check_flag(fit, "fit checkbox")
        prepared = prepare.load_prepared(self.prepared_dir(st))
        path = self.checked(st, image, "edited first frame")
        try:
            with named_as_uploaded(path):
                frame = prepare.load_edited_frame(path, prepared.width, prepared.height, fit, prepared.source_size,
                                                  "edited first frame")
        finally:
            release_memory()  # a 4096x4096 upload decodes to 50 MB: given back, not kept as the server's peak
        target = self.sub(st, session.EDITED_FOLDER) / "first.png"
        write_image(target, frame)
        st.edited = str(target)
        return st.edited, f"Edited first frame set ({prepared.width}x{prepared.height})."

    def add_later_frame(self, st: SessionState, image, index: int, fit: bool = False, caption: str = "") -> str:
        """An edited later frame K (stage 2) and its caption ("" = captioned automatically when training starts;
        stage 2 trains each frame under its own caption). Returns the list of later frames as a line."""
        from ..media.video import write_image

        if not image:
            raise MaskEditError("no edited later frame given: upload the edited frame K")
        text = check_text(caption, "caption of the edited later frame")
        prepared = prepare.load_prepared(self.prepared_dir(st))
        k = prepare.parse_frame_index(index, prepared.num_frames)  # 2.5 is refused, never rounded to 2
        check_unique_frames([*map(int, st.later), k])  # one rule with the CLI: remove the later frames to replace one
        path = self.checked(st, image, f"edited frame {k}")
        try:
            with named_as_uploaded(path):
                frame = prepare.load_edited_frame(path, prepared.width, prepared.height, check_flag(fit, "fit checkbox"),
                                                  prepared.source_size, f"edited frame {k}")
        finally:
            release_memory()
        target = self.sub(st, session.EDITED_FOLDER) / f"frame_{k}.png"
        write_image(target, frame)
        st.later[str(k)] = str(target)
        if text:
            st.later_captions[str(k)] = text
        else:
            st.later_captions.pop(str(k), None)
        return self.later_text(st)

    def clear_later_frames(self, st: SessionState) -> str:
        st.later, st.later_captions = {}, {}
        return self.later_text(st)

    @staticmethod
    def later_text(st: SessionState) -> str:
        if not st.later:
            return "No edited later frames (stage 2 is skipped)."
        return "Edited later frames (stage 2): " + ", ".join(
            f"frame {k}" + (f" (“{st.later_captions[k]}”)" if st.later_captions.get(k) else " (captioned automatically)")
            for k in sorted(st.later, key=int))

    def caption(self, st: SessionState) -> tuple[str, str | None]:
        """Captions of the original first frame and of the edited one (None before there is one)."""
        from ..media.video import read_image

        clip, _ = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        with self.gpu_lock:
            original = self.gpu.caption(clip.frames[0])
            edited = self.gpu.caption(read_image(st.edited)) if st.edited else None
        return original, edited

    def training_captions(self, st: SessionState, inputs: TrainInputs,
                          later: dict | None = None) -> tuple[TrainInputs, dict, list[str]]:
        """The captions training uses (`captioning.training_captions`: the reference's rule). Typed ones are kept —
        `inputs.caption` of the ORIGINAL first frame, `st.later_captions` of the edited later frames `later`
        ({"K": PNG path}; default the session's) — and the missing ones are made by the app's captioner
        (Florence-2); when there is none, MaskEditError asks for them. Never the edit's prompt.
        Returns (inputs with the caption, {K: caption of edited later frame K}, notes)."""
        from ..perception.captioning import training_captions
        from ..media.video import read_image

        later = st.later if later is None else later
        inputs = inputs.cleaned()
        typed = {int(k): v for k, v in st.later_captions.items() if str(k) in later}
        if inputs.caption and len(typed) == len(later):
            return inputs, typed, []
        prepared = prepare.load_prepared(self.prepared_dir(st))
        frames = {int(k): read_image(path) for k, path in later.items()}
        made = training_captions(prepared.frames[0], frames, inputs.caption, typed,
                                 load=lambda: _CallCaptioner(self.gpu.caption, self.gpu_lock))
        return replace(inputs, caption=made.caption), made.later, made.notes

    # ----- 4. train
    def train_config(self, inputs: TrainInputs, num_frames: int, windows: tuple[int, int] | None = None):
        """(TrainConfig, notes) of the Train tab's values: the preset's settings (windows included) with what
        the user changed; memory options are off on the tiny model. windows: the clip's (window frames, hand-over
        frames) (`long_generation.window_settings`; None: 81 and 1). A clip longer than one window trains the
        preset's steps per window when the steps are left out (`windows.long_clip_steps`)."""
        from ..method.conditioning import window_starts
        from ..method.windows import long_clip_steps, plan_windows

        window_frames, handover_frames = windows or (DEFAULT_WINDOW_FRAMES, DEFAULT_HANDOVER_FRAMES)
        chosen = self.preset(inputs.preset or "full")
        notes = []
        swap, fp8 = int(inputs.blocks_to_swap or 0), bool(inputs.fp8)
        if self.is_tiny and (swap or fp8):
            notes.append("memory options (block swap, fp8) are for the 14B model and are off on the tiny model")
            swap, fp8 = 0, False
        elif self.sizer.placement:
            self.check_placement(chosen, swap, fp8)
        # None takes the preset's value; 0 is a value (refused for steps, not replaced by the preset's 100)
        rank = value_or_default("rank", inputs.rank, chosen.rank)
        long_windows = len(plan_windows(num_frames, window_frames, 1))
        default_steps = long_clip_steps(chosen.train_steps, long_windows)
        if long_windows > 1:
            notes.append(f"Long clip: {long_windows} windows of up to {window_frames} frames; training draws them from "
                         f"the whole clip (one per step)" + ("" if inputs.steps is not None else
                                                             f", {default_steps} steps ({chosen.train_steps} per window)")
                         + ".")
        config = chosen.train_config(
            window_frames=window_frames, handover_frames=handover_frames,
            steps=value_or_default("train_steps", inputs.steps, default_steps),
            learning_rate=value_or_default("learning_rate", inputs.learning_rate, chosen.learning_rate),
            rank=rank, alpha=float(rank), seed=value_or_default("seed", inputs.seed, 0), blocks_to_swap=swap, fp8=fp8,
            gradient_checkpointing=bool(inputs.gradient_checkpointing) or swap > 0 or fp8, checkpoint_every=10,
            **({"timestep_sampler": inputs.timestep_sampler} if inputs.timestep_sampler else {}))
        from ..method.training import check_optimizer

        check_optimizer(config)  # a missing optional package is said before any GPU work
        window = config.window_for(num_frames)
        if window and long_windows == 1:
            count = len(window_starts(num_frames, window, config.window_stride))
            notes.append(f"Preset {chosen.name}: training on {count} overlapping {window}-frame windows "
                         f"(every {config.window_stride} frames) of the {num_frames}-frame clip.")
        return config, notes

    def check_placement(self, chosen, blocks_to_swap: int, fp8: bool) -> None:
        """MaskEditError unless the memory settings match the placement the weights got once at start-up (on
        ZeroGPU every call starts from it: `runtime.place_for_zerogpu`; other settings would need them placed
        again, and fp8 weights cannot be made bf16 again)."""
        placed = self.preset(self.sizer.placement)

        def words(swap, low, encoders):
            return (f"{swap} blocks swapped, fp8 base weights {'on' if low else 'off'}, encoders "
                    f"{'in CPU memory while idle' if encoders else 'on the GPU'}")

        wanted = (int(blocks_to_swap), bool(fp8), bool(chosen.offload_encoders))
        if wanted != (placed.blocks_to_swap, placed.fp8, placed.offload_encoders):
            raise MaskEditError(
                f"this app placed the model's weights once at start-up for the {placed.name} preset "
                f"({words(placed.blocks_to_swap, placed.fp8, placed.offload_encoders)}); the {chosen.name} preset "
                f"with these settings ({words(*wanted)}) would need them placed again: choose the {placed.name} "
                "preset and keep its memory settings")

    def clip_size(self, st: SessionState | None) -> tuple[int, int, int] | None:
        """(frames, width, height) of the session's loaded clip, from its JSON alone; None before one is loaded."""
        import json

        try:
            source = json.loads((self.sub(st, session.CLIP_FOLDER) / "clip.json").read_text())["source"]
            return int(source["num_frames"]), int(source["conformed_width"]), int(source["conformed_height"])
        except (AttributeError, TypeError, OSError, ValueError, KeyError):
            return None

    def exact_settings(self, st: SessionState | None, inputs: TrainInputs,
                       settings: GenerateSettings | None = None) -> str:
        """Every setting Start (and Generate) would run with now: the preset with the values in the fields, at the
        loaded clip's frames and size (the preset's until a clip is loaded), the memory options as they apply to the
        loaded model. A value out of its range is named instead (nothing runs with it)."""
        chosen = self.preset(inputs.preset or "full")
        clip = self.clip_size(st)
        try:
            config, notes = self.train_config(inputs, clip[0] if clip else chosen.num_frames)
            overrides = dict(train_steps=config.steps, learning_rate=config.learning_rate, rank=config.rank,
                             alpha=config.alpha, blocks_to_swap=config.blocks_to_swap, fp8=config.fp8,
                             gradient_checkpointing=config.gradient_checkpointing,
                             timestep_sampler=config.timestep_sampler)
            if clip:
                overrides.update(num_frames=clip[0], width=clip[1], height=clip[2])
            if settings is not None:
                overrides.update(generation_steps=settings.steps, guidance_scale=settings.guidance_scale,
                                 flow_shift=settings.flow_shift, lora_scale=settings.lora_scale,
                                 sampler=settings.sampler)
            run = chosen.with_overrides(**overrides)
        except MaskEditError as error:
            return f"not runnable as set: {error}"
        changed = [name.replace("_", " ") for name, value in overrides.items()
                   if name not in ("num_frames", "width", "height") and getattr(chosen, name) != value]
        lines = run.describe().splitlines()
        lines[0] = f"preset {chosen.name}" + (f", changed in the fields: {', '.join(changed)}" if changed else
                                              ", as the preset holds it")
        lines[1] += " (the loaded clip)" if clip else " (the preset's; load a clip to see its own)"
        if self.is_tiny:
            lines = [line if not line.startswith("  memory:") else
                     "  memory: block swapping and fp8 are for the 14B model, off on the tiny model; gradient "
                     f"checkpointing {'on' if run.gradient_checkpointing else 'off'}" for line in lines]
        return "\n".join(lines + [f"  note: {note}" for note in notes if "tiny model" not in note])

    def chunk_request(self, st: SessionState, prepared_dir, inputs: TrainInputs, config, later: dict,
                      stop_file, resume: bool, later_captions: dict | None = None) -> ChunkRequest:
        cache = self.cache(st)
        return ChunkRequest(str(prepared_dir), str(cache.root), inputs.caption, config, inputs.trigger,
                            self.model_name, {int(k): str(v) for k, v in later.items()}, cache.max_bytes,
                            float(inputs.budget_s or self.budget_s), self.chunk_steps, str(stop_file), resume,
                            gpu_size=self.sizer.size("training", inputs.preset),
                            later_captions={int(k): str(v) for k, v in (later_captions or {}).items()},
                            edit_caption=inputs.edit_caption, step_s=self._step_seconds(prepared_dir, inputs, config))

    def _step_seconds(self, prepared_dir, inputs: TrainInputs, config) -> float | None:
        """The planner's seconds per training step on the call's ZeroGPU size, at the prepared clip's size."""
        if self.is_tiny:
            return None
        frames, width, height = clip_of(prepared_dir) or (None, None, None)
        if frames is not None and config.is_long(frames):  # a long clip trains one window per step
            frames = config.window_frames
        return training_step_seconds(self.model_name, inputs.preset or "full", self.sizer.size("training", inputs.preset),
                                     frames, width, height)

    def _run_chunks(self, request: ChunkRequest) -> Callable[[bool], Iterator]:
        def chunk(again: bool):
            with self.gpu_lock:
                yield from self.gpu.train_chunk(replace(request, resume=request.resume or again))
        return chunk

    def _key(self, st: SessionState, inputs: TrainInputs, config, later: dict, naive: bool = False,
             later_captions: dict | None = None):
        prepared = prepare.load_prepared(self.prepared_dir(st))
        arrays = {int(k): prepare.load_edited_frame(v, prepared.width, prepared.height) for k, v in later.items()}
        captions = stage2_captions(arrays, {int(k): v for k, v in (later_captions or {}).items()})
        parts = lora_cache.key_parts(prepared, inputs.caption, inputs.trigger, config, self.model_name, arrays,
                                     captions, naive=naive or None)
        return lora_cache.key_from_parts(parts), parts, prepared

    def train(self, st: SessionState, inputs: TrainInputs, resume: bool = False) -> Iterator[TrainView]:
        """Train the session's LoRA (or reuse the cached one, or follow the background run training the same
        thing), in chunked GPU calls; yields a TrainView after each step and at the end. Every input is checked
        (`TrainInputs.cleaned`) before anything else."""
        inputs = inputs.cleaned()
        prepared_dir = self.prepared_dir(st)
        inputs, later_captions, caption_notes = self.training_captions(st, inputs)
        prepared = prepare.load_prepared(prepared_dir)
        config, notes = self.train_config(inputs, prepared.num_frames, self.windows(st))
        notes = caption_notes + notes
        warning = self.memory_warning(inputs.preset or "full", config.blocks_to_swap, config.fp8)
        notes += [warning] if warning else []
        key, _, _ = self._key(st, inputs, config, st.later, later_captions=later_captions)
        stop_file = Path(st.folder) / session.STOP_TRAINING
        stop_file.unlink(missing_ok=True)
        job = self.jobs.get(st.folder)
        if job is not None and job.active and job.key == key:
            yield from self.follow(job, st)  # the background run already trains exactly this
            return
        if job is not None and job.active:
            self.cancel_background(st, "training was started with other inputs")
        cache = self.cache(st)
        entry = cache.lookup(key)
        if entry is not None and entry.status == lora_cache.FINISHED:
            st.use_lora(str(entry.lora_path), TRAINED, key)
            from .progress import loss_rows

            losses = checkpoint_losses(entry.path, 1) + checkpoint_losses(entry.path, 2)  # the curve it was trained with
            steps = list(range(1, len(losses) + 1))
            yield TrainView(loss_rows(steps, losses), f"**done** — reusing the cached LoRA {key}: the clip, boxes, "
                            "caption and settings are the same as a finished run, so no training is needed.",
                            {"step": steps, "loss": losses}, lora_files(entry.path))
            return
        progress = TrainProgress(messages=list(notes), history=lambda stage: checkpoint_losses(cache.path(key), stage))
        progress.total = config.steps
        request = self.chunk_request(st, prepared_dir, inputs, config, st.later, stop_file, bool(resume),
                                     later_captions)
        yield TrainView([], progress.line(), progress.points(), phase=progress.phase)
        shown = (0, progress.phase)
        for event in train_in_chunks(self._run_chunks(request)):
            progress.add(event)
            self._hide_paths(progress, st)
            if progress.lora:
                st.use_lora(progress.lora, TRAINED, key)
                progress.messages.append("Saved the LoRA (diffusers and ComfyUI files + lora.json).")
                yield TrainView(progress.rows(), progress.line(), progress.points(),
                                lora_files(Path(progress.lora).parent), phase=progress.phase)
                return
            if progress.stopped_at is not None:
                st.use_lora(progress.partial, PARTIAL, key)
                progress.messages.append(f"Stopped at step {progress.stopped_at}: the checkpoint is kept (Resume "
                                         "continues it); the LoRA so far is below and is used by Generate.")
                files = lora_files(Path(progress.partial).parent) if progress.partial else None
                yield TrainView(progress.rows(), progress.line(), progress.points(), files, phase=progress.phase)
                return
            if (len(progress.steps), progress.phase) != shown:  # a step, or a new phase (encoding, saving)
                shown = (len(progress.steps), progress.phase)
                yield TrainView(progress.rows(), progress.line(), progress.points(), phase=progress.phase,
                                done_of=(progress.step, progress.total) if progress.total else None)

    def _hide_paths(self, progress: TrainProgress, st: SessionState) -> None:
        """Messages name no server folder: the session's and the cache's become words."""
        roots = [(str(self.cache(st).root), "the LoRA cache"), (st.folder, "the session folder")]
        progress.messages = [_replace_all(m, roots) for m in progress.messages]

    def stop_training(self, st: SessionState) -> str:
        (Path(st.folder) / session.STOP_TRAINING).touch()
        return "Stopping after the current step…"

    @property
    def two_experts(self) -> bool:
        """True when the base has two experts (Wan2.2-A14B): its LoRA is a pair, guidance_scale_2 applies."""
        if self.transformers is not None:
            return HIGH_NOISE in self.transformers()
        from ..models.bases import base_for_name

        return base_for_name(self.model_name).two_experts

    def use_lora(self, st: SessionState, file) -> str:
        """Use an uploaded LoRA instead of training: one .safetensors file, or for a two-expert base the pair
        …high_noise… + …low_noise… (either order; MaskEdit's lora.json may come along). Every file is checked
        (`uploads.check_lora_upload`) before the session's LoRA is replaced: a refused upload changes nothing."""
        from .uploads import check_lora_upload, install_lora_upload

        files = [f for f in (file if isinstance(file, (list, tuple)) else [file]) if f]
        paths = [self.checked(st, f, "LoRA file") for f in files]
        try:
            chosen = check_lora_upload(paths, self.transformers() if self.transformers else None, self.two_experts)
        finally:
            release_memory()
        path = install_lora_upload(chosen, self.sub(st, session.LORA_FOLDER))
        st.use_lora(str(path), UPLOADED, None)
        names = " and ".join(f"**{chosen[key].name}**" for key in chosen if key != "metadata")
        return f"Using the uploaded LoRA {names} (training can be skipped)."

    # ----- the naive-LoRA baseline (METHOD.md §8), trained on demand by Generate
    def naive_lora(self, st: SessionState, inputs: TrainInputs, stop_file, progress=None) -> str:
        """The naive baseline's LoRA for the current clip, caption and training settings: reused when finished
        (its own cache key), else trained now in chunks (a stopped run resumes on the next Generate). Never
        touches the session's mask-aware LoRA or its background run. Returns its lora.safetensors path."""
        prepared_dir = self.prepared_dir(st)
        inputs, _, _ = self.training_captions(st, inputs, later={})  # the clip alone: the original's caption
        prepared = prepare.load_prepared(prepared_dir)
        config, _ = self.train_config(inputs, prepared.num_frames, self.windows(st))
        config = replace(config, condition="stock")
        key, _, _ = self._key(st, inputs, config, {})
        entry = self.cache(st).lookup(key)
        if entry is not None and entry.status == lora_cache.FINISHED:
            st.naive_lora = str(entry.lora_path)
            return st.naive_lora
        request = self.chunk_request(st, prepared_dir, inputs, config, {}, stop_file, True)
        for event in train_in_chunks(self._run_chunks(request)):
            probe = TrainProgress()
            probe.add(event)
            if probe.steps and progress is not None:
                progress((event.step, event.total_steps), "training the naive-LoRA baseline")
            elif probe.stopped_at is not None:
                raise MaskEditError(f"the naive-LoRA training was cancelled at step {probe.stopped_at}; Generate "
                                    "again with this method to resume it")
            elif probe.lora:
                st.naive_lora = probe.lora
                return probe.lora
        raise MaskEditError("the naive-LoRA training ended without saving a LoRA; see the server log")

    # ----- 5. generate
    def generate(self, st: SessionState, prompt: str, settings: GenerateSettings, *, edited_frame=None,
                 fit: bool = False, use_checkpoint: bool = False, preset: str | None = None,
                 train_inputs: TrainInputs | None = None, progress=None, warn=None, preview=None) -> GenerateResult:
        """Generate one edit with `settings` (`generate_events` consumed: progress((step, total) or None, description)
        as each phase begins and after each denoising step, warn(message) for a preset option that cannot be used).
        Returns the result."""
        for kind, value in self.generate_events(st, prompt, settings, edited_frame=edited_frame, fit=fit,
                                                use_checkpoint=use_checkpoint, preset=preset,
                                                train_inputs=train_inputs, progress=progress,
                                                preview=preview):
            if kind == "warning" and warn is not None:
                warn(value)
            elif kind == "progress" and progress is not None:
                progress(*value)
            elif kind == "result":
                return value
        raise MaskEditError("generation ended without a result")

    def generate_events(self, st: SessionState, prompt: str, settings: GenerateSettings, *, edited_frame=None,
                        fit: bool = False, use_checkpoint: bool = False, preset: str | None = None,
                        train_inputs: TrainInputs | None = None, progress=None, preview=None) -> Iterator[tuple]:
        """Generate one edit with `settings`; yields ("warning", message), ("step", (step, total)) per denoising
        step, ("progress", ((step, total) or None, what runs now and how long is left)) as each phase begins and after
        each step (`progress.RenderProgress`: encode, denoise k/n, decode, with the decode's time from an earlier
        render of the same clip size) and finally ("result", GenerateResult). Closing the generator (a cancelled call) stops the
        denoising after its current step and frees the model for the next call. edited_frame: another edited
        first frame (else the session's). preset: whose generation options apply (speed LoRA, attention, VAE
        tiling; an option that cannot be used is skipped with a warning and a line in the report). Methods
        "naive-lora" and "feature-blend" (the paper's blending baseline runs on the naive LoRA) first train the
        naive LoRA with `train_inputs` unless it is already trained; progress((step, total), description) reports
        that training and the wait for a background run. preview: a `preview.PreviewSettings` for a fast preview
        instead (use `preview()`)."""
        settings.validate()
        settings.check_base(self.two_experts)
        prompt = check_text(prompt, "prompt")
        if not prompt:
            raise MaskEditError("the prompt is empty: describe the edited first frame")
        fit, use_checkpoint = check_flag(fit, "fit checkbox"), check_flag(use_checkpoint, "checkpoint checkbox")
        preset = get_preset(preset).name if preset else None
        train_inputs = train_inputs.cleaned() if train_inputs is not None else None
        prepared_dir = self.prepared_dir(st)
        if edited_frame:
            self.set_edited_frame(st, edited_frame, fit)
        if not st.edited:
            raise MaskEditError("no edited first frame yet: upload it in step 3 (or pass edited_frame)")
        if settings.composite and settings.composite_region == "mask":  # before any training or generation
            from ..workflow.generate import check_composite

            check_composite(prepare.load_prepared(prepared_dir), settings)
        method = settings.method
        stop_file = Path(st.folder) / session.STOP_GENERATION
        stop_file.unlink(missing_ok=True)  # from here on, Cancel (`stop_generation`) is honoured in every wait
        if method in NAIVE_LORA_METHODS:  # its own LoRA: neither the session's LoRA nor its background run is involved
            if train_inputs is None:
                raise MaskEditError(f"the {method} baseline needs the naive LoRA's training settings (Train tab)")
            lora = self.naive_lora(st, train_inputs, stop_file, progress)
        else:
            if method != "no-lora":
                yield from self.wait_for_background(st, use_checkpoint, progress, stop_file)
            lora = st.lora if method != "no-lora" else None
        if method == "mask-lora" and not lora:
            raise MaskEditError("the mask-aware LoRA method needs a LoRA: train one (step 4) or upload one; "
                                "or choose the no-LoRA baseline")
        prepared_info = prepare.load_prepared_info(prepared_dir)
        windows = self.windows(st)
        if int(prepared_info["frames"]) > windows[0]:  # longer than one window: one GPU call per window
            if preview is not None:
                raise MaskEditError("the preview renders one window and this clip is longer: Generate it (window by "
                                    "window), or load a part of it (frames and start time) to preview")
            try:
                yield from self.long_generate_events(st, prepared_dir, prompt, settings, lora=lora,
                                                     stop_file=stop_file, preset=preset, windows=windows,
                                                     num_frames=int(prepared_info["frames"]))
            finally:
                self.resume_background(st)
            return
        out = self.sub(st, session.RESULTS_FOLDER) / str(st.results + 1)
        size = clip_of(prepared_dir)
        tracker = RenderProgress(int(preview.steps if preview is not None else settings.steps),
                                 dict(self.render_seconds.get(size, {})))
        try:
            yield from self.wait_for_gpu(stop_file)
            yield "progress", tracker.view()
            try:
                st.results += 1
                for event in self.gpu.generate(str(prepared_dir), st.edited, prompt, str(out), settings,
                                               lora_path=lora, stop_file=str(stop_file), preset=preset,
                                               **({"preview": preview} if preview is not None else {})):
                    if event["kind"] == "warning":
                        yield "warning", event["message"]
                    elif event["kind"] in ("step", "phase"):
                        tracker.add(event["kind"], (event["step"], event["total_steps"], event.get("seconds", 0.0))
                                    if event["kind"] == "step" else event["phase"])
                        if event["kind"] == "step":
                            yield "step", (event["step"], event["total_steps"])
                        yield "progress", tracker.view()
                    elif event["kind"] == "done":
                        from .generation import format_report, session_reports

                        self.render_seconds[size] = dict(event["report"].get("phase_seconds") or {})
                        caption = f"#{st.results} · {method} · seed {int(settings.seed)} · {prompt[:60]}"
                        self.remember_result(st, event["edited"], caption)
                        others = session_reports(out.parent, exclude=out)  # the baselines side by side
                        yield "result", GenerateResult(event["edited"], event["side_by_side"],
                                                       format_report(event["report"], others), event["report"])
                        return
            finally:
                self.gpu_lock.release()
        finally:
            self.resume_background(st)

    def wait_for_gpu(self, stop_file=None) -> Iterator[tuple]:
        """Take the GPU lock (the model is shared by every session and the background runs). A generator: while
        another call holds the lock it yields ("waiting", text) about twice a second, so a cancelled call that
        closes it stops waiting at once without ever holding the lock; when `stop_file` (Cancel's) appears it
        raises `GenerationStopped`. Returns holding the lock: the caller releases it."""
        from ..workflow.generate import GenerationStopped

        while not self.gpu_lock.acquire(timeout=0.5):
            if stop_file is not None and Path(stop_file).exists():
                raise GenerationStopped("generation was cancelled while it waited for the GPU; nothing was "
                                        "generated")
            yield "waiting", "waiting for the GPU (another call is using it)"

    @staticmethod
    def remember_result(st: SessionState, edited: str, caption: str) -> None:
        """Put a finished edit at the front of the session's gallery (the latest GALLERY_SIZE are kept)."""
        st.gallery = ([[edited, caption]] + list(st.gallery))[:GALLERY_SIZE]

    def stop_generation(self, st: SessionState) -> None:
        """Cancel the session's generation (Generate tab's Cancel): it stops after its current denoising step, or
        at once while it waits for the background training or the GPU (`generate_events`)."""
        (Path(st.folder) / session.STOP_GENERATION).touch()

    def gallery(self, st: SessionState) -> list[tuple[str, str]]:
        return [(path, text) for path, text in st.gallery if Path(path).is_file()]

    # ----- everything in one call
    def edit(self, st: SessionState, video, **options) -> tuple[GenerateResult, list]:
        """`edit_events` consumed: returns (the result, the LoRA files)."""
        for kind, value in self.edit_events(st, video, **options):
            if kind == "result":
                return value
        raise MaskEditError("the edit ended without a result")

    def edit_events(self, st: SessionState, video, *, points_json: str = "", mask_video=None, box: str = "",
                    edited_first=None, later_files=(), later_indices: str = "", later_captions=None,
                    train_caption: str = "", prompt: str = "",
                    trigger: str = DEFAULT_TRIGGER, num_frames: int = 17, size: str = "auto", start_s: float = 0.0,
                    margin: float = 0.1, preset: str = "full", train_steps: int | None = None,
                    settings: GenerateSettings | None = None, fit: bool = False, window_frames: int | None = None,
                    handover_frames: int | None = None) -> Iterator[tuple]:
        """Load, segment (points) or take a mask/box, set the edited frame(s), train (or reuse) and generate.
        train_caption: of the ORIGINAL first frame; later_captions: {K: caption} of edited later frames, or their
        JSON; captions left out are made by the captioner or asked for (`training_captions`), never taken from
        `prompt` (the EDITED first frame's, for generation).

        Yields ("loaded", notes) once the clip, region and edited frames are in place, ("train", TrainView) per
        training view, ("waiting", text) / ("step", (step, total)) while generating and finally ("result", (the
        result, the LoRA files)). Every input is checked before the session changes: the settings, texts, JSON and
        file choices on their own, then — against the new clip, read into a staging folder — the points and box
        (inside the frame), the later frame numbers and the edited frames (readable, of a usable size); a refused
        call leaves the session's clip, masks, edited frames and LoRA as they were. Closing the generator (a
        cancelled call) stops the training or the denoising after its current step and frees the GPU."""
        from ..method import masks
        from ..perception.segmentation_prompts import prompts_by_object

        chosen = get_preset(preset or "full")
        fit = check_flag(fit, "fit checkbox")
        margin = check("margin", 0.1 if margin is None else margin, "box margin")
        prompt = check_text(prompt, "prompt")
        if not prompt:
            raise MaskEditError("the prompt is empty: describe the edited first frame")
        if settings is not None:
            settings.validate()
            settings.check_base(self.two_experts)
        inputs = TrainInputs(train_caption, trigger, chosen.name, train_steps, chosen.learning_rate, chosen.rank,
                             (settings.seed if settings else 0), 0, False, chosen.gradient_checkpointing,
                             edit_caption=prompt).cleaned()
        indices = check_unique_frames(session.parse_later_frames(later_indices))
        later_files = list(later_files or [])
        if len(indices) != len(later_files):
            raise MaskEditError(f"{len(later_files)} edited later frame(s) but {len(indices)} frame number(s); "
                                "give one number per frame")
        captions = session.parse_later_captions(later_captions)
        unknown = sorted(set(captions) - set(indices))
        if unknown:
            raise MaskEditError(f"captions were given for frame(s) {', '.join(map(str, unknown))}, which are not "
                                "among the edited later frames; give each caption with its frame")
        has_points = bool(points_json) and str(points_json).strip() not in ("", "[]")
        has_box = bool(box and str(box).strip())
        points, labels = session.parse_points(points_json) if has_points else (None, None)
        parsed_box = masks.parse_box(box) if has_box else None
        if has_points and (mask_video or has_box):
            raise MaskEditError("give points, a mask video or a box — only one of them")
        if not has_points and bool(mask_video) == has_box:
            raise MaskEditError("give either a mask video (white = edit) or a box x0,y0,x1,y1, not both or neither")
        if not edited_first:
            raise MaskEditError("no edited first frame given: upload the edited frame 0")
        if mask_video:
            self.checked(st, mask_video, "mask video")
        edited_paths = {0: self.checked(st, edited_first, "edited first frame"),
                        **{k: self.checked(st, f, f"edited frame {k}") for f, k in zip(later_files, indices)}}
        staged = self._stage_clip(st, video, num_frames, size, start_s, window_frames,
                                  handover_frames)  # the session is not touched yet
        try:
            clip = staged.clip
            if has_points:
                prompts_by_object(points, labels, clip.height, clip.width)
            if has_box:
                masks.box_region(clip.height, clip.width, parsed_box)
            for k in indices:
                prepare.parse_frame_index(k, clip.num_frames)
            for k, path in edited_paths.items():
                with named_as_uploaded(path):
                    prepare.load_edited_frame(path, clip.width, clip.height, fit,
                                              (staged.info.width, staged.info.height),
                                              "edited first frame" if k == 0 else f"edited frame {k}")
        except BaseException:
            shutil.rmtree(staged.folder, ignore_errors=True)
            raise
        _, notes, _ = self._commit_clip(st, staged)
        if has_points:
            self.segment(st, points_json, margin)
        else:
            self.use_mask(st, mask_video, box, margin, fit)
        self.set_edited_frame(st, edited_first, fit)
        st.later, st.later_captions = {}, {}
        for file, k in zip(later_files, indices):
            self.add_later_frame(st, file, k, fit, captions.get(k, ""))
        yield "loaded", notes
        last = None
        for last in self.train(st, inputs, resume=True):
            yield "train", last
        if st.lora_source != TRAINED:
            raise MaskEditError("training was stopped before it finished; run /edit again to resume it")
        files = (last.files if last is not None else None) or []
        for kind, value in self.generate_events(st, prompt, settings or chosen.generate_settings(),
                                                preset=chosen.name):
            if kind == "result":
                yield "result", (value, files)
                return
            yield kind, value
        raise MaskEditError("generation ended without a result")


@dataclass
class _StagedClip:
    """A clip read and conformed into a staging folder, not yet the session's (`Studio._stage_clip`)."""

    folder: Path
    clip: "Clip"
    info: "SourceInfo"
    source: dict
    windows: tuple[int, int]  # (window frames, hand-over frames) the session takes with the clip


class _CallCaptioner:
    """`captioning.training_captions`' captioner over the app's caption call (`GpuCalls.caption`, whose model
    stays loaded between calls: nothing to release); each call takes the GPU lock."""

    label = "Florence-2"

    def __init__(self, call, lock):
        self.call, self.lock = call, lock

    def describe(self, image) -> str:
        with self.lock:
            return str(self.call(image)).strip()

    def describe_many(self, images) -> list[str]:
        return [self.describe(image) for image in images]

    def release(self) -> None:
        pass


@contextmanager
def named_as_uploaded(path: Path):
    """A MaskEditError raised inside names `path` by its file name only (uploads live in a server folder)."""
    try:
        yield
    except MaskEditError as error:
        text = str(error)
        for shown in {str(path), str(Path(path).resolve())}:
            text = text.replace(shown, Path(path).name)
        raise type(error)(text) from None


def _replace_all(text: str, pairs) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text
