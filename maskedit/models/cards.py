"""The GPUs the planner knows and the attention kernels it models: torch-free, so `python -m maskedit plan
--help` answers without importing model code. ZeroGPU's two call sizes are cards too ("zerogpu-large",
"zerogpu-xlarge": `maskedit.models.zerogpu.get_card`), made there, the one place that states that hardware."""

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
    "rtx-pro-6000": Card("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", 96, 503.8),
    "rtx-pro-6000-server": Card("NVIDIA RTX PRO 6000 Blackwell Server Edition", 96, 480.0),
}
"""Dense bf16 with fp32 accumulation. RTX PRO 6000: the Workstation Edition's 503.8 is NVIDIA's RTX Blackwell
PRO architecture whitepaper (Table 4; 188 SMs x 1024 FLOP/clock x 2.617 GHz); NVIDIA publishes no dense figure
for the Server Edition (its "1 PFLOP" is with sparsity): 480 is derived from its datasheet's 120 FP32 TFLOPS
(24,064 cores at 2.49 GHz) with the same 1024 FLOP/clock per SM, within 5% of half the sparse figure."""



def get_card(name: str, cards: dict[str, Card] | None = None) -> Card:
    """The card called `name` (a key of `cards`, default CARDS); MaskEditError for others."""
    known = CARDS if cards is None else cards
    key = (name or "").strip().lower().replace("rtx4090", "4090").replace("rtx-4090", "4090")
    if key not in known:
        raise MaskEditError(f"unknown GPU {name!r}; choose one of {', '.join(known)}")
    return known[key]
