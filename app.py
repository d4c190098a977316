"""MaskEdit's Gradio app: five tabbed steps (video → segment → edited frames → train → generate).

    python app.py [--model tiny|HUB_ID|FOLDER] [--host 0.0.0.0] [--port 7860] [--share]

Environment variables (the options win): MASKEDIT_MODEL, MASKEDIT_HOST, MASKEDIT_PORT, MASKEDIT_SHARE,
MASKEDIT_SEGMENTER (auto/sam2/fallback), MASKEDIT_CAPTIONER (hub id, folder, or "none"),
MASKEDIT_GPU_BUDGET (seconds per training call, default 110), MASKEDIT_WORK_DIR, MASKEDIT_MAX_UPLOAD.

This file holds UI only (layout, events, session state, `spaces.GPU` wrappers); every computation is a
call into `maskedit`. Named API endpoints (gradio_client): /load_video, /segment, /use_mask,
/set_edited_frame, /add_later_frame, /train, /stop_training, /use_lora, /generate, /edit, /set_background,
/training_status, /gallery.

Background training (issue 8): with the "Train in the background" toggle on (default: on with a GPU;
MASKEDIT_BACKGROUND=1/0 overrides), confirming the masks (/segment, /use_mask) starts stage-1 training at
once — it needs only the clip, boxes, caption and settings, never the edited first frame — and Generate
waits for it (or uses its latest checkpoint when asked). Runs live in the session's LoRA cache
(train/<key>, `maskedit.lora_cache`), so any number of edited first frames reuse one LoRA; changing the
frames, boxes, caption or settings cancels the run and discards it. Off ZeroGPU a thread drives the chunks;
on ZeroGPU the session's own calls do (a timer tick runs the next chunk, Generate runs what is left).
"""

import spaces  # noqa: F401  (first: on ZeroGPU it must be imported before torch initialises CUDA)

import argparse
import functools
import inspect
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from maskedit import editing, lora_cache, session
from maskedit.background import BackgroundJob
from maskedit.conditioning import DEFAULT_TRIGGER
from maskedit.errors import MaskEditError

