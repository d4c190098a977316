"""The GPUs the planner knows and the attention kernels it models: torch-free, so `python -m maskedit plan
--help` answers without importing model code."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MaskEditError

ATTENTION_BACKENDS = ("flash", "math")
"""flash: SDPA's fused kernels (no L x L matrix); math: the attention matrix materialised."""


@dataclass(frozen=True)
class Card:
    """A GPU: memory as sold (decimal GB) and dense bf16 tensor throughput (no sparsity), vendor figures."""

    name: str
    memory_gb: float
    bf16_tflops: float


CARDS: dict[str, Card] = {
    "h100": Card("NVIDIA H100 SXM", 80, 989.4),
    "h200": Card("NVIDIA H200 SXM", 141, 989.4),
    "a100": Card("NVIDIA A100 80GB", 80, 312.0),
    "l40s": Card("NVIDIA L40S", 48, 362.05),
    "4090": Card("NVIDIA GeForce RTX 4090", 24, 165.2),
    "rtx-pro-6000": Card("NVIDIA RTX PRO 6000 Blackwell", 96, 503.8),
}


def get_card(name: str) -> Card:
    key = (name or "").strip().lower().replace("rtx4090", "4090").replace("rtx-4090", "4090")
    if key not in CARDS:
        raise MaskEditError(f"unknown GPU {name!r}; choose one of {', '.join(CARDS)}")
    return CARDS[key]
