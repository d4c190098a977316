"""The one-line hint after each step of the page: what it did, and which tab (and button) comes next."""

from __future__ import annotations

NEXT = {
    "video": "Clip loaded → **2 · Segment**: click on the object in the first frame, then **Propagate** (or give a "
             "mask video or a box)",
    "segment": "Masks ready → **3 · Edited frames**: edit frame 0 in any image editor, upload it and write both "
               "captions",
    "edited": "Edited first frame set → **4 · Train** (with background training on, **5 · Generate** waits for it)",
    "later": "→ **4 · Train**: stage 2 learns the look of these frames after stage 1",
    "caption": "check and edit them → **4 · Train**",
    "train": "LoRA ready → **5 · Generate**",
    "stopped": "Stopped → **Resume** continues the run, or **5 · Generate** uses the LoRA so far",
    "lora": "LoRA in use → **5 · Generate** (no training needed)",
    "generate": "Edited video ready → download it, or try another edited first frame, seed or method (the LoRA is "
                "reused)",
}
"""What comes after each step, by step."""


def after(step: str) -> str:
    """The hint after `step`, as a Markdown line to append to that step's status (starts with a line break)."""
    return f"  \n➡️ {NEXT[step]}"
