"""The documented range of every setting, and the checks that hold a request to it before any work starts.

Every number a user can set (CLI option, app field, API argument) has one entry in `LIMITS`: its range is
generous for real use but bounds the work one request can ask for (a million steps or rank 100,000 would
hold a GPU for days or fill its memory). NaN and ±inf are never accepted. A value outside its range raises
`MaskEditError` naming the setting, its range and the value, e.g.

    the learning rate (learning_rate) is nan; it must be a finite number, at least 1e-08 and at most 1

`SOURCE_LIMITS` bounds the videos that are read at all (`maskedit.media.video`). The README's table of ranges is
`ranges_markdown()`; a test keeps the two equal.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable

from .errors import MaskEditError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds; JSON and int64 hold up to this
MAX_FRAMES = 161  # 4k+1; Wan2.1 is trained on 81, Wan2.2 on 121
MAX_SIDE = 1920  # conformed width or height (Wan 720P is 1280x720)

MAX_SOURCE_SECONDS = 600.0
"""Longest source video read (10 minutes): only the kept frames are decoded, but every frame before the
last kept one is still read by ffmpeg."""
MAX_SOURCE_SIDE = 4096
"""Largest source width or height (4K DCI is 4096x2160)."""
MAX_SOURCE_FRAMES = 36_000
"""Most frames (or image files in a folder) a source may hold: 10 minutes at 60 fps."""
MAX_POINTS = 256
"""Most clicks (positive and negative, all objects together) in one segmentation request."""


@dataclass(frozen=True)
class Limit:
    """A setting's range: whole numbers (`integer`) or finite floats, low <= value <= high.

    rule: an extra rule on top of the range ("4k+1", "4k+1 or 0", "multiple of 16"), or "".
    """

    name: str
    label: str
    low: float
    high: float
    integer: bool
    rule: str = ""
    option: str = ""  # the command-line option, when there is one

    def describe(self) -> str:
        """The range in words: 'a whole number, at least 1 and at most 10000'."""
        kind = "a whole number" if self.integer else "a finite number"
        rule = f" ({self.rule})" if self.rule else ""
        return f"{kind}{rule}, at least {_number(self.low)} and at most {_number(self.high)}"


LIMITS: dict[str, Limit] = {limit.name: limit for limit in (
    Limit("train_steps", "number of training steps", 1, 10_000, True, option="--steps"),
    Limit("generation_steps", "number of generation steps", 1, 1_000, True, option="--steps / --gen-steps"),
    Limit("learning_rate", "learning rate", 1e-8, 1.0, False, option="--lr"),
    Limit("rank", "LoRA rank", 1, 256, True, option="--rank"),
    Limit("alpha", "LoRA alpha", 0.01, 1024, False, option="--alpha"),
    Limit("guidance_scale", "classifier-free guidance scale", 1.0, 30.0, False, option="--cfg"),
    Limit("guidance_scale_2", "low-noise expert's guidance scale (two-expert bases)", 1.0, 30.0, False,
          option="--guidance-scale-2"),
    Limit("flow_shift", "flow shift", 0.01, 100.0, False, option="--shift"),
    Limit("timestep_shift", "training timestep shift", 0.01, 100.0, False),
    Limit("num_frames", "number of frames", 5, MAX_FRAMES, True, "4k+1", option="--frames"),
    Limit("width", "width", 16, MAX_SIDE, True, "multiple of 16", option="--width"),
    Limit("height", "height", 16, MAX_SIDE, True, "multiple of 16", option="--height"),
    Limit("seed", "seed", 0, MAX_SEED, True, option="--seed"),
    Limit("start", "start frame", 0, MAX_SOURCE_FRAMES - 1, True, option="--start"),
    Limit("start_s", "start time in seconds", 0.0, MAX_SOURCE_SECONDS, False),
    Limit("margin", "box margin", 0.0, 2.0, False, option="--margin"),
    Limit("min_area", "minimum mask area in pixels", 0, MAX_SIDE * MAX_SIDE, True, option="--min-area"),
    Limit("lora_scale", "LoRA scale", 0.0, 4.0, False, option="--lora-scale"),
    Limit("speed_lora_weight", "speed LoRA weight", 0.0, 4.0, False, option="--speed-lora-weight"),
    Limit("window", "training window in frames", 0, MAX_FRAMES, True, "4k+1, or 0 for the whole clip",
          option="--window"),
    Limit("window_stride", "window stride in frames", 1, MAX_FRAMES - 1, True, option="--window-stride"),
    Limit("stage2_epochs", "number of stage-2 epochs", 1, 100, True, option="--stage2-epochs"),
    Limit("batch_size", "batch size", 1, 64, True),
    Limit("max_grad_norm", "gradient clipping norm", 1e-6, 1e6, False),
    Limit("weight_decay", "weight decay", 0.0, 1.0, False),
    Limit("beta", "AdamW beta", 0.0, 0.9999, False),
    Limit("points", "number of clicks", 1, MAX_POINTS, True),
    Limit("feather", "compositing feather in pixels", 0, 64, True, option="--feather"),
    Limit("composite_margin", "margin around the tight mask for compositing, in pixels", 0, 128, True,
          option="--composite-margin"),
)}

SOURCE_LIMITS = {
    "duration": f"at most {MAX_SOURCE_SECONDS:g} s",
    "width and height": f"at most {MAX_SOURCE_SIDE} pixels each",
    "frames (or images in a folder)": f"at most {MAX_SOURCE_FRAMES}",
}


def check(name: str, value, option: str | None = None):
    """`value` checked against `LIMITS[name]`; returns it as int (whole-number settings) or float.

    option: how the caller names the setting (a CLI flag such as "--lr"); default: the API name.
    Raises MaskEditError for a value of the wrong type, NaN/inf, outside the range or breaking the rule.
    """
    limit = LIMITS[name]
    shown = f"the {limit.label} ({option or name})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MaskEditError(f"{shown} is {value!r}; it must be {limit.describe()}")
    number = float(value)
    if not math.isfinite(number):
        raise MaskEditError(f"{shown} is {number}; it must be {limit.describe()}")
    if limit.integer:
        if isinstance(value, numbers.Integral):
            number = int(value)
        elif number == math.floor(number):  # float.is_integer, spelled so vermin sees no 3.12-only int method
            number = int(number)
        else:
            raise MaskEditError(f"{shown} is {value}; it must be {limit.describe()}")
    if not limit.low <= number <= limit.high or not _follows_rule(limit.rule, number):
        raise MaskEditError(f"{shown} is {_number(number)}; it must be {limit.describe()}")
    return number


def check_settings(options: dict[str, str] | None = None, **values) -> dict:
    """Check several settings at once (`name=value`; None values are skipped: they take a default).

    options: {name: how the caller names it} for the messages. Returns the checked values.
    """
    options = options or {}
    return {name: check(name, value, options.get(name)) for name, value in values.items() if value is not None}


def value_or_default(name: str, value, default):
    """`value` checked, or `default` (checked) when value is None. 0, "" and other falsy values are values,
    never "use the default": `train_steps=0` is refused, not silently replaced by 100."""
    return check(name, default if value is None else value)


def check_prompt(text, what: str = "prompt") -> str:
    """A prompt or caption with its whitespace stripped; refuses None, non-text and an empty one."""
    if not isinstance(text, str) or not text.strip():
        raise MaskEditError(f"the {what} is empty; describe the frame in a few words, e.g. \"a red car on a road\"")
    return text.strip()


def check_unique_frames(indices: Iterable[int], what: str = "edited later frame") -> list[int]:
    """The one rule for later-frame indices given by a list (CLI repeats, API lists): each once.

    Returns the indices in the given order; raises MaskEditError naming the first duplicate.
    """
    seen: list[int] = []
    for index in indices:
        if index in seen:
            raise MaskEditError(f"{what} {index} is given twice; give each frame once")
        seen.append(index)
    return seen


def check_points_count(count: int) -> int:
    """The number of clicks of a segmentation request (1..MAX_POINTS)."""
    return check("points", count)


def ranges_markdown() -> str:
    """The table of every setting's range (Markdown), as the README shows it."""
    rows = ["| setting | CLI option | range |", "|---|---|---|"]
    for limit in LIMITS.values():
        rule = f" ({limit.rule})" if limit.rule else ""
        kind = "whole number" if limit.integer else "number"
        rows.append(f"| {limit.label} (`{limit.name}`) | {('`' + limit.option + '`') if limit.option else '—'} | "
                    f"{kind} {_number(limit.low)} … {_number(limit.high)}{rule} |")
    rows += ["", "| source video | limit |", "|---|---|"]
    rows += [f"| {what} | {limit} |" for what, limit in SOURCE_LIMITS.items()]
    return "\n".join(rows)


def _follows_rule(rule: str, number) -> bool:
    if rule == "4k+1":
        return (number - 1) % 4 == 0
    if rule.startswith("4k+1, or 0"):
        return number == 0 or (number >= 5 and (number - 1) % 4 == 0)
    if rule == "multiple of 16":
        return number % 16 == 0
    return True


def _number(value) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == math.floor(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
