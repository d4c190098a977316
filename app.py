"""MaskEdit's Gradio app: five tabbed steps (video → segment → edited frames → train → generate).

    python app.py [--model tiny|HUB_ID|FOLDER] [--host 127.0.0.1] [--port 7860] [--share] [--segmenter auto]

Every flag has an environment variable (the flag wins): MASKEDIT_MODEL, MASKEDIT_HOST, MASKEDIT_PORT,
MASKEDIT_SHARE, MASKEDIT_SEGMENTER, MASKEDIT_SAM3_MODEL, MASKEDIT_SAM2_MODEL, MASKEDIT_CAPTIONER,
MASKEDIT_GPU_BUDGET, MASKEDIT_CHUNK_STEPS, MASKEDIT_WORK_DIR, MASKEDIT_MAX_UPLOAD, MASKEDIT_LORA_CACHE (`python app.py
--help` lists them with their defaults). Without a flag: MASKEDIT_PLAN_MODEL (a real base whose plans size the tiny
model's ZeroGPU calls: the ZeroGPU tests).

This file holds the `@spaces.GPU` wrappers and `main()`; the page (one module per tab, each button one call to
`maskedit.studio.service.Studio`, gradio-free and tested without a server) lives in `maskedit/interfaces/ui/`. Named API endpoints (gradio_client):
/load_video, /set_windows, /segment, /use_mask, /set_edited_frame, /add_later_frame, /caption, /train,
/resume_training, /stop_training, /use_lora, /generate, /edit, /set_background, /training_status, /gallery.
"""

import spaces  # noqa: F401  (first: on ZeroGPU it must be imported before torch initialises CUDA)

import argparse
import logging
import os
from pathlib import Path

