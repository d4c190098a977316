"""The real-size dry run: peak GPU and host memory, FLOPs and a time floor per phase of an edit, on any card,
without a GPU and without weights.

    plan = estimate("24gb")                                  # Wan2.1-I2V-14B-480P, the preset's frames and size
    print(plan.summary(24))                                  # "needs ≈ 19.8 GB of GPU memory; fits your 24 GB card"
    plan.peak_gpu_gib, plan.train_step_flops, plan.phases["training step"].peak_gpu_bytes
    cheapest_fitting_preset(24, num_frames=49, size=(832, 480))   # the lightest preset that fits, or None
    check_cuda_fits(plan)                                    # with a real GPU: None, or a warning naming a preset

How. The model's real configs (`models.KNOWN_MODELS`) are built on the *meta device*, which stands in for the
GPU: every tensor has its real shape and dtype and nothing is computed. Our own code then runs on it exactly
as it would on a GPU — `place_pipeline` (block streamer, fp8 stores), `encode_samples` (umT5, CLIP, VAE),
`LoraTrainer` (LoRA wrapping, float32 LoRA + AdamW, gradient checkpointing, activation offload, temporal
windows, a stage-2 sample, `loss.item()`), `MaskEditPipeline.__call__` (text/image encoding, the condition's
VAE encode, one denoising step with CFG) and the VAE decode with or without tiling. Two modes watch it:
- `_Accounting` (a TorchDispatchMode) counts every storage allocated and freed, as GPU (meta) or host (CPU,
  and meta tensors our code moved "to the CPU"), and the FLOPs of each op by the formulas
  `torch.utils.flop_counter.FlopCounterMode` uses. It refuses an op that mixes GPU and host tensors: the
  device mismatch a GPU run would hit. It answers the few data-dependent reads (`.item()`, `nonzero`) that
  meta tensors cannot (as for the first timestep).
  `.to("cpu")` of a meta tensor becomes a copy in the host pool; a copy back (our code copies explicitly
  where it moves host → GPU; pinning and CUDA streams are skipped on meta) lands in the GPU pool.
- SDPA is routed per backend: "flash" (what SDPA picks on a GPU in bf16) calls the flash-attention op's meta
  kernel — output + float32 log-sum-exp forward, dq/dk/dv backward, never the L×L matrix; "math" leaves SDPA
  alone (on meta that is the math path: the attention matrix is materialised, in float32).

Phases: "training step" and "denoising step" are one step each (FLOPs per step; the training step is the
second one, with AdamW's state alive); the encode and decode phases hold every such call of the edit.
A VAE call is executed once per distinct input shape and tiling per process and replayed after (its peak
above what was live, its FLOPs, a fresh output): its footprint depends on nothing else. Likewise every op
is dispatched, device-checked and accounted, but torch's meta kernel (shape inference, mostly Python) runs
once per distinct op and input layout (`_META_RESULTS`; in-place ops once per layout): 40 identical blocks
repeat the same calls. A test proves the memo changes no figure.

Executed: everything above. Modelled (stated in `Plan.notes`): a stacked speed LoRA's weights (the file is
not loaded; its rank-64 bf16 factors are added from the shapes); allocator fragmentation and the CUDA
context (~0.5 GB, not part of `torch.cuda.max_memory_allocated`) are not counted; the scheduler's
data-dependent index lookup is answered as for step 0. Time floor = FLOPs / the card's dense bf16 peak: no
card reaches it; real steps take longer.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import math
import os
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.flop_counter import flop_registry

from .cards import ATTENTION_BACKENDS, CARDS, Card  # noqa: F401  (torch-free, for --help)
from .zerogpu import get_card  # noqa: F401  (any card, ZeroGPU's call sizes too)
from ..errors import MaskEditError
from .loading import DEFAULT_MODEL_ID, KNOWN_MODELS, TINY, ModelSpec, check_clip_size
from .presets import PRESETS, Preset, get_preset

GIB = 1024**3
GB = 1e9
PHASES = ("encode prompts/images", "VAE encode", "training step", "denoising step", "VAE decode")
SPEED_LORA_RANK = 64  # the default speed LoRA (lightx2v rank-64), added from the shapes when a preset stacks one
_STREAMED_AT_ONCE = 2  # a swapped block in use + the next one prefetched (offload.BlockStreamer)
_aten = torch.ops.aten


@dataclass
class Phase:
    """One phase of an edit. Bytes are peaks while the phase runs (everything then on the GPU / in host
    memory, including weights); flops are per call (per optimiser step, per denoising step with CFG)."""

    name: str
    peak_gpu_bytes: int
    peak_host_bytes: int
    flops: int

    @property
    def peak_gpu_gib(self) -> float:
        return self.peak_gpu_bytes / GIB

    @property
    def peak_host_gib(self) -> float:
        return self.peak_host_bytes / GIB

    def time_floor_s(self, card: Card) -> float:
        return self.flops / (card.bf16_tflops * 1e12)


@dataclass
class Plan:
    """The dry run's figures for one model, settings, frame count and size (see `estimate`)."""

    model: str
    preset: Preset
    num_frames: int
    width: int
    height: int
    attention: str
    phases: dict[str, Phase]
    checks: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def peak_gpu_bytes(self) -> int:
        return max(p.peak_gpu_bytes for p in self.phases.values())

    @property
    def peak_gpu_gib(self) -> float:
        return self.peak_gpu_bytes / GIB

    @property
    def peak_host_gib(self) -> float:
        return max(p.peak_host_bytes for p in self.phases.values()) / GIB

    @property
    def train_step_flops(self) -> int:
        phase = self.phases.get("training step")
        return phase.flops if phase else 0

    def fits(self, memory_gb: float) -> bool:
        """True when the largest phase fits a card of `memory_gb` decimal GB (as cards are sold)."""
        return self.peak_gpu_bytes <= memory_gb * GB

    def summary(self, memory_gb: float | None = None) -> str:
        """"needs ≈ 19.8 GB of GPU memory; fits your 24 GB card" (GB as cards are sold)."""
        text = f"needs ≈ {self.peak_gpu_bytes / GB:.1f} GB of GPU memory"
        if memory_gb is None:
            return text
        verdict = "fits" if self.fits(memory_gb) else "does not fit"
        return f"{text}; {verdict} your {memory_gb:g} GB card"

    def time_floor_s(self, card: Card, train_steps: int | None = None, generation_steps: int | None = None) -> float:
        """Seconds of the whole edit at the card's peak: encodes + steps + decode (a floor, not a forecast). The
        denoising steps count only the transformer evaluations the preset's step cache runs in full
        (`denoising_steps_run`)."""
        train_steps = self.preset.train_steps if train_steps is None else train_steps
        generation_steps = self.preset.generation_steps if generation_steps is None else generation_steps
        counts = {"training step": train_steps, "denoising step": self.denoising_steps_run(generation_steps)}
        return sum(p.time_floor_s(card) * counts.get(p.name, 1) for p in self.phases.values())

    def denoising_steps_run(self, generation_steps: int | None = None) -> float:
        """Denoising steps whose transformer evaluations run in full: all of them without a step cache, fewer with
        the preset's (`step_cache.full_share`: exact for MagCache, assumed for TeaCache)."""
        from .step_cache import full_share, model_key

        steps = self.preset.generation_steps if generation_steps is None else generation_steps
        share, _ = full_share(self.preset.step_cache, steps, self.preset.step_cache_threshold, model_key(self.model))
        return steps * share

    def to_dict(self, card: Card | None = None, memory_gb: float | None = None) -> dict:
        data = {
            "model": self.model, "preset": self.preset.name, "frames": self.num_frames,
            "size": f"{self.width}x{self.height}", "attention": self.attention,
            "peak_gpu_gib": round(self.peak_gpu_gib, 3), "peak_host_gib": round(self.peak_host_gib, 3),
            "train_step_flops": self.train_step_flops,
            "phases": {name: round(p.peak_gpu_gib, 3) for name, p in self.phases.items()},
            "phase_details": {name: {"peak_gpu_gib": round(p.peak_gpu_gib, 3), "peak_host_gib": round(p.peak_host_gib, 3),
                                     "flops": p.flops} for name, p in self.phases.items()},
            "settings": self.preset.to_dict(), "checks": self.checks, "notes": self.notes,
        }
        if card is not None:
            data["gpu"] = card.name
            data["time_floor_s"] = {name: round(p.time_floor_s(card), 3) for name, p in self.phases.items()}
            data["edit_time_floor_s"] = round(self.time_floor_s(card), 1)
        if memory_gb is not None:
            data["gpu_memory_gb"] = memory_gb
            data["fits"] = self.fits(memory_gb)
        return data

    def table(self, card: Card) -> str:
        """One line per phase: peak GPU and host memory (decimal GB, as cards are sold), FLOPs, time floor on
        `card`."""
        lines = [f"{'phase':<22} {'GPU GB':>8} {'host GB':>9} {'TFLOP':>9} {'floor s':>8}"]
        for p in self.phases.values():
            lines.append(f"{p.name:<22} {p.peak_gpu_bytes / GB:>8.2f} {p.peak_host_bytes / GB:>9.2f} "
                         f"{p.flops / 1e12:>9.1f} {p.time_floor_s(card):>8.2f}")
        return "\n".join(lines)

    @property
    def peak_host_bytes(self) -> int:
        return max(p.peak_host_bytes for p in self.phases.values())


