"""Widgets and values more than one tab uses: the checked image input, the loss plot's frame, the method
choices, the click modes and the examples."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gradio as gr

from ...studio.progress import RAW, SMOOTHED

LOG = logging.getLogger("maskedit.app")
INCLUDE, EXCLUDE = "include (on the object)", "exclude (not the object)"
METHOD_CHOICES = [("mask-aware LoRA (the method)", "mask-lora"), ("baseline: no LoRA (stock I2V)", "no-lora"),
                  ("baseline: naive LoRA (stock condition)", "naive-lora"),
                  ("baseline: feature-level blending", "feature-blend")]
LOSS_COLORS = {RAW: "#9aa0a6", SMOOTHED: "#d62728"}


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