LOG = logging.getLogger("maskedit.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
DEFAULT_MAX_UPLOAD = "500mb"
RUNTIME = None  # maskedit.studio.runtime.Runtime: set once by create_demo, read by the GPU calls (never user data)


# ----- GPU work: each a `spaces.GPU` call (a no-op decorator off ZeroGPU) of each ZeroGPU size, the size picked per
# call from the plan of its work (`RUNTIME.sizer`: `large` when the planned peak fits half a card with its margin,
# else `xlarge`, else refused before any GPU time); each task gets its size, which its duration function reads


def _sized(task, duration=None, *, seconds: float | None = None) -> dict:
    """{size: `task` as a GPU call of that size}: `duration` reads the call's arguments (its `gpu_size` too);
    `seconds`: a fixed need, asked as spaces counts it on each size (`zerogpu.asked_seconds`)."""
    from maskedit.models.zerogpu import GPU_SIZES, asked_seconds

    return {size: spaces.GPU(duration=duration or asked_seconds(seconds, size), size=size)(task) for size in GPU_SIZES}


def _train_duration(request) -> int:
    return request.duration_s


def _train_on_gpu(request):
    from maskedit.studio.progress import to_wire
    from maskedit.studio.runs import run_training_chunk

    for event in run_training_chunk(RUNTIME.pipe, request):
        yield to_wire(event)


def _generation_duration(prepared_dir, edited_frame, caption, out_dir, settings, gpu_size="large", **options) -> int:
    """Seconds of GPU to ask for one render on `gpu_size`: the planner's FLOPs for the loaded model (none for the
    tiny model) at the calibrated utilisation, plus overheads; MaskEditError before the call if no call can hold it."""
    from maskedit.studio.estimate import generation_call_seconds

    return generation_call_seconds(RUNTIME.model.name if RUNTIME is not None else None, prepared_dir, settings,
                                   gpu_size, window_frames=options.get("window_frames"))  # a long clip: a window a call


def gpu_generate(prepared_dir, edited_frame, caption, out_dir, settings, gpu_size="large", **options):
    from maskedit.studio.generation import run_generation

    yield from run_generation(RUNTIME.pipe, prepared_dir, edited_frame, caption, out_dir, settings, **options)


def gpu_image_mask(frame, points, labels, box=None, gpu_size="large"):
    import numpy as np

    return np.asarray(RUNTIME.segmenter.image_mask(frame, points, labels, box=box), dtype=bool)


def gpu_segment_clip(frames, points, labels, margin, box=None, gpu_size="large"):
    from maskedit.perception.segmentation import segment_clip

    return segment_clip(RUNTIME.segmenter, frames, points, labels, 0, box=box, margin=float(margin))


def gpu_segment_text(frames, text, gpu_size="large"):
    from maskedit.perception.segmentation import segment_text

    return segment_text(RUNTIME.text_segmenter(), frames, text)


def gpu_caption(image, gpu_size="large"):
    return RUNTIME.captioner().describe(image)


from maskedit.studio.estimate import PERCEPTION_SECONDS  # noqa: E402  (torch-free)

TRAIN, GENERATE = _sized(_train_on_gpu, _train_duration), _sized(gpu_generate, _generation_duration)
IMAGE_MASK = _sized(gpu_image_mask, seconds=PERCEPTION_SECONDS["image_mask"])
SEGMENT_CLIP = _sized(gpu_segment_clip, seconds=PERCEPTION_SECONDS["segment_clip"])
SEGMENT_TEXT = _sized(gpu_segment_text, seconds=PERCEPTION_SECONDS["segment_clip"])
CAPTION = _sized(gpu_caption, seconds=PERCEPTION_SECONDS["caption"])


def train_chunk(request):
    """One training call on the size its request was planned for (`Studio.chunk_request`); typed events out."""
    from maskedit.studio.progress import from_wire

    for data in TRAIN[request.gpu_size](request):
        yield from_wire(data)


def generate(prepared_dir, edited_frame, caption, out_dir, settings, **options):
    """One render (or fast preview) on the size its plan needs."""
    size = RUNTIME.sizer.size("preview" if options.get("preview") is not None else "generation", options.get("preset"))
    yield from GENERATE[size](prepared_dir, edited_frame, caption, out_dir, settings, gpu_size=size, **options)


def image_mask(frame, points, labels, box=None):
    size = RUNTIME.sizer.size("segmentation")
    return IMAGE_MASK[size](frame, points, labels, box=box, gpu_size=size)


def segment_clip(frames, points, labels, margin, box=None):
    size = RUNTIME.sizer.size("segmentation")
    return SEGMENT_CLIP[size](frames, points, labels, margin, box=box, gpu_size=size)


def segment_text(frames, text):
    size = RUNTIME.sizer.size("segmentation")
    return SEGMENT_TEXT[size](frames, text, gpu_size=size)


def caption(image):
    size = RUNTIME.sizer.size("caption")
    return CAPTION[size](image, gpu_size=size)


# ----- the page


def create_demo(model=None, *, banner: str | None = None, segmenter: str | None = None, captioner: str | None = None,
                work_dir=None, gpu_budget: float | None = None, chunk_steps: int | None = None,
                background: bool | None = None, background_driver: str | None = None, lora_cache: str | None = None,
                sam2_model: str | None = None, sam3_model: str | None = None):
    """Build the app. model: a name ("tiny", hub id, folder; default: Wan2.1 with a CUDA GPU, else tiny) or a
    `maskedit.models.loading.LoadedModel`. segmenter: "auto" | "sam3" | "sam2" | "fallback" (for clicks; text
    prompts always use SAM 3); sam2_model / sam3_model: their checkpoints (hub id or folder). captioner: a
    Florence-2 hub id or folder, or "none". gpu_budget: seconds per training call (ZeroGPU). chunk_steps: at most
    this many steps per training call (tests). background: the background-training toggle's initial value
    (default: MASKEDIT_BACKGROUND, else on with a GPU). background_driver: "thread" (default) or "session"
    (default on ZeroGPU: the session's timer ticks and Generate run the chunks). lora_cache: "shared" (default
    locally: every session reuses every LoRA), "session" (default on a Space) or a folder."""
    global RUNTIME
    from maskedit.interfaces.ui.page import build_page
    from maskedit.studio.inputs import GpuCalls
    from maskedit.studio.runtime import load_model, start_runtime

    if model is None or isinstance(model, str):
        loaded, auto_banner, line = load_model(model)
        banner = auto_banner if banner is None else banner
        print(line, flush=True)  # the terminal says which model runs
    else:
        loaded = model
    # on ZeroGPU everything loads here, at start-up, and goes to "cuda" (never inside a GPU call)
    RUNTIME = start_runtime(loaded, segmenter or os.environ.get("MASKEDIT_SEGMENTER", "auto"),
                            captioner or os.environ.get("MASKEDIT_CAPTIONER") or None,
                            sam2_model=sam2_model or os.environ.get("MASKEDIT_SAM2_MODEL") or None,
                            sam3_model=sam3_model or os.environ.get("MASKEDIT_SAM3_MODEL") or None)
    return build_page(RUNTIME, GpuCalls(train_chunk, generate, image_mask, segment_clip, caption, segment_text),
                      examples_dir=EXAMPLES_DIR, banner=banner, work_dir=work_dir, gpu_budget=gpu_budget,
                      chunk_steps=chunk_steps, background=background, background_driver=background_driver,
                      lora_cache=lora_cache)


def launch_kwargs() -> dict:
    """What `launch()` needs besides host/port: upload limit, allowed example files, theme and style. The app's own
    results (sessions, LoRA cache) are served file by file wherever they live (`maskedit.interfaces.ui.serving`)."""
    import gradio as gr

    from maskedit.interfaces.ui.page import PAGE_CSS

    return dict(max_file_size=os.environ.get("MASKEDIT_MAX_UPLOAD", DEFAULT_MAX_UPLOAD),
                allowed_paths=[str(EXAMPLES_DIR)], theme=gr.themes.Soft(), css=PAGE_CSS, show_error=True)


def build_parser() -> argparse.ArgumentParser:
    """The app's flags; each defaults to its environment variable, else the value shown."""
    from maskedit.defaults import DEFAULT_CAPTION_MODEL  # torch-free: --help answers at once

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
                        choices=("auto", "sam3", "sam2", "fallback"),
                        help="segmentation backend for clicks: SAM 3 (also text prompts, which always use it), "
                             "SAM2.1 (sam2), the offline OpenCV fallback (approximate), or auto (SAM 3 on a GPU, "
                             "then SAM2, whichever weights load, else the fallback) [MASKEDIT_SEGMENTER]")
    parser.add_argument("--sam3-model", default=env("MASKEDIT_SAM3_MODEL"),
                        help="SAM 3 checkpoint (text prompts and clicks): hub id or local folder in transformers "
                             "format (default: facebook/sam3, gated) [MASKEDIT_SAM3_MODEL]")
    parser.add_argument("--sam2-model", default=env("MASKEDIT_SAM2_MODEL"),
                        help="SAM2 checkpoint: hub id or local folder in transformers format (default: "
                             "facebook/sam2.1-hiera-large) [MASKEDIT_SAM2_MODEL]")
    parser.add_argument("--captioner", default=env("MASKEDIT_CAPTIONER"),
                        help=f"Florence-2 hub id or folder, or 'none' for no automatic captions (default: "
                             f"{DEFAULT_CAPTION_MODEL}) [MASKEDIT_CAPTIONER]")
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
        demo = create_demo(args.model, segmenter=args.segmenter, captioner=args.captioner, sam2_model=args.sam2_model,
                           sam3_model=args.sam3_model,
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
