"""The smallest CPU shim that lets `spaces`' real ZeroGPU code path run on a machine without CUDA.

Written for, and refused on anything but, `spaces` == SPACES_VERSION (it replaces a few of that version's
internals; requirements-test.txt pins it). Every stand-in is here and nowhere else, each with its reason:

before `import spaces` (`install()`):
  0. spaces.zero.config._read_gpu_information -- spaces picks its card (its emulated device, the duration factor
     it applies to `large` calls, the automatic-xlarge threshold) from the "Model:" line of
     /proc/driver/nvidia/gpus/*/information and falls back to its first, older entry without one. The
     stand-in reports today's ZeroGPU card (`maskedit.models.zerogpu.SPACES_CARD_MODEL`), so spaces counts
     durations as on a Space.
  1. torch.version.cuda = "12.4" -- CPU torch says None; spaces.zero.torch.static calls `.startswith` on it.
  2. torch._C._cuda_init -- absent from CPU torch; spaces.zero.torch.patching saves it at import to restore
     it in the worker. The stand-in raises, as a CUDA init on this machine must.
  3. torch.cuda._is_in_bad_fork -- a lambda on CPU torch; spaces submits it to a forked process pool at import,
     which cannot pickle a lambda. The stand-in is a module-level function (pickled by name).
after `import spaces`:
  4. spaces.zero.torch.init -- the worker's first step calls `torch.Tensor([0]).cuda()`, which CPU torch
     cannot do. The stand-in sets CUDA_VISIBLE_DEVICES, as the original does first, and makes
     torch.cuda.is_available() / device_count() / current_device() answer as a Space's worker does (True, 1,
     0: spaces has just restored CPU torch's own answers), so the task takes the code path it takes there.
  5. spaces.zero.torch.move -- the worker's "CPU/disk -> CUDA" step (pinned memory, CUDA copies). The
     stand-in gives each fake tensor spaces made at `.to("cuda")` time its data back as a CPU tensor: from
     memory for tensors not yet packed, from spaces' own disk pack (same file layout) for packed ones.
  6. "cuda" -> "cpu" inside the task -- a TorchFunctionMode entered around each `@spaces.GPU` task (modes are
     thread-local and spaces runs the task in its own thread, so the task is wrapped at decoration). It maps
     an explicit "cuda" device to the CPU and marks every tensor that would live on the GPU on a Space (moved
     there, made there, or computed from such tensors); `ON_GPU` holds the marks. Moving a marked tensor to
     the CPU makes a copy, as a real device transfer does. Pickling a marked tensor out of the worker raises
     PicklingError: a CUDA tensor must not be returned from a GPU call (ZeroGPU's documentation), and here
     it fails the same way a Space fails instead of passing silently.

What this cannot show: CUDA kernels, memory, speed, device mismatches inside the task (everything there is
really on the CPU; `tensor.device` says "cpu"), the real queue and quotas.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle

SPACES_VERSION = "0.51.3"

ON_GPU = None
"""torch.utils.weak.WeakTensorKeyDictionary: tensors that would be on the GPU on a Space (set by install())."""

_installed = False


def _not_in_bad_fork() -> bool:
    """Stand-in 3: CPU torch never initialised CUDA, so no fork is bad (a function, so it pickles)."""
    return False


def _no_cuda_init() -> None:
    """Stand-in 2: a CUDA initialisation reached on a machine without CUDA."""
    raise RuntimeError("zerogpu_local: CUDA initialisation reached on a CPU-only torch (the CPU shim missed a "
                       "CUDA call; see zerogpu_local/cpu_shim.py)")


def check_spaces_version(version: str) -> None:
    """RuntimeError unless `version` is the one the shim was written for (it replaces spaces internals)."""
    if version != SPACES_VERSION:
        raise RuntimeError(f"zerogpu_local's CPU shim was written for spaces=={SPACES_VERSION} (it replaces some "
                           f"of its internals); this environment has spaces=={version}. "
                           f"Install spaces=={SPACES_VERSION} or re-check the shim against the new version.")


def install() -> None:
    """Install every stand-in. Call before anything imports `spaces` (SPACES_ZERO_GPU must already be set)."""
    global _installed, ON_GPU
    if _installed:
        return
    import importlib.metadata
    import sys

    if "spaces" in sys.modules:
        raise RuntimeError("zerogpu_local.cpu_shim.install() must run before `spaces` is imported")
    check_spaces_version(importlib.metadata.version("spaces"))
    import torch
    from torch.utils.weak import WeakTensorKeyDictionary

    _report_card()  # 0
    if torch.version.cuda is None:
        torch.version.cuda = "12.4"  # 1
    if not hasattr(torch._C, "_cuda_init"):
        torch._C._cuda_init = _no_cuda_init  # 2
    torch.cuda._is_in_bad_fork = _not_in_bad_fork  # 3
    ON_GPU = WeakTensorKeyDictionary()

    import spaces  # noqa: F401  (runs spaces.zero's import-time patching with 1-3 in place)
    import spaces.zero.decorator
    import spaces.zero.torch as zero_torch

    zero_torch.init = _init  # 4
    zero_torch.move = _move  # 5
    original_gpu = spaces.zero.decorator._GPU

    @functools.wraps(original_gpu)
    def _gpu(task, duration, size):  # 6 (spaces.GPU and spaces.zero.decorator.GPU both end here)
        return original_gpu(on_cpu_task(task), duration, size)

    spaces.zero.decorator._GPU = _gpu
    _installed = True


def _report_card() -> None:
    """Stand-in 0: load spaces.zero.config (it imports nothing of spaces) ahead of the package, with the driver's
    information file answered by today's ZeroGPU card; spaces' own import then finds it in sys.modules."""
    import importlib.util
    import sys
    from pathlib import Path

    from maskedit.models.zerogpu import SPACES_CARD_MODEL

    spec = importlib.util.find_spec("spaces")  # locates the package without importing it
    path = Path(spec.origin).parent / "zero" / "config.py"
    config_spec = importlib.util.spec_from_file_location("spaces.zero.config", path)
    config = importlib.util.module_from_spec(config_spec)
    config_spec.loader.exec_module(config)
    config._read_gpu_information = lambda: f"Model: \t\t {SPACES_CARD_MODEL}\n"
    sys.modules["spaces.zero.config"] = config


def _init(nvidia_uuid: str) -> None:
    import torch

    os.environ["CUDA_VISIBLE_DEVICES"] = nvidia_uuid
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    refuse_gpu_tensors_in_results()


def _move(callback=None) -> None:
    import torch
    from spaces.zero.torch import patching

    callback = callback or (lambda _: None)
    for fake, original in list(patching.cuda_aliases.items()):
        if original is not None:
            fake.data = original
            ON_GPU[fake] = True
            callback(fake.numel() * fake.element_size())
    for pack in patching.tensor_packs:  # spaces' layout: each tensor's bytes, page-aligned, in this order
        fd = os.open(pack.path(), os.O_RDONLY)
        try:
            offset = 0
            for meta, size, aligned in [*[t for batch in pack.batches for t in batch], *pack.big_tensors]:
                storage = torch.frombuffer(bytearray(os.pread(fd, size, offset)), dtype=torch.uint8).untyped_storage()
                tensor = torch.empty(0, dtype=meta.dtype).set_(storage, 0, meta.shape, meta.stride())
                for fake in pack.fakes[meta]:
                    fake.data = tensor
                    ON_GPU[fake] = True
                offset += aligned
                callback(size)
        finally:
            os.close(fd)


# ----- 6: the task runs under a mode that keeps "cuda" on the CPU and marks what would be on the GPU


def _is_cuda(device) -> bool:
    import torch

    if isinstance(device, str):
        return device == "cuda" or device.startswith("cuda:")
    return isinstance(device, torch.device) and device.type == "cuda"


def _is_cpu(device) -> bool:
    import torch

    if isinstance(device, str):
        return device == "cpu" or device.startswith("cpu:")
    return isinstance(device, torch.device) and device.type == "cpu"


def _cuda_mode():
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten, tree_map_only

    move_funcs = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu}
    data_setter = torch.Tensor.data.__set__

    class CudaOnCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            target = None  # "gpu", "cpu" or None (no explicit device)
            if func is torch.Tensor.cuda:  # .cuda(device=None, non_blocking=False) -> .to("cpu", non_blocking=...)
                kwargs.pop("device", None)
                kwargs["non_blocking"] = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
                func, target, args = torch.Tensor.to, "gpu", (args[0], "cpu")
            elif func is torch.Tensor.cpu:
                target = "cpu"
            if func is torch.Tensor.to:
                rest = []
                for arg in args[1:]:
                    if _is_cuda(arg):
                        target, arg = "gpu", "cpu"
                    elif _is_cpu(arg):
                        target = target or "cpu"
                    rest.append(arg)
                args = (args[0], *rest)
            if "device" in kwargs and kwargs["device"] is not None and not isinstance(kwargs["device"], int):
                if _is_cuda(kwargs["device"]):
                    target, kwargs["device"] = "gpu", "cpu"
                elif _is_cpu(kwargs["device"]):
                    target = target or "cpu"
            if func == data_setter:  # `param.data = moved`: the parameter is where its new data is
                target_tensor, value = args
                func(target_tensor, value)
                if value in ON_GPU:
                    ON_GPU[target_tensor] = True
                else:
                    ON_GPU.pop(target_tensor, None)
                return None
            inputs_on_gpu = any(isinstance(t, torch.Tensor) and t in ON_GPU for t in tree_flatten((args, kwargs))[0])
            if func in move_funcs and (target == "gpu" or (target == "cpu" and inputs_on_gpu)):
                kwargs["copy"] = True  # a device transfer makes a new tensor; `.to` would return its input
                if func is torch.Tensor.cpu:
                    func, args = torch.Tensor.to, (args[0], "cpu")
            result = func(*args, **kwargs)
            if target == "gpu" or (inputs_on_gpu and target != "cpu"):
                def mark(tensor):
                    ON_GPU[tensor] = True
                    return tensor

                tree_map_only(torch.Tensor, mark, result)
            return result

    return CudaOnCpu()


def on_cpu_task(task):
    """`task` run under the cuda->cpu mode (a generator function stays one, so spaces streams its yields)."""
    if inspect.isgeneratorfunction(task):
        @functools.wraps(task)
        def generator(*args, **kwargs):
            with _cuda_mode():
                yield from task(*args, **kwargs)
        return generator

    @functools.wraps(task)
    def regular(*args, **kwargs):
        with _cuda_mode():
            return task(*args, **kwargs)
    return regular


def refuse_gpu_tensors_in_results() -> None:
    """In the worker: spaces' queues (multiprocessing's ForkingPickler, with torch's tensor reducers) refuse
    a marked tensor (see stand-in 6). Called by the init stand-in."""
    import torch
    import torch.multiprocessing  # noqa: F401  (registers torch's reducers, which this wraps)
    from multiprocessing.reduction import ForkingPickler

    for cls in (torch.Tensor, torch.nn.Parameter):
        previous = ForkingPickler._extra_reducers.get(cls)
        if previous is not None and getattr(previous, "_zerogpu_local", False):
            continue

        def checked(tensor, previous=previous):
            if ON_GPU is not None and tensor in ON_GPU:
                raise pickle.PicklingError(
                    f"a tensor on the GPU device (shape {tuple(tensor.shape)}, {tensor.dtype}) is being returned "
                    "from a @spaces.GPU call; move it to the CPU (or return plain data) inside the call")
            return previous(tensor) if previous is not None else tensor.__reduce_ex__(pickle.DEFAULT_PROTOCOL)

        checked._zerogpu_local = True
        ForkingPickler.register(cls, checked)
