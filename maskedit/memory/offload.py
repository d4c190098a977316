"""Memory options of training and generation (METHOD.md §7): block swapping, fp8 base weights,
gradient checkpointing with activations offloaded to CPU, and the encoders in CPU memory while idle.

    streamer = BlockStreamer(pipe.transformer, "cuda", blocks_to_swap=38, fp8=True)   # after LoRAs are added
    pipe.transformer.enable_gradient_checkpointing(checkpoint_function(streamer, offload_activations=True))
    ...train or generate...
    streamer.remove()                                          # weights back as normal parameters

    place_pipeline(pipe, "cuda", blocks_to_swap=32, offload_encoders=True)   # a pipeline loaded on the CPU
    encoder_offload(pipe).describe()        # umT5, CLIP, VAE in CPU memory, on the GPU only while they run

How it works. Each transformer block's frozen weights have a *store*: pinned CPU memory for swapped
blocks (the last `blocks_to_swap` of them), the GPU for resident ones; Linear weights are stored in
float8 e4m3 with a per-row scale when `fp8` is on. Between uses a managed parameter holds an empty
placeholder; a forward pre-hook on the block *materialises* it (host-to-device copy and/or fp8 → bf16
on a side CUDA stream, prefetched one block ahead) and a post-hook drops it again. Only host-to-device
copies happen: the base is frozen, the stores are never written back. LoRA parameters are never managed
(they stay on the device in their own dtype).

Why not diffusers' group offloading for training: its hooks onload before a module's forward and
offload right after it, with no hook in backward; a backward that reads a weight itself (e.g. the RMS
norms' `x * weight`, saved as the parameter, not a copy) then finds it offloaded. On a CPU-only machine
that cannot show (onload and offload device are the same, so the "offload" is a no-op), which is why the
checks of REFERENCE.md pass on CPU. Here the placeholder is empty on every device, so a weight read
while dropped fails loudly on CPU too: the tests run real backward passes through it.

Backward. With gradient checkpointing (required for training with swapping or fp8: otherwise autograd
keeps every block's materialised weights alive until backward and nothing is saved) each block's forward
is re-run inside backward; the pre-hook sees it runs in backward (`torch._C._current_graph_task_id()`),
keeps the block until its backward is over (blocks after it are dropped when an earlier block starts,
all at the end of backward) and prefetches the previous block. Gradients are bitwise those of the plain
run: the materialised weights are exact copies (fp8 aside).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch

from ..errors import MaskEditError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8 e4m3fn
LORA_MARKERS = ("lora_A", "lora_B", "lora_embedding", "lora_magnitude")
SKIP_BLOCKS_ATTRIBUTE = "_maskedit_skipping_blocks"
"""A transformer attribute a step cache sets (`models.step_cache`): a callable, True while the current evaluation
is skipped. The streamer then leaves the blocks after the first unloaded (a skipped block never runs)."""


def is_lora_name(name: str) -> bool:
    return any(f".{m}." in f".{name}." or f".{m}" in name for m in LORA_MARKERS)


FP8_SCALING_MODES = ("row", "none")


def quantize_fp8(weight: torch.Tensor, scaling: str = "row") -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 values, float32 per-row scale) with weight ≈ values · scale. scaling "row": each output row scaled so
    its largest magnitude is e4m3's largest (448), a row of zeros gets scale 1 (ours); "none": a plain e4m3
    cast (scale 1; values beyond ±448 clamp), as the reference code stores its fp8 base — small weights then
    fall into e4m3's subnormal range (below 2^-6) and keep fewer significant bits."""
    if scaling not in FP8_SCALING_MODES:
        raise MaskEditError(f"fp8 scaling must be one of {', '.join(FP8_SCALING_MODES)}, got {scaling!r}")
    w = weight.detach().float()
    flat = w.reshape(w.shape[0], -1)
    if scaling == "none":
        scale = torch.ones(flat.shape[0], 1, device=flat.device)
    else:
        scale = flat.abs().amax(dim=1, keepdim=True) / FP8_MAX
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = (flat / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).reshape(w.shape)
    return values, scale.reshape(w.shape[0], *([1] * (w.ndim - 1)))


