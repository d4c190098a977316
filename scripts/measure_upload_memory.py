"""The app server's resident memory (RSS) around its largest uploads (issue 22): the server runs as its own process
(`python app.py --model tiny`), a gradio_client session loads a clip and then uploads, in turn, the largest image
it accepts (4096x4096, fitted to the clip), a 12000x12000 PNG of 140 KB, the largest LoRA the tiny model accepts
(rank 256 on every target layer) and a 450 MB LoRA file that cannot fit; the server's VmRSS is read from /proc
before and after each.

    python scripts/measure_upload_memory.py [--repo .] [--port 7899]

Prints one line per upload: what, accepted or the message's start, RSS before -> after and the peak so far (MB).
Linux only.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or its peak so far (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(folder: Path) -> dict[str, Path]:
    """The clip and the uploads, written without holding any large array for long."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "tests")]
    from hostile_files import sparse_safetensors, streamed_png

    from maskedit.media.video import write_video

    frames = np.zeros((9, 64, 64, 3), np.uint8)
    frames[:, 16:48, 16:48] = (220, 40, 40)
    write_video(folder / "clip.mp4", frames, 8.0)
    y, x = np.mgrid[0:4096, 0:4096]
    Image.fromarray(np.stack([x // 16, y // 16, (x + y) // 32], axis=-1).astype(np.uint8)).save(folder / "largest.png")
    streamed_png(folder / "huge.png", 12000, 12000)
    layers = {"attn1.to_q": (32, 32), "attn1.to_k": (32, 32), "attn1.to_v": (32, 32), "attn1.to_out.0": (32, 32),
              "attn2.to_q": (32, 32), "attn2.to_k": (32, 32), "attn2.to_v": (32, 32), "attn2.to_out.0": (32, 32),
              "ffn.net.0.proj": (32, 64), "ffn.net.2": (64, 32)}
    rank, tensors = 256, {}
    for block in range(2):
        for name, (inputs, outputs) in layers.items():
            tensors[f"blocks.{block}.{name}.lora_A.weight"] = torch.randn(rank, inputs) * 0.01
            tensors[f"blocks.{block}.{name}.lora_B.weight"] = torch.randn(outputs, rank) * 0.01
    save_file(tensors, str(folder / "rank256.safetensors"))
    sparse_safetensors(folder / "450mb.safetensors", {"blocks.0.attn1.to_q.lora_A.weight": ("BF16", [4, 450 * 2**20 // 8]),
                                                       "blocks.0.attn1.to_q.lora_B.weight": ("BF16", [32, 4])})
    return {name: folder / name for name in ("clip.mp4", "largest.png", "huge.png", "rank256.safetensors",
                                             "450mb.safetensors")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="the checkout whose app runs")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="upload-memory-"))
    files = make_inputs(work)
    port = args.port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASKEDIT_WORK_DIR": str(work / "sessions"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": args.repo}
    server = subprocess.Popen([sys.executable, "app.py", "--model", "tiny", "--port", str(port), "--segmenter",
                               "fallback", "--captioner", "none", "--lora-cache", "session"], cwd=args.repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                client = Client(url, verbose=False)
                break
            except Exception:  # noqa: BLE001 (not up yet)
                time.sleep(0.5)
        else:
            raise RuntimeError("the app did not start")
        client.predict(handle_file(str(files["clip.mp4"])), 9, "64x64", 0, api_name="/load_video")
        client.predict("[[30, 30, 1]]", 0.1, api_name="/segment")
        client.predict(handle_file(str(files["largest.png"])), True, api_name="/set_edited_frame")  # warm-up
        print(f"server after start and one warm-up upload: {rss_mb(server.pid):.0f} MB")
        uploads = [("largest accepted image, 4096x4096 (fit)", "largest.png", "/set_edited_frame", [True]),
                   ("12000x12000 PNG of 140 KB (fit)", "huge.png", "/set_edited_frame", [True]),
                   ("largest LoRA the tiny model accepts (rank 256, every layer)", "rank256.safetensors", "/use_lora",
                    []),
                   ("450 MB LoRA file that cannot fit", "450mb.safetensors", "/use_lora", [])]
        for what, name, api, extra in uploads:
            before = rss_mb(server.pid)
            try:
                client.predict(handle_file(str(files[name])), *extra, api_name=api)
                outcome = "accepted"
            except Exception as error:  # noqa: BLE001
                outcome = "refused: " + str(error).splitlines()[0][:140]
            time.sleep(1.0)
            print(f"{what}: {outcome}; server RSS {before:.0f} -> {rss_mb(server.pid):.0f} MB "
                  f"(peak so far {rss_mb(server.pid, 'VmHWM'):.0f} MB)")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