# ----- the two modes


class DeviceMismatch(MaskEditError):
    """An op mixed GPU and host tensors: a GPU run would fail there."""


_MOVES = {_aten._to_copy.default, _aten.copy_.default, _aten.set_.source_Tensor, _aten.detach.default,
          _aten.alias.default, _aten.set_.source_Storage_storage_offset}


def _tensors(args, kwargs):
    """The tensors among an op's arguments (ops take tensors directly or in one list)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


class _Accounting(TorchDispatchMode):
    """Live and peak bytes of the GPU (meta) and host pools, per phase, and FLOPs per phase."""

    def __init__(self):
        super().__init__()
        self.live = {"gpu": 0, "host": 0}
        self.phase: str | None = None
        self.peaks: dict[str, dict[str, int]] = {}
        self.flops: dict[str, int] = {}
        self._storages: dict[int, tuple] = {}  # id(storage) → (weakref, bytes, pool)
        self._pool: str | None = None
        self._watchers: list[dict] = []

    @contextlib.contextmanager
    def pool(self, name: str):
        """New storages made inside go to pool `name` ("gpu" or "host")."""
        previous, self._pool = self._pool, name
        try:
            yield
        finally:
            self._pool = previous

    @contextlib.contextmanager
    def in_phase(self, name: str):
        previous, self.phase = self.phase, name
        self._bump()
        try:
            yield
        finally:
            self.phase = previous

    @contextlib.contextmanager
    def watch(self):
        """Yields a dict that holds the largest live bytes per pool while the block runs."""
        peak = dict(self.live)
        self._watchers.append(peak)
        try:
            yield peak
        finally:
            self._watchers.remove(peak)

    def reserve(self, increment: dict) -> None:
        """Count a transient `increment` above what is live now into the phase's peak (a replayed call)."""
        if self.phase is None:
            return
        peak = self.peaks.setdefault(self.phase, {"gpu": 0, "host": 0})
        for pool, value in increment.items():
            peak[pool] = max(peak[pool], self.live[pool] + value)

    def pool_of(self, tensor: torch.Tensor) -> str:
        entry = self._storages.get(id(tensor.untyped_storage()))
        if entry is not None and entry[0]() is not None:
            return entry[2]
        return "gpu" if tensor.device.type == "meta" else "host"

    def track(self, tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type not in ("meta", "cpu"):
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        entry = self._storages.get(key)
        if entry is not None and entry[0]() is storage:
            return
        pool = self._pool or ("gpu" if tensor.device.type == "meta" else "host")
        size = storage.nbytes()

        def freed(_, key=key, size=size, pool=pool):
            self._storages.pop(key, None)
            self.live[pool] -= size

        self._storages[key] = (weakref.ref(storage, freed), size, pool)
        self.live[pool] += size
        self._bump()

    def _bump(self) -> None:
        for watcher in self._watchers:
            for pool, value in self.live.items():
                watcher[pool] = max(watcher[pool], value)
        if self.phase is None:
            return
        peak = self.peaks.setdefault(self.phase, {"gpu": 0, "host": 0})
        for pool, value in self.live.items():
            peak[pool] = max(peak[pool], value)

    def _check_devices(self, func, args, kwargs) -> None:
        if func in _MOVES or (not kwargs and (not args or (len(args) == 1 and isinstance(args[0], torch.Tensor)))):
            return
        pools = set()
        for tensor in _tensors(args, kwargs):
            if tensor.device.type == "meta":
                pools.add(self.pool_of(tensor))
        if len(pools) > 1:
            shapes = [(tuple(t.shape), t.dtype, self.pool_of(t)) for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)]
            raise DeviceMismatch(f"{func} mixes tensors on the GPU and in host memory: {shapes}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and first.device.type == "meta":
            if func is _aten._local_scalar_dense.default:  # .item(): no value on meta
                return False if first.dtype == torch.bool else (0.0 if first.dtype.is_floating_point else 0)
            if func is _aten.nonzero.default:  # data-dependent: answered as "the first element"
                out = torch.zeros((1, first.dim()), dtype=torch.long, device="meta")
                self.track(out)
                return out
        self._check_devices(func, args, kwargs)
        if func is _aten._to_copy.default and first is not None and first.device.type == "meta":
            return self._copy(func, first, args, kwargs)
        key = _meta_key(func, args, kwargs)
        cached = _META_RESULTS.get(key) if key is not None else None
        if cached is _IN_PLACE:  # an in-place op already checked on these shapes: meta has no data to change
            return args[0] if func._schema.returns else None
        if cached is not None:
            flops, spec, leaves = cached
            out = tree_unflatten([_fresh(leaf) for leaf in leaves], spec)
        elif key is not None and _op_kind(func) == "in-place":
            before = _layout(args)
            out = func(*args, **kwargs)
            returns_nothing = not func._schema.returns  # foreach ops; the others return their first argument
            if _layout(args) == before and ((out is None or out == []) if returns_nothing else out is args[0]):
                _META_RESULTS[key] = _IN_PLACE
            flops = 0
        else:
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
            if key is not None:
                _remember(key, flops, out, args, kwargs)
        if flops and self.phase is not None:
            self.flops[self.phase] = self.flops.get(self.phase, 0) + flops
        if isinstance(out, torch.Tensor):
            self.track(out)
        else:
            for tensor in tree_flatten(out)[0]:
                self.track(tensor)
        return out

    def _copy(self, func, tensor, args, kwargs):
        """`.to("cpu")` of a meta tensor → a meta copy in the host pool; `.to(meta)` (a copy) → the GPU pool;
        a dtype change alone stays in its pool."""
        device = kwargs.get("device")
        pool = self.pool_of(tensor) if device is None else ("host" if device.type == "cpu" else "gpu")
        with self.pool(pool):
            out = func(*args, **{**kwargs, "device": torch.device("meta")})
            self.track(out)
        return out


# ----- memoised meta kernels

_META_RESULTS: dict = {}
"""(op, input metadata) → (flops, output tree spec, output leaf metadata). A meta kernel's result is a pure
function of its inputs' shapes, strides and dtypes, and the 40 blocks of a transformer issue the same ops
on the same shapes: running torch's (mostly Python) meta kernels once per distinct call instead of once
per call is most of the dry run's speed. Only functional ops (no mutation, no aliasing output) on meta
inputs are remembered; every call is still dispatched, checked and accounted here."""
_MEMO = True  # False runs every meta kernel (the test that the memo changes no figure sets it)
_IN_PLACE = object()  # the memo of an in-place op: it ran once on these shapes and changed no metadata
_KINDS: dict = {}


def _op_kind(func) -> str | None:
    """"functional" (fresh outputs), "in-place" (mutates its first argument and returns it, or returns
    nothing; no flops counted: optimiser and copy updates), or None (views, out= variants, the rest)."""
    if func in _KINDS:
        return _KINDS[func]
    schema, kind = func._schema, None
    if func in (_aten._local_scalar_dense.default, _aten.nonzero.default, _aten._to_copy.default) \
            or func._overloadpacket in (_aten.set_, _aten.resize_, _aten.as_strided_):
        kind = None
    elif not schema.is_mutable and all(r.alias_info is None for r in schema.returns):
        kind = "functional"
    elif schema.is_mutable and schema.arguments and schema.arguments[0].alias_info is not None \
            and schema.arguments[0].alias_info.is_write and not any(a.kwarg_only and a.alias_info is not None
                                                                     for a in schema.arguments) \
            and (not schema.returns or (len(schema.returns) == 1 and schema.returns[0].alias_info is not None)) \
            and flop_registry.get(func._overloadpacket) is None:
        kind = "in-place"
    _KINDS[func] = kind
    return kind


def _layout(args) -> list:
    return [(t.dtype, tuple(t.shape), t.stride(), t.storage_offset()) for t in _tensors(args, {})]


class _Uncacheable(Exception):
    pass


def _key_of(value):
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise _Uncacheable  # a host tensor's values can decide the result
        return (value.dtype, tuple(value.shape), value.stride(), value.storage_offset())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_key_of(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.memory_format,
                                           torch.layout)):
        return (type(value).__name__, value)
    raise _Uncacheable


