"""The documented range of every setting, and the checks that hold a request to it before any work starts.

Every number a user can set (CLI option, app field, API argument) has one entry in `LIMITS`: its range is
generous for real use but bounds the work one request can ask for (a million steps or rank 100,000 would
hold a GPU for days or fill its memory). NaN and ±inf are never accepted. A value outside its range raises
`MaskEditError` naming the setting, its range and the value, e.g.

    the learning rate (learning_rate) is nan; it must be a finite number, at least 1e-08 and at most 1

`SOURCE_LIMITS` bounds the videos, images and LoRA files that are read at all (`maskedit.media.video`,
`maskedit.method.lora`). The README's table of ranges is `ranges_markdown()`; a test keeps the two equal.

Values that arrive as text are parsed here too, with bounded size and syntax, before anything else sees them:
`check_text` (prompts, captions), `parse_json` (points, later frames' captions: length, nesting depth and every
number bounded, so `1e999`, a 5,000-digit integer or JSON nested 100,000 deep is a MaskEditError, never an
OverflowError, ValueError or RecursionError), `parse_number_text` (a number written in a text field),
`check_choice` (a preset, sampler or method name) and `check_flag` (a checkbox). The app's widgets hand every
value over as the client sent it (`maskedit.interfaces.ui.components`), so these rules are the only ones.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass
from typing import Iterable

from .errors import MaskEditError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds; JSON and int64 hold up to this
MAX_FRAMES = 161  # 4k+1, one window of the model; Wan2.1 is trained on 81, Wan2.2 on 121
MAX_SIDE = 1920  # conformed width or height (Wan 720P is 1280x720)

MAX_SOURCE_SECONDS = 600.0
"""Longest source video read (10 minutes): only the kept frames are decoded, but every frame before the
last kept one is still read by ffmpeg."""
MAX_SOURCE_SIDE = 4096
"""Largest source width or height (4K DCI is 4096x2160)."""
MAX_SOURCE_FRAMES = 36_000
"""Most frames (or image files in a folder) a source may hold: 10 minutes at 60 fps."""
MAX_CLIP_FRAMES = (MAX_SOURCE_FRAMES - 1) // 4 * 4 + 1
"""Most frames of a conformed clip (4k+1, from the source limit): a clip longer than one window (`window_frames`)
is edited window by window (METHOD.md §7b)."""
MAX_POINTS = 256
"""Most clicks (positive and negative, all objects together) in one segmentation request."""
MAX_OBJECTS = 16
"""Most objects in one edit region (from clicks, text and uploaded masks together); also the most instances one
text prompt keeps (the highest-scoring ones): each object is a mask per frame held in memory and on disk."""
MAX_TEXT_PROMPT = 200
"""Longest text prompt for segmentation, in characters (SAM 3 reads at most 32 tokens of it)."""
MAX_IMAGE_SIDE = MAX_SOURCE_SIDE
"""Largest width or height of an image that is read (edited frames, masks, frames of a folder): images are
bounded like videos, from the file's header, before any pixel is decoded."""
MIN_SOURCE_FPS, MAX_SOURCE_FPS = 1.0, 240.0
"""The frame rates a source plausibly has; a container that says otherwise (0, 1,000 fps) is checked against
its frame count and duration (`maskedit.media.video`)."""
MAX_LORA_HEADER_BYTES = 16 * 1024 * 1024
"""Largest safetensors header (the JSON of names, dtypes and shapes) of a LoRA file; a 14B rank-256 LoRA's is
well under 1 MB."""
MAX_LORA_WEIGHT = 1000.0
"""Largest |weight| a LoRA file may hold: trained edit LoRAs hold well under 1, third-party ones under 10;
3e38 is a broken file that would generate a black video."""
MAX_TEXT_CHARS = 2000
"""Longest prompt, caption or trigger (characters); Wan's text encoder reads 512 tokens."""
MAX_JSON_CHARS = 400_000
"""Longest JSON text field (points, later frames' captions): MAX_FRAMES captions of MAX_TEXT_CHARS fit."""
MAX_JSON_DEPTH = 3
"""Deepest nesting of a JSON field: {"points": [[x, y, label], ...]} is 3."""
MAX_NUMBER_CHARS = 32
"""Longest number written as text (in JSON, a box, a size, a frame number)."""


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
    Limit("timestep_shift", "training timestep shift", 0.01, 100.0, False, option="--timestep-shift"),
    Limit("step_cache_threshold", "step cache threshold", 0.001, 1.0, False, option="--step-cache-threshold"),
    Limit("num_frames", "number of frames", 5, MAX_CLIP_FRAMES, True, "4k+1", option="--frames"),
    Limit("window_frames", "frames per generation window", 5, MAX_FRAMES, True, "4k+1", option="--window-frames"),
    Limit("handover_frames", "hand-over frames between windows", 1, MAX_FRAMES - 4, True, "4k+1",
          option="--handover-frames"),
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
    Limit("objects", "number of objects", 1, MAX_OBJECTS, True),
    Limit("blocks_to_swap", "number of transformer blocks swapped to CPU", 0, 39, True,
          option="--blocks-to-swap"),
    Limit("budget_s", "seconds of training per GPU call", 5.0, 3600.0, False, option="--gpu-budget"),
    Limit("frame_index", "frame number", 0, MAX_FRAMES - 1, True),
    Limit("feather", "compositing feather in pixels", 0, 64, True, option="--feather"),
    Limit("composite_margin", "margin around the tight mask for compositing, in pixels", 0, 128, True,
          option="--composite-margin"),
)}

