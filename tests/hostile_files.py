"""Hostile inputs for the fault suites (issue 22), made cheaply: huge images written as streamed PNGs or as a header
alone, LoRA files with foreign keys, int32 or huge weights, sparse multi-GB files with a valid header, and videos
whose container states an implausible frame rate. Nothing here is large in memory or on disk."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from safetensors.torch import save_file

TINY_LAYER = "blocks.0.attn1.to_q"  # the tiny model's layers take 32 inputs and give 32 outputs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def streamed_png(path: Path, width: int, height: int, value: int = 0) -> Path:
    """A real greyscale PNG of width x height, every pixel `value`, compressed row by row (a 12000x12000 one is
    140 KB on disk and never in memory here)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    body = bytearray()
    for _ in range(height):
        body += compressor.compress(row)
    body += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(body)) + _chunk(b"IEND", b""))
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and that holds no pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00"))
                     + _chunk(b"IEND", b""))
    return path


def lora(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def tiny_lora(path: Path, rank: int = 4, a=None, b=None, dtype=torch.float32) -> Path:
    """A LoRA of one layer of the tiny model (A: (rank, 32), B: (32, rank)); `a`/`b` fill the weights."""
    gen = torch.Generator().manual_seed(0)
    a_w = torch.randn(rank, 32, generator=gen) * 0.01 if a is None else torch.full((rank, 32), float(a))
    b_w = torch.randn(32, rank, generator=gen) * 0.01 if b is None else torch.full((32, rank), float(b))
    return lora(path, {f"{TINY_LAYER}.lora_A.weight": a_w.to(dtype), f"{TINY_LAYER}.lora_B.weight": b_w.to(dtype)})


def sparse_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], item_bytes: int = 2) -> Path:
    """A safetensors file with a valid header for `tensors` {name: (dtype, shape)} whose data is a hole (a sparse
    file: gigabytes long, nothing written)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = int(np.prod(shape)) * item_bytes
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True,
                   timeout=120)


def video_at(path: Path, fps: float, seconds: float = 2.0, size: int = 32) -> Path:
    """A test-pattern video of `seconds` s at `fps` (every frame a real one)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}x{size}:rate={fps:g}:duration={seconds:g}", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(path))
    return path


def container_says_1k(path: Path, source: Path) -> Path:
    """`source` copied into an mkv whose stream says "1k fps" (ffmpeg -r 1000 -c copy): imageio reads no frame
    rate from it, while its frames and duration are those of the source."""
    ffmpeg("-i", str(source), "-c", "copy", "-r", "1000", str(path))
    return path