def _meta_key(func, args, kwargs):
    """A hashable key of an op's call on meta tensors, or None when the call is not remembered."""
    if not _MEMO or _op_kind(func) is None:
        return None
    try:
        return (func, _key_of(args), tuple((name, _key_of(v)) for name, v in sorted(kwargs.items())))
    except _Uncacheable:
        return None


def _remember(key, flops: int, out, args, kwargs) -> None:
    leaves, spec = tree_flatten(out)
    inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
    seen, metas = set(), []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            storage = leaf.untyped_storage()
            simple = leaf.device.type == "meta" and leaf.storage_offset() == 0 and not leaf.is_conj() \
                and not leaf.is_neg() and storage.nbytes() == _strided_nbytes(leaf.shape, leaf.stride(), leaf.dtype)
            if not simple or id(storage) in inputs or id(storage) in seen:
                return  # an unusual output (a view into a larger buffer, aliasing): always run this op
            seen.add(id(storage))
            metas.append((tuple(leaf.shape), leaf.stride(), leaf.dtype))
        elif leaf is None or isinstance(leaf, (bool, int, float)):
            metas.append(("value", leaf))
        else:
            return
    _META_RESULTS[key] = (flops, spec, metas)


def _strided_nbytes(shape, stride, dtype) -> int:
    if any(size == 0 for size in shape):
        return 0
    span = 1 + sum((size - 1) * step for size, step in zip(shape, stride))
    return span * dtype.itemsize