LOG = logging.getLogger("maskedit.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
FRAME_CHOICES = [("all (up to 81)", 0), ("5", 5), ("9", 9), ("17", 17), ("33", 33), ("49", 49), ("81", 81)]
SIZE_CHOICES = ["auto", "832x480 (landscape 480p)", "480x832 (portrait 480p)", "640x368 (ZeroGPU quick)",
                "368x640 (portrait quick)", "320x192 (small)", "64x64 (tiny test)"]
INCLUDE, EXCLUDE = "include (on the object)", "exclude (not the object)"
METHOD_CHOICES = [("mask-aware LoRA (the method)", "mask-lora"), ("baseline: no LoRA (stock I2V)", "no-lora"),
                  ("baseline: naive LoRA (stock condition)", "naive-lora"),
                  ("baseline: feature-level blending", "feature-blend")]
DEFAULT_MAX_UPLOAD = "500mb"
GALLERY_SIZE = 12  # the session's latest results kept in the Generate tab's gallery
DEFAULT_SESSION_CACHE_GB = 4.0  # LoRA cache per session (train/<key>), least recently used evicted first

# What stays loaded between calls: the base model and the segmenter/captioner models (never user data).
_RUNTIME: dict = {"model": None, "segmenter": None, "segmenter_backend": "auto", "captioner": None,
                  "captioner_id": None, "caption_error": None}


# ----- errors: MaskEditError → gr.Error with its message; never a traceback in the UI


def _ui_error(error: Exception) -> gr.Error:
    """The gr.Error a user sees: a MaskEditError's own message, else a short note (the rest is logged)."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, MaskEditError):
        return gr.Error(str(error))
    LOG.exception("unexpected error in the app")
    if type(error).__name__ == "OutOfMemoryError":
        return gr.Error("the GPU ran out of memory; use fewer frames or a smaller size, or a lighter preset")
    return gr.Error(f"something went wrong ({type(error).__name__}: {str(error)[:200]}); see the server log")


def user_errors(fn):
    """Turn MaskEditError into gr.Error(message) and anything else into a short gr.Error (logged)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                raise _ui_error(error) from None
        return generator

    @functools.wraps(fn)
    def regular(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _ui_error(error) from None
    return regular


# ----- models (loaded once; the fallback to the tiny model is always announced)


def load_model(requested: str | None = None):
    """(LoadedModel, banner markdown or ""). Never raises: a model that cannot load falls back to the tiny
    model and the banner says why."""
    from maskedit.models import TINY, load_pipeline

    wanted = requested or editing.default_model()
    banner = ""
    try:
        loaded = load_pipeline(wanted)
    except Exception as error:  # noqa: BLE001 (MaskEditError, or anything a broken download raises)
        reason = str(error) if isinstance(error, MaskEditError) else f"{type(error).__name__}: {error}"
        LOG.warning("could not load %s (%s); using the tiny model", wanted, reason)
        loaded = load_pipeline(TINY)
        banner = (f"⚠️ **Could not load `{wanted}`** ({reason[:400]}). Using the built-in **tiny model** instead: "
                  "random weights, it shows the workflow, not the method's quality.")
        return loaded, banner
    if loaded.name == TINY:
        why = "no CUDA GPU was found, so " if requested is None else ""
        banner = (f"ℹ️ {why.capitalize() if why else ''}{'t' if why else 'T'}his app runs the built-in **tiny model** "
                  "(random weights): every step works, but the videos show the workflow, not the method's quality. "
                  "Start it with a GPU and `--model Wan-AI/Wan2.1-I2V-14B-480P-Diffusers` for real edits.")
    return loaded, banner


def _pipe():
    if _RUNTIME["model"] is None:
        _RUNTIME["model"] = load_model(os.environ.get("MASKEDIT_MODEL"))[0]
    return _RUNTIME["model"].pipe


def _segmenter():
    if _RUNTIME["segmenter"] is None:
        from maskedit.segmentation import load_segmenter

        _RUNTIME["segmenter"] = load_segmenter(_RUNTIME["segmenter_backend"])
    return _RUNTIME["segmenter"]


def _captioner():
    """The captioner, or None with the reason in _RUNTIME["caption_error"] (tried once)."""
    if _RUNTIME["captioner"] is None and _RUNTIME["caption_error"] is None:
        if _RUNTIME["captioner_id"] == "none":
            _RUNTIME["caption_error"] = "automatic captions are off in this app; type the prompt yourself"
            return None
        from maskedit.captioning import load_captioner

        try:
            _RUNTIME["captioner"] = load_captioner(_RUNTIME["captioner_id"])
        except MaskEditError as error:
            _RUNTIME["caption_error"] = str(error)
    return _RUNTIME["captioner"]


# ----- GPU work (each a `spaces.GPU` call; a no-op decorator off ZeroGPU)


def _train_duration(*args, **kwargs) -> int:
    budget = kwargs.get("budget_s", args[7] if len(args) > 7 else session.DEFAULT_CHUNK_SECONDS)
    return int(float(budget) + 40)  # + model transfer and sample encoding


@spaces.GPU(duration=_train_duration)
def gpu_train_chunk(prepared_dir, run_dir, caption, config, trigger, later_frames, base_model,
                    budget_s=session.DEFAULT_CHUNK_SECONDS, max_steps=None, stop_file=None, resume=True, window=0,
                    window_stride=4, naive=False):
    yield from session.run_training_chunk(
        _pipe(), prepared_dir, run_dir, caption, config, trigger=trigger, base_model=base_model,
        later_frames=later_frames, chunk=session.ChunkSettings(float(budget_s), max_steps), stop_file=stop_file,
        resume=resume, window=window, window_stride=window_stride, naive=naive)


def _generation_duration(*args, **kwargs) -> int:
    steps = int(kwargs.get("steps", 30))
    return int(min(600, 30 + steps * 6))


@spaces.GPU(duration=_generation_duration)
def gpu_generate(prepared_dir, edited_frame, caption, out_dir, lora_path=None, method="mask-lora", steps=30,
                 guidance_scale=5.0, flow_shift=5.0, seed=0, lora_scale=1.0, trigger=None, fit=False, stop_file=None,
                 preset=None):
    yield from session.run_generation(
        _pipe(), prepared_dir, edited_frame, caption, out_dir, lora_path=lora_path, method=method, steps=steps,
        guidance_scale=guidance_scale, flow_shift=flow_shift, seed=seed, lora_scale=lora_scale, trigger=trigger,
        fit=fit, stop_file=stop_file, preset=preset)


@spaces.GPU(duration=20)
def gpu_image_mask(frame, points, labels):
    return np.asarray(_segmenter().image_mask(frame, points, labels), dtype=bool)


@spaces.GPU(duration=120)
def gpu_segment_clip(frames, points, labels, margin):
    from maskedit.segmentation import segment_clip

    return segment_clip(_segmenter(), frames, points, labels, 0, margin=float(margin))


@spaces.GPU(duration=40)
def gpu_caption(image):
    captioner = _captioner()
    if captioner is None:
        raise MaskEditError(_RUNTIME["caption_error"])
    return captioner.describe(image)


# ----- session state: a small dict per session; the data itself lives in the session's folder


class App:
    """Configuration of one demo (work folders, budgets); its methods are the event handlers."""

    def __init__(self, store: session.SessionStore, budget_s: float, chunk_steps: int | None, model_name: str,
                 is_tiny: bool, background_driver: str = "thread", session_cache_bytes: int | None = None):
        self.store = store
        self.budget_s = budget_s
        self.chunk_steps = chunk_steps
        self.model_name = model_name
        self.is_tiny = is_tiny
        self.background_driver = background_driver  # "thread" | "session" (ZeroGPU: the session's calls drive)
        self.session_cache_bytes = session_cache_bytes or int(
            float(os.environ.get("MASKEDIT_SESSION_CACHE_GB") or DEFAULT_SESSION_CACHE_GB) * 1024 ** 3)
        self.jobs: dict[str, BackgroundJob] = {}  # background run of each session folder (ended with the session)
        self.gpu_lock = threading.Lock()  # one model: background chunks and GPU events take turns

    # -- state and paths
    def state(self, state, request: gr.Request | None) -> dict:
        if state and state.get("folder") and Path(state["folder"]).is_dir():
            return state
        hash_ = getattr(request, "session_hash", None) if request is not None else None
        if not hash_:
            hash_ = "local-" + os.urandom(8).hex()
        self.store.remove_stale()
        folder = self.store.folder(hash_)
        return {"folder": str(folder), "points": [], "labels": [], "later": {}, "edited": None, "lora": None,
                "lora_source": None, "lora_key": None, "run_dir": None, "results": 0, "gallery": []}

    def allowed_roots(self, st) -> list:
        from gradio.utils import get_upload_folder

        return [st["folder"], get_upload_folder(), EXAMPLES_DIR]

    def checked(self, st, path, what):
        path = getattr(path, "path", None) or (path.get("path") if isinstance(path, dict) else path)
        return session.check_path(path, self.allowed_roots(st), what)

    @staticmethod
    def sub(st, name) -> Path:
        return Path(st["folder"]) / name

    # -- 1. video
    def load_video(self, video, num_frames, size, start_s, st):
        from maskedit.video import conform_clip, read_video, write_video

        if not video:
            raise MaskEditError("no video given: upload a clip (mp4, mov, webm, ...) or pick an example")
        path = self.checked(st, video, "video")
        self.cancel_background(st, "a new clip was loaded")
        for name in (session.CLIP_FOLDER, session.PREPARED_FOLDER, session.SEGMENT_FOLDER, session.SOURCE_FOLDER):
            shutil.rmtree(self.sub(st, name), ignore_errors=True)
        source_path = session.copy_into(self.sub(st, session.SOURCE_FOLDER), path, "video" + path.suffix.lower())
        clip = read_video(source_path)
        count = int(num_frames or 0) or None
        width_height = session.parse_size(size)
        fps = clip.fps
        start = int(round(float(start_s or 0) * fps))
        conformed = conform_clip(clip, count, *(width_height or (None, None)), mode="uniform", start=start)
        source = {"video": str(source_path), "width": clip.width, "height": clip.height, "frames": clip.num_frames,
                  "fps": clip.fps, "frame_mode": "uniform", "start": start,
                  "num_frames": conformed.num_frames, "conformed_width": conformed.width,
                  "conformed_height": conformed.height}
        session.save_clip(self.sub(st, session.CLIP_FOLDER), conformed, source)
        preview = self.sub(st, session.CLIP_FOLDER) / "preview.mp4"
        write_video(preview, conformed.frames, conformed.fps)
        st.update(points=[], labels=[], run_dir=None)
        changes = "; ".join(conformed.notes) or "nothing changed"
        notes = (f"**Clip:** {conformed.num_frames} frames, {conformed.width}x{conformed.height}, "
                 f"{conformed.fps:g} fps (source: {clip.num_frames} frames, {clip.width}x{clip.height}, "
                 f"{clip.fps:g} fps).  \n**Changed:** {changes}.")
        return str(preview), notes, conformed.frames[0], conformed

    # -- 2. segment
    def overlay(self, st, clip=None):
        from maskedit.segmentation import overlay_frames

        if clip is None:
            clip, _ = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        frame = clip.frames[0]
        if not st["points"]:
            return frame
        points, labels = np.asarray(st["points"], float), np.asarray(st["labels"], int)
        if not (labels == 1).any():
            return overlay_frames(frame[None], np.zeros((1, *frame.shape[:2]), bool), points=points,
                                  labels=labels)[0]
        with self.gpu_lock:
            mask = gpu_image_mask(frame, points, labels)
        return overlay_frames(frame[None], mask[None], points=points, labels=labels)[0]

    def segment(self, points_json, margin, st):
        from maskedit.segmentation import write_segmentation

        clip, source = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        points, labels = session.parse_points(points_json)
        with self.gpu_lock:
            segmentation = gpu_segment_clip(clip.frames, points, labels, float(margin))
        out = self.sub(st, session.SEGMENT_FOLDER)
        files = write_segmentation(out, clip.frames, segmentation, clip.fps, points=points, labels=labels)
        st.update(points=points.tolist(), labels=labels.tolist())
        notes = list(segmentation.notes)
        prepared = editing.PreparedClip(clip, segmentation.boxes, segmentation.region, list(clip.notes),
                                        dict(source, points=points.tolist(), labels=labels.tolist(), margin=margin))
        self.save_prepared(st, prepared)
        approximate = segmentation.approximate and "approximate" not in segmentation.label
        text = (f"**Segmented with {segmentation.label}**" + (" (approximate)" if approximate else "")
                + f"; boxes cover {prepared.region[1:].mean():.0%} of the frames." + "".join(f"  \n{n}" for n in notes))
        return str(files.overlay), str(files.boxes), text

    def use_mask(self, mask_video, box, margin, fit, st):
        from maskedit import masks
        from maskedit.segmentation import overlay_frames
        from maskedit.video import write_video

        _, source = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        has_box = bool(box and str(box).strip())
        if bool(mask_video) == has_box:
            raise MaskEditError("give either a mask video (white = edit) or a box x0,y0,x1,y1, not both or neither")
        mask_path = None
        if mask_video:
            mask_path = session.copy_into(self.sub(st, session.SOURCE_FOLDER),
                                          self.checked(st, mask_video, "mask video"),
                                          "mask" + Path(str(getattr(mask_video, "path", mask_video))).suffix.lower())
        prepared = editing.prepare_clip(
            source["video"], mask_video=mask_path, box=str(box).strip() if has_box else None,
            num_frames=source["num_frames"], width=source["conformed_width"], height=source["conformed_height"],
            start=source["start"], margin=float(margin), fit=bool(fit))
        self.save_prepared(st, prepared)
        out = self.sub(st, session.SEGMENT_FOLDER)
        shutil.rmtree(out, ignore_errors=True)
        boxes = masks.find_loose_boxes(prepared.region, 0.0, 0)
        tight = prepared.tight if prepared.tight is not None else prepared.region
        write_video(out / "overlay.mp4", overlay_frames(prepared.frames, tight, boxes), prepared.fps)
        masks.write_mask_video(out / "boxes.mp4", prepared.region, prepared.fps)
        text = f"**Region from the {'mask video' if mask_path else 'box'}**; boxes cover {prepared.region[1:].mean():.0%} of the frames."
        return str(out / "overlay.mp4"), str(out / "boxes.mp4"), text

    def save_prepared(self, st, prepared):
        editing.save_prepared(prepared, self.sub(st, session.PREPARED_FOLDER))
        st["run_dir"] = None

    def prepared_dir(self, st) -> Path:
        folder = self.sub(st, session.PREPARED_FOLDER)
        if not (folder / editing.PREPARED_JSON).is_file():
            raise MaskEditError("no region to edit yet: segment the object (step 2) or upload a mask video first")
        return folder

    # -- 3. edited frames
    def set_edited_frame(self, image, fit, st):
        from maskedit.video import write_image

        if not image:
            raise MaskEditError("no edited first frame given: upload the edited frame 0")
        prepared = editing.load_prepared(self.prepared_dir(st))
        frame = editing.load_edited_frame(self.checked(st, image, "edited first frame"), prepared.width,
                                          prepared.height, bool(fit), prepared.source_size, "edited first frame")
        target = self.sub(st, session.EDITED_FOLDER) / "first.png"
        write_image(target, frame)
        st["edited"] = str(target)
        return frame, f"Edited first frame set ({prepared.width}x{prepared.height})."

    def add_later_frame(self, image, index, fit, st):
        from maskedit.video import write_image

        if not image:
            raise MaskEditError("no edited later frame given: upload the edited frame K")
        prepared = editing.load_prepared(self.prepared_dir(st))
        k = editing.parse_frame_index(str(int(index)) if index is not None else "", prepared.num_frames)
        frame = editing.load_edited_frame(self.checked(st, image, f"edited frame {k}"), prepared.width,
                                          prepared.height, bool(fit), prepared.source_size, f"edited frame {k}")
        target = self.sub(st, session.EDITED_FOLDER) / f"frame_{k}.png"
        write_image(target, frame)
        st["later"][str(k)] = str(target)
        return self.later_text(st)

    @staticmethod
    def later_text(st) -> str:
        if not st["later"]:
            return "No edited later frames (stage 2 is skipped)."
        return "Edited later frames (stage 2): " + ", ".join(f"frame {k}" for k in sorted(st["later"], key=int))

    # -- 4. train
    def train_config(self, preset, steps, lr, rank, seed, blocks_to_swap, fp8, checkpointing):
        from maskedit.presets import get_preset

        chosen = get_preset(preset or "full")
        notes = []
        swap, use_fp8 = int(blocks_to_swap or 0), bool(fp8)
        if self.is_tiny and (swap or use_fp8):
            notes.append("memory options (block swap, fp8) are for the 14B model and are off on the tiny model")
            swap, use_fp8 = 0, False
        if lr is not None and float(lr) <= 0:
            raise MaskEditError(f"the learning rate is {lr}; give a positive one, e.g. 1e-4")
        config = chosen.train_config(
            steps=int(steps or chosen.train_steps), learning_rate=float(lr or chosen.learning_rate),
            rank=int(rank or chosen.rank), alpha=float(rank or chosen.rank), seed=int(seed or 0),
            blocks_to_swap=swap, fp8=use_fp8, gradient_checkpointing=bool(checkpointing) or swap > 0 or use_fp8,
            checkpoint_every=10)
        return config, notes

    @staticmethod
    def windows(preset, prepared) -> tuple[int, int, str | None]:
        """(window, window_stride, a note) of the preset for this clip: window 0 (and no note) trains on the
        whole clip, as does a window not shorter than the clip."""
        from maskedit.presets import get_preset
        from maskedit.conditioning import window_starts

        chosen = get_preset(preset or "full")
        window, stride = int(chosen.window or 0), int(chosen.window_stride or 4)
        if not window or window >= prepared.num_frames:
            return 0, stride, None
        count = len(window_starts(prepared.num_frames, window, stride))
        return window, stride, (f"Preset {chosen.name}: training on {count} overlapping {window}-frame windows "
                                f"(every {stride} frames) of the {prepared.num_frames}-frame clip.")

    def train(self, caption, trigger, preset, steps, lr, rank, seed, blocks_to_swap, fp8, checkpointing, budget_s,
              resume, st):
        """Generator of (rows, status markdown, loss points dict, LoRA files or None)."""
        prepared_dir = self.prepared_dir(st)
        if not caption or not str(caption).strip():
            raise MaskEditError("the caption of the original first frame is empty: type one (or use Caption)")
        config, notes = self.train_config(preset, steps, lr, rank, seed, blocks_to_swap, fp8, checkpointing)
        prepared = editing.load_prepared(prepared_dir)
        later = {int(k): v for k, v in st["later"].items()}
        later_arrays = {k: editing.load_edited_frame(v, prepared.width, prepared.height) for k, v in later.items()}
        trigger = DEFAULT_TRIGGER if trigger is None else str(trigger).strip()
        window, stride, window_note = self.windows(preset, prepared)
        if window_note:
            notes.append(window_note)
        key = session.train_key(prepared, caption.strip(), trigger, config, self.model_name, later_arrays, window,
                                stride)
        run_dir = self.sub(st, session.TRAIN_FOLDER) / key
        stop_file = Path(st["folder"]) / session.STOP_TRAINING
        stop_file.unlink(missing_ok=True)
        st["run_dir"] = str(run_dir)
        job = self.jobs.get(st["folder"])
        if job is not None and job.active and job.key == key:
            yield from self.follow(job, st)  # the background run already trains exactly this
            return
        if job is not None and job.active:
            self.cancel_background(st, "training was started with other inputs")
        cache = self.cache(st)
        entry = cache.lookup(key)
        if entry is not None and entry.status == lora_cache.FINISHED:
            st["lora"], st["lora_source"], st["lora_key"] = str(entry.lora_path), "trained", key
            yield ([], f"**done** — reusing the cached LoRA {key}: the clip, boxes, caption and settings are the "
                       "same as a finished run, so no training is needed.", {"step": [], "loss": []},
                   _lora_files(entry.path))
            return
        cache.prepare(key, {"caption": caption.strip(), "trigger": trigger, "steps": config.steps})
        cache.evict(keep=(key,))
        budget = float(budget_s or self.budget_s)
        steps_done, losses, stage_offset, total, recent = [], [], 0, config.steps, []
        messages = list(notes)
        offset_by_stage = {1: 0}

        def status(head):
            per_step = float(np.mean(recent[-10:])) if recent else None
            step = steps_done[-1] if steps_done else 0
            remaining = max(0, total - step) * per_step if per_step else None
            line = (f"**{head}** — step {step} / {total}" + (f" · {per_step:.2f} s/step" if per_step else "")
                    + f" · ETA {session.format_eta(remaining)}")
            return line + "".join(f"  \n{m}" for m in messages[-4:])

        def points():
            return {"step": list(steps_done), "loss": list(losses)}

        def chunk(again):
            with self.gpu_lock:
                yield from gpu_train_chunk(str(prepared_dir), str(run_dir), caption.strip(), config, trigger,
                                           {k: v for k, v in later.items()}, self.model_name, budget_s=budget,
                                           max_steps=self.chunk_steps, stop_file=str(stop_file),
                                           resume=bool(resume) or again, window=window, window_stride=stride)

        yield session.loss_rows([], []), status("starting"), points(), None
        for event in session.train_in_chunks(chunk):
            kind = event["kind"]
            if kind == "note":
                messages.append(event["message"].replace(str(run_dir), "the run's folder"))
            elif kind == "stage":
                stage_offset = offset_by_stage.get(event["stage"], stage_offset)
                total = stage_offset + event["total_steps"]
                offset_by_stage[event["stage"] + 1] = total
                if event["start_step"] and not steps_done:
                    old = _checkpoint_losses(run_dir, event["stage"])
                    steps_done.extend(stage_offset + i + 1 for i in range(len(old)))
                    losses.extend(old)
            elif kind == "step":
                steps_done.append(stage_offset + event["step"])
                losses.append(event["loss"])
                recent.append(event["seconds"])
                yield session.loss_rows(steps_done, losses), status("training"), points(), None
            elif kind == "chunk":
                if event["index"]:
                    messages.append(f"GPU call {event['index'] + 1} (resuming the checkpoint)")
            elif kind == "stopped":
                st["lora"], st["lora_source"], st["lora_key"] = event["partial"], "partial", key
                files = _lora_files(Path(event["partial"]).parent) if event["partial"] else None
                messages.append(f"Stopped at step {event['step']}: the checkpoint is kept (Resume continues it); "
                                "the LoRA so far is below and is used by Generate.")
                yield session.loss_rows(steps_done, losses), status("stopped"), points(), files
                return
            elif kind == "done":
                st["lora"], st["lora_source"], st["lora_key"] = event["lora"], "trained", key
                messages.append("Saved the LoRA (diffusers and ComfyUI files + lora.json).")
                yield (session.loss_rows(steps_done, losses), status("done"), points(),
                       _lora_files(Path(event["lora"]).parent))
                return

    # -- background training (issue 8)
    def cache(self, st) -> lora_cache.LoraCache:
        """The session's LoRA cache: train/<key> (the same folders /train uses)."""
        return lora_cache.LoraCache(self.sub(st, session.TRAIN_FOLDER), self.session_cache_bytes)

    def cancel_background(self, st, why: str) -> str:
        """Cancel the session's background run (its inputs changed) and forget its LoRA; its unfinished run is
        discarded. Returns a line for the user ("" when nothing was running)."""
        job = self.jobs.pop(st["folder"], None)
        if job is None:
            return ""
        if st.get("lora_key") == job.key and st.get("lora_source") != "uploaded":
            st["lora"], st["lora_source"], st["lora_key"] = None, None, None
        if not job.active:
            return ""
        cache = self.cache(st)

        def discard():
            entry = cache.get(job.key)
            if entry is not None and entry.status != lora_cache.FINISHED:
                cache.remove(job.key)

        job.cancel(discard)
        return f"⚠️ {why[:1].upper() + why[1:]}: the background training for the old inputs was cancelled and discarded."

    def ensure_background(self, st, enabled, caption, trigger, preset, steps, lr, rank, seed, blocks_to_swap, fp8,
                          checkpointing, budget_s) -> str:
        """Make the session's background run match the current inputs: start it (masks confirmed and a caption
        given), keep it (same key), or cancel and replace it (frames, boxes, caption or settings changed).
        Returns the status line shown in the Segment and Edited-frames tabs."""
        st["background"] = bool(enabled)
        job = self.jobs.get(st["folder"])
        if not enabled:
            if job is not None and job.active:
                job.request_stop()
                return ("Background training is **off**: the run stops after its current step; its checkpoint is "
                        "kept (Train → Start continues it).")
            return "Background training is **off**: train in step 4."
        if not (self.sub(st, session.PREPARED_FOLDER) / editing.PREPARED_JSON).is_file():
            return "Background training starts as soon as the masks are confirmed (step 2)."
        if not caption or not str(caption).strip():
            note = self.cancel_background(st, "the caption was cleared") if job is not None else ""
            return ((note + "  \n") if note else "") + (
                "Background training waits for the **caption of the ORIGINAL first frame** (step 3).")
        config, notes = self.train_config(preset, steps, lr, rank, seed, blocks_to_swap, fp8, checkpointing)
        prepared_dir = self.prepared_dir(st)
        prepared = editing.load_prepared(prepared_dir)
        trigger = DEFAULT_TRIGGER if trigger is None else str(trigger).strip()
        caption = str(caption).strip()
        later = {int(k): v for k, v in st["later"].items()}
        later_arrays = {k: editing.load_edited_frame(v, prepared.width, prepared.height) for k, v in later.items()}
        window, stride, window_note = self.windows(preset, prepared)
        parts = lora_cache.key_parts(prepared, caption, trigger, config, self.model_name, later_arrays, None,
                                     window, stride)
        key = lora_cache.key_from_parts(parts)
        if job is not None and job.key == key and job.status in ("queued", "training", "done"):
            return self.background_text(job.snapshot())
        note = ""
        if job is not None and job.key != key:
            changed = lora_cache.changed_parts(job.parts, parts) or ["the inputs"]
            what = " and ".join([", ".join(changed[:-1]), changed[-1]] if len(changed) > 1 else changed)
            note = self.cancel_background(st, f"{what} changed") or f"ℹ️ {what[:1].upper() + what[1:]} changed."
        elif job is not None:
            self.jobs.pop(st["folder"], None)
        if st.get("lora_key") and st["lora_key"] != key and st.get("lora_source") != "uploaded":
            st["lora"], st["lora_source"], st["lora_key"] = None, None, None
        job = self.start_job(st, key, parts, prepared_dir, caption, trigger, config, later, budget_s, window, stride)
        if window_note:
            job.messages.append(window_note)
        return ((note + "  \n") if note else "") + self.background_text(job.snapshot())

    def start_job(self, st, key, parts, prepared_dir, caption, trigger, config, later, budget_s, window=0,
                  window_stride=4) -> BackgroundJob:
        cache = self.cache(st)
        entry = cache.lookup(key)
        stop_file = Path(st["folder"]) / f"stop_background_{key}"
        if entry is not None and entry.status == lora_cache.FINISHED:
            job = BackgroundJob.finished(key, str(entry.lora_path), f"Reusing the cached LoRA {key} (same clip, "
                                         "boxes, caption and settings): no training needed.", stop_file, parts)
            st["lora"], st["lora_source"], st["lora_key"] = str(entry.lora_path), "trained", key
            self.jobs[st["folder"]] = job
            return job
        run_dir = cache.prepare(key, {"caption": caption, "trigger": trigger, "steps": config.steps})
        cache.evict(keep=(key,))
        # the run reads its own copy of the inputs: a later segmentation may rewrite prepared/ meanwhile
        inputs = run_dir / "inputs"
        shutil.copytree(prepared_dir, inputs, dirs_exist_ok=True)
        later_copies = {k: str(session.copy_into(inputs, v, f"frame_{k}.png")) for k, v in later.items()}
        budget = float(budget_s or self.budget_s)

        def chunk(again):
            with self.gpu_lock:
                yield from gpu_train_chunk(str(inputs), str(run_dir), caption, config, trigger, later_copies,
                                           self.model_name, budget_s=budget, max_steps=self.chunk_steps,
                                           stop_file=str(stop_file), resume=again, window=window,
                                           window_stride=window_stride)

        job = BackgroundJob(key, chunk, stop_file, resume=True, parts=parts,
                            history=lambda stage: _checkpoint_losses(run_dir, stage))
        if entry is not None:
            job.messages.append(f"Resuming the cached run {key} from step {entry.step} of {entry.total_steps}.")
        self.jobs[st["folder"]] = job
        if self.background_driver == "thread":
            job.start()
        return job

    @staticmethod
    def background_text(snap: dict | None) -> str:
        if not snap:
            return "No background training."
        status = snap["status"]
        line = f"**Background training: {status}**"
        if snap["total_steps"]:
            line += f" — step {snap['step']} / {snap['total_steps']}"
        if snap["seconds_per_step"]:
            line += f" · {snap['seconds_per_step']:.2f} s/step · ETA {session.format_eta(snap['eta_s'])}"
        if status == "done":
            line += " — the LoRA is ready: generate as many edits as you like."
        elif status in ("queued", "training"):
            line += " — edit the first frame meanwhile; Generate waits for it."
        if snap.get("error"):
            line += f"  \n⚠️ {snap['error']}"
        return line + "".join(f"  \n{m}" for m in snap["messages"][-2:])

    def follow(self, job: BackgroundJob, st):
        """/train while the background run trains the same thing: stream its progress instead of training twice."""
        files = None
        while True:
            if self.background_driver == "session":
                for _ in job.drive_one():
                    pass
            ended = job.wait(0.25)
            snap = job.snapshot()
            if ended and snap["lora"]:
                st["lora"], st["lora_source"], st["lora_key"] = snap["lora"], "trained", job.key
                files = _lora_files(Path(snap["lora"]).parent)
            text = self.background_text(snap).replace("Background training", "Training (started in the background)")
            yield (session.loss_rows(snap["steps"], snap["losses"]), text,
                   {"step": snap["steps"], "loss": snap["losses"]}, files)
            if ended:
                return

    def wait_for_background(self, st, use_checkpoint: bool, progress=None) -> None:
        """Before generating: wait for the session's background run (or stop it and use its latest checkpoint),
        then make its LoRA the session's LoRA."""
        job = self.jobs.get(st["folder"])
        if job is None or st.get("lora_source") == "uploaded":
            return
        if job.active and use_checkpoint:
            job.request_stop()
        while job.active:
            ran = False
            if self.background_driver == "session":
                for snap in job.drive_one():
                    ran = True
                    if progress is not None and snap["total_steps"]:
                        progress((snap["step"], snap["total_steps"]), desc="training the LoRA", unit="steps")
            if not ran:
                job.wait(0.5)
                snap = job.snapshot()
                if progress is not None and snap["total_steps"]:
                    progress((snap["step"], snap["total_steps"]), desc="waiting for the background training",
                             unit="steps")
        if job.status == "done":
            st["lora"], st["lora_source"], st["lora_key"] = job.lora, "trained", job.key
        elif job.status == "stopped" and job.partial:
            st["lora"], st["lora_source"], st["lora_key"] = job.partial, "partial", job.key
            st["resume_background"] = True  # after this generation, training goes on from the checkpoint
        elif job.status == "failed":
            raise MaskEditError(f"the background training failed: {job.error}")

    def resume_background(self, st) -> None:
        job = self.jobs.get(st["folder"])
        if st.pop("resume_background", False) and job is not None and job.status == "stopped" and st.get("background"):
            job = job.resumed()
            self.jobs[st["folder"]] = job
            if self.background_driver == "thread":
                job.start()

    def use_lora(self, file, st):
        from safetensors import safe_open

        path = self.checked(st, file, "LoRA file")
        if path.suffix.lower() != ".safetensors":
            raise MaskEditError(f"{path.name} is not a .safetensors file; only safetensors LoRA files are loaded")
        try:
            with safe_open(str(path), "pt") as handle:
                if not list(handle.keys()):
                    raise MaskEditError(f"{path.name} holds no weights")
        except MaskEditError:
            raise
        except Exception as error:  # noqa: BLE001 (safetensors raises its own types)
            raise MaskEditError(f"{path.name} could not be read as safetensors ({str(error)[:200]})") from None
        folder = self.sub(st, session.LORA_FOLDER)
        shutil.rmtree(folder, ignore_errors=True)
        target = session.copy_into(folder, path, "lora.safetensors")
        st["lora"], st["lora_source"], st["lora_key"] = str(target), "uploaded", None
        return f"Using the uploaded LoRA **{path.name}** (training can be skipped)."

    # -- the naive-LoRA baseline (METHOD.md §8), trained on demand by Generate
    def naive_lora(self, st, train_settings, stop_file, progress=None) -> str:
        """The session's naive-baseline LoRA for the current clip, caption and training settings: reused when
        finished (the session's cache, keyed with `naive=True`, so it never shares a folder with the mask-aware
        LoRA), else trained now with the Train tab's chunked, resumable path (a stopped run resumes on the next
        Generate). train_settings: the Train tab's (caption, trigger, preset, steps, lr, rank, seed,
        blocks_to_swap, fp8, checkpointing, budget_s). Never touches the session's mask-aware LoRA
        (st["lora"]) or its background run. Returns the path of its lora.safetensors."""
        caption, trigger, preset, steps, lr, rank, seed, blocks_to_swap, fp8, checkpointing, budget_s = train_settings
        prepared_dir = self.prepared_dir(st)
        if not caption or not str(caption).strip():
            raise MaskEditError("the naive-LoRA baseline trains on the clip first: type the caption of the ORIGINAL "
                                "first frame (step 3)")
        caption = str(caption).strip()
        config, _ = self.train_config(preset, steps, lr, rank, seed, blocks_to_swap, fp8, checkpointing)
        prepared = editing.load_prepared(prepared_dir)
        trigger = DEFAULT_TRIGGER if trigger is None else str(trigger).strip()
        window, stride, _ = self.windows(preset, prepared)
        key = session.train_key(prepared, caption, trigger, config, self.model_name, None, window, stride, naive=True)
        cache = self.cache(st)
        entry = cache.lookup(key)
        if entry is not None and entry.status == lora_cache.FINISHED:
            st["naive_lora"], st["naive_key"] = str(entry.lora_path), key
            return str(entry.lora_path)
        run_dir = cache.prepare(key, {"caption": caption, "trigger": trigger, "steps": config.steps,
                                      "method": "naive-lora"})
        cache.evict(keep=tuple(k for k in (key, st.get("lora_key")) if k))
        budget = float(budget_s or self.budget_s)

        def chunk(again):
            with self.gpu_lock:
                yield from gpu_train_chunk(str(prepared_dir), str(run_dir), caption, config, trigger, {},
                                           self.model_name, budget_s=budget, max_steps=self.chunk_steps,
                                           stop_file=str(stop_file), resume=True, window=window,
                                           window_stride=stride, naive=True)

        for event in session.train_in_chunks(chunk):
            if event["kind"] == "step" and progress is not None:
                progress((event["step"], event["total_steps"]), desc="training the naive-LoRA baseline",
                         unit="steps")
            elif event["kind"] == "stopped":
                raise MaskEditError(f"the naive-LoRA training was cancelled at step {event['step']} of "
                                    f"{event['total_steps']}; Generate again with this method to resume it")
            elif event["kind"] == "done":
                st["naive_lora"], st["naive_key"] = event["lora"], key
                return event["lora"]
        raise MaskEditError("the naive-LoRA training ended without saving a LoRA; see the server log")

    # -- 5. generate
    def generate(self, prompt, edited_frame, fit, method, steps, cfg, shift, seed, lora_scale, st, progress=None,
                 use_checkpoint=False, preset=None, train_settings=None):
        """Generate one edit; preset: the preset whose generation options apply (speed LoRA, attention, VAE
        tiling; session.apply_preset_options) — an option that cannot be used here is skipped with a
        gr.Warning and a line in the report. method "naive-lora" (the baseline) first trains the naive LoRA
        with `train_settings` (the Train tab's values, see `naive_lora`) unless it is already trained."""
        prepared_dir = self.prepared_dir(st)
        if edited_frame:
            self.set_edited_frame(edited_frame, fit, st)
        if not st.get("edited"):
            raise MaskEditError("no edited first frame yet: upload it in step 3 (or pass edited_frame)")
        if not prompt or not str(prompt).strip():
            raise MaskEditError("the prompt is empty: describe the edited first frame")
        if int(steps) < 1:
            raise MaskEditError(f"the number of generation steps is {steps}; give at least 1")
        if float(cfg) < 1:
            raise MaskEditError(f"the guidance scale is {cfg}; give 1 (no guidance) or more, e.g. 5")
        if float(shift) <= 0:
            raise MaskEditError(f"the flow shift is {shift}; give a positive one, e.g. 5")
        method = method or "mask-lora"
        if method not in editing.METHODS:
            raise MaskEditError(f"the method {method!r} is unknown; choose one of the listed methods")
        stop_file = Path(st["folder"]) / session.STOP_GENERATION
        stop_file.unlink(missing_ok=True)
        if method == "naive-lora":  # its own LoRA: neither the session's LoRA nor its background run is involved
            if train_settings is None:
                raise MaskEditError("the naive-LoRA baseline needs the training settings (Train tab)")
            lora = self.naive_lora(st, train_settings, stop_file, progress)
        else:
            if method != "no-lora":
                self.wait_for_background(st, bool(use_checkpoint), progress)
            lora = st.get("lora") if method != "no-lora" else None
        if method == "mask-lora" and not lora:
            raise MaskEditError("the mask-aware LoRA method needs a LoRA: train one (step 4) or upload one; "
                                "or choose the no-LoRA baseline")
        st["results"] = int(st.get("results") or 0) + 1
        out = self.sub(st, session.RESULTS_FOLDER) / str(st["results"])
        stop_file.unlink(missing_ok=True)
        try:
            with self.gpu_lock:
                for event in gpu_generate(str(prepared_dir), st["edited"], str(prompt).strip(), str(out),
                                          lora_path=lora, method=method, steps=int(steps), guidance_scale=float(cfg),
                                          flow_shift=float(shift), seed=int(seed), lora_scale=float(lora_scale),
                                          stop_file=str(stop_file), preset=preset or None):
                    if event["kind"] == "warning":
                        gr.Warning(event["message"])
                    elif event["kind"] == "step" and progress is not None:
                        progress((event["step"], event["total_steps"]), desc="denoising", unit="steps")
                    elif event["kind"] == "done":
                        caption = f"#{st['results']} · {method} · seed {int(seed)} · {str(prompt).strip()[:60]}"
                        st["gallery"] = ([[event["edited"], caption]] + list(st.get("gallery") or []))[:GALLERY_SIZE]
                        return (event["edited"], event["side_by_side"], session.format_report(event["report"]),
                                event["report"])
        finally:
            self.resume_background(st)
        raise MaskEditError("generation ended without a result")


def _checkpoint_losses(run_dir: Path, stage: int) -> list:
    from maskedit.training import CHECKPOINT_STATE

    path = Path(run_dir) / editing.CHECKPOINTS_FOLDER / f"stage{stage}" / CHECKPOINT_STATE
    try:
        return [float(v) for v in json.loads(path.read_text()).get("losses", [])]
    except (OSError, ValueError):
        return []


def _loss_frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype(
        {"step": "int64", "loss": "float64", "series": "str"})


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def _lora_files(folder: Path) -> list[str]:
    from maskedit.lora import COMFYUI_WEIGHT_NAME, LORA_WEIGHT_NAME, METADATA_NAME

    return [str(folder / n) for n in (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME) if (folder / n).is_file()]


def _examples() -> list[dict]:
    try:
        entries = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if (EXAMPLES_DIR / e["clip"]).is_file()]


# ----- the UI


def create_demo(model=None, *, banner: str | None = None, segmenter: str | None = None, captioner: str | None = None,
                work_dir=None, gpu_budget: float | None = None, chunk_steps: int | None = None,
                background: bool | None = None, background_driver: str | None = None) -> gr.Blocks:
    """Build the app. model: a name ("tiny", hub id, folder; default: Wan2.1 with a CUDA GPU, else tiny) or a
    `maskedit.models.LoadedModel`. segmenter: "auto" | "sam2" | "fallback". captioner: a Florence-2 hub id or
    folder, or "none". gpu_budget: seconds per training call (ZeroGPU). chunk_steps: at most this many steps
    per training call (tests). background: the background-training toggle's initial value (default:
    MASKEDIT_BACKGROUND, else on with a GPU). background_driver: "thread" (default) or "session" (default on
    ZeroGPU: the session's timer ticks and Generate run the chunks)."""
    from maskedit.presets import PRESETS, get_preset

    if model is None or isinstance(model, str):
        loaded, auto_banner = load_model(model)
        banner = auto_banner if banner is None else banner
    else:
        loaded = model
    _RUNTIME["model"] = loaded
    _RUNTIME["segmenter_backend"] = segmenter or os.environ.get("MASKEDIT_SEGMENTER", "auto")
    _RUNTIME["segmenter"] = None
    _RUNTIME["captioner_id"] = captioner or os.environ.get("MASKEDIT_CAPTIONER") or None
    _RUNTIME["captioner"], _RUNTIME["caption_error"] = None, None
    budget = float(gpu_budget or os.environ.get("MASKEDIT_GPU_BUDGET") or session.DEFAULT_CHUNK_SECONDS)
    store = session.SessionStore(work_dir)
    store.remove_stale()
    zero_gpu = bool(os.environ.get("SPACES_ZERO_GPU"))
    driver = background_driver or ("session" if zero_gpu else "thread")
    if driver not in ("thread", "session"):
        raise MaskEditError(f"background_driver must be 'thread' or 'session', not {driver!r}")
    if background is None:
        env = os.environ.get("MASKEDIT_BACKGROUND", "").strip().lower()
        background = env in ("1", "true", "on", "yes") if env else (zero_gpu or _has_gpu())
    app = App(store, budget, chunk_steps, loaded.name, loaded.is_tiny, driver)
    tiny = loaded.is_tiny
    default_preset = "zerogpu" if os.environ.get("SPACES_ZERO_GPU") else "full"
    preset0 = get_preset(default_preset)

    def end_jobs(folder):
        job = app.jobs.pop(str(folder), None)
        if job is not None:
            job.cancel()
            job.wait(30)  # the run writes into the folder until its current step ends

    def on_session_end(value):
        if value and value.get("folder"):
            end_jobs(value["folder"])
            store.remove(value["folder"])

    with gr.Blocks(title="MaskEdit") as demo:
        state = gr.State(None, delete_callback=on_session_end)
        gr.Markdown("# MaskEdit — edit a whole video from one edited frame\n"
                    "Load a clip, mark the object, edit its first frame elsewhere, train a small mask-aware LoRA "
                    "on the clip, then generate the edited video.")
        gr.Markdown(banner or "", visible=bool(banner), elem_id="banner")
        gr.Markdown(f"Model: {loaded.description}", elem_id="model-line")

        with gr.Tabs():
            # 1 -------------------------------------------------------------------------
            with gr.Tab("1 · Video", id="video"):
                with gr.Row():
                    with gr.Column():
                        video_in = gr.Video(label="Clip", sources=["upload"], elem_id="video-in")
                        with gr.Row():
                            frames_in = gr.Dropdown(FRAME_CHOICES, value=17 if tiny else 49, label="Frames (4k+1)",
                                                    allow_custom_value=True)
                            size_in = gr.Dropdown(SIZE_CHOICES, value="320x192 (small)" if tiny else "auto",
                                                  label="Size (WxH)", allow_custom_value=True)
                            start_in = gr.Number(0, label="Start time (s)", minimum=0)
                        load_btn = gr.Button("Load clip", variant="primary", elem_id="load-btn")
                    with gr.Column():
                        preview = gr.Video(label="Conformed clip", interactive=False, elem_id="preview")
                        clip_notes = gr.Markdown(elem_id="clip-notes")
                examples = _examples()
                if examples:
                    gr.Examples([[str(EXAMPLES_DIR / e["clip"]), e["frames"] if e["frames"] in (5, 9, 17, 33, 49, 81)
                                  else 17, f"{e['width']}x{e['height']}"] for e in examples],
                                inputs=[video_in, frames_in, size_in], label="Examples (procedural clips)")

            # 2 -------------------------------------------------------------------------
            with gr.Tab("2 · Segment", id="segment"):
                gr.Markdown("Click on the first frame: **include** points on the object, **exclude** points on "
                            "what is not. The mask updates after each click; then **Propagate** through the clip.")
                with gr.Row():
                    with gr.Column():
                        first_frame = gr.Image(label="First frame (click)", interactive=False, type="numpy",
                                               elem_id="first-frame")
                        with gr.Row():
                            mode = gr.Radio([INCLUDE, EXCLUDE], value=INCLUDE, label="Click adds")
                        with gr.Row():
                            undo_btn = gr.Button("Undo")
                            clear_btn = gr.Button("Clear")
                        points_box = gr.Textbox("[]", label="Points (JSON [[x, y, label], ...]; 1 = object)",
                                                elem_id="points")
                        margin = gr.Slider(0, 0.5, value=0.1, step=0.01, label="Box margin (fraction of the box)")
                        segment_btn = gr.Button("Propagate", variant="primary", elem_id="propagate-btn")
                        bg_toggle = gr.Checkbox(background, label="Train in the background as soon as the masks are "
                                                "confirmed (needs the caption of the original first frame)",
                                                elem_id="bg-toggle")
                    with gr.Column():
                        with gr.Row():
                            overlay_video = gr.Video(label="Mask overlay", interactive=False, elem_id="overlay-video")
                            boxes_video = gr.Video(label="Loose boxes (white = edit)", interactive=False)
                        segment_notes = gr.Markdown(elem_id="segment-notes")
                        with gr.Accordion("…or upload a mask video (white = edit) or give a box", open=False):
                            mask_in = gr.File(label="Mask video", file_types=["video", "image"])
                            box_in = gr.Textbox(label="Box x0,y0,x1,y1 (pixels of the conformed clip)")
                            fit_mask = gr.Checkbox(False, label="Fit a mask of another size to the clip")
                            mask_btn = gr.Button("Use this region")

            # 3 -------------------------------------------------------------------------
            with gr.Tab("3 · Edited frames", id="edited"):
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("**Get a frame to edit** in any image editor (frame 0 for the edited first frame).")
                        frame_index = gr.Number(0, label="Frame", minimum=0, precision=0)
                        frame_btn = gr.Button("Get frame")
                        frame_file = gr.File(label="Frame (PNG)", interactive=False)
                    with gr.Column():
                        edited_in = gr.Image(label="Edited first frame", type="filepath", sources=["upload"],
                                             elem_id="edited-in")
                        fit_edited = gr.Checkbox(False, label="Fit (resize and centre-crop) to the clip's size")
                        edited_status = gr.Markdown(elem_id="edited-status")
                        edited_preview = gr.Image(label="Edited first frame as used (clip size)", interactive=False,
                                                  type="filepath", height=200)
                        examples_edited = [str(EXAMPLES_DIR / e["edited_first_frame"]) for e in examples
                                           if (EXAMPLES_DIR / e["edited_first_frame"]).is_file()]
                        if examples_edited:
                            gr.Examples(examples_edited, inputs=[edited_in], label="Edited first frames of the examples")
                with gr.Accordion("Edited later frames (optional, stage 2)", open=False):
                    with gr.Row():
                        later_in = gr.Image(label="Edited frame K", type="filepath", sources=["upload"])
                        later_index = gr.Number(16, label="K (frame index)", precision=0, minimum=1)
                    later_btn = gr.Button("Add later frame")
                    later_clear = gr.Button("Remove later frames")
                    later_status = gr.Markdown("No edited later frames (stage 2 is skipped).")
                with gr.Row():
                    caption = gr.Textbox("", label="Caption of the ORIGINAL first frame (training)", lines=2,
                                         elem_id="caption")
                    prompt = gr.Textbox(label="Prompt: caption of the EDITED first frame (generation)", lines=2,
                                        elem_id="prompt")
                with gr.Row():
                    caption_btn = gr.Button("Caption both automatically")
                    trigger = gr.Textbox(DEFAULT_TRIGGER, label="Trigger token")
                caption_status = gr.Markdown()
                with gr.Accordion("Training (runs in the background while you edit)", open=True):
                    bg_status = gr.Markdown("Background training starts as soon as the masks are confirmed.",
                                            elem_id="bg-status")
                    bg_plot = gr.LinePlot(x="step", y="loss", color="series", label="Training loss (background)",
                                          color_map={"raw": "#9aa0a6", "smoothed": "#d62728"}, elem_id="bg-plot",
                                          height=240)

            # 4 -------------------------------------------------------------------------
            with gr.Tab("4 · Train", id="train"):
                with gr.Row():
                    with gr.Column(scale=1):
                        preset = gr.Dropdown(list(PRESETS), value=default_preset, label="Preset")
                        preset_text = gr.Code(preset0.describe(), label="Exact settings", language=None)
                        with gr.Accordion("Advanced", open=False):
                            steps_in = gr.Number(10 if tiny else preset0.train_steps, label="Steps", precision=0,
                                                 minimum=1, elem_id="train-steps")
                            lr_in = gr.Number(preset0.learning_rate, label="Learning rate")
                            rank_in = gr.Number(preset0.rank, label="LoRA rank", precision=0, minimum=1)
                            seed_in = gr.Number(0, label="Seed", precision=0)
                            swap_in = gr.Slider(0, 39, value=preset0.blocks_to_swap, step=1,
                                                label="Blocks swapped to CPU (of 40)")
                            fp8_in = gr.Checkbox(preset0.fp8, label="fp8 base weights")
                            ckpt_in = gr.Checkbox(preset0.gradient_checkpointing, label="Gradient checkpointing")
                            budget_in = gr.Number(budget, label="Seconds per GPU call (chunk budget)", minimum=5)
                        with gr.Row():
                            train_btn = gr.Button("Start", variant="primary", elem_id="train-btn")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                            resume_btn = gr.Button("Resume", elem_id="resume-btn")
                        train_status = gr.Markdown(elem_id="train-status")
                    with gr.Column(scale=2):
                        plot = gr.LinePlot(x="step", y="loss", color="series", label="Training loss",
                                           color_map={"raw": "#9aa0a6", "smoothed": "#d62728"},
                                           elem_id="loss-plot", height=380)
                        lora_files = gr.File(label="LoRA files (diffusers, ComfyUI, metadata)", file_count="multiple",
                                             interactive=False, elem_id="lora-files")
                        with gr.Accordion("Loss points (JSON)", open=False):
                            loss_json = gr.JSON(label="loss points")
                        with gr.Accordion("Skip training: upload a LoRA (.safetensors)", open=False):
                            lora_in = gr.File(label="LoRA", file_types=[".safetensors"])
                            lora_status = gr.Markdown()

            # 5 -------------------------------------------------------------------------
            with gr.Tab("5 · Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        method = gr.Radio(METHOD_CHOICES, value="mask-lora", label="Method")
                        gen_steps = gr.Number(4 if tiny else preset0.generation_steps, label="Steps", precision=0,
                                              minimum=1)
                        cfg = gr.Number(preset0.guidance_scale, label="Guidance (CFG)")
                        shift = gr.Number(preset0.flow_shift, label="Flow shift")
                        seed_gen = gr.Number(0, label="Seed", precision=0)
                        scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale")
                        new_edit = gr.Image(label="Another edited first frame (optional)", type="filepath",
                                            sources=["upload"])
                        use_ckpt = gr.Checkbox(False, label="Don't wait for training: use its latest checkpoint "
                                               "(training goes on afterwards)")
                        gen_bg_status = gr.Markdown(elem_id="gen-bg-status")
                        with gr.Row():
                            gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            cancel_btn = gr.Button("Cancel", variant="stop")
                    with gr.Column(scale=2):
                        with gr.Row():
                            edited_video = gr.Video(label="Edited video", interactive=False, elem_id="edited-video")
                            sbs_video = gr.Video(label="Original | edited", interactive=False)
                        report = gr.Markdown(elem_id="report")
                        report_json = gr.JSON(label="report", visible=False)
                        gallery = gr.Gallery(label="This session's results (newest first; one LoRA, many edits)",
                                             columns=4, height=260, elem_id="gallery")

        # hidden API-only inputs of /edit
        with gr.Row(visible=False):
            api_mask = gr.File()
            api_later = gr.File(file_count="multiple")
            api_later_idx = gr.Textbox()
            api_edited = gr.Image(type="filepath")
            api_video = gr.Video()
            api_lora = gr.File(file_count="multiple")
            api_text = gr.Textbox()
            api_bool = gr.Checkbox()
            api_json = gr.JSON()
        poll_timer = gr.Timer(2.0)

        gpu = dict(concurrency_id="gpu", concurrency_limit=1)
        # what background training depends on besides the session's files (after the mask points of /segment)
        bg_widgets = [bg_toggle, caption, trigger, preset, steps_in, lr_in, rank_in, seed_in, swap_in, fp8_in,
                      ckpt_in, budget_in]

        def background_line(st, widget_values) -> str:
            try:
                return app.ensure_background(st, *widget_values)
            except MaskEditError as error:
                return f"⚠️ Background training not started: {error}"

        def bg_outputs(st):
            snap = app.jobs[st["folder"]].snapshot() if st and st.get("folder") in app.jobs else None
            rows = session.loss_rows(snap["steps"], snap["losses"]) if snap and snap["steps"] else None
            frame = _loss_frame(rows) if rows else gr.update()
            text = app.background_text(snap) if snap else gr.update()
            return frame, text, text

        @user_errors
        def h_background(enabled, caption_text, trigger_text, preset_name, steps, lr, rank, seed, swap, fp8, ckpt,
                         budget_s, st, request: gr.Request):
            widget_values = (enabled, caption_text, trigger_text, preset_name, steps, lr, rank, seed, swap, fp8, ckpt,
                             budget_s)
            st = app.state(st, request)
            line = background_line(st, widget_values)
            frame, _, _ = bg_outputs(st)
            return line, line, frame, st

        @user_errors
        def h_poll(st):
            if not st or st.get("folder") not in app.jobs:
                return gr.update(), gr.update(), gr.update()
            return bg_outputs(st)

        @user_errors
        def h_drive(st):
            """ZeroGPU: a timer tick of the session runs the background run's next chunk (a GPU call)."""
            job = app.jobs.get(st.get("folder")) if st else None
            if job is None:
                yield gr.update(), gr.update(), gr.update()
                return
            for _ in job.drive_one():
                yield bg_outputs(st)
            yield bg_outputs(st)

        @user_errors
        def h_status(st, request: gr.Request):
            st = app.state(st, request)
            job = app.jobs.get(st["folder"])
            snap = job.snapshot() if job is not None else {"status": "none"}
            return dict(snap, lora_in_use=st.get("lora"), background=bool(st.get("background"))), st

        @user_errors
        def h_gallery(st, request: gr.Request):
            st = app.state(st, request)
            return [(path, text) for path, text in st.get("gallery") or [] if Path(path).is_file()]

        # ---- handlers
        @user_errors
        def h_load(video, num_frames, size, start_s, st, request: gr.Request):
            st = app.state(st, request)
            path, notes, frame, _ = app.load_video(video, num_frames, size, start_s, st)
            return path, notes, frame, "[]", None, None, "", st

        load_evt = dict(fn=h_load, inputs=[video_in, frames_in, size_in, start_in, state],
                        outputs=[preview, clip_notes, first_frame, points_box, overlay_video,
                                 boxes_video, segment_notes, state])
        load_btn.click(api_name="load_video", **load_evt, **gpu)

        def _points_json(st):
            return json.dumps([[round(x, 1), round(y, 1), int(l)] for (x, y), l in zip(st["points"], st["labels"])])

        @user_errors
        def h_click(kind, st, request: gr.Request, evt: gr.SelectData):
            st = app.state(st, request)
            x, y = evt.index[0], evt.index[1]
            st["points"].append([float(x), float(y)])
            st["labels"].append(1 if kind == INCLUDE else 0)
            return app.overlay(st), _points_json(st), st

        @user_errors
        def h_undo(st, request: gr.Request):
            st = app.state(st, request)
            if st["points"]:
                st["points"].pop()
                st["labels"].pop()
            return app.overlay(st), _points_json(st), st

        @user_errors
        def h_clear(st, request: gr.Request):
            st = app.state(st, request)
            st["points"], st["labels"] = [], []
            return app.overlay(st), "[]", st

        @user_errors
        def h_points_edit(text, st, request: gr.Request):
            st = app.state(st, request)
            points, labels = session.parse_points(text) if text and text.strip() not in ("", "[]") else ([], [])
            st["points"], st["labels"] = np.asarray(points).tolist(), np.asarray(labels).tolist()
            return app.overlay(st), st

        first_frame.select(h_click, [mode, state], [first_frame, points_box, state], api_visibility="private", **gpu)
        undo_btn.click(h_undo, [state], [first_frame, points_box, state], api_visibility="private", **gpu)
        clear_btn.click(h_clear, [state], [first_frame, points_box, state], api_visibility="private", **gpu)
        points_box.submit(h_points_edit, [points_box, state], [first_frame, state], api_visibility="private", **gpu)

        @user_errors
        def h_segment(points_json, margin_value, enabled, caption_text, trigger_text, preset_name, steps, lr, rank,
                      seed, swap, fp8, ckpt, budget_s, st, request: gr.Request):
            widget_values = (enabled, caption_text, trigger_text, preset_name, steps, lr, rank, seed, swap, fp8, ckpt,
                             budget_s)
            st = app.state(st, request)
            overlay_path, boxes_path, text = app.segment(points_json, margin_value, st)
            line = background_line(st, widget_values)  # the masks are confirmed: training may start now
            return overlay_path, boxes_path, f"{text}  \n{line}", st

        segment_btn.click(h_segment, [points_box, margin, *bg_widgets, state],
                          [overlay_video, boxes_video, segment_notes, state], api_name="segment", **gpu)

        @user_errors
        def h_mask(mask_file, box, margin_value, fit, enabled, caption_text, trigger_text, preset_name, steps, lr,
                   rank, seed, swap, fp8, ckpt, budget_s, st, request: gr.Request):
            widget_values = (enabled, caption_text, trigger_text, preset_name, steps, lr, rank, seed, swap, fp8, ckpt,
                             budget_s)
            st = app.state(st, request)
            overlay_path, boxes_path, text = app.use_mask(mask_file, box, margin_value, fit, st)
            line = background_line(st, widget_values)
            return overlay_path, boxes_path, f"{text}  \n{line}", st

        mask_btn.click(h_mask, [mask_in, box_in, margin, fit_mask, *bg_widgets, state],
                       [overlay_video, boxes_video, segment_notes, state], api_name="use_mask", **gpu)

        bg_change = dict(fn=h_background, inputs=[*bg_widgets, state], outputs=[bg_status, gen_bg_status, bg_plot, state],
                         api_visibility="private")
        bg_toggle.change(h_background, [*bg_widgets, state], [bg_status, gen_bg_status, bg_plot, state],
                         api_name="set_background")
        for widget in (caption, trigger):
            widget.blur(**bg_change)
            widget.submit(**bg_change)
        for widget in (steps_in, lr_in, rank_in, seed_in, swap_in, fp8_in, ckpt_in):
            widget.input(**bg_change)
        if driver == "session":
            poll_timer.tick(h_drive, [state], [bg_plot, bg_status, gen_bg_status], api_visibility="private",
                            show_progress="hidden", **gpu)
        else:
            poll_timer.tick(h_poll, [state], [bg_plot, bg_status, gen_bg_status], api_visibility="private",
                            show_progress="hidden", concurrency_limit=None)
        status_btn = gr.Button(visible=False)
        status_btn.click(h_status, [state], [api_json, state], api_name="training_status", concurrency_limit=None)
        gallery_btn = gr.Button(visible=False)
        gallery_btn.click(h_gallery, [state], [gallery], api_name="gallery", concurrency_limit=None)

        @user_errors
        def h_frame(index, st, request: gr.Request):
            from maskedit.video import write_image

            st = app.state(st, request)
            prepared_or_clip, _ = session.load_clip(app.sub(st, session.CLIP_FOLDER))
            k = int(index or 0)
            if not 0 <= k < prepared_or_clip.num_frames:
                raise MaskEditError(f"frame {k} is outside the clip's frames 0..{prepared_or_clip.num_frames - 1}")
            target = app.sub(st, "frames") / f"frame_{k:03d}.png"
            write_image(target, prepared_or_clip.frames[k])
            return str(target), st

        frame_btn.click(h_frame, [frame_index, state], [frame_file, state], api_visibility="private")

        @user_errors
        def h_edited(image, fit, st, request: gr.Request):
            st = app.state(st, request)
            if not image:
                return None, "", st
            _, text = app.set_edited_frame(image, fit, st)
            return st["edited"], text, st

        edited_in.change(h_edited, [edited_in, fit_edited, state], [edited_preview, edited_status, state],
                         api_name="set_edited_frame")
        fit_edited.change(h_edited, [edited_in, fit_edited, state], [edited_preview, edited_status, state],
                          api_visibility="private")

        @user_errors
        def h_later(image, index, fit, st, request: gr.Request):
            st = app.state(st, request)
            return app.add_later_frame(image, index, fit, st), st

        later_btn.click(h_later, [later_in, later_index, fit_edited, state], [later_status, state],
                        api_name="add_later_frame").then(**bg_change)

        @user_errors
        def h_later_clear(st, request: gr.Request):
            st = app.state(st, request)
            st["later"] = {}
            return app.later_text(st), st

        later_clear.click(h_later_clear, [state], [later_status, state], api_visibility="private").then(**bg_change)

        @user_errors
        def h_caption(st, request: gr.Request):
            st = app.state(st, request)
            clip, _ = session.load_clip(app.sub(st, session.CLIP_FOLDER))
            try:
                original = gpu_caption(clip.frames[0])
            except MaskEditError as error:
                return gr.update(), gr.update(), f"⚠️ {error}", st
            edited = gr.update()
            if st.get("edited"):
                from maskedit.video import read_image

                edited = gpu_caption(read_image(st["edited"]))
            return original, edited, "Captions filled in; edit them freely.", st

        caption_btn.click(h_caption, [state], [caption, prompt, caption_status, state], api_visibility="private",
                          **gpu)

        def h_preset(name):
            chosen = get_preset(name)
            return (chosen.describe(), chosen.train_steps if not tiny else 10, chosen.learning_rate, chosen.rank,
                    chosen.blocks_to_swap, chosen.fp8, chosen.gradient_checkpointing,
                    chosen.generation_steps if not tiny else 4, chosen.guidance_scale, chosen.flow_shift)

        preset.change(user_errors(h_preset), [preset],
                      [preset_text, steps_in, lr_in, rank_in, swap_in, fp8_in, ckpt_in, gen_steps, cfg, shift],
                      api_visibility="private").then(**bg_change)

        train_inputs = [caption, trigger, preset, steps_in, lr_in, rank_in, seed_in, swap_in, fp8_in, ckpt_in,
                        budget_in]
        train_outputs = [plot, train_status, loss_json, lora_files, state]

        def _train_handler(resume_default):
            @user_errors
            def handler(caption_text, trigger_text, preset_name, steps, lr, rank, seed, swap, fp8, ckpt, budget_s,
                        resume, st, request: gr.Request):
                st = app.state(st, request)
                for rows, text, pts, files in app.train(caption_text, trigger_text, preset_name, steps, lr, rank,
                                                        seed, swap, fp8, ckpt, budget_s, resume, st):
                    # Gradio's LinePlot builds its Vega spec (colour domain = the series present) once, when it
                    # first gets a value, then only swaps the data: a first empty frame fixes the domain to []
                    # and every line is drawn without a stroke. So leave the plot alone until there are points.
                    frame = _loss_frame(rows) if rows else gr.update()
                    yield frame, text, pts, files if files is not None else gr.update(), st
            return handler

        train_evt = train_btn.click(_train_handler(False), [*train_inputs, gr.State(False), state], train_outputs,
                                    api_name="train", **gpu)
        resume_evt = resume_btn.click(_train_handler(True), [*train_inputs, gr.State(True), state], train_outputs,
                                      api_name="resume_training", **gpu)

        @user_errors
        def h_stop(st, request: gr.Request):
            st = app.state(st, request)
            (Path(st["folder"]) / session.STOP_TRAINING).touch()
            return "Stopping after the current step…", st

        stop_btn.click(h_stop, [state], [train_status, state], api_name="stop_training")

        @user_errors
        def h_use_lora(file, st, request: gr.Request):
            st = app.state(st, request)
            if not file:
                return gr.update(), st
            return app.use_lora(file, st), st

        lora_in.upload(h_use_lora, [lora_in, state], [lora_status, state], api_name="use_lora")

        @user_errors
        def h_generate(prompt_text, edited_file, method_name, steps, cfg_value, shift_value, seed, lora_scale,
                       fit, use_checkpoint, preset_name, caption_text, trigger_text, train_steps, lr, rank, train_seed,
                       swap, fp8, ckpt, budget_s, st, request: gr.Request, progress=gr.Progress()):
            st = app.state(st, request)
            # the Train tab's settings: the naive-LoRA baseline is trained with them when chosen and not yet trained
            train_settings = (caption_text, trigger_text, preset_name, train_steps, lr, rank, train_seed, swap, fp8,
                              ckpt, budget_s)
            edited_path, sbs, text, rep = app.generate(prompt_text, edited_file, fit, method_name, steps, cfg_value,
                                                       shift_value, seed, lora_scale, st, progress,
                                                       use_checkpoint=bool(use_checkpoint), preset=preset_name,
                                                       train_settings=train_settings)
            return edited_path, sbs, text, rep, st

        # not in the "gpu" group: it may wait for a background run whose chunks take the GPU in turn (the model
        # itself is guarded by app.gpu_lock)
        gen_evt = gen_btn.click(h_generate, [prompt, new_edit, method, gen_steps, cfg, shift, seed_gen, scale,
                                             fit_edited, use_ckpt, preset, caption, trigger, steps_in, lr_in, rank_in,
                                             seed_in, swap_in, fp8_in, ckpt_in, budget_in, state],
                                [edited_video, sbs_video, report, report_json, state], api_name="generate",
                                concurrency_id="generate", concurrency_limit=1)
        gen_evt.then(h_gallery, [state], [gallery], api_visibility="private")

        @user_errors
        def h_cancel(st, request: gr.Request):
            st = app.state(st, request)
            (Path(st["folder"]) / session.STOP_GENERATION).touch()
            return st

        cancel_btn.click(h_cancel, [state], [state], api_visibility="private")

        # ---- /edit: everything in one call (API only)
        @user_errors
        def h_edit(video, points_json, mask_video, box, edited_first, later_files, later_indices, train_caption,
                   prompt_text, trigger_text, num_frames, size, start_s, margin_value, preset_name, train_steps,
                   gen_steps_value, cfg_value, shift_value, seed, lora_scale, fit, st, request: gr.Request):
            st = app.state(st, request)
            app.load_video(video, num_frames, size, start_s, st)
            if points_json and str(points_json).strip() not in ("", "[]"):
                if mask_video or (box and str(box).strip()):
                    raise MaskEditError("give points, a mask video or a box — only one of them")
                app.segment(points_json, margin_value, st)
            else:
                app.use_mask(mask_video, box, margin_value, fit, st)
            app.set_edited_frame(edited_first, fit, st)
            st["later"] = {}
            indices = session.parse_later_frames(later_indices)
            later_files = later_files or []
            if len(indices) != len(later_files):
                raise MaskEditError(f"{len(later_files)} edited later frame(s) but {len(indices)} frame number(s); "
                                    "give one number per frame")
            for file, k in zip(later_files, indices):
                app.add_later_frame(file, k, fit, st)
            caption_text = (train_caption or prompt_text or "").strip()
            chosen = get_preset(preset_name or "full")
            last = None
            for last in app.train(caption_text, trigger_text, preset_name, train_steps or chosen.train_steps,
                                  chosen.learning_rate, chosen.rank, seed, 0, False,
                                  chosen.gradient_checkpointing, None, True, st):
                pass
            if st.get("lora_source") != "trained":
                raise MaskEditError("training was stopped before it finished; run /edit again to resume it")
            edited_path, sbs, text, rep = app.generate(prompt_text, None, fit, "mask-lora", gen_steps_value, cfg_value,
                                                       shift_value, seed, lora_scale, st, preset=preset_name)
            return edited_path, sbs, last[3], text, rep, st

        edit_btn = gr.Button(visible=False)
        edit_btn.click(h_edit, [api_video, api_text, api_mask, gr.Textbox(visible=False), api_edited, api_later,
                                api_later_idx, gr.Textbox(visible=False), gr.Textbox(visible=False),
                                gr.Textbox(DEFAULT_TRIGGER, visible=False), gr.Number(17, visible=False),
                                gr.Textbox("auto", visible=False), gr.Number(0, visible=False),
                                gr.Number(0.1, visible=False), gr.Textbox("full", visible=False),
                                gr.Number(100, visible=False), gr.Number(30, visible=False),
                                gr.Number(5.0, visible=False), gr.Number(5.0, visible=False),
                                gr.Number(0, visible=False), gr.Number(1.0, visible=False), api_bool, state],
                       [gr.Video(visible=False), gr.Video(visible=False), api_lora, gr.Markdown(visible=False),
                        gr.JSON(visible=False), state],
                       api_name="edit", **gpu)

        def on_unload(request: gr.Request):
            hash_ = getattr(request, "session_hash", None)
            if hash_:
                end_jobs(store.root / session.session_name(hash_))
                store.remove(hash_)

        demo.unload(on_unload)
        del train_evt, resume_evt, gen_evt, load_evt
    return demo


def launch_kwargs() -> dict:
    """What `launch()` needs besides host/port: upload limit, allowed example files, theme."""
    return dict(max_file_size=os.environ.get("MASKEDIT_MAX_UPLOAD", DEFAULT_MAX_UPLOAD),
                allowed_paths=[str(EXAMPLES_DIR)], theme=gr.themes.Soft(), show_error=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="MaskEdit's Gradio app")
    parser.add_argument("--model", default=os.environ.get("MASKEDIT_MODEL"),
                        help="tiny, a hub id or a local diffusers folder (default: Wan2.1-I2V-14B-480P with a CUDA "
                             "GPU, else tiny)")
    parser.add_argument("--host", default=os.environ.get("MASKEDIT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MASKEDIT_PORT", "7860")))
    parser.add_argument("--share", action="store_true", default=os.environ.get("MASKEDIT_SHARE", "") in ("1", "true"))
    parser.add_argument("--segmenter", default=os.environ.get("MASKEDIT_SEGMENTER", "auto"),
                        choices=("auto", "sam2", "fallback"))
    parser.add_argument("--captioner", default=os.environ.get("MASKEDIT_CAPTIONER"),
                        help="Florence-2 hub id or folder, or 'none'")
    parser.add_argument("--gpu-budget", type=float, default=None, help="seconds per training call (default 110)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    demo = create_demo(args.model, segmenter=args.segmenter, captioner=args.captioner, gpu_budget=args.gpu_budget)
    demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=args.share,
                                                   **launch_kwargs())


if __name__ == "__main__":
    main()
