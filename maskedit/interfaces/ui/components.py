"""Widgets and values more than one tab uses: the inputs that hand their values over as sent (checked by
`maskedit.limits`, never by Gradio), the checked image input, the loss plot's frame, the method choices, the click
modes and the examples.

Gradio's own input checks (a Number's minimum and precision, a Slider's range, a Dropdown's or Radio's choices)
run before a handler and answer with "Value 2 is greater than maximum value 0.5" and a traceback in the log, round
10.5 steps to 10 and True to 1, and can disagree with `maskedit.limits`. The inputs here skip them: a handler gets
exactly what the client sent and the studio refuses it with the setting's name, its range and the value. A slider
still needs a range to draw: `limit_slider` takes it from `maskedit.limits.LIMITS`, so the two cannot disagree.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gradio as gr

from ...limits import LIMITS
from ...errors import MaskEditError
from ...media.video import ImageTooLarge, check_image_header
from ...studio.progress import RAW, SMOOTHED

LOG = logging.getLogger("maskedit.app")
INCLUDE, EXCLUDE = "include (on the object)", "exclude (not the object)"
METHOD_CHOICES = [("mask-aware LoRA (the method)", "mask-lora"), ("baseline: no LoRA (stock I2V)", "no-lora"),
                  ("baseline: naive LoRA (stock condition)", "naive-lora"),
                  ("baseline: feature-level blending", "feature-blend")]
LOSS_COLORS = {RAW: "#9aa0a6", SMOOTHED: "#d62728"}


class _AsSent:
    """A Gradio input whose value reaches the handler as the client sent it: preprocess skips Gradio's checks (a
    Number's bounds and rounding, a Slider's range, a Dropdown's or Radio's choices); `maskedit.limits` checks the
    value. The frontend draws it as the Gradio component it extends (the next class in its MRO)."""

    def preprocess(self, payload):
        return payload

    def get_block_name(self) -> str:
        return type(self).__mro__[2].__name__.lower()

    get_block_class = get_block_name


class AsSentNumber(_AsSent, gr.Number):
    """A gr.Number as sent: no minimum/maximum, no rounding (`precision` only sets how the page shows it)."""


class AsSentSlider(_AsSent, gr.Slider):
    """A gr.Slider as sent (its range only draws it: `limit_slider`)."""


class AsSentDropdown(_AsSent, gr.Dropdown):
    """A gr.Dropdown as sent: a name not among its choices is refused by the studio, naming the choices."""


class AsSentRadio(_AsSent, gr.Radio):
    """A gr.Radio as sent (see AsSentDropdown)."""


AS_SENT = (AsSentNumber, AsSentSlider, AsSentDropdown, AsSentRadio)


def limit_slider(name: str, **kwargs) -> AsSentSlider:
    """A slider for the setting `name` whose range is exactly `maskedit.limits.LIMITS[name]`'s (step 1 for whole
    numbers); `.limit_name` records which, for the test that holds every widget to the limits."""
    limit = LIMITS[name]
    kwargs.setdefault("step", 1 if limit.integer else None)
    slider = AsSentSlider(limit.low, limit.high, **kwargs)
    slider.limit_name = name
    return slider


def image_input(**kwargs) -> gr.Image:
    """A gr.Image input (type "filepath") whose upload is checked from its header before anything decodes it:
    an image larger than `limits.MAX_IMAGE_SIDE` on a side (or a decompression bomb) is refused with our
    message, one that is not an image (random bytes, a text file) is a clear gr.Error naming the input, not
    Gradio's "Could not preprocess input component…". Gradio never converts it (image_mode None): the studio
    reads every mode faithfully (`media.video.read_image`; Gradio's RGB conversion turns a 16-bit greyscale PNG
    white)."""
    kwargs.setdefault("image_mode", None)

    class CheckedImage(gr.Image):
        is_template = True  # drawn by the frontend as the gr.Image it is

        def preprocess(self, payload):
            what = (self.label or "image").lower()
            path = getattr(payload, "path", None)
            if path:
                try:
                    check_image_header(path, what)
                except ImageTooLarge as error:
                    shown = getattr(payload, "orig_name", None) or Path(path).name
                    message = str(error).replace(f"{what} {path}", f"{what} {shown}").replace(str(path), shown)
                    LOG.info("user error: %s", message)
                    raise gr.Error(message, print_exception=False) from None
                except MaskEditError:
                    pass  # not an image at all: said below, as Gradio finds it
            try:
                return super().preprocess(payload)
            except gr.Error:
                raise
            except Exception as error:  # noqa: BLE001 (PIL and Gradio raise several types for unreadable files)
                LOG.info("user error: the %s is not a readable image (%s)", what, type(error).__name__)
                raise gr.Error(f"the {what} is not an image that can be read; upload a PNG, JPEG or WebP file",
                               print_exception=False) from None

    return CheckedImage(**kwargs)


MIN_AXIS_STEPS = 10
"""The loss plot's x-axis spans at least this many steps: over fewer, its ticks would fall between whole steps."""


def loss_frame(rows):
    """The loss plot's value: rows (step, loss, series) as a typed DataFrame (what an API client gets)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype(
        {"step": "int64", "loss": "float64", "series": "str"})


def loss_axis(total_steps: int | None, frame=None):
    """A page-only update of the loss plot: its x-axis from step 1 to the run's last step (at least MIN_AXIS_STEPS,
    so that its ticks fall on whole steps), with `frame` as its value when given. Never an endpoint's last output:
    API clients get plain values."""
    axis = dict(x_lim=[1, max(MIN_AXIS_STEPS, int(total_steps or 0))])
    return gr.update(**axis) if frame is None else gr.update(value=frame, **axis)


def loss_plot(**kwargs) -> gr.LinePlot:
    """A training-loss plot: the loss at each step and its moving average, named in the legend below it (a fixed
    height would cut the legend off), x-axis in whole training steps."""
    return gr.LinePlot(x="step", y="loss", color="series", color_map=LOSS_COLORS, color_title="curve",
                       x_title="training step", y_title="loss", x_axis_format="d", **kwargs)


def read_examples(folder: Path) -> list[dict]:
    """The entries of `folder`/examples.json whose clip exists."""
    try:
        entries = json.loads((folder / "examples.json").read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if (folder / e["clip"]).is_file()]

