"""MaskEdit's Gradio app: five tabbed steps (video → segment → edited frames → train → generate).

    python app.py [--model tiny|HUB_ID|FOLDER] [--host 127.0.0.1] [--port 7860] [--share] [--segmenter auto]

Every flag has an environment variable (the flag wins): MASKEDIT_MODEL, MASKEDIT_HOST, MASKEDIT_PORT,
MASKEDIT_SHARE, MASKEDIT_SEGMENTER, MASKEDIT_CAPTIONER, MASKEDIT_GPU_BUDGET, MASKEDIT_CHUNK_STEPS, MASKEDIT_WORK_DIR,
MASKEDIT_MAX_UPLOAD, MASKEDIT_LORA_CACHE (`python app.py --help` lists them with their defaults).

This file holds layout, wiring and the `@spaces.GPU` wrappers only: each button calls one method of
`maskedit.studio.service.Studio` (gradio-free, tested without a server). Named API endpoints (gradio_client):
/load_video, /segment, /use_mask, /set_edited_frame, /add_later_frame, /caption, /train, /resume_training,
/stop_training, /use_lora, /generate, /edit, /set_background, /training_status, /gallery.
"""

import spaces  # noqa: F401  (first: on ZeroGPU it must be imported before torch initialises CUDA)

import argparse
import functools
import inspect
import json
import logging
import os
from pathlib import Path

LOG = logging.getLogger("maskedit.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
INCLUDE, EXCLUDE = "include (on the object)", "exclude (not the object)"
METHOD_CHOICES = [("mask-aware LoRA (the method)", "mask-lora"), ("baseline: no LoRA (stock I2V)", "no-lora"),
                  ("baseline: naive LoRA (stock condition)", "naive-lora"),
                  ("baseline: feature-level blending", "feature-blend")]
DEFAULT_MAX_UPLOAD = "500mb"
RUNTIME = None  # maskedit.studio.runtime.Runtime of the running app (the model; never user data)
APP_TERMS = (("--backend ", "--segmenter "), ("--caption-model", "--captioner"), ("(--fit)", "(the Fit checkbox)"),
             ("(--prompt ", "(the caption box, e.g. "), ("(--min-area)", "(a larger object)"),
             ("(--train-prompt)", "(the caption box of the ORIGINAL first frame)"),
             ("(--later-prompt K=TEXT)", "(the caption box of each edited later frame)"),
             ("pass --speed-lora FILE|owner/repo/file.safetensors", "fill in Generate → Advanced → Speed LoRA with "
              "a FILE or owner/repo/file.safetensors"))
"""The library's messages name the command line's flags; in the app they name the app's own controls."""


SERVER_FOLDERS: list = []  # (folder, how a message names it): the sessions' root and the LoRA cache


def hide_server_paths(text: str) -> str:
    """A message with the server's folders taken out: a session's files relative to the session, the LoRA
    cache's as "LoRA cache/…"."""
    import re

    for folder, shown in SERVER_FOLDERS:
        text = re.sub(re.escape(str(folder).rstrip("/")) + (r"/[^/\s]+/?" if shown == "" else r"/?"), shown, text)
    return text


def app_message(text: str) -> str:
    """A library message in the app's terms (its flags and controls instead of the command line's)."""
    for cli_term, app_term in APP_TERMS:
        text = text.replace(cli_term, app_term)
    return text


# ----- errors: a user's mistake is one gr.Error and one log line, never a traceback


def _ui_error(error: Exception):
    """The gr.Error a user sees: a MaskEditError's own message (one line in the log), else a short note (the
    traceback goes to the log)."""
    import gradio as gr

    from maskedit.errors import MaskEditError

    if isinstance(error, gr.Error):
        return error
    if isinstance(error, MaskEditError):
        message = hide_server_paths(app_message(str(error)))
        LOG.info("user error: %s", message)
        return gr.Error(message, print_exception=False)
    LOG.exception("unexpected error in the app")
    if type(error).__name__ == "OutOfMemoryError":
        return gr.Error("the GPU ran out of memory; use fewer frames or a smaller size, or a lighter preset",
                        print_exception=False)
    return gr.Error(f"something went wrong ({type(error).__name__}: {str(error)[:200]}); see the server log",
                    print_exception=False)


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


def image_input(**kwargs):
    """A gr.Image input whose upload that is not an image (random bytes, a text file) is a clear gr.Error
    naming the input, not Gradio's "Could not preprocess input component…"."""
    import gradio as gr

    class CheckedImage(gr.Image):
        is_template = True  # drawn by the frontend as the gr.Image it is

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except gr.Error:
                raise
            except Exception as error:  # noqa: BLE001 (PIL and Gradio raise several types for unreadable files)
                what = (self.label or "image").lower()
                LOG.info("user error: the %s is not a readable image (%s)", what, type(error).__name__)
                raise gr.Error(f"the {what} is not an image that can be read; upload a PNG, JPEG or WebP file",
                               print_exception=False) from None

    return CheckedImage(**kwargs)


# ----- GPU work: each a `spaces.GPU` call (a no-op decorator off ZeroGPU); training events cross as dicts


def _train_duration(request) -> int:
    return request.duration_s


def _train_on_gpu(request):
    from maskedit.studio.progress import to_wire
    from maskedit.studio.runs import run_training_chunk

    for event in run_training_chunk(RUNTIME.pipe, request):
        yield to_wire(event)


gpu_train_chunk = spaces.GPU(duration=_train_duration)(_train_on_gpu)
gpu_train_chunk_xlarge = spaces.GPU(duration=_train_duration, size="xlarge")(_train_on_gpu)  # 14B: a whole card


def train_chunk(request):
    """One training call on the GPU size the request asks for; typed events out (`studio.progress`)."""
    from maskedit.studio.progress import from_wire

    call = gpu_train_chunk_xlarge if request.gpu_size == "xlarge" else gpu_train_chunk
    for data in call(request):
        yield from_wire(data)


def _generation_duration(prepared_dir, edited_frame, caption, out_dir, settings, **options) -> int:
    """Seconds of GPU to ask for one render: the planner's FLOPs for the loaded model (none for the tiny model)
    at the assumed utilisation, plus overheads; MaskEditError before the call if no call can hold it."""
    from maskedit.studio.estimate import generation_call_seconds

    return generation_call_seconds(RUNTIME.model.name if RUNTIME is not None else None, prepared_dir, settings)


@spaces.GPU(duration=_generation_duration)
def gpu_generate(prepared_dir, edited_frame, caption, out_dir, settings, **options):
    from maskedit.studio.generation import run_generation

    yield from run_generation(RUNTIME.pipe, prepared_dir, edited_frame, caption, out_dir, settings, **options)


@spaces.GPU(duration=20)
def gpu_image_mask(frame, points, labels):
    import numpy as np

    return np.asarray(RUNTIME.segmenter.image_mask(frame, points, labels), dtype=bool)


@spaces.GPU(duration=120)
def gpu_segment_clip(frames, points, labels, margin):
    from maskedit.segmentation import segment_clip

    return segment_clip(RUNTIME.segmenter, frames, points, labels, 0, margin=float(margin))


@spaces.GPU(duration=40)
def gpu_caption(image):
    return RUNTIME.captioner().describe(image)


# ----- small helpers


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


def _examples() -> list[dict]:
    try:
        entries = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if (EXAMPLES_DIR / e["clip"]).is_file()]