def _fresh(meta):
    if meta[0] == "value":
        return meta[1]
    shape, stride, dtype = meta
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")


class _FlashAttention(torch.autograd.Function):
    """SDPA as the flash kernel runs it: saves q, k, v, out and the float32 log-sum-exp (B, H, L); the
    backward returns dq, dk, dv. On meta tensors only shapes, dtypes and allocations are real."""

    @staticmethod
    def forward(ctx, query, key, value, scale):
        out, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = _aten._scaled_dot_product_flash_attention(
            query, key, value, 0.0, False, False, scale=scale)
        ctx.save_for_backward(query, key, value, out, lse, seed, offset)
        ctx.extra = (cum_q, cum_k, max_q, max_k, scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, out, lse, seed, offset = ctx.saved_tensors
        cum_q, cum_k, max_q, max_k, scale = ctx.extra
        dq, dk, dv = _aten._scaled_dot_product_flash_attention_backward(
            grad, query, key, value, out, lse, cum_q, cum_k, max_q, max_k, 0.0, False, seed, offset, scale=scale)
        return dq, dk, dv, None


@contextlib.contextmanager
def _attention_backend(attention: str):
    """Route SDPA on meta tensors as `attention` runs on a GPU: "flash" → `_FlashAttention`; "math" → as is.
    (A patch of `torch.nn.functional.scaled_dot_product_attention`, which diffusers looks up per call, rather
    than a TorchFunctionMode: function modes are not active inside backward, where checkpointed blocks rerun.)"""
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attention == "flash" and query.device.type == "meta" and attn_mask is None and not dropout_p \
                and not is_causal and not enable_gqa:
            return _FlashAttention.apply(query, key, value, scale)
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                        enable_gqa=enable_gqa)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


# ----- building the real model on the meta device


