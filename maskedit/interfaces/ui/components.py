"""Widgets and values more than one tab uses: the checked image input, the loss plot's frame, the method
choices, the click modes and the examples."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gradio as gr

LOG = logging.getLogger("maskedit.app")
INCLUDE, EXCLUDE = "include (on the object)", "exclude (not the object)"
METHOD_CHOICES = [("mask-aware LoRA (the method)", "mask-lora"), ("baseline: no LoRA (stock I2V)", "no-lora"),
                  ("baseline: naive LoRA (stock condition)", "naive-lora"),
                  ("baseline: feature-level blending", "feature-blend")]
LOSS_COLORS = {"raw": "#9aa0a6", "smoothed": "#d62728"}


def image_input(**kwargs) -> gr.Image:
    """A gr.Image input whose upload that is not an image (random bytes, a text file) is a clear gr.Error
    naming the input, not Gradio's "Could not preprocess input component…"."""

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


def loss_frame(rows):
    """The loss plot's value: rows (step, loss, series) as a typed DataFrame."""
    import pandas as pd

    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype(
        {"step": "int64", "loss": "float64", "series": "str"})


def loss_plot(**kwargs) -> gr.LinePlot:
    """A training-loss plot (raw and smoothed series)."""
    return gr.LinePlot(x="step", y="loss", color="series", color_map=LOSS_COLORS, **kwargs)


def read_examples(folder: Path) -> list[dict]:
    """The entries of `folder`/examples.json whose clip exists."""
    try:
        entries = json.loads((folder / "examples.json").read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if (folder / e["clip"]).is_file()]



def limit_slider(name: str, **kwargs) -> gr.Slider:
    """A slider for the setting `name` whose range is exactly `maskedit.limits.LIMITS[name]`'s (step 1 for whole
    numbers; `.limit_name` records which) and whose value reaches the handler as sent: `maskedit.limits` checks it
    there (its message names the setting and its range), not Gradio, whose own check says only "Value 100 is
    greater than maximum value 64" and fails on a value an API client left out (None)."""
    from ...limits import LIMITS

    class LimitSlider(gr.Slider):
        is_template = True  # drawn by the frontend as the gr.Slider it is

        def preprocess(self, payload):
            return payload

    limit = LIMITS[name]
    kwargs.setdefault("step", 1 if limit.integer else None)
    slider = LimitSlider(limit.low, limit.high, **kwargs)
    slider.limit_name = name
    return slider
