"""What every benchmark script shares: the machine's name and its own section of RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """"NVIDIA H100 80GB HBM3 (79 GiB), AMD EPYC …, 16 CPUs" — the card first where there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} CPUs"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        text = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), " + text
    return text


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the block between `<!-- name -->` and `<!-- /name -->` in `path`, keeping the
    rest: each benchmark owns its section of RESULTS.md."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + block.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