def _cast_like_from_pretrained(model, dtype: torch.dtype) -> None:
    """`from_pretrained(torch_dtype=…)`'s casting: floating parameters to `dtype` except the modules the
    class keeps in float32 (`_keep_in_fp32_modules`: Wan's rope, time embedder, norms, modulation table)."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        if param.dtype.is_floating_point and not any(part in keep for part in name.split(".")):
            param.data = param.data.to(dtype)


@contextlib.contextmanager
def _skip_init():
    """Parameter initialisers do nothing while the meta model is built (there are no values to draw)."""
    names = ("uniform_", "normal_", "zeros_", "ones_", "constant_", "kaiming_uniform_", "kaiming_normal_",
             "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_")
    saved = {name: getattr(torch.nn.init, name) for name in names if hasattr(torch.nn.init, name)}
    methods = {name: getattr(torch.Tensor, name) for name in ("uniform_", "normal_", "zero_", "fill_")}
    for name in saved:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    for name in methods:
        setattr(torch.Tensor, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)
        for name, function in methods.items():
            setattr(torch.Tensor, name, function)


def build_meta_pipeline(spec: ModelSpec, text_dtype=torch.bfloat16, transformer_dtype=torch.bfloat16):
    """A `MaskEditPipeline` of `spec`'s real configs on the meta device (no weights), dtypes as
    `models.load_pipeline` loads them on a GPU: transformer(s) and umT5 bf16, VAE and CLIP float32. A
    two-expert spec (Wan2.2-A14B) gets `transformer_2` and its `boundary_ratio`, and no CLIP."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from .loading import tiny_tokenizer
    from ..method.pipeline import MaskEditPipeline
    from ..runtime import quiet_transformers

    with torch.device("meta"), quiet_transformers(), _skip_init():
        transformer = WanTransformer3DModel(**spec.transformer).eval()
        _cast_like_from_pretrained(transformer, transformer_dtype)
        transformer_2 = None
        if spec.transformer_2 is not None:
            transformer_2 = WanTransformer3DModel(**spec.transformer_2).eval()
            _cast_like_from_pretrained(transformer_2, transformer_dtype)
        text_encoder = UMT5EncoderModel(UMT5Config(**spec.text_encoder)).eval().to(text_dtype)
        image_encoder = None
        if spec.image_encoder is not None:
            image_encoder = CLIPVisionModel(CLIPVisionConfig(**spec.image_encoder)).eval()
        vae = AutoencoderKLWan(**spec.vae).eval()
    size = spec.image_encoder["image_size"] if spec.image_encoder else 224
    with quiet_transformers():
        image_processor = CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = MaskEditPipeline(
        tokenizer=tiny_tokenizer(),  # token ids only: the prompt is padded to 512 tokens either way
        text_encoder=text_encoder, vae=vae, scheduler=scheduler, image_processor=image_processor,
        image_encoder=image_encoder, transformer=transformer, transformer_2=transformer_2,
        boundary_ratio=spec.boundary_ratio,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_spec(model: str) -> ModelSpec:
    """The configs to plan `model`: a known hub id (written in code, offline) or a local diffusers folder
    (its components' config.json files; no weights are read)."""
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    known = ", ".join(KNOWN_MODELS)
    if model == TINY:
        raise MaskEditError(f"the tiny model needs no plan (it runs anywhere); plan one of: {known}")
    if os.path.isdir(str(model)):
        return spec_from_folder(model)
    raise MaskEditError(f"no built-in config for {model!r}; the planner knows: {known}, or give a local "
                        "diffusers folder")


def _config(folder: str, component: str, required: bool = True) -> dict | None:
    path = os.path.join(folder, component, "config.json")
    if not os.path.isfile(path):
        if required:
            raise MaskEditError(f"{folder} has no {component}/config.json: not a diffusers Wan folder")
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise MaskEditError(f"{path} could not be read as JSON ({error})") from None


def _init_arguments(config: dict, cls) -> dict:
    """The config's entries that `cls.__init__` takes (drops `_class_name`, `_diffusers_version`, …)."""
    accepted = set(inspect.signature(cls.__init__).parameters)
    return {key: value for key, value in config.items() if key in accepted}


def spec_from_folder(folder: str) -> ModelSpec:
    """A `ModelSpec` from a local diffusers Wan I2V folder's config files (transformer, optional
    transformer_2, text_encoder, optional image_encoder, vae; `boundary_ratio` from model_index.json)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    folder = str(folder)
    transformer = _init_arguments(_config(folder, "transformer"), WanTransformer3DModel)
    second = _config(folder, "transformer_2", required=False)
    index_path = os.path.join(folder, "model_index.json")
    boundary = None
    if second is not None and os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as handle:
            boundary = json.load(handle).get("boundary_ratio")
    text = {k: v for k, v in _config(folder, "text_encoder").items() if not k.startswith("_")}
    image = _config(folder, "image_encoder", required=False)
    image = None if image is None else {k: v for k, v in image.items() if not k.startswith("_")}
    vae = _init_arguments(_config(folder, "vae"), AutoencoderKLWan)
    return ModelSpec(folder, transformer, vae, text, image, (832, 480),
                     transformer_2=None if second is None else _init_arguments(second, WanTransformer3DModel),
                     boundary_ratio=boundary)


# ----- the dry run


def _synthetic_clip(num_frames: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (F, H, W, 3) uint8 and a box region (F, H, W) bool covering the middle of each frame."""
    frames = np.full((num_frames, height, width, 3), 127, np.uint8)
    region = np.zeros((num_frames, height, width), bool)
    region[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    return frames, region


def _phase_hooks(pipe, accounting: _Accounting, generation: bool) -> list:
    """Name the phase from the component that runs: encoders → encode, VAE encode/decode, transformer."""
    handles = []

    def enter(name):
        def hook(module, args, kwargs=None):
            accounting.phase = name
            accounting._bump()

        return hook

    for module_name in ("text_encoder", "image_encoder"):
        module = getattr(pipe, module_name, None)
        if module is not None:
            handles.append(module.register_forward_pre_hook(enter("encode prompts/images")))
    for transformer in _transformers(pipe):
        handles.append(transformer.register_forward_pre_hook(enter("denoising step" if generation else "training step")))
    return handles


_VAE_RUNS: dict = {}  # (call, config, input shape/dtype, tiling) → (peak increment per pool, flops, output maker)


def _shapes_of(out):
    """A VAE call's output as nested (shape, dtype) descriptions (holding no tensor)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    if isinstance(out, tuple):
        return ("tuple", [_shapes_of(item) for item in out])
    if isinstance(out, torch.Tensor):
        return ("tensor", (tuple(out.shape), out.dtype))
    if isinstance(out, DiagonalGaussianDistribution):
        return ("gaussian", _shapes_of(out.parameters))
    return ("output", type(out), {key: _shapes_of(value) for key, value in out.items()})


def _rebuild(description):
    """Fresh meta tensors in the structure `_shapes_of` described."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    kind = description[0]
    if kind == "tuple":
        return tuple(_rebuild(item) for item in description[1])
    if kind == "tensor":
        shape, dtype = description[1]
        return torch.empty(shape, dtype=dtype, device="meta")
    if kind == "gaussian":
        return DiagonalGaussianDistribution(_rebuild(description[1]))
    return description[1](**{key: _rebuild(value) for key, value in description[2].items()})


@contextlib.contextmanager
def _vae_phases(vae, accounting: _Accounting):
    """VAE encode/decode in their phases. A call is executed once per distinct input shape, dtype, config and
    tiling (per process); a repeat replays what the first one did — its peak above the memory live when it
    started, its FLOPs and a fresh output — since a VAE call's footprint depends on nothing else."""
    encode, decode = vae.encode, vae.decode

    def phased(method, name):
        def run(x, *args, **kwargs):
            key = (name, repr(sorted(vae.config.items())), tuple(x.shape), x.dtype, vae.use_tiling,
                   getattr(vae, "tile_sample_min_height", None), getattr(vae, "tile_sample_min_width", None),
                   args, tuple(sorted(kwargs.items())),
                   next(vae.parameters()).numel() == 0)  # weights offloaded: the call brings them (EncoderOffload)
            with accounting.in_phase(name):
                if key in _VAE_RUNS:
                    increment, flops, template = _VAE_RUNS[key]
                    accounting.reserve(increment)
                    accounting.flops[name] = accounting.flops.get(name, 0) + flops
                    return _rebuild(template)
                before, flops_before = dict(accounting.live), accounting.flops.get(name, 0)
                with accounting.watch() as peak:
                    out = method(x, *args, **kwargs)
                increment = {pool: peak[pool] - before[pool] for pool in before}
                _VAE_RUNS[key] = (increment, accounting.flops.get(name, 0) - flops_before, _shapes_of(out))
                return out

        return run

    vae.encode, vae.decode = phased(encode, "VAE encode"), phased(decode, "VAE decode")
    try:
        yield
    finally:
        del vae.encode, vae.decode  # back to the class's methods


def _lora_targets(transformer) -> tuple[list[str], list[str]]:
    """(block layers wrapped with the edit adapter, block Linear layers left without it)."""
    from ..method.lora import ADAPTER_NAME

    with_lora, without = [], []
    for name, module in transformer.named_modules():
        if not name.startswith("blocks.") or ".lora_" in name or name.endswith(".base_layer"):
            continue
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            if ADAPTER_NAME in module.lora_A:
                with_lora.append(name)
            else:
                without.append(name)
        elif isinstance(module, torch.nn.Linear):
            without.append(name)
    return with_lora, without


def _dtype_checks(transformer, streamer, fp8: bool) -> dict:
    """Base weights bf16 (float32 only where diffusers keeps modules in float32), fp8 stores where asked.
    Returns {"base_parameter_dtypes": {dtype: elements}, "streamed_store_dtypes": {dtype: stores}}."""
    from ..memory.offload import FP8_DTYPE, is_lora_name

    keep = tuple(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    base = {}
    for name, param in transformer.named_parameters():
        if is_lora_name(name):
            if param.dtype != torch.float32:
                raise MaskEditError(f"LoRA parameter {name} is {param.dtype}, not float32")
            continue
        expected = torch.float32 if any(part in keep for part in name.split(".")) else torch.bfloat16
        if param.dtype != expected:
            raise MaskEditError(f"base parameter {name} is {param.dtype}, expected {expected}")
        base[str(param.dtype)] = base.get(str(param.dtype), 0) + param.numel()  # elements, not tensors
    stores = {}
    if streamer is not None:
        for entries in streamer._managed.values():
            for entry in entries:
                stores[str(entry.store.dtype)] = stores.get(str(entry.store.dtype), 0) + 1
        if fp8 and str(FP8_DTYPE) not in stores:
            raise MaskEditError("fp8 was asked for but no block weight is stored in fp8")
        if not fp8 and str(FP8_DTYPE) in stores:
            raise MaskEditError("block weights are stored in fp8 though fp8 is off")
    return {"base_parameter_dtypes": base, "streamed_store_dtypes": stores}


def _run_training(pipe, accounting, preset: Preset, frames, region, stage2: bool, checks: dict, notes: list,
                  then_generate: bool = True) -> None:
    from ..method.conditioning import stage2_sample
    from ..method.lora import ADAPTER_NAME
    from ..method.training import EncodedSample, LoraTrainer, TrainItem, clip_items, encode_samples, release_encoders

    prompt = "p3rs0n, a scene"
    items = clip_items(frames, region, prompt, preset.window, preset.window_stride)
    distinct = items[:1] + ([TrainItem(stage2_sample(frames[-1], frames[-1], region[-1], prompt), 9)] if stage2 else [])
    with _vae_phases(pipe.vae, accounting):
        handles = _phase_hooks(pipe, accounting, generation=False)
        try:
            encoded = encode_samples(pipe, distinct, torch.device("meta"))
        finally:
            for handle in handles:
                handle.remove()
    with accounting.in_phase("VAE encode"):  # the other windows' cached tensors, like the first one's
        for _ in items[1:]:
            first = encoded[0]
            encoded.append(EncodedSample(first.latents.clone(), first.condition.clone(), first.prompt_embeds.clone(),
                                         None if first.image_embeds is None else first.image_embeds.clone()))
    if len(items) > 1:
        notes.append(f"{len(items)} training windows: the first is encoded, the others' cached tensors allocated alike")
    release_encoders(pipe)
    two_experts = getattr(pipe, "transformer_2", None) is not None
    runner = None
    with torch.device("meta"):  # LoRA factors made where they end up (peft makes them on the CPU, then moves them)
        if two_experts:  # one LoRA per expert, trained in turn, the inactive expert's weights offloaded
            from ..method.experts import EXPERTS, TwoExpertTrainer

            runner = TwoExpertTrainer(pipe, None, preset.train_config(steps=2, checkpoint_every=0),
                                      device=torch.device("meta"), encoded=encoded[:1])
            trainers = [(expert, runner.trainers[expert]) for expert in EXPERTS]
        else:
            config = preset.train_config(steps=4, checkpoint_every=0)
            trainers = [(None, LoraTrainer(pipe, None, config, device=torch.device("meta"), encoded=encoded[:1]))]
    for _, trainer in trainers:
        for group in trainer.optimizer.param_groups:
            group["foreach"] = True  # what AdamW picks on CUDA (the CPU default is a per-tensor loop)
    step_flops = 0
    if runner is not None:  # the first expert alone on the GPU before its first step (both sat there to encode)
        runner.make_resident(trainers[0][0])
    with accounting.in_phase("training step"):
        for index, (expert, trainer) in enumerate(trainers):
            if runner is not None:
                runner.make_resident(expert)
            # the step measured runs in steady state, with AdamW's state alive: a stage-2 step (one latent
            # frame) creates it, or, without stage 2, one optimiser step on zero gradients (no forward/backward)
            if stage2 and index == 0:
                trainer.samples = [encoded[1]]
                trainer.train_step()
            else:
                for param in trainer.params:
                    param.grad = torch.zeros_like(param)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)
            trainer.samples = [encoded[0]]
            before = accounting.flops.get("training step", 0)
            trainer.train_step()
            step_flops = max(step_flops, accounting.flops["training step"] - before)
    accounting.flops["training step"] = step_flops
    for _, trainer in trainers:
        _check_trained_transformer(trainer, preset, checks)
        trainer.optimizer.state.clear()  # the edit ends training before it generates: AdamW state and grads go
        for param in trainer.params:
            param.grad = None
    if runner is not None:
        notes.append("two experts: each trains its own LoRA in turn (one step each measured); the training "
                     "step's peak is the larger expert's, its FLOPs one expert's step")
    if runner is not None and then_generate:
        with accounting.in_phase("denoising step"):  # as its run() ends: both experts back for generation
            runner.restore_placement()
    del trainers, trainer, runner


def _check_trained_transformer(trainer, preset: Preset, checks: dict) -> None:
    """LoRA placement and size (METHOD.md §4), dtypes, streaming of one trained transformer; figures are
    added up over the experts of a two-expert model."""
    from ..method.lora import ADAPTER_NAME

    transformer = trainer.transformer
    streamer = trainer.memory.streamer if trainer.memory is not None else None
    lora_numel = sum(p.numel() for p in trainer.params)
    trainable = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    with_lora, without = _lora_targets(transformer)
    expected = 0
    for name in with_lora:
        module = transformer.get_submodule(name).base_layer
        expected += preset.rank * (module.in_features + module.out_features)
    if trainable != lora_numel or lora_numel != expected:
        raise MaskEditError(f"trainable parameters {trainable}, LoRA {lora_numel}, expected {expected}")
    unexpected = [n for n in without if not n.split(".")[-1] in ("add_k_proj", "add_v_proj")]
    if unexpected or any(n.split(".")[-1] in ("add_k_proj", "add_v_proj") for n in with_lora):
        raise MaskEditError(f"LoRA placement differs from METHOD.md §4: without {unexpected[:3]}")
    dtypes = _dtype_checks(transformer, streamer, preset.fp8)
    for key, counts in dtypes.items():
        merged = checks.setdefault(key, {})
        for dtype, count in counts.items():
            merged[dtype] = merged.get(dtype, 0) + count
    checks["trainable_parameters"] = checks.get("trainable_parameters", 0) + trainable
    checks["lora_layers"] = checks.get("lora_layers", 0) + len(with_lora)
    checks.update(lora_adapter=ADAPTER_NAME, gradient_checkpointing=bool(transformer.is_gradient_checkpointing))
    if streamer is not None:
        held = streamer.stats["max_materialised"]
        if preset.blocks_to_swap and held > _STREAMED_AT_ONCE:
            raise MaskEditError(f"the block streamer held {held} streamed blocks at once (at most {_STREAMED_AT_ONCE})")
        checks["streamed_blocks_held_at_most"] = max(checks.get("streamed_blocks_held_at_most", 0), held)
        checks["blocks_swapped"] = streamer.blocks_to_swap
        checks["host_store_bytes"] = checks.get("host_store_bytes", 0) + streamer.stats["host_bytes"]


def _speed_lora_numels(pipe, rank: int) -> list[int]:
    """Elements of each rank-`rank` LoRA factor pair a speed LoRA puts on the transformers' targeted linears."""
    from ..method.lora import LORA_TARGET_MODULES
    import re

    pattern = re.compile(LORA_TARGET_MODULES)
    numels = []
    for transformer in _transformers(pipe):
        for name, module in transformer.named_modules():
            base = getattr(module, "base_layer", module)
            if isinstance(base, torch.nn.Linear) and pattern.fullmatch(name):
                numels.append(rank * (base.in_features + base.out_features))
    return numels


def _speed_lora_nbytes(pipe, rank: int) -> int:
    """Bytes of a stacked speed LoRA's bf16 factors (from the shapes)."""
    return sum(_speed_lora_numels(pipe, rank)) * torch.bfloat16.itemsize


def _add_speed_lora_bytes(pipe, accounting, rank: int) -> list:
    """A stacked speed LoRA's bf16 factors on the GPU (allocated from the shapes; the file is not read)."""
    return [torch.empty(numel, dtype=torch.bfloat16, device="meta") for numel in _speed_lora_numels(pipe, rank)]


def _transformers(pipe) -> list:
    """The pipeline's transformer, and a two-expert model's low-noise expert."""
    return [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]


def _run_generation(pipe, accounting, preset: Preset, frames, region, notes: list) -> None:
    from ..method.conditioning import inference_condition
    from ..method.lora import ADAPTER_NAME, add_lora
    from ..memory.offload import move_module

    for name in ("vae", "text_encoder", "image_encoder"):  # back beside the transformer, as editing does
        module = getattr(pipe, name, None)
        if module is not None:
            move_module(module, "meta")
    for transformer in _transformers(pipe):
        if ADAPTER_NAME not in (getattr(transformer, "peft_config", None) or {}):
            with torch.device("meta"):
                add_lora(transformer, preset.rank, preset.alpha)  # a LoRA loaded for generation
    speed = _add_speed_lora_bytes(pipe, accounting, SPEED_LORA_RANK) if preset.speed_lora else []
    if speed:
        notes.append(f"speed LoRA: its rank-{SPEED_LORA_RANK} bf16 factors are allocated from the shapes (not loaded)")
    sample = inference_condition(frames, region, frames[0], "p3rs0n, a scene")
    with torch.no_grad(), _vae_phases(pipe.vae, accounting):
        handles = _phase_hooks(pipe, accounting, generation=True)
        try:
            latents = pipe(prompt=sample.prompt, negative_prompt="blurry", condition_video=sample.condition_video,
                           condition_mask=sample.keep_mask, num_inference_steps=1, guidance_scale=preset.guidance_scale,
                           generator=torch.Generator().manual_seed(0), output_type="latent").frames
        finally:
            for handle in handles:
                handle.remove()
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        pipe.vae.decode(latents / (1.0 / std) + mean, return_dict=False)  # as the parent pipeline decodes
    del speed


def estimate(preset: str | Preset = "full", num_frames: int | None = None, size: tuple[int, int] | None = None,
             model: str = DEFAULT_MODEL_ID, attention: str = "flash", train: bool = True, generate: bool = True,
             stage2: bool = True, **overrides) -> Plan:
    """The dry run of one edit at real size (see the module docstring) → a `Plan`.

    preset: a name or a `Preset`; overrides: preset fields (`blocks_to_swap=16`, `fp8=True`, `window=9`, …).
    num_frames / size (width, height): default to the preset's. attention: "flash" (SDPA on a GPU in bf16)
    or "math". train / generate: which phases to run; stage2: include a stage-2 sample in training.
    Raises MaskEditError for unknown models, settings the preset refuses, sizes the model cannot serve,
    and for any shape/dtype/device mismatch or wrong LoRA/streaming the dry run finds.
    """
    if attention not in ATTENTION_BACKENDS:
        raise MaskEditError(f"attention must be one of {ATTENTION_BACKENDS}, got {attention!r}")
    spec = model_spec(model)
    base = get_preset(preset) if isinstance(preset, str) else preset
    if isinstance(preset, str):  # sizes as the app and CLI adapt them to the base (a 720P base: 1280x720)
        from .bases import adapt_preset, base_for_name

        base = adapt_preset(base, base_for_name(model))
    changes = dict(overrides)
    if num_frames is not None:
        changes["num_frames"] = num_frames
    if size is not None:
        changes["width"], changes["height"] = size
    if changes.get("window") and changes["window"] > changes.get("num_frames", base.num_frames):
        changes["window"] = 0
    if base.window and base.window > changes.get("num_frames", base.num_frames) and "window" not in overrides:
        changes["window"] = 0  # a clip no longer than the window trains whole
    settings = base.with_overrides(**changes)
    width, height, frames_n = settings.width, settings.height, settings.num_frames
    check_clip_size(spec.transformer, frames_n, width, height)
    if settings.blocks_to_swap >= spec.transformer["num_layers"]:
        raise MaskEditError(f"blocks_to_swap must be below {spec.transformer['num_layers']}")

    accounting = _Accounting()
    checks: dict = {}
    notes: list[str] = []
    frames, region = _synthetic_clip(frames_n, width, height)
    collecting = gc.isenabled()
    gc.disable()  # the cyclic collector, not refcounts, was most of the time (frees are seen by refcount)
    try:
        with _attention_backend(attention), accounting:
            pipe = build_meta_pipeline(spec)
            from ..memory.offload import place_pipeline
            from .speed import enable_vae_tiling

            place_pipeline(pipe, "meta", settings.blocks_to_swap, settings.fp8, settings.offload_encoders)
            enable_vae_tiling(pipe, settings.vae_tiling)  # set at load time, for training's encodes too
            checks["resident_gpu_bytes"] = accounting.live["gpu"]  # placed, before any work (ZeroGPU: every call)
            checks["speed_lora_gpu_bytes"] = _speed_lora_nbytes(pipe, SPEED_LORA_RANK)  # a preview stacks one
            if train:
                _run_training(pipe, accounting, settings, frames, region, stage2, checks, notes, generate)
            if generate:
                _run_generation(pipe, accounting, settings, frames, region, notes)
            del pipe
    finally:
        if collecting:
            gc.enable()
    phases = {}
    for name in PHASES:
        if name in accounting.peaks:
            peak = accounting.peaks[name]
            phases[name] = Phase(name, peak["gpu"], peak["host"], accounting.flops.get(name, 0))
    if attention == "math":
        notes.append("attention: the math path, which materialises the attention matrix")
    return Plan(model, settings, frames_n, width, height, attention, phases, checks, notes)


# ----- choosing a preset


def cheapest_fitting_preset(memory_gb: float, num_frames: int | None = None, size: tuple[int, int] | None = None,
                            model: str = DEFAULT_MODEL_ID, plans: dict[str, Plan] | None = None) -> Plan | None:
    """The plan of the quickest preset whose peak fits `memory_gb` (decimal GB), trying full, 24gb, zerogpu,
    low-cost in that order; None when none fits. `plans` (name → Plan) reuses dry runs already made."""
    order = ("full", "24gb", "zerogpu", "low-cost")
    for name in order:
        if name not in PRESETS:
            continue
        plan = (plans or {}).get(name) or estimate(name, num_frames, size, model)
        if plan.fits(memory_gb):
            return plan
    return None


def check_cuda_fits(plan: Plan, device: int | str = 0, other: dict[str, Plan] | None = None) -> str | None:
    """With a CUDA GPU: None when `plan` fits the memory free now (`torch.cuda.mem_get_info`), else a warning
    that names the preset that would fit. Without CUDA: None."""
    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    free_gb = free / GB
    if plan.peak_gpu_bytes <= free:
        return None
    better = cheapest_fitting_preset(free_gb, plan.num_frames, (plan.width, plan.height), plan.model, other)
    advice = f"use the {better.preset.name} preset ({better.summary()})" if better else \
        "no preset fits: use fewer frames or a smaller size"
    return f"this run {plan.summary()} but {free_gb:.1f} GB are free on the GPU; {advice}"


# ----- any other model the app runs (segmentation, captioning) at real size


def dry_run(build, steps: dict, attention: str = "flash", dtype: torch.dtype | None = torch.bfloat16) -> dict[str, Phase]:
    """The planner's accounting for any model: `build()` makes it (run here on the meta device, parameter
    initialisers skipped, floating parameters and buffers cast to `dtype` as `from_pretrained(dtype=…)` does), then each
    `steps[name](model)` runs under no_grad in its own phase. Returns {name: Phase}: peak GPU bytes while the
    step runs (the weights included), peak host bytes and FLOPs (torch's FlopCounterMode formulas). SDPA is routed
    as `attention` runs on a GPU ("flash": no L x L matrix)."""
    if attention not in ATTENTION_BACKENDS:
        raise MaskEditError(f"attention must be one of {ATTENTION_BACKENDS}, got {attention!r}")
    accounting = _Accounting()
    with _attention_backend(attention), accounting:
        with torch.device("meta"), _skip_init():
            model = build()
            if dtype is not None:  # parameters and buffers, as transformers builds them under its default dtype
                _cast_like_from_pretrained(model, dtype)
                keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
                for name, buffer in model.named_buffers():
                    if buffer.dtype.is_floating_point and not any(part in keep for part in name.split(".")):
                        buffer.data = buffer.data.to(dtype)
        for name, step in steps.items():
            with accounting.in_phase(name), torch.no_grad():
                step(model)
        del model
    return {name: Phase(name, accounting.peaks.get(name, {}).get("gpu", 0), accounting.peaks.get(name, {}).get("host", 0),
                        accounting.flops.get(name, 0)) for name in steps}