SOURCE_LIMITS = {
    "duration": f"at most {MAX_SOURCE_SECONDS:g} s",
    "width and height": f"at most {MAX_SOURCE_SIDE} pixels each",
    "frames (or images in a folder)": f"at most {MAX_SOURCE_FRAMES}",
    "frame rate": f"{MIN_SOURCE_FPS:g} to {MAX_SOURCE_FPS:g} fps (from the container, else from its frames and "
                  "duration)",
    "images (edited frames, masks)": f"at most {MAX_IMAGE_SIDE} pixels on a side, checked before decoding",
    "LoRA files": f"safetensors of float weights (F16, BF16, F32, F64) with LoRA names, each at most "
                  f"{MAX_LORA_WEIGHT:g} in size, checked from the header first; header at most "
                  f"{MAX_LORA_HEADER_BYTES // 2**20} MB",
    "texts": f"prompts and captions at most {MAX_TEXT_CHARS} characters; JSON fields at most "
             f"{MAX_JSON_CHARS:,} characters, nested {MAX_JSON_DEPTH} deep; numbers at most "
             f"{MAX_NUMBER_CHARS} characters",
}


def check(name: str, value, option: str | None = None):
    """`value` checked against `LIMITS[name]`; returns it as int (whole-number settings) or float.

    option: how the caller names the setting (a CLI flag such as "--lr"); default: the API name.
    Raises MaskEditError for a value of the wrong type, NaN/inf, outside the range or breaking the rule.
    """
    limit = LIMITS[name]
    shown = f"the {limit.label} ({option or name})"
    if isinstance(value, str):
        raise MaskEditError(f"{shown} is the text {shown_value(value)}; it must be {limit.describe()}, sent as a "
                            "number")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MaskEditError(f"{shown} is {shown_value(value)}; it must be {limit.describe()}")
    if isinstance(value, numbers.Integral):  # compared as an int: float(10**400) would overflow
        number = int(value)
        if not limit.low <= number <= limit.high:
            raise MaskEditError(f"{shown} is {_number(number)}; it must be {limit.describe()}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise MaskEditError(f"{shown} is {number}; it must be {limit.describe()}")
    if limit.integer and not isinstance(number, int):
        if number == math.floor(number):  # float.is_integer, spelled so vermin sees no 3.12-only int method
            number = int(number)
        else:
            raise MaskEditError(f"{shown} is {value}; it must be {limit.describe()}")
    if not limit.low <= number <= limit.high or not _follows_rule(limit.rule, number):
        raise MaskEditError(f"{shown} is {_number(number)}; it must be {limit.describe()}")
    return number if limit.integer else float(number)


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
    """A prompt or caption with its whitespace stripped; refuses None, non-text, an empty one and one longer
    than MAX_TEXT_CHARS."""
    if not isinstance(text, str) or not text.strip():
        raise MaskEditError(f"the {what} is empty; describe the frame in a few words, e.g. \"a red car on a road\"")
    return check_text(text, what)


def check_text(value, what: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A text field's value stripped ("" for None); refuses anything but text, and text longer than
    `max_chars` characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MaskEditError(f"the {what} is {shown_value(value)}; it must be text")
    if len(value) > max_chars:
        raise MaskEditError(f"the {what} is {len(value):,} characters long; it must be at most {max_chars:,}")
    return value.strip()


def check_choice(value, choices: Iterable[str], what: str) -> str:
    """`value` when it is one of `choices` (names such as a sampler or a method); MaskEditError naming the
    choices otherwise."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise MaskEditError(f"the {what} is {shown_value(value)}; choose one of {', '.join(choices)}")
    return value


def check_flag(value, what: str, default: bool = False) -> bool:
    """A checkbox's value: True/False (None: `default`; the texts "true"/"false" as sent by some clients).
    Anything else is refused, never taken as truthy ("False" is not True)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise MaskEditError(f"the {what} is {shown_value(value)}; it must be true or false")


_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_number_text(text, what: str, integer: bool = False, example: str = "") -> int | float:
    """A number written as text (a box's corner, a size, a frame number, a CLI point): at most MAX_NUMBER_CHARS
    characters of decimal syntax, finite; a whole number when `integer` ("2.5" and "1e3" are refused then).
    Returns int or float; MaskEditError naming `what` otherwise."""
    hint = f", e.g. {example}" if example else ""
    kind = "a whole number" if integer else "a finite number"
    if isinstance(text, bool) or not isinstance(text, (str, numbers.Real)):
        raise MaskEditError(f"the {what} is {shown_value(text)}; it must be {kind}{hint}")
    if isinstance(text, numbers.Integral):
        return _integer_of(int(text), what, kind, hint)
    if isinstance(text, numbers.Real):  # a number sent as one: whole when integral (4.0 is frame 4, 2.5 is refused)
        value = float(text)
        if math.isfinite(value) and (not integer or value == math.floor(value)):
            return _integer_of(int(value), what, kind, hint) if integer else value
        raise MaskEditError(f"the {what} is {shown_value(text)}; it must be {kind}{hint}")
    text = text.strip()
    if len(text) > MAX_NUMBER_CHARS:
        raise MaskEditError(f"the {what} is a number written with {len(text):,} characters; it must be {kind} of "
                            f"at most {MAX_NUMBER_CHARS} characters{hint}")
    if _INTEGER_TEXT.fullmatch(text):
        return _integer_of(int(text), what, kind, hint)
    if not integer and _NUMBER_TEXT.fullmatch(text) and math.isfinite(float(text)):
        return float(text)
    raise MaskEditError(f"the {what} is {shown_value(text)}; it must be {kind}{hint}")


def _integer_of(value: int, what: str, kind: str, hint: str) -> int:
    if value.bit_length() > 4 * MAX_NUMBER_CHARS:  # a 2**1000 sent as a JSON number: bounded like its text
        raise MaskEditError(f"the {what} is {_number(value)}; it must be {kind} of at most {MAX_NUMBER_CHARS} "
                            f"digits{hint}")
    return value


class _JsonRefused(Exception):
    """A JSON number or constant out of bounds (raised by the parser's hooks, turned into MaskEditError)."""


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _JsonRefused(f"a number written with {len(text):,} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _JsonRefused(f"a number written with {len(text):,} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRefused(f"the number {text}, which is not finite")
    return value


def _no_constant(text: str):
    raise _JsonRefused(f"{text}, which is not a number JSON allows")


def json_depth(text: str) -> int:
    """How deeply `text`'s JSON arrays and objects nest (brackets inside strings ignored), counted without
    recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(text, what: str, example: str, max_depth: int = MAX_JSON_DEPTH, max_chars: int = MAX_JSON_CHARS):
    """`text` parsed as JSON with bounded size: at most `max_chars` characters, nested at most `max_depth`
    deep, every number at most MAX_NUMBER_CHARS characters and finite (no NaN, Infinity or 1e999). A value that
    is not text is returned as it is (a client sent the parsed value). MaskEditError naming `what` and showing
    `example` otherwise."""
    if not isinstance(text, str):
        return text
    if len(text) > max_chars:
        raise MaskEditError(f"the {what} is {len(text):,} characters long; it must be at most {max_chars:,} "
                            f"characters of JSON, e.g. {example}")
    depth = json_depth(text)
    if depth > max_depth:
        raise MaskEditError(f"the {what} is nested too deeply ({depth:,} levels, at most {max_depth}); pass "
                            f"e.g. {example}")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant)
    except _JsonRefused as error:
        raise MaskEditError(f"the {what} holds {error}; pass e.g. {example}") from None
    except (json.JSONDecodeError, RecursionError) as error:
        why = getattr(error, "msg", "nested too deeply")
        raise MaskEditError(f"the {what} is not valid JSON ({why}); pass e.g. {example}") from None


def shown_value(value) -> str:
    """`value` as a message shows it: its repr, cut to 60 characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _number(value)
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text):,} characters)"


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