def dequantize_fp8(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (values.to(torch.float32) * scale.to(values.device, torch.float32)).to(dtype)


@dataclass
class _Managed:
    """One managed parameter: where its frozen value is stored and what it must look like in use."""

    param: torch.nn.Parameter
    store: torch.Tensor  # host (swapped) or device (resident fp8) copy; fp8 values when scale is set
    scale: torch.Tensor | None  # per-row fp8 scale, float32, or None
    dtype: torch.dtype  # dtype in use (the original one)


class BlockStreamer:
    """Block swapping and/or fp8 base weights for a diffusers transformer with a `blocks` ModuleList.

    transformer: e.g. `WanTransformer3DModel`, on any device (LoRA adapters already added).
    device: where it computes. blocks_to_swap: how many of its blocks (the last ones) live in CPU memory
    (clamped to the number of blocks). fp8: store the Linear weights of the blocks in float8.
    Every non-LoRA parameter of a managed block is frozen (requires_grad False).
    pin_memory / use_stream: default to True on CUDA (pinned host stores, copies on a side stream), except where
    the CUDA runtime must not be touched yet (`cuda_runtime_usable`: placed at a ZeroGPU Space's start-up).
    Everything else of the transformer is moved to `device`. `remove()` undoes it all (fp8 weights
    come back dequantised: fp8 is lossy).
    """

    def __init__(self, transformer, device, blocks_to_swap: int = 0, fp8: bool = False,
                 pin_memory: bool | None = None, use_stream: bool | None = None, fp8_scaling: str = "row"):
        if not hasattr(transformer, "blocks"):
            raise MaskEditError(f"{type(transformer).__name__} has no `blocks`; block swapping needs a block list")
        self.transformer = transformer
        self.device = torch.device(device)
        cuda = self.device.type == "cuda" and cuda_runtime_usable()
        self.pin_memory = cuda if pin_memory is None else (pin_memory and cuda)
        self.use_stream = cuda if use_stream is None else (use_stream and cuda)
        self.blocks = list(transformer.blocks)
        n = len(self.blocks)
        self.blocks_to_swap = max(0, min(int(blocks_to_swap), n))
        self.fp8 = bool(fp8)
        self.fp8_scaling = fp8_scaling
        self.swapped = set(range(n - self.blocks_to_swap, n))
        self._original_devices: dict[int, torch.device] = {}
        self._managed: dict[int, list[_Managed]] = {}
        self._loaded: set[int] = set()
        self._staged: dict[int, tuple[list[torch.Tensor], object]] = {}
        self._handles = []
        self._checkpoint_forward = 0
        self._callback_task = None
        self._stream = torch.cuda.Stream(self.device) if self.use_stream else None
        self._marks: list = []  # compute-stream events, one per block entered: bound how far the host runs ahead
        self.stats = {"loads": 0, "drops": 0, "max_loaded": 0, "max_materialised": 0, "host_bytes": 0,
                      "device_store_bytes": 0}

        for index, block in enumerate(self.blocks):
            entries = self._collect(index, block)
            if entries:
                self._managed[index] = entries
        transformer.to(self.device)  # everything unmanaged (placeholders are already there)
        for index, block in enumerate(self.blocks):
            if index in self._managed:
                self._handles.append(block.register_forward_pre_hook(self._pre_hook(index)))
                self._handles.append(block.register_forward_hook(self._post_hook(index)))

    # -- setup -----------------------------------------------------------------------------------
    def _collect(self, index: int, block) -> list[_Managed]:
        swapped = index in self.swapped
        linear_weights = set()
        if self.fp8:
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    linear_weights.add(id(module.weight))
        entries = []
        for name, param in block.named_parameters():
            if is_lora_name(name):
                continue
            quantize = id(param) in linear_weights and param.dtype.is_floating_point and param.ndim == 2
            if not (swapped or quantize):
                continue
            self._original_devices[id(param)] = param.device
            data = param.data
            scale = None
            if quantize:
                data, scale = quantize_fp8(data.to(self.device) if self.device.type == "cuda" else data,
                                           self.fp8_scaling)
            if swapped:
                data = data.to("cpu")
                if scale is not None:
                    scale = scale.to("cpu")
                if self.pin_memory:
                    data = data.pin_memory()
                    scale = scale.pin_memory() if scale is not None else None
                self.stats["host_bytes"] += data.numel() * data.element_size()
            else:
                data = data.to(self.device)
                scale = scale.to(self.device) if scale is not None else None
                self.stats["device_store_bytes"] += data.numel() * data.element_size()
            param.requires_grad_(False)  # the base is frozen: stores are never written back
            entry = _Managed(param, data, scale, param.dtype)
            param.data = self._placeholder(param.dtype)
            entries.append(entry)
        for name, buffer in block.named_buffers():
            if swapped and buffer.numel() > 1 << 16:
                raise MaskEditError(f"block {index} has a large buffer {name}; block swapping does not stream buffers")
        return entries

    def _placeholder(self, dtype) -> torch.Tensor:
        return torch.empty(0, device=self.device, dtype=dtype)

    # -- loading -----------------------------------------------------------------------------------
    def _materialise(self, index: int) -> list[torch.Tensor]:
        tensors = []
        host = index in self.swapped  # copy explicitly: on a meta "GPU" the host store is on the same device
        for entry in self._managed[index]:
            value = entry.store.to(self.device, non_blocking=True, copy=entry.scale is None or host)
            if entry.scale is not None:
                value = dequantize_fp8(value, entry.scale.to(self.device, non_blocking=True, copy=host), entry.dtype)
            tensors.append(value)
        return tensors

    def _prefetch(self, index: int) -> None:
        if index in self._loaded or index in self._staged or index not in self._managed:
            return
        if self._stream is None:
            self._staged[index] = (self._materialise(index), None)
            self._count_materialised()
            return
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            tensors = self._materialise(index)
            event = torch.cuda.Event()
            event.record(self._stream)
        self._staged[index] = (tensors, event)
        self._count_materialised()

    def _count_materialised(self) -> None:
        live = len(self._loaded | set(self._staged))
        self.stats["max_materialised"] = max(self.stats["max_materialised"], live)

    def _ensure_loaded(self, index: int) -> None:
        if index in self._loaded:
            return
        self._prefetch(index)
        tensors, event = self._staged.pop(index)
        if event is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(event)
            for tensor in tensors:
                tensor.record_stream(compute)  # made on the side stream, used (and freed) on this one
        for entry, tensor in zip(self._managed[index], tensors):
            entry.param.data = tensor
        self._loaded.add(index)
        self.stats["loads"] += 1
        self.stats["max_loaded"] = max(self.stats["max_loaded"], len(self._loaded))

    def _drop(self, index: int) -> None:
        if index not in self._loaded:
            return
        for entry in self._managed[index]:
            entry.param.data = self._placeholder(entry.dtype)
        self._loaded.discard(index)
        self.stats["drops"] += 1

    def release_all(self) -> None:
        """Drop every materialised block (and staged prefetches)."""
        for index in list(self._loaded):
            self._drop(index)
        self._staged.clear()

    # -- hooks -----------------------------------------------------------------------------------
    def _next_managed(self, index: int, step: int) -> int | None:
        j = index + step
        while 0 <= j < len(self.blocks):
            if j in self._managed:
                return j
            j += step
        return None

    def _throttle(self) -> None:
        """Keep the host at most two blocks ahead of the GPU. Dropped weights are only freed once the GPU
        is done with them; a host far ahead would materialise block after block before any is freed."""
        if self.device.type != "cuda":
            return
        mark = torch.cuda.Event()
        mark.record(torch.cuda.current_stream(self.device))
        self._marks.append(mark)
        while len(self._marks) > 2:
            self._marks.pop(0).synchronize()

    def _pre_hook(self, index: int):
        def hook(module, args):
            task = torch._C._current_graph_task_id()
            in_backward = task != -1
            skipping = getattr(self.transformer, SKIP_BLOCKS_ATTRIBUTE, None)
            if index > 0 and not in_backward and skipping is not None and skipping():
                return  # a step cache skips this evaluation: the block returns its input without its weights
            self._throttle()
            if in_backward:
                for j in [j for j in self._loaded if j > index]:
                    self._drop(j)  # their backward is over: this earlier block's recompute started
                if self._callback_task != task:
                    self._callback_task = task
                    torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            elif index == self._first_managed():
                self.release_all()  # a new forward: nothing of an earlier graph is needed any more
            self._ensure_loaded(index)
            following = self._next_managed(index, -1 if in_backward else 1)
            if following is not None:
                self._prefetch(following)

        return hook

    def _post_hook(self, index: int):
        def hook(module, args, output):
            if torch._C._current_graph_task_id() != -1:
                return  # a recompute inside backward: keep the weights until this block's backward is over
            if not torch.is_grad_enabled() or self._checkpoint_forward:
                self._drop(index)
            elif torch.is_tensor(output) and output.requires_grad:
                output.register_hook(self._backward_started)

        return hook

    def _backward_started(self, grad):
        task = torch._C._current_graph_task_id()
        if self._callback_task != task:
            self._callback_task = task
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
        return grad

    def _end_of_backward(self) -> None:
        self._callback_task = None
        self.release_all()

    def _first_managed(self) -> int:
        return min(self._managed)

    @contextlib.contextmanager
    def checkpointed_forward(self):
        """Marks a checkpointed forward: blocks are dropped right after it (their recompute reloads them)."""
        self._checkpoint_forward += 1
        try:
            yield
        finally:
            self._checkpoint_forward -= 1

    # -- teardown --------------------------------------------------------------------------------
    def remove(self) -> None:
        """Remove the hooks and give every managed parameter its full value back on its original device."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.release_all()
        for entries in self._managed.values():
            for entry in entries:
                value = entry.store.to(self._original_devices[id(entry.param)])
                if entry.scale is not None:
                    value = dequantize_fp8(value, entry.scale, entry.dtype)
                entry.param.data = value.clone() if value.data_ptr() == entry.store.data_ptr() else value
        self._managed = {}

    def describe(self) -> str:
        n = len(self.blocks)
        parts = [f"{n - self.blocks_to_swap} of {n} blocks resident, {self.blocks_to_swap} swapped"]
        if self.fp8:
            parts.append("fp8 base weights" + (" (unscaled)" if self.fp8_scaling == "none" else ""))
        if self.use_stream:
            parts.append("copies on a side stream")
        return ", ".join(parts)


def checkpoint_function(streamer: BlockStreamer | None = None, offload_activations: bool = False):
    """A `gradient_checkpointing_func` for diffusers' `enable_gradient_checkpointing`.

    Non-reentrant `torch.utils.checkpoint` of each block, with the streamer told which forwards are
    checkpointed (so it drops their weights at once) and, with `offload_activations`, each block's
    input hidden states kept in CPU memory until its recompute (the copies are exact: gradients are
    bitwise those of plain checkpointing).
    """
    from torch.utils.checkpoint import checkpoint

    def contexts():
        forward = streamer.checkpointed_forward() if streamer is not None else contextlib.nullcontext()
        return forward, contextlib.nullcontext()

    def run(block, *args):
        if offload_activations and torch.is_tensor(args[0]):
            device = args[0].device
            saved = args[0].to("cpu")  # on a CPU run this is the tensor itself: same code path, no copy

            def call(hidden, *rest):
                return block(hidden.to(device, non_blocking=True, copy=True), *rest)  # a copy on every device

            return checkpoint(call, saved, *args[1:], use_reentrant=False, context_fn=contexts)
        return checkpoint(block.__call__, *args, use_reentrant=False, context_fn=contexts)

    return run


def lora_to_dtype(transformer, dtype: torch.dtype = torch.float32) -> None:
    """Give every LoRA parameter `dtype` (peft casts new adapters to the base weight's dtype)."""
    for name, param in transformer.named_parameters():
        if is_lora_name(name) and param.dtype != dtype:
            param.data = param.data.to(dtype)


def cuda_runtime_usable() -> bool:
    """False in a ZeroGPU Space's main process (spaces sets SPACES_ZERO_GPU and emulates the device there until
    a call's worker initialises a real one): streams and pinned memory, which need the CUDA runtime, wait."""
    import os

    return not os.environ.get("SPACES_ZERO_GPU") or torch.cuda.is_initialized()


MEMORY_ATTRIBUTE = "_maskedit_memory"


@dataclass
class MemorySetup:
    """What `apply_memory_options` did, and how to undo it (kept on the transformer as `_maskedit_memory`)."""

    streamer: BlockStreamer | None
    gradient_checkpointing: bool
    activation_offload: bool
    settings: tuple = ()

    def remove(self, transformer) -> None:
        if self.streamer is not None:
            self.streamer.remove()
            self.streamer = None
        if self.gradient_checkpointing and transformer.is_gradient_checkpointing:
            transformer.disable_gradient_checkpointing()
        if getattr(transformer, MEMORY_ATTRIBUTE, None) is self:
            delattr(transformer, MEMORY_ATTRIBUTE)


def memory_setup(transformer) -> MemorySetup | None:
    """The memory options in effect on `transformer` (None when none were applied)."""
    return getattr(transformer, MEMORY_ATTRIBUTE, None)


def _normalise(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def apply_memory_options(transformer, device, blocks_to_swap: int = 0, fp8: bool = False,
                         gradient_checkpointing: bool = False, activation_offload: bool = False,
                         fp8_scaling: str = "row") -> MemorySetup:
    """Block swapping / fp8 (a `BlockStreamer` when either is asked for) and gradient checkpointing with
    optional activation offload, wired together. Adapters may be added before or after (LoRA
    parameters are never managed). A streamer already on the transformer with the same device, swap
    count and fp8 (and fp8 scaling, `quantize_fp8`) is kept (only checkpointing is set anew); other settings
    replace it."""
    if activation_offload and not gradient_checkpointing:
        raise MaskEditError("offloading activations needs gradient checkpointing")
    device = _normalise(device)
    settings = (str(device), int(blocks_to_swap), bool(fp8)) + ((fp8_scaling,) if fp8 and fp8_scaling != "row" else ())
    current = memory_setup(transformer)
    streamer = None
    if current is not None and current.settings == settings and current.streamer is not None:
        streamer = current.streamer
    elif current is not None:
        current.remove(transformer)
    elif transformer.is_gradient_checkpointing:
        transformer.disable_gradient_checkpointing()
    if streamer is None and (blocks_to_swap or fp8):
        streamer = BlockStreamer(transformer, device, blocks_to_swap=blocks_to_swap, fp8=fp8, fp8_scaling=fp8_scaling)
    if gradient_checkpointing:
        if streamer is not None or activation_offload:
            transformer.enable_gradient_checkpointing(checkpoint_function(streamer, activation_offload))
        else:
            transformer.enable_gradient_checkpointing()
    elif transformer.is_gradient_checkpointing:
        transformer.disable_gradient_checkpointing()
    setup = MemorySetup(streamer, gradient_checkpointing, activation_offload, settings)
    if streamer is not None or activation_offload:
        setattr(transformer, MEMORY_ATTRIBUTE, setup)
    return setup


def place_pipeline(pipe, device, blocks_to_swap: int = 0, fp8: bool = False,
                   offload_encoders: bool = False, fp8_scaling: str = "row") -> MemorySetup | None:
    """Put a pipeline loaded on the CPU onto `device` without ever holding the whole transformer there:
    the transformer gets the block streamer first (resident blocks and small parts on the device, swapped
    blocks in pinned CPU memory, fp8 stores), then the pipeline moves to `device` (which moves only what
    is not streamed). With `offload_encoders` the VAE and the text/image encoders stay in CPU memory and
    come to the device only while they run (`EncoderOffload`); otherwise they go to the device as usual
    and the trainer moves them off while it trains (`training.release_encoders`). Without swapping or fp8
    the transformer simply moves. Returns the memory setup (None without swapping or fp8).

    Not diffusers' model CPU offload: its `enable_model_cpu_offload` first moves every component
    (transformer included) to the CPU and hooks the transformer too, which fights the streamer."""
    device = _normalise(device)
    setup = apply_memory_options(pipe.transformer, device, blocks_to_swap, fp8, fp8_scaling=fp8_scaling) \
        if (blocks_to_swap or fp8) else None
    second = getattr(pipe, "transformer_2", None)  # a two-expert model's low-noise expert is streamed alike
    if second is not None and (blocks_to_swap or fp8):
        apply_memory_options(second, device, blocks_to_swap, fp8, fp8_scaling=fp8_scaling)
    if offload_encoders:
        enable_encoder_offload(pipe, device)  # before the move: the encoders' weights never go to the device
    pipe.to(device)
    return setup


def move_module(module, device) -> None:
    """`module.to(device)`, also right on the meta device (the planner's GPU), where `.to("meta")` of a
    meta tensor is a no-op and would leave a module moved "to the CPU" there: on meta it copies."""
    device = torch.device(device)
    if device.type == "meta":
        module._apply(lambda t: t.to(device, copy=True))
    else:
        module.to(device)


def peak_memory_bytes(device) -> int | None:
    """`torch.cuda.max_memory_allocated` on CUDA; None elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return None


# ----- the encoders: in CPU memory while idle


ENCODER_NAMES = ("text_encoder", "image_encoder", "vae")
"""The pipeline components `EncoderOffload` keeps in CPU memory (umT5 ≈ 10.6 GiB in bf16, CLIP ≈ 1.2 GiB and
the VAE ≈ 0.5 GiB in float32 for Wan2.1-I2V-14B)."""

ENCODER_OFFLOAD_ATTRIBUTE = "_maskedit_encoder_offload"
TRANSFORMER_NAMES = ("transformer", "transformer_2")


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """`tensor` on `device`, a copy unless `device` is the CPU (where it is `tensor` itself when already there).
    On CUDA a host → device copy; on the planner's meta "GPU" the explicit copy is what counts it as GPU memory
    (`.to("meta")` of a meta tensor would be the tensor itself)."""
    device = torch.device(device)
    return tensor.to(device, copy=device.type != "cpu")


@dataclass
class _Stored:
    """One parameter or buffer of an offloaded encoder: its CPU copy and where it is set."""

    store: torch.Tensor  # the value, in CPU memory (the planner's host pool on meta)
    param: torch.nn.Parameter | None  # set through `.data` (keeps the Parameter, ties and hooks)
    buffers: list  # (owner module, key) of a buffer


STREAMED_ENCODERS = ("text_encoder", "image_encoder")
"""Encoders whose layers come to the device one at a time (umT5's 24 layers ≈ 0.39 GiB each, CLIP's 32)."""


def layer_list(module) -> torch.nn.ModuleList | None:
    """The ModuleList holding most of `module`'s parameters (umT5's `encoder.block`, CLIP's
    `vision_model.encoder.layers`), or None when no list holds half of them."""
    total = sum(p.numel() for p in module.parameters())
    best, best_count = None, 0
    for child in module.modules():
        if isinstance(child, torch.nn.ModuleList) and len(child) > 1:
            count = sum(p.numel() for p in child.parameters())
            if count > best_count:
                best, best_count = child, count
    return best if best is not None and 2 * best_count >= total else None


class EncoderOffload:
    """The VAE and the text/image encoders of a pipeline in CPU memory, on `device` only while they run
    (diffusers' `enable_model_cpu_offload` idea, without touching the transformer or the block streamer).

    Each parameter and buffer of an encoder has a CPU *store* (the CPU tensor itself when the pipeline was
    loaded on the CPU, else a copy); between uses it holds an empty placeholder on `device`, so the module
    still reports `device` and dtype (the pipeline's `_execution_device` stays right), and a weight read while
    it is offloaded fails loudly. Weights are copied to `device` (`to_device`) by forward pre-hooks and never
    copied back (encoders are frozen). Units of loading:
    - an encoder's layers (`layer_list`; text and image encoders, `STREAMED_ENCODERS`): each layer only while
      its forward runs (pre-hook in, post-hook out), so umT5 needs one layer (≈ 0.39 GiB) beside the rest;
    - the rest of an encoder (embeddings, norms; the whole VAE): from the first forward of the encoder or
      of one of its children until it is done — text and image encoders right after their forward (a
      post-hook, also when it raised); the VAE (its `encode`/`decode` are not `forward`) when its caller is
      done: `MaskEditPipeline` after each VAE encode and at the end of every call, `release()` (the trainer
      after encoding), and whenever another encoder or a transformer starts.
    Results are bitwise those without it (the values are copies). Undo with `remove()`.
    """

    def __init__(self, pipe, device, names: tuple[str, ...] = ENCODER_NAMES, streamed: tuple[str, ...] = STREAMED_ENCODERS):
        self.device = _normalise(device)
        self.modules = {name: getattr(pipe, name) for name in names if getattr(pipe, name, None) is not None}
        self.layers = {name: layer_list(module) for name, module in self.modules.items() if name in streamed}
        self.layers = {name: layers for name, layers in self.layers.items() if layers is not None}
        self._stored: dict[tuple, list[_Stored]] = {}
        for name, module in self.modules.items():
            self._collect(name, module)
        self.resident: set[tuple] = set()  # units on the device: (name,) or (name, layer index)
        self.stats = {"loads": 0, "drops": 0, "layer_loads": 0, "host_bytes": sum(
            s.store.numel() * s.store.element_size() for stored in self._stored.values() for s in stored)}
        self._handles = []
        for unit in self._stored:
            self._drop_values(unit)
        for name, module in self.modules.items():
            for part in (module, *module.children()):
                self._handles.append(part.register_forward_pre_hook(self._loader((name,))))
            if name != "vae":
                self._handles.append(module.register_forward_hook(self._dropper((name,)), always_call=True))
            for index, layer in enumerate(self.layers.get(name, ())):
                self._handles.append(layer.register_forward_pre_hook(self._loader((name, index))))
                self._handles.append(layer.register_forward_hook(self._dropper((name, index)), always_call=True))
        for name in TRANSFORMER_NAMES:
            transformer = getattr(pipe, name, None)
            if isinstance(transformer, torch.nn.Module):
                self._handles.append(transformer.register_forward_pre_hook(lambda *_: self.release()))
        self._pipe = weakref.ref(pipe)
        setattr(pipe, ENCODER_OFFLOAD_ATTRIBUTE, self)

    def _collect(self, name: str, module) -> None:
        by_id = {}
        owners = {id(m): (name, index) for index, layer in enumerate(self.layers.get(name, ())) for m in layer.modules()}
        for owner in module.modules():
            unit = owners.get(id(owner), (name,))
            stored = self._stored.setdefault(unit, [])
            for key, param in owner._parameters.items():
                if param is not None and id(param) not in by_id:  # tied parameters are one Parameter
                    by_id[id(param)] = _Stored(param.data.to("cpu"), param, [])
                    stored.append(by_id[id(param)])
            for key, buffer in owner._buffers.items():
                if buffer is None:
                    continue
                if id(buffer) not in by_id:
                    by_id[id(buffer)] = _Stored(buffer.to("cpu"), None, [])
                    stored.append(by_id[id(buffer)])
                by_id[id(buffer)].buffers.append((owner, key))

    def _set(self, entry: _Stored, value: torch.Tensor) -> None:
        if entry.param is not None:
            entry.param.data = value
        for owner, key in entry.buffers:
            owner._buffers[key] = value

    def _drop_values(self, unit: tuple) -> None:
        for entry in self._stored[unit]:
            self._set(entry, torch.empty(0, dtype=entry.store.dtype, device=self.device))

    def load(self, unit: tuple | str) -> None:
        """Bring `unit` to the device: ("vae",) / "vae" — an encoder without its streamed layers —, or
        (name, layer index). A no-op when it is there; other encoders' units leave first."""
        unit = (unit,) if isinstance(unit, str) else unit
        if unit in self.resident:
            return
        for other in [u for u in self.resident if u[0] != unit[0]]:
            self.drop(other)
        for entry in self._stored[unit]:
            self._set(entry, to_device(entry.store, self.device))
        self.resident.add(unit)
        self.stats["loads" if len(unit) == 1 else "layer_loads"] += 1

    def drop(self, unit: tuple | str) -> None:
        """Let `unit` leave the device (its weights stay in CPU memory); an encoder's name drops all of it."""
        units = [u for u in self.resident if u[0] == unit] if isinstance(unit, str) else [unit] if unit in self.resident else []
        for one in units:
            self._drop_values(one)
            self.resident.discard(one)
            if len(one) == 1:
                self.stats["drops"] += 1

    def release(self) -> None:
        """Every encoder off the device."""
        for unit in list(self.resident):
            self.drop(unit)

    def _loader(self, unit: tuple):
        def hook(module, args):
            self.load(unit)

        return hook

    def _dropper(self, unit: tuple):
        def hook(module, args, output):
            self.drop(unit[0] if len(unit) == 1 else unit)

        return hook

    def remove(self) -> None:
        """Remove the hooks; every encoder gets its full weights back, on the device."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for stored in self._stored.values():
            for entry in stored:
                self._set(entry, entry.store.to(self.device))
        self.resident.clear()
        self._stored = {}
        pipe = self._pipe()
        if pipe is not None and getattr(pipe, ENCODER_OFFLOAD_ATTRIBUTE, None) is self:
            delattr(pipe, ENCODER_OFFLOAD_ATTRIBUTE)

    def describe(self) -> str:
        streamed = f" ({' and '.join(self.layers)} layer by layer)" if self.layers else ""
        return (f"{', '.join(self.modules)} in CPU memory ({self.stats['host_bytes'] / 1024**3:.1f} GiB), on the GPU only "
                f"while they run{streamed}")


def encoder_offload(pipe) -> EncoderOffload | None:
    """The `EncoderOffload` in effect on `pipe`, or None."""
    return getattr(pipe, ENCODER_OFFLOAD_ATTRIBUTE, None)


def enable_encoder_offload(pipe, device) -> EncoderOffload:
    """Keep `pipe`'s encoders in CPU memory while idle (`EncoderOffload`); the one in effect when it already
    computes on `device`, else a new one."""
    device = _normalise(device)
    current = encoder_offload(pipe)
    if current is not None:
        if current.device == device:
            return current
        current.remove()
    return EncoderOffload(pipe, device)


def release_offloaded_encoders(pipe) -> bool:
    """Take every offloaded encoder of `pipe` off the device; False when `pipe` has no `EncoderOffload`."""
    current = encoder_offload(pipe)
    if current is None:
        return False
    current.release()
    return True
