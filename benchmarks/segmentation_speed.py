"""Speed of segmentation from clicks: the live-overlay call and the propagation through a clip.

On a procedurally drawn clip (default 49 frames at 832x480, a textured object moving over a textured
background; `maskedit.tools.segmentation_scenes`), with one click on frame 0, for each backend:
- first click: `image_mask` on a frame not seen before (includes the frame's embedding / working copy);
- live overlay: `image_mask` again on the same frame with one more click (median over --repeats), what
  the user waits for while clicking;
- propagation: `propagate` through the whole clip (median over --repeats), and per frame;
- min box IoU: the worst frame's loose-box IoU against the drawn truth (meaningless for random weights).
Backends: the offline fallback (CPU); SAM2 tiny (random weights, ~0.9M parameters: the code path's
overhead, not SAM2's speed); SAM2 at a real size with random weights (--sam2-random tiny|large: Hiera-T
39M / Hiera-L 224M parameters, SAM2's real speed; default large on CUDA, none on a CPU, where it takes
seconds per frame); SAM2 real when its weights are in a local folder or the Hugging Face cache
(--sam2-model, default facebook/sam2.1-hiera-large; never downloaded by this script).

    python benchmarks/segmentation_speed.py                      # 49 x 832x480, fallback + SAM2 tiny (+ real)
    python benchmarks/segmentation_speed.py --sam2-random large  # + SAM2 Hiera-L at real size (use a GPU)
    python benchmarks/segmentation_speed.py --frames 5 --width 160 --height 96 --repeats 1 --no-sam2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from maskedit.method import masks  # noqa: E402
from maskedit.errors import MaskEditError  # noqa: E402
from maskedit.perception.segmentation import DEFAULT_SAM2_MODEL, load_segmenter  # noqa: E402
from maskedit.tools.segmentation_scenes import moving_object_clip  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="for SAM2 (default: cuda when available, else cpu)")
    parser.add_argument("--sam2-model", default=DEFAULT_SAM2_MODEL,
                        help="real SAM2 weights: a local folder or a cached hub id (skipped when absent)")
    parser.add_argument("--sam2-random", choices=("none", "tiny", "large"), default=None,
                        help="also SAM2 at a real size with random weights (default: large on CUDA, else none)")
    parser.add_argument("--no-sam2", action="store_true", help="only the offline fallback")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.repeats < 1 or min(args.width, args.height) < 32:
        parser.error("need --frames >= 1, --repeats >= 1 and a size of at least 32x32")
    return args


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def box_iou(found: np.ndarray, truth: np.ndarray) -> float:
    a, b = masks.loose_boxes(found), masks.loose_boxes(truth)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def measure(name: str, segmenter, device: str, scene, repeats: int) -> str:
    frames = scene.frames
    click = scene.click
    second = (min(click[0] + 2, frames.shape[2] - 1), click[1])
    sync(device)
    start = time.perf_counter()
    segmenter.image_mask(frames[0], [click], [1])
    sync(device)
    first = time.perf_counter() - start
    overlay, propagation = [], []
    found = None
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter.image_mask(frames[0], [click, second], [1, 1])
        sync(device)
        overlay.append(time.perf_counter() - start)
    for _ in range(repeats):
        start = time.perf_counter()
        found = segmenter.propagate(frames, [click], [1])
        sync(device)
        propagation.append(time.perf_counter() - start)
    worst = min(box_iou(found[t], scene.region[t]) for t in range(len(frames)))
    seconds = statistics.median(propagation)
    clip = f"{len(frames)}x{frames.shape[2]}x{frames.shape[1]}"
    memory = ""
    if device.startswith("cuda"):
        import torch

        memory = f" (peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)"
    return (f"| {name} | {device_name(device)}{memory} | {clip} | {first:.3f} | {statistics.median(overlay):.3f} | "
            f"{seconds:.2f} | {seconds / len(frames):.3f} | {worst:.2f} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    scene = moving_object_clip(num_frames=args.frames, width=args.width, height=args.height, shape="blob",
                               object_texture="stripes", background="noise", speed=6.0, pan=1.0, size=0.35,
                               seed=args.seed)
    rows = ["| backend | device | clip | first click (s) | live overlay (s) | propagation (s) | per frame (s) "
            "| min box IoU |", "|---|---|---|---|---|---|---|---|"]
    rows.append(measure("fallback", load_segmenter("fallback"), "cpu", scene, args.repeats))
    print("\n".join(rows), flush=True)
    rows = []
    if not args.no_sam2:
        import tempfile

        import torch

        from maskedit.perception.segmentation_sam2 import Sam2Segmenter, build_random_sam2, save_tiny_sam2

        if args.threads:
            torch.set_num_threads(args.threads)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        with tempfile.TemporaryDirectory() as folder:
            tiny = load_segmenter("sam2", model_id=save_tiny_sam2(folder), device=device)
            rows.append(measure("SAM2 tiny (random)", tiny, device, scene, args.repeats))
            tiny.release()
        architecture = args.sam2_random or ("large" if device.startswith("cuda") else "none")
        if architecture != "none":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            model = build_random_sam2(architecture).to(device=device, dtype=dtype)
            sized = Sam2Segmenter(model, device, dtype, f"Hiera-{architecture[0].upper()}, random weights")
            rows.append(measure(f"SAM2 Hiera-{architecture[0].upper()} (random, {str(dtype)[6:]})", sized, device,
                                scene, args.repeats))
            sized.release()
        try:
            real = load_segmenter("sam2", model_id=args.sam2_model, device=device, download=False)
        except MaskEditError as error:
            rows.append(f"| SAM2 {args.sam2_model} | skipped: {getattr(error, 'reason', error)} | | | | | | |")
        else:
            rows.append(measure(f"SAM2 {args.sam2_model}", real, device, scene, args.repeats))
            real.release()
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