def _cache_root(lora_cache: str | None):
    """The shared LoRA cache folder, or None for one cache per session: "shared" locally, "session" on a
    Space (SPACE_ID set: visitors must not share each other's LoRAs); a folder = shared there."""
    from maskedit.lora_cache import default_cache_dir

    choice = lora_cache or os.environ.get("MASKEDIT_LORA_CACHE") or ("session" if os.environ.get("SPACE_ID")
                                                                      else "shared")
    if choice == "session":
        return None
    return default_cache_dir() if choice == "shared" else Path(choice).expanduser()


# ----- the UI


def create_demo(model=None, *, banner: str | None = None, segmenter: str | None = None, captioner: str | None = None,
                work_dir=None, gpu_budget: float | None = None, chunk_steps: int | None = None,
                background: bool | None = None, background_driver: str | None = None, lora_cache: str | None = None):
    """Build the app. model: a name ("tiny", hub id, folder; default: Wan2.1 with a CUDA GPU, else tiny) or a
    `maskedit.models.LoadedModel`. segmenter: "auto" | "sam2" | "fallback". captioner: a
    Florence-2 hub id or folder, or "none". gpu_budget: seconds per training call (ZeroGPU). chunk_steps: at most
    this many steps per training call (tests). background: the background-training toggle's initial value
    (default: MASKEDIT_BACKGROUND, else on with a GPU). background_driver: "thread" (default) or "session"
    (default on ZeroGPU: the session's timer ticks and Generate run the chunks). lora_cache: "shared" (default
    locally: every session reuses every LoRA), "session" (default on a Space) or a folder."""
    import gradio as gr

    global RUNTIME
    from maskedit.defaults import DEFAULT_TRIGGER, SAMPLERS
    from maskedit.presets import PRESETS, SIZE_CHOICES, GenerateSettings, get_preset
    from maskedit.session import SessionStore
    from maskedit.studio.runs import DEFAULT_CHUNK_SECONDS
    from maskedit.studio.runtime import Runtime, base_banner, load_model, size_choices
    from maskedit.errors import MaskEditError
    from maskedit.studio.inputs import generate_settings
    from maskedit.studio.service import GpuCalls, Studio, TrainInputs

    if model is None or isinstance(model, str):
        loaded, auto_banner, line = load_model(model)
        banner = auto_banner if banner is None else banner
        print(line, flush=True)  # the terminal says which model runs
    else:
        loaded = model
    RUNTIME = Runtime(loaded, segmenter or os.environ.get("MASKEDIT_SEGMENTER", "auto"),
                      captioner or os.environ.get("MASKEDIT_CAPTIONER") or None)
    runtime = RUNTIME
    budget = float(gpu_budget or os.environ.get("MASKEDIT_GPU_BUDGET") or DEFAULT_CHUNK_SECONDS)
    store = SessionStore(work_dir)
    store.remove_stale()
    zero_gpu = bool(os.environ.get("SPACES_ZERO_GPU"))
    if background is None:
        env = os.environ.get("MASKEDIT_BACKGROUND", "").strip().lower()
        background = env in ("1", "true", "on", "yes") if env else (zero_gpu or _has_gpu())

    def allowed_roots():
        from gradio.utils import get_upload_folder

        return [get_upload_folder(), EXAMPLES_DIR]

    from maskedit.studio.uploads import base_transformers

    studio = Studio(store, GpuCalls(train_chunk, gpu_generate, gpu_image_mask, gpu_segment_clip, gpu_caption),
                    model_name=loaded.name, is_tiny=loaded.is_tiny, budget_s=budget, chunk_steps=chunk_steps,
                    background_driver=background_driver or ("session" if zero_gpu else "thread"),
                    cache_root=_cache_root(lora_cache), allowed_roots=allowed_roots,
                    transformers=lambda: base_transformers(runtime.pipe))
    two_experts = studio.two_experts  # Wan2.2-A14B: a LoRA pair, and the low-noise expert's CFG
    SERVER_FOLDERS[:] = [(store.root.resolve(), ""), (store.root, "")] + (
        [(studio.cache_root.resolve(), "LoRA cache/"), (studio.cache_root, "LoRA cache/")] if studio.cache_root else [])
    tiny = loaded.is_tiny
    default_preset = "zerogpu" if zero_gpu else "full"
    preset0 = studio.preset(default_preset)  # adapted to the base (720P sizes, Wan2.2's blocks per expert)

    def on_session_end(value):
        if value is not None:
            studio.end_session(value.folder)

    with gr.Blocks(title="MaskEdit") as demo:
        state = gr.State(None, delete_callback=on_session_end)
        gr.Markdown("# MaskEdit — edit a whole video from one edited frame\n"
                    "Load a clip, mark the object, edit its first frame elsewhere, train a small mask-aware LoRA "
                    "on the clip, then generate the edited video.")
        gr.Markdown(banner or "", visible=bool(banner), elem_id="banner")
        gr.Markdown(f"Model: {runtime.model.description} · {base_banner(loaded)}", elem_id="model-line")

        # Number inputs carry no minimum of their own: maskedit.limits checks every setting, and its message names
        # the setting and its range (Gradio's own check says only "Value 0 is less than minimum value 1")
        with gr.Tabs():
            # 1 -------------------------------------------------------------------------
            with gr.Tab("1 · Video", id="video"):
                with gr.Row():
                    with gr.Column():
                        video_in = gr.Video(label="Clip", sources=["upload"], elem_id="video-in")
                        with gr.Row():
                            frames_in = gr.Number(17 if tiny else 49, precision=0, step=4,
                                                  label="Frames (4k+1; 0 = all, up to 81)")
                            size_in = gr.Dropdown(size_choices(loaded, SIZE_CHOICES), value="320x192 (small)" if tiny else "auto",
                                                  label="Size (WxH)", allow_custom_value=True)
                            start_in = gr.Number(0, label="Start time (s)")
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
                        edited_in = image_input(label="Edited first frame", type="filepath", sources=["upload"],
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
                        later_in = image_input(label="Edited frame K", type="filepath", sources=["upload"])
                        later_index = gr.Number(16, label="K (frame index)", precision=0)
                    later_caption = gr.Textbox("", label="Caption of edited frame K (stage 2 trains it under its own "
                                               "caption; empty: captioned automatically)", elem_id="later-caption")
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
                        preset_estimate = gr.Markdown(studio.estimate_line(default_preset), elem_id="train-estimate")
                        preset_text = gr.Code(preset0.describe(), label="Exact settings", language=None)
                        with gr.Accordion("Advanced", open=False):
                            steps_in = gr.Number(10 if tiny else preset0.train_steps, label="Steps", precision=0,
                                                 elem_id="train-steps")
                            lr_in = gr.Number(preset0.learning_rate, label="Learning rate")
                            rank_in = gr.Number(preset0.rank, label="LoRA rank", precision=0)
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
                            if two_experts:  # one file per expert; a one-transformer base keeps its one-file input
                                lora_in = gr.File(label="LoRA pair: …high_noise… and …low_noise….safetensors "
                                                  "(either order; lora.json may come along)", file_count="multiple",
                                                  file_types=[".safetensors", ".json"], elem_id="lora-upload")
                            else:
                                lora_in = gr.File(label="LoRA", file_types=[".safetensors"])
                            lora_status = gr.Markdown()

            # 5 -------------------------------------------------------------------------
            with gr.Tab("5 · Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        method = gr.Radio(METHOD_CHOICES, value="mask-lora", label="Method")
                        gen_steps = gr.Number(4 if tiny else preset0.generation_steps, label="Steps", precision=0)
                        cfg = gr.Number(preset0.guidance_scale, label="Guidance (CFG)")
                        shift = gr.Number(preset0.flow_shift, label="Flow shift")
                        sampler = gr.Dropdown(list(SAMPLERS), value=preset0.sampler, elem_id="sampler",
                                              label="Sampler (euler: the reference's flow-matching Euler; unipc: Wan's)")
                        seed_gen = gr.Number(0, label="Seed", precision=0)
                        scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale")
                        with gr.Accordion("Advanced", open=False):
                            cfg2 = gr.Number(None, label="Guidance of the low-noise expert (CFG 2; empty: the same as "
                                             "CFG)", visible=two_experts, elem_id="cfg2")
                            speed_lora_in = gr.Textbox(
                                "", label="Speed LoRA for the preview (file path or owner/repo/file.safetensors; "
                                "HIGH,LOW on a two-expert base)", placeholder="empty: $MASKEDIT_SPEED_LORA or the "
                                "preset's", elem_id="speed-lora")
                        new_edit = image_input(label="Another edited first frame (optional)", type="filepath",
                                               sources=["upload"])
                        use_ckpt = gr.Checkbox(False, label="Don't wait for training: use its latest checkpoint "
                                               "(training goes on afterwards)")
                        gen_bg_status = gr.Markdown(elem_id="gen-bg-status")
                        with gr.Row():
                            gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            preview_btn = gr.Button("Preview (4 steps)", elem_id="preview-btn")
                            cancel_btn = gr.Button("Cancel", variant="stop")
                    with gr.Column(scale=2):
                        with gr.Row():
                            edited_video = gr.Video(label="Edited video", interactive=False, elem_id="edited-video")
                            sbs_video = gr.Video(label="Original | edited", interactive=False)
                        report = gr.Markdown(elem_id="report")
                        report_json = gr.JSON(label="report", visible=False)
                        gallery = gr.Gallery(label="This session's results (newest first; one LoRA, many edits)",
                                             columns=4, height=260, elem_id="gallery")


        # hidden API-only inputs and outputs of /edit and /training_status (labelled: view_api names them)
        with gr.Row(visible=False):
            api_video = gr.Video(label="video")
            api_mask = gr.File(label="mask video")
            api_edited = image_input(type="filepath", label="edited first frame")
            api_later = gr.File(file_count="multiple", label="edited later frames")
            api_later_idx = gr.Textbox(label="later frame numbers")
            api_later_captions = gr.Textbox("{}", label="later frame captions")  # JSON {"K": caption}
            api_lora = gr.File(file_count="multiple", label="LoRA files")
            api_json = gr.JSON(label="training status")
            api_bool = gr.Checkbox(label="fit")
            api_edit_video = gr.Video(label="edited video")
            api_edit_sbs = gr.Video(label="original | edited")
            api_edit_report = gr.Markdown(label="report")
            api_edit_json = gr.JSON(label="report (JSON)")
        poll_timer = gr.Timer(2.0, active=False)  # ticks only while this page's background run trains

        gpu = dict(concurrency_id="gpu", concurrency_limit=1)
        train_widgets = [caption, trigger, preset, steps_in, lr_in, rank_in, seed_in, swap_in, fp8_in, ckpt_in,
                         budget_in]  # in the order of TrainInputs' fields
        bg_widgets = [bg_toggle, *train_widgets]

        def sess(st, request):
            return studio.session(getattr(request, "session_hash", None), st)

        def bg_outputs(st):
            """(loss plot, background line, the same line in the Generate tab, timer) of the session."""
            snap = studio.background_snapshot(st)
            from maskedit.studio.progress import loss_rows

            frame = _loss_frame(loss_rows(snap["steps"], snap["losses"])) if snap and snap["steps"] else gr.update()
            text = studio.background_text(snap) if snap else gr.update()
            running = bool(snap) and snap["status"] in ("queued", "training")
            return frame, text, text, gr.Timer(active=running)

        # ---- 1. video
        @user_errors
        def h_load(video, num_frames, size, start_s, st, request: gr.Request):
            st = sess(st, request)
            preview_path, notes, frame = studio.load_video(st, video, num_frames, size, start_s)
            return preview_path, notes, frame, "[]", None, None, "", st

        load_btn.click(h_load, [video_in, frames_in, size_in, start_in, state],
                       [preview, clip_notes, first_frame, points_box, overlay_video, boxes_video, segment_notes, state],
                       api_name="load_video", **gpu)

        # ---- 2. segment
        @user_errors
        def h_click(kind, st, request: gr.Request, evt: gr.SelectData):
            st = sess(st, request)
            image = studio.click(st, evt.index[0], evt.index[1], kind == INCLUDE)
            return image, studio.points_json(st), st

        @user_errors
        def h_undo(st, request: gr.Request):
            st = sess(st, request)
            return studio.undo_click(st), studio.points_json(st), st

        @user_errors
        def h_clear(st, request: gr.Request):
            st = sess(st, request)
            return studio.set_points(st, [], []), "[]", st

        @user_errors
        def h_points_edit(text, st, request: gr.Request):
            from maskedit.session import parse_points

            st = sess(st, request)
            points, labels = parse_points(text) if text and text.strip() not in ("", "[]") else ([], [])
            return studio.set_points(st, points, labels), st

        first_frame.select(h_click, [mode, state], [first_frame, points_box, state], api_visibility="private", **gpu)
        undo_btn.click(h_undo, [state], [first_frame, points_box, state], api_visibility="private", **gpu)
        clear_btn.click(h_clear, [state], [first_frame, points_box, state], api_visibility="private", **gpu)
        points_box.submit(h_points_edit, [points_box, state], [first_frame, state], api_visibility="private", **gpu)

        @user_errors
        def h_background(enabled, caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                         gradient_checkpointing, budget_s, st, request: gr.Request):
            st = sess(st, request)
            inputs = TrainInputs(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                                 gradient_checkpointing, budget_s)
            try:
                line = studio.background(st, enabled, inputs)
            except MaskEditError as error:
                line = f"⚠️ Background training not started: {app_message(str(error))}"
            frame, _, _, timer = bg_outputs(st)
            return line, line, frame, st, timer

        bg_change = dict(fn=h_background, inputs=[*bg_widgets, state],
                         outputs=[bg_status, gen_bg_status, bg_plot, state, poll_timer], api_visibility="private")

        @user_errors
        def h_segment(points_json, margin, st, request: gr.Request):
            st = sess(st, request)
            overlay_path, boxes_path, text = studio.segment(st, points_json, margin)
            return overlay_path, boxes_path, text, st

        segment_btn.click(h_segment, [points_box, margin, state], [overlay_video, boxes_video, segment_notes, state],
                          api_name="segment", **gpu).success(**bg_change)  # the masks are confirmed: training may start

        @user_errors
        def h_mask(mask_video, box, margin, fit, st, request: gr.Request):
            st = sess(st, request)
            overlay_path, boxes_path, text = studio.use_mask(st, mask_video, box, margin, fit)
            return overlay_path, boxes_path, text, st

        mask_btn.click(h_mask, [mask_in, box_in, margin, fit_mask, state],
                       [overlay_video, boxes_video, segment_notes, state], api_name="use_mask", **gpu).success(**bg_change)

        bg_toggle.change(h_background, [*bg_widgets, state], [bg_status, gen_bg_status, bg_plot, state, poll_timer],
                         api_name="set_background")
        for widget in (caption, trigger):
            widget.blur(**bg_change)
            widget.submit(**bg_change)
        for widget in (steps_in, lr_in, rank_in, seed_in, swap_in, fp8_in, ckpt_in):
            widget.input(**bg_change)

        @user_errors
        def h_tick(st):
            """Thread driver: show the run's progress. Session driver (ZeroGPU): run its next chunk first."""
            if studio.background_driver == "session":
                for _ in studio.drive_background(st):
                    pass
            return bg_outputs(st)

        poll_timer.tick(h_tick, [state], [bg_plot, bg_status, gen_bg_status, poll_timer], api_visibility="private",
                        show_progress="hidden", **(gpu if studio.background_driver == "session"
                                                   else dict(concurrency_limit=None)))

        @user_errors
        def h_status(st, request: gr.Request):
            st = sess(st, request)
            return studio.training_status(st), st

        status_btn = gr.Button(visible=False)
        status_btn.click(h_status, [state], [api_json, state], api_name="training_status", concurrency_limit=None)

        @user_errors
        def h_gallery(st, request: gr.Request):
            return studio.gallery(sess(st, request))

        gallery_btn = gr.Button(visible=False)
        gallery_btn.click(h_gallery, [state], [gallery], api_name="gallery", concurrency_limit=None)

        # ---- 3. edited frames and captions
        @user_errors
        def h_frame(index, st, request: gr.Request):
            st = sess(st, request)
            return studio.frame(st, index), st

        frame_btn.click(h_frame, [frame_index, state], [frame_file, state], api_visibility="private")

        @user_errors
        def h_edited(image, fit, st, request: gr.Request):
            st = sess(st, request)
            if not image:
                return None, "", st
            path, text = studio.set_edited_frame(st, image, fit)
            return path, text, st

        edited_in.change(h_edited, [edited_in, fit_edited, state], [edited_preview, edited_status, state],
                         api_name="set_edited_frame")
        fit_edited.change(h_edited, [edited_in, fit_edited, state], [edited_preview, edited_status, state],
                          api_visibility="private")

        @user_errors
        def h_later(image, index, fit, frame_caption, st, request: gr.Request):
            st = sess(st, request)
            return studio.add_later_frame(st, image, index, fit, frame_caption), st

        later_btn.click(h_later, [later_in, later_index, fit_edited, later_caption, state], [later_status, state],
                        api_name="add_later_frame").success(**bg_change)

        @user_errors
        def h_later_clear(st, request: gr.Request):
            st = sess(st, request)
            return studio.clear_later_frames(st), st

        later_clear.click(h_later_clear, [state], [later_status, state], api_visibility="private").success(**bg_change)

        @user_errors
        def h_caption(st, request: gr.Request):
            st = sess(st, request)
            original, edited = studio.caption(st)
            return original, edited if edited is not None else gr.update(), "Captions filled in; edit them freely.", st

        caption_btn.click(h_caption, [state], [caption, prompt, caption_status, state], api_name="caption", **gpu)

        # ---- 4. train
        def h_preset(name):
            chosen = studio.preset(name)
            return (chosen.describe(), chosen.train_steps if not tiny else 10, chosen.learning_rate, chosen.rank,
                    chosen.blocks_to_swap, chosen.fp8, chosen.gradient_checkpointing,
                    chosen.generation_steps if not tiny else 4, chosen.guidance_scale, chosen.flow_shift,
                    chosen.sampler, studio.estimate_line(name))

        preset.change(user_errors(h_preset), [preset],
                      [preset_text, steps_in, lr_in, rank_in, swap_in, fp8_in, ckpt_in, gen_steps, cfg, shift, sampler,
                       preset_estimate], api_visibility="private").then(**bg_change)

        train_outputs = [plot, train_status, loss_json, lora_files, state]

        def train_handler(resume: bool):
            @user_errors
            def handler(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                        gradient_checkpointing, budget_s, st, request: gr.Request):
                st = sess(st, request)
                inputs = TrainInputs(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                                     gradient_checkpointing, budget_s)
                if warning := studio.memory_warning(preset, blocks_to_swap, fp8):
                    gr.Warning(warning)  # also on the status line; the run goes on (studio.estimate says why)
                for view in studio.train(st, inputs, resume=resume):
                    # Gradio's LinePlot fixes its colour domain from the first value it gets: an empty first
                    # frame draws every line without a stroke, so the plot waits for points
                    frame = _loss_frame(view.rows) if view.rows else gr.update()
                    yield frame, view.status, view.points, view.files if view.files is not None else gr.update(), st
            return handler

        train_btn.click(train_handler(False), [*train_widgets, state], train_outputs, api_name="train", **gpu)
        resume_btn.click(train_handler(True), [*train_widgets, state], train_outputs, api_name="resume_training", **gpu)

        @user_errors
        def h_stop(st, request: gr.Request):
            st = sess(st, request)
            return studio.stop_training(st), st

        stop_btn.click(h_stop, [state], [train_status, state], api_name="stop_training")

        @user_errors
        def h_use_lora(file, st, request: gr.Request):
            st = sess(st, request)
            return (studio.use_lora(st, file) if file else gr.update()), st

        lora_in.upload(h_use_lora, [lora_in, state], [lora_status, state], api_name="use_lora")

        # ---- 5. generate
        @user_errors
        def h_generate(prompt_text, edited_file, method_name, steps, cfg_value, shift_value, seed, lora_scale, fit,
                       use_checkpoint, preset_name, caption_text, trigger_text, train_steps, lr, rank, train_seed,
                       swap, fp8, ckpt, budget_s, sampler_name, cfg2_value=None, st=None,
                       request: gr.Request = None, progress=gr.Progress()):  # cfg2 = None: optional for clients
            st = sess(st, request)
            settings = generate_settings(steps, cfg_value, shift_value, lora_scale, seed, method_name, sampler_name,
                                         cfg2_value)
            # the Train tab's settings: the naive LoRA (naive-lora, feature-blend) is trained with them when not yet
            train_inputs = TrainInputs(caption_text, trigger_text, preset_name, train_steps, lr, rank, train_seed, swap,
                                       fp8, ckpt, budget_s, edit_caption=prompt_text)
            # a generator: a cancelled call closes it between steps, which stops the denoising (studio.generation)
            for kind, value in studio.generate_events(
                    st, prompt_text, settings, edited_frame=edited_file, fit=fit, use_checkpoint=bool(use_checkpoint),
                    preset=preset_name, train_inputs=train_inputs,
                    progress=lambda done, desc: progress(done, desc=desc, unit="steps")):
                if kind == "warning":
                    gr.Warning(value)
                elif kind == "step":
                    progress(value, desc="denoising", unit="steps")
                    yield (gr.skip(),) * 5
                elif kind == "result":
                    yield value.edited, value.side_by_side, value.report_markdown, value.report, st
                    return
            raise MaskEditError("generation ended without a result")

        # not in the "gpu" group: it may wait for a background run whose chunks take the GPU in turn (the model
        # itself is guarded by the studio's lock)
        gen_btn.click(h_generate, [prompt, new_edit, method, gen_steps, cfg, shift, seed_gen, scale, fit_edited,
                                   use_ckpt, preset, caption, trigger, steps_in, lr_in, rank_in, seed_in, swap_in,
                                   fp8_in, ckpt_in, budget_in, sampler, cfg2, state],
                      [edited_video, sbs_video, report, report_json, state], api_name="generate",
                      concurrency_id="generate", concurrency_limit=1).then(h_gallery, [state], [gallery],
                                                                          api_visibility="private")

        @user_errors
        def h_preview(prompt_text, edited_file, method_name, seed, lora_scale, fit, use_checkpoint, preset_name,
                      speed_lora, st, request: gr.Request, progress=gr.Progress()):
            st = sess(st, request)
            settings = generate_settings(seed=seed, lora_scale=lora_scale, method=method_name or "mask-lora")
            result = studio.preview(st, prompt_text, settings, speed_lora=speed_lora, preset=preset_name,
                                    edited_frame=edited_file, fit=fit, use_checkpoint=bool(use_checkpoint),
                                    progress=lambda done, desc: progress(done, desc=desc, unit="steps"),
                                    warn=gr.Warning)
            return result.edited, result.side_by_side, result.report_markdown, result.report, st

        preview_btn.click(h_preview, [prompt, new_edit, method, seed_gen, scale, fit_edited, use_ckpt, preset,
                                      speed_lora_in, state],
                          [edited_video, sbs_video, report, report_json, state], api_name="preview",
                          concurrency_id="generate", concurrency_limit=1).then(h_gallery, [state], [gallery],
                                                                              api_visibility="private")

        @user_errors
        def h_cancel(st, request: gr.Request):
            st = sess(st, request)
            studio.stop_generation(st)
            return st

        cancel_btn.click(h_cancel, [state], [state], api_visibility="private")

        # ---- /edit: everything in one call (API only)
        @user_errors
        def h_edit(video, points_json, mask_video, box, edited_first, later_files, later_indices, train_caption,
                   prompt_text, trigger_text, num_frames, size, start_s, margin_value, preset_name, train_steps,
                   gen_steps_value, cfg_value, shift_value, seed, lora_scale, fit, later_captions, sampler_name,
                   cfg2_value=None, st=None, request: gr.Request = None):  # cfg2 = None: optional for clients
            st = sess(st, request)
            settings = generate_settings(gen_steps_value, cfg_value, shift_value, lora_scale, seed,
                                         sampler=sampler_name, guidance_scale_2=cfg2_value)
            result, files = studio.edit(
                st, video, points_json=points_json, mask_video=mask_video, box=box, edited_first=edited_first,
                later_files=later_files, later_indices=later_indices, later_captions=later_captions,
                train_caption=train_caption, prompt=prompt_text,
                trigger=trigger_text, num_frames=num_frames, size=size, start_s=start_s, margin=margin_value,
                preset=preset_name, train_steps=train_steps, settings=settings, fit=fit)
            return result.edited, result.side_by_side, files, result.report_markdown, result.report, st

        defaults = GenerateSettings()
        edit_btn = gr.Button(visible=False)
        edit_btn.click(h_edit, [api_video, points_box, api_mask, gr.Textbox(visible=False, label="box"), api_edited,
                                api_later, api_later_idx, gr.Textbox(visible=False, label="train caption"),
                                gr.Textbox(visible=False, label="prompt"),
                                gr.Textbox(DEFAULT_TRIGGER, visible=False, label="trigger"),
                                gr.Number(17, visible=False, precision=0, label="num frames"),
                                gr.Textbox("auto", visible=False, label="size"),
                                gr.Number(0, visible=False, label="start s"),
                                gr.Number(0.1, visible=False, label="margin"),
                                gr.Textbox("full", visible=False, label="preset"),
                                gr.Number(get_preset("full").train_steps, visible=False, precision=0, label="train steps"),
                                gr.Number(defaults.steps, visible=False, precision=0, label="generation steps"),
                                gr.Number(defaults.guidance_scale, visible=False, label="guidance scale"),
                                gr.Number(defaults.flow_shift, visible=False, label="flow shift"),
                                gr.Number(defaults.seed, visible=False, precision=0, label="seed"),
                                gr.Number(defaults.lora_scale, visible=False, label="lora scale"), api_bool,
                                api_later_captions, gr.Textbox(defaults.sampler, visible=False, label="sampler"),
                                gr.Number(None, visible=False, label="guidance scale 2"), state],
                       [api_edit_video, api_edit_sbs, api_lora, api_edit_report, api_edit_json, state],
                       api_name="edit", **gpu)

        def on_unload(request: gr.Request):
            from maskedit.session import session_name

            session_hash = getattr(request, "session_hash", None)
            if session_hash:
                studio.end_session(store.root / session_name(session_hash))

        demo.unload(on_unload)
    demo.studio = studio  # for tests and scripts: the service behind the page
    return demo


def launch_kwargs() -> dict:
    """What `launch()` needs besides host/port: upload limit, allowed example files, theme."""
    import gradio as gr

    return dict(max_file_size=os.environ.get("MASKEDIT_MAX_UPLOAD", DEFAULT_MAX_UPLOAD),
                allowed_paths=[str(EXAMPLES_DIR)], theme=gr.themes.Soft(), show_error=True)


def build_parser() -> argparse.ArgumentParser:
    """The app's flags; each defaults to its environment variable, else the value shown."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python app.py", description="MaskEdit's Gradio app",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=env("MASKEDIT_MODEL"),
                        help="tiny, a hub id or a local diffusers folder; when not given: Wan2.1-I2V-14B-480P with a "
                             "CUDA GPU, else the tiny model (a given model that cannot load stops the app) "
                             "[MASKEDIT_MODEL]")
    parser.add_argument("--host", default=env("MASKEDIT_HOST", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for every interface) [MASKEDIT_HOST]")
    parser.add_argument("--port", type=int, default=int(env("MASKEDIT_PORT", "7860")),
                        help="port to listen on [MASKEDIT_PORT]")
    parser.add_argument("--share", action="store_true", default=env("MASKEDIT_SHARE", "") in ("1", "true"),
                        help="also make a public gradio.live link [MASKEDIT_SHARE=1]")
    parser.add_argument("--segmenter", default=env("MASKEDIT_SEGMENTER", "auto"),
                        choices=("auto", "sam2", "fallback"),
                        help="segmentation backend: SAM2.1 through transformers (sam2), the offline OpenCV fallback "
                             "(approximate), or auto (sam2 when its weights load, else the fallback) "
                             "[MASKEDIT_SEGMENTER]")
    parser.add_argument("--captioner", default=env("MASKEDIT_CAPTIONER"),
                        help="Florence-2 hub id or folder, or 'none' for no automatic captions (default: "
                             "Florence-2-base) [MASKEDIT_CAPTIONER]")
    parser.add_argument("--gpu-budget", type=float, default=float(env("MASKEDIT_GPU_BUDGET", "110")),
                        help="seconds of training per GPU call (ZeroGPU) [MASKEDIT_GPU_BUDGET]")
    parser.add_argument("--chunk-steps", type=int, default=int(env("MASKEDIT_CHUNK_STEPS", "0")) or None,
                        help="at most this many training steps per GPU call, on top of --gpu-budget (default: no "
                             "limit; tests use it so that a run splits into a known number of calls) "
                             "[MASKEDIT_CHUNK_STEPS]")
    parser.add_argument("--work-dir", default=env("MASKEDIT_WORK_DIR"),
                        help="folder of the session folders (default: <temp>/maskedit-sessions) [MASKEDIT_WORK_DIR]")
    parser.add_argument("--lora-cache", default=env("MASKEDIT_LORA_CACHE"),
                        help="'shared' (one cache for every session: the default locally), 'session' (one per "
                             "session: the default on a Space) or a folder [MASKEDIT_LORA_CACHE]")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # before gradio and torch are imported: --help answers at once
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from maskedit.errors import MaskEditError

    try:
        demo = create_demo(args.model, segmenter=args.segmenter, captioner=args.captioner,
                           gpu_budget=args.gpu_budget, chunk_steps=args.chunk_steps, work_dir=args.work_dir,
                           lora_cache=args.lora_cache)
    except MaskEditError as error:
        print(f"error: {error}", flush=True)
        return 2
    demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=args.share,
                                                   **launch_kwargs())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
