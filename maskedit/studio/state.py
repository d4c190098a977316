"""The typed state of one edit session (one browser tab or gradio_client `Client`).

The data itself lives in the session's folder (`session.SessionStore`); the state holds what the user
chose and where the files are. Plain values only: it is kept by the UI between calls (and pickled on
ZeroGPU)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defaults import DEFAULT_HANDOVER_FRAMES, DEFAULT_WINDOW_FRAMES

TRAINED, PARTIAL, UPLOADED = "trained", "partial", "uploaded"  # where the session's LoRA came from


@dataclass
class SessionState:
    """folder: the session's work folder. points/labels: the clicks on the first frame ([x, y] pixels of the
    conformed clip; 1 = object, 0 = not) of the click target. later: {"K": PNG path} edited later frames. edited: the edited
    first frame (PNG path). lora / lora_source / lora_key: the LoRA that Generate uses, where it came from
    (TRAINED, PARTIAL, UPLOADED) and its cache key. background: the background-training toggle.
    results / gallery: the count of generations and the latest [video path, caption] pairs. naive_lora:
    the naive baseline's LoRA (never used by the mask-aware method). later_captions: {"K": caption} the user
    typed for edited later frames (the missing ones are captioned when training starts). objects: the Segment
    step's objects (dicts, `studio.objects`), whose kept ones' union is the edit region; click_target: the object
    the clicks in `points` belong to (None: a new one); margin: the box margin of the last segmentation.
    window_frames / handover_frames: the windows of a clip longer than one window (`Studio.set_windows`)."""

    folder: str
    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    later: dict = field(default_factory=dict)
    edited: str | None = None
    lora: str | None = None
    lora_source: str | None = None
    lora_key: str | None = None
    background: bool = False
    resume_background: bool = False
    results: int = 0
    gallery: list = field(default_factory=list)
    naive_lora: str | None = None
    later_captions: dict = field(default_factory=dict)
    objects: list = field(default_factory=list)
    click_target: int | None = None
    margin: float = 0.1
    window_frames: int = DEFAULT_WINDOW_FRAMES  # a clip longer than this is edited window by window (METHOD.md §7b)
    handover_frames: int = DEFAULT_HANDOVER_FRAMES  # generated frames each window hands to the next

    def use_lora(self, path: str | None, source: str | None, key: str | None) -> None:
        """Make `path` the LoRA Generate uses (None: none)."""
        self.lora, self.lora_source, self.lora_key = path, source, key

    def forget_lora_unless_uploaded(self, key: str | None = None) -> None:
        """Forget a trained/partial LoRA (of `key`, or any) when its inputs changed; an uploaded one stays."""
        if self.lora_source != UPLOADED and (key is None or self.lora_key == key):
            self.use_lora(None, None, None)
