"""ZeroGPU's hardware and call rules as data: the one place the project states them (torch-free).

Sources, read 2026-08 (stored copies):
- Hugging Face hub-docs `docs/hub/spaces-zerogpu.md` since "[ZeroGPU] Blackwell update" (commit e7d53f5,
  2026-05-13; unchanged on these points at 34ee0f0, 2026-07-21): `large` (the default) is half an NVIDIA RTX
  Pro 6000 Blackwell, 48GB, 1x quota; `xlarge` is the whole card, 96GB, 2x quota; supported Python 3.12.12
  and 3.10.13, PyTorch 2.8.0, 2.9.1, 2.10.0 and 2.11.0. No per-call maximum is documented.
- `spaces` 0.51.3, `spaces/zero/configs.json`: the card is the "NVIDIA RTX PRO 6000 Blackwell Server Edition"
  (188 SMs), and `client.get_duration_seconds` multiplies the duration of every call that is not `xlarge` by
  its `duration_factor`, 1.5, before scheduling it: a `large` call asking N seconds is scheduled (and checked
  against the visitor's quota) for 1.5 N (tests/test_zerogpu_hardware.py reads the installed file).

Before that update the calls were half or all of an H200; no other file may state ZeroGPU's memory or
compute (tests/test_zerogpu_hardware.py). From here come the planner's cards "zerogpu-large" and
"zerogpu-xlarge" (`get_card`; `python -m maskedit plan --gpu zerogpu-large`), the size each GPU call takes
(`size_for_peak`), the seconds it asks for (`asked_seconds`), the app's messages and the Space's pins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cards import CARDS, Card
from .cards import get_card as _get_card

SOURCE = ("hub-docs docs/hub/spaces-zerogpu.md, \"[ZeroGPU] Blackwell update\" (2026-05-13); "
          "spaces 0.51.3 zero/configs.json")
CARD = CARDS["rtx-pro-6000-server"]
"""The card behind every ZeroGPU call (spaces' configs.json names the Server Edition)."""
SPACES_CARD_MODEL = "NVIDIA RTX PRO 6000 Blackwell Server Edition"
"""The `model` of the card's entry in spaces' configs.json (what the driver reports; the CPU shim picks it)."""


@dataclass(frozen=True)
class CallSize:
    """One ZeroGPU call size: its memory (decimal GB, as documented), its share of the card's compute (half a
    card taken as half its tensor throughput: an assumption, MIG halves of equal size), the quota one second
    of it costs, and the factor spaces multiplies its requested duration by before scheduling it."""

    name: str
    memory_gb: float
    compute_share: float
    quota_factor: int
    duration_factor: float

    @property
    def card(self) -> Card:
        """The call's GPU as a planner card: its memory and its share of the card's dense bf16 throughput."""
        return Card(f"ZeroGPU {self.name}: {'half an' if self.compute_share < 1 else 'a whole'} {CARD.name}",
                    self.memory_gb, CARD.bf16_tflops * self.compute_share)


SIZES: dict[str, CallSize] = {
    "large": CallSize("large", 48.0, 0.5, 1, 1.5),
    "xlarge": CallSize("xlarge", 96.0, 1.0, 2, 1.0),
}
GPU_SIZES = tuple(SIZES)
"""Smallest first: the order `size_for_peak` tries."""

MEMORY_MARGIN = 0.10
"""Share of a call's memory the planned peak must leave free: the CUDA context (~0.5 GB) and allocator
fragmentation, which the planner does not count, and some of its own error (its training-step figures land
within 20% of the paper's measurements, on both sides: a margin, not a bound). Partly offset by the card
itself: spaces reports 101,973,950,464 bytes for the whole card, so half of it is 51.0 GB, above the 48 GB
documented and used here."""

CALL_LIMIT_S = 300
"""The most seconds one call may be scheduled for (what spaces sends, after its duration factor). ZeroGPU
documents no per-call maximum; spaces refuses a request above what the visitor's quota allows as an "illegal
duration", and a free account has 5 minutes a day (an `xlarge` second costs two). The project's device-API
stand-in grants at most this; work whose estimate is longer is refused before its call."""

SUPPORTED_PYTHON = ("3.12.12", "3.10.13")
SUPPORTED_TORCH = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
"""The versions the documentation lists (the Space's pins must be among them: tests/test_zerogpu_space.py)."""


def zerogpu_cards() -> dict[str, Card]:
    """{"zerogpu-large": Card, "zerogpu-xlarge": Card}: each call size as a card the planner judges against."""
    return {f"zerogpu-{size.name}": size.card for size in SIZES.values()}


def card_names() -> list[str]:
    """Every name `get_card` takes: the planner's cards (`cards.CARDS`), then ZeroGPU's call sizes."""
    return [*CARDS, *zerogpu_cards()]


def get_card(name: str) -> Card:
    """A card of `cards.CARDS` or a ZeroGPU call size ("zerogpu-large", "zerogpu-xlarge") by name."""
    return _get_card(name, {**CARDS, **zerogpu_cards()})


def usable_bytes(size: str) -> float:
    """Bytes a call of `size` may plan to use: its memory less MEMORY_MARGIN."""
    return SIZES[size].memory_gb * 1e9 * (1.0 - MEMORY_MARGIN)


def usable_gb(card_name: str, memory_gb: float) -> float:
    """The memory to judge a plan against on the card called `card_name`: a ZeroGPU size's usable memory
    (less MEMORY_MARGIN), else `memory_gb` as given."""
    for size in SIZES.values():
        if card_name.strip().lower() == f"zerogpu-{size.name}":
            return usable_bytes(size.name) / 1e9
    return memory_gb


def size_for_peak(peak_bytes: float) -> str | None:
    """The smallest call size whose usable memory holds `peak_bytes`; None when not even `xlarge` does."""
    return next((name for name in GPU_SIZES if peak_bytes <= usable_bytes(name)), None)


def asked_seconds(needed_s: float, size: str) -> int:
    """The `duration` to ask of spaces so that the call is scheduled for at least `needed_s` seconds: spaces
    multiplies what a `large` call asks by its duration factor (1.5) before scheduling it."""
    return max(1, math.ceil(needed_s / SIZES[size].duration_factor - 1e-9))


def scheduled_seconds(asked_s: float, size: str) -> int:
    """The seconds spaces schedules (and checks against the quota) for a call of `size` asking `asked_s`."""
    return round(asked_s * SIZES[size].duration_factor)


def describe(size: str) -> str:
    """"large (half an NVIDIA RTX PRO 6000 Blackwell Server Edition, 48 GB; 43.2 GB planned at most)"."""
    call = SIZES[size]
    return (f"{size} ({call.card.name.split(': ', 1)[1]}, {call.memory_gb:g} GB; "
            f"{usable_bytes(size) / 1e9:.1f} GB planned at most)")
