"""What stays loaded between calls of the app: the base model, the segmenter and the captioner (never user
data). Locally the segmenter and captioner load on first use; on ZeroGPU everything loads at start-up and is moved
to "cuda" there (`Runtime.load_now`, `place_for_zerogpu`), as ZeroGPU expects: spaces packs those weights and
every call's forked worker gets them, while a model loaded inside a call would be loaded again by every worker.
The choice of model is announced (banner for the page, one line for the terminal)."""

from __future__ import annotations

import logging
import os

from ..errors import MaskEditError

LOG = logging.getLogger("maskedit.app")
WAN_480P = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
ZEROGPU_PRESET = "zerogpu"
"""The preset whose memory settings the weights of a real base get once at start-up on ZeroGPU (fp8 base
weights, encoders in CPU memory while idle: every call then fits a `large` call; `maskedit.models.presets`)."""


def on_zero_gpu() -> bool:
    """True inside a ZeroGPU Space (the spaces package sets SPACES_ZERO_GPU)."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def weights_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (0 for None): what moving it to the GPU puts there."""
    if module is None:
        return 0
    import itertools

    return sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))


def place_for_zerogpu(loaded, preset_name: str = ZEROGPU_PRESET, device: str = "cuda") -> str | None:
    """Place a real base's weights (loaded on the CPU) on "cuda" once, at start-up, with `preset_name`'s memory
    settings adapted to the base (`offload.place_pipeline`: fp8 stores on the GPU, encoders kept in CPU memory);
    on ZeroGPU spaces packs what went to "cuda" and every call starts from it. Returns the preset's name (the
    app's calls are planned with it: `estimate.CallSizer`); a tiny model is moved whole and gets None (memory
    options are for the 14B models). device: "cuda" (another only in tests)."""
    from ..memory.offload import place_pipeline
    from ..models.bases import adapt_preset, base_for_pipeline
    from ..models.presets import get_preset

    if loaded.is_tiny:
        loaded.pipe.to(device)
        return None
    preset = adapt_preset(get_preset(preset_name), base_for_pipeline(loaded.pipe, loaded.name))
    place_pipeline(loaded.pipe, device, preset.blocks_to_swap, preset.fp8, preset.offload_encoders)
    LOG.info("placed %s for the %s preset: %s", loaded.name, preset.name, preset.describe().splitlines()[3].strip())
    return preset.name


def base_banner(loaded) -> str:
    """One line naming the loaded model's base, its experts and sizes (`bases.Base.banner`)."""
    from ..models.bases import base_for_pipeline

    return base_for_pipeline(loaded.pipe, loaded.name).banner()


def served_sizes(loaded) -> str:
    """What the loaded model serves, in words: its base's sizes (the tiny model: any multiple of 16) and frames."""
    from ..models.bases import base_for_pipeline

    if loaded.is_tiny:
        sizes = "any width and height in multiples of 16 (320x192, the examples' size, takes seconds per step on a CPU)"
    else:
        base = base_for_pipeline(loaded.pipe, loaded.name)
        sizes = ", ".join(f"{w}x{h}" for w, h in base.sizes) + " (the sizes it was trained at)"
    return f"{sizes}; 4k+1 frames, up to 81"


def model_line(loaded) -> str:
    """The page's header line: the loaded model, its base and experts, and what it serves (`served_sizes`),
    Markdown."""
    from ..models.bases import base_for_pipeline

    base = base_for_pipeline(loaded.pipe, loaded.name)
    experts = f", two experts (boundary {base.boundary_ratio:g})" if base.two_experts else ""
    return (f"**Model:** {loaded.description} · base: {base.label}{experts} · **serves:** "
            f"{served_sizes(loaded)}")


def size_choices(loaded, fixed: list[str]) -> list[str]:
    """The size menu for the loaded model's base: its sizes (`bases.sizes_for_base`, e.g. 1280x720 on a 720P
    base) first, then the entries of `fixed` ("WxH (label)" or "auto") not already named."""
    from ..models.bases import base_for_pipeline, sizes_for_base

    labelled = {choice.split(" ")[0]: choice for choice in fixed if choice != "auto"}
    own = []
    for width, height in sizes_for_base(base_for_pipeline(loaded.pipe, loaded.name)):
        size = f"{width}x{height}"
        own.append(labelled.pop(size, f"{size} ({'landscape' if width >= height else 'portrait'} "
                                      f"{min(width, height)}p)"))
    return ["auto", *own, *labelled.values()]


def load_model(requested: str | None = None):
    """(LoadedModel, banner markdown, terminal line). An explicitly requested model that cannot be loaded raises
    MaskEditError (the app stops with that message); only the default, when nothing was asked, falls back to
    the tiny model, and the banner and the line say why. The line ends with the base (`base_banner`) and what the
    model serves (`served_sizes`)."""
    loaded, banner, line = _load_model(requested)
    return loaded, banner, f"{line}; {base_banner(loaded)}; serves {served_sizes(loaded)}"


