"""What stays loaded between calls of the app: the base model, the segmenter and the captioner (never user
data). Loading is lazy; the choice of model is announced (banner for the page, one line for the terminal)."""

from __future__ import annotations

import logging

from ..errors import MaskEditError

LOG = logging.getLogger("maskedit.app")
WAN_480P = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"


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
    from ..models.loading import default_model
    from ..models.loading import TINY, load_pipeline

    wanted = requested or default_model()
    try:
        loaded = load_pipeline(wanted)
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


class Runtime:
    """The loaded base model and, loaded on first use, the segmenter ("auto" | "sam2" | "fallback") and the captioner (a Florence-2 hub id or folder, None for the default, "none" for off)."""

    def __init__(self, model, segmenter_backend: str = "auto", captioner_id: str | None = None):
        self.model = model
        self.segmenter_backend = segmenter_backend
        self.captioner_id = captioner_id
        self._segmenter = None
        self._captioner = None
        self.caption_error: MaskEditError | None = None  # why there is no captioner (raised again on each use)

    @property
    def pipe(self):
        return self.model.pipe

    @property
    def segmenter(self):
        if self._segmenter is None:
            from ..perception.segmentation import load_segmenter

            self._segmenter = load_segmenter(self.segmenter_backend)
        return self._segmenter

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
                except MaskEditError as error:
                    self.caption_error = error
        if self._captioner is None:
            raise self.caption_error.with_traceback(None)
        return self._captioner