def check_text_prompt(text) -> str:
    """A segmentation text prompt ("the red car", "both dogs"), stripped: refuses non-text, an empty one and one
    longer than MAX_TEXT_PROMPT characters."""
    if not isinstance(text, str) or not text.strip():
        raise MaskEditError('the text prompt is empty; say what to edit in a few words, e.g. "the red car"')
    text = " ".join(text.split())
    if len(text) > MAX_TEXT_PROMPT:
        raise MaskEditError(f"the text prompt has {len(text)} characters; keep it to at most {MAX_TEXT_PROMPT} "
                            "(a few words naming the object, e.g. \"the red car\")")
    return text


def ranges_markdown() -> str:
    """The table of every setting's range (Markdown), as the README shows it."""
    rows = ["| setting | CLI option | range |", "|---|---|---|"]
    for limit in LIMITS.values():
        rule = f" ({limit.rule})" if limit.rule else ""
        kind = "whole number" if limit.integer else "number"
        rows.append(f"| {limit.label} (`{limit.name}`) | {('`' + limit.option + '`') if limit.option else '—'} | "
                    f"{kind} {_number(limit.low)} … {_number(limit.high)}{rule} |")
    rows += ["", "| what is read (videos, images, LoRA files, texts) | limit |", "|---|---|"]
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
    if isinstance(value, int) and value.bit_length() > 200:  # str() of a 5,000-digit int raises ValueError
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    if isinstance(value, float) and math.isfinite(value) and value == math.floor(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