def _load_model(requested: str | None):
    from ..models.loading import TINY, TINY_WAN22, default_model, load_pipeline

    wanted = requested or default_model()
    placed_later = on_zero_gpu() and wanted not in (TINY, TINY_WAN22)  # on the CPU first: `place_for_zerogpu`
    try:
        loaded = load_pipeline(wanted, **_cpu_bf16() if placed_later else {})
    except Exception as error:  # noqa: BLE001 (MaskEditError, or anything a broken download raises)
        text = (str(error).strip().splitlines() or [""])[0]  # whole: a message cut mid-URL says nothing
        reason = text if isinstance(error, MaskEditError) else f"{type(error).__name__}: {text}"
        if requested:  # asked for by name: never replaced silently
            text = reason if isinstance(error, MaskEditError) else f"could not load the model {requested!r}: {reason}"
            raise MaskEditError(f"{text} (the model given with --model / MASKEDIT_MODEL; leave it out to run the "
                                "default)") from None
        loaded = load_pipeline(TINY)
        banner = (f"⚠️ **Could not load `{wanted}`** ({reason}). Using the built-in **tiny model** instead: "
                  "random weights, it shows the workflow, not the method's quality.")
        return loaded, banner, f"could not load {wanted} ({reason}); running the built-in tiny model instead"
    if loaded.name == TINY:
        why = "no CUDA GPU was found, so " if requested is None else ""
        banner = (f"ℹ️ {'No CUDA GPU was found, so t' if why else 'T'}his app runs the built-in **tiny model** "
                  "(random weights): every step works, but the videos show the workflow, not the method's quality. "
                  f"Start it with a GPU and `--model {WAN_480P}` for real edits.")
        return loaded, banner, f"model: the built-in tiny model (random weights){' — ' + why.rstrip(', so ') if why else ''}"
    return loaded, "", f"model: {loaded.description}"


def _cpu_bf16() -> dict:
    import torch

    return dict(device="cpu", dtype=torch.bfloat16)


class Runtime:
    """The loaded base model and the segmenters (`segmentation.SegmentationBackends`: the clicks backend "auto" |
    "sam3" | "sam2" | "fallback", and SAM 3 for text; sam2_model / sam3_model: their checkpoints, hub id or folder,
    None for the defaults) and the captioner (a Florence-2 hub id or folder, None for the default, "none" for off),
    loaded on first use or at start-up (`load_now`). placement: the preset whose memory settings the base's weights
    were placed with at start-up (`place_for_zerogpu`), None otherwise."""

    def __init__(self, model, segmenter_backend: str = "auto", captioner_id: str | None = None,
                 placement: str | None = None, *, sam2_model: str | None = None, sam3_model: str | None = None):
        from ..perception.segmentation import SegmentationBackends

        self.model = model
        self.segmenter_backend = segmenter_backend
        self.captioner_id = captioner_id
        self.placement = placement
        self.segmentation = SegmentationBackends(segmenter_backend, sam2_model=sam2_model, sam3_model=sam3_model)
        self._captioner = None
        self.caption_error: MaskEditError | None = None  # why there is no captioner (raised again on each use)

    @property
    def pipe(self):
        return self.model.pipe

    @property
    def segmenter(self):
        """The clicks segmenter (loaded on first use; the log says when)."""
        fresh = not self.segmentation.loaded()
        segmenter = self.segmentation.clicks()
        if fresh:
            LOG.info("loaded the segmenter: %s", getattr(segmenter, "label", type(segmenter).__name__))
        return segmenter

    def text_segmenter(self):
        """SAM 3 for text prompts, or MaskEditError naming what to install or download."""
        return self.segmentation.text()

    def segmentation_lines(self) -> list[str]:
        """One line per segmentation backend: what it does and whether it runs here, or what it needs."""
        return self.segmentation.describe()

    def captioner(self):
        """The captioner, or the MaskEditError saying why there is none (tried once; `CaptionerUnavailable` when it
        could not be loaded, in seconds without network)."""
        if self._captioner is None and self.caption_error is None:
            if self.captioner_id == "none":
                self.caption_error = MaskEditError("automatic captions are off in this app (--captioner none); type "
                                                   "the captions yourself")
            else:
                from ..perception.captioning import load_captioner

                try:
                    self._captioner = load_captioner(self.captioner_id)
                    LOG.info("loaded the captioner: %s", self._captioner.label)
                except MaskEditError as error:
                    self.caption_error = error
        if self._captioner is None:
            raise self.caption_error.with_traceback(None)
        return self._captioner

    def load_now(self) -> None:
        """Load the segmenter and the captioner now (at start-up: on ZeroGPU they must not load inside a call)."""
        _ = self.segmenter
        try:
            self.captioner()
        except MaskEditError:
            pass  # the reason is kept for the first caption request

    def perception_bytes(self) -> int:
        """GPU bytes of the loaded segmenter's and captioner's weights (0 for what is not loaded or on the CPU)."""
        models = [getattr(m, "model", None) for m in self.segmentation.loaded()] + [getattr(self._captioner, "model", None)]
        return sum(weights_bytes(m) for m in models if m is not None and _on_gpu(m))

    @property
    def sizer(self):
        """The ZeroGPU size of each GPU call of this app (`estimate.CallSizer`): the base's plans, with the
        start-up placement and the other models' weights every call holds."""
        from .estimate import CallSizer

        return CallSizer(self.model.name, self.placement, self.perception_bytes(),
                         ZEROGPU_PRESET if on_zero_gpu() else None)


def _on_gpu(module) -> bool:
    tensor = next(module.parameters(), None)
    return tensor is not None and tensor.device.type == "cuda"


def start_runtime(loaded, segmenter_backend: str = "auto", captioner_id: str | None = None, *,
                  sam2_model: str | None = None, sam3_model: str | None = None) -> Runtime:
    """The app's Runtime over `loaded`. On ZeroGPU everything loads now, at start-up, and goes to "cuda": a real
    base placed with ZEROGPU_PRESET's memory settings (`place_for_zerogpu`), the clicks segmenter and the
    captioner."""
    models = dict(sam2_model=sam2_model, sam3_model=sam3_model)
    if not on_zero_gpu():
        return Runtime(loaded, segmenter_backend, captioner_id, **models)
    runtime = Runtime(loaded, segmenter_backend, captioner_id, place_for_zerogpu(loaded), **models)
    runtime.load_now()
    return runtime
