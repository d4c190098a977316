"""Test instrument: a record of every `@spaces.GPU` call, written as JSON lines (not a stand-in: nothing in
the app's behaviour changes).

In the main process, each time spaces evaluates a call's duration: {"event": "duration", "function": the GPU
function's name, "size": the size it was decorated with, "duration_fn": the duration callable's name (None for a
constant), "value": seconds asked,
"args": a pickle file holding that call's (args, kwargs)} -- so a test can call the app's own duration
function on the real arguments and compare with what the device API was asked for.
In the worker, for each value a GPU function returns or yields: {"event": "result", "function", "pid",
"tensors": how many torch tensors it holds, "on_gpu": how many of them would be on the GPU on a Space}.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import pickle
from dataclasses import fields, is_dataclass
from pathlib import Path

_state = {"path": None, "count": 0}


def install(path: str | os.PathLike) -> None:
    """Record into `path` (JSON lines; argument pickles beside it). Call after cpu_shim.install()."""
    import spaces.zero.decorator

    _state["path"] = Path(path)
    _state["path"].parent.mkdir(parents=True, exist_ok=True)
    inner = spaces.zero.decorator._GPU

    @functools.wraps(inner)
    def _gpu(task, duration, size):
        return inner(_recorded_task(task), _recorded_duration(task.__name__, duration, size), size)

    spaces.zero.decorator._GPU = _gpu


def read(path: str | os.PathLike) -> list[dict]:
    """The records so far, in order; each "duration" record gets "call_args": the unpickled (args, kwargs)."""
    records = []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if record.get("args"):
            record["call_args"] = pickle.loads(Path(record["args"]).read_bytes())
        records.append(record)
    return records


def _write(record: dict) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(_state["path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one write per line: appends from the main process and workers never interleave
    finally:
        os.close(fd)


def _recorded_duration(name: str, duration, size):
    def recorded(*args, **kwargs):
        value = duration(*args, **kwargs) if callable(duration) else duration
        _state["count"] += 1
        args_file = _state["path"].with_name(f"{_state['path'].stem}.{os.getpid()}.{_state['count']}.pkl")
        args_file.write_bytes(pickle.dumps((args, kwargs)))
        _write({"event": "duration", "function": name, "size": size,
                "duration_fn": duration.__name__ if callable(duration) else None,
                "value": None if value is None else float(getattr(value, "total_seconds", lambda: value)()),
                "args": str(args_file)})
        return value
    return recorded


def _recorded_task(task):
    if inspect.isgeneratorfunction(task):
        @functools.wraps(task)
        def generator(*args, **kwargs):
            for value in task(*args, **kwargs):
                _record_result(task.__name__, value)
                yield value
        return generator

    @functools.wraps(task)
    def regular(*args, **kwargs):
        value = task(*args, **kwargs)
        _record_result(task.__name__, value)
        return value
    return regular


def _record_result(name: str, value) -> None:
    from . import cpu_shim

    tensors = list(_tensors(value))
    on_gpu = sum(1 for t in tensors if cpu_shim.ON_GPU is not None and t in cpu_shim.ON_GPU)
    _write({"event": "result", "function": name, "pid": os.getpid(), "tensors": len(tensors), "on_gpu": on_gpu})


def _tensors(value, depth=0):
    import torch

    if depth > 8:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif is_dataclass(value) and not isinstance(value, type):
        for field in fields(value):
            yield from _tensors(getattr(value, field.name), depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, type) and type(value).__module__.startswith("maskedit"):
        for item in vars(value).values():
            yield from _tensors(item, depth + 1)
