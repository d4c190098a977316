"""Draw the example clips of `examples/` from the toy world (`maskedit.tools.toyworld`), with their ground truth.

Each example folder holds:
- clip.mp4: the clip to edit (H.264, 16 fps);
- mask.mp4: the object's true mask per frame (white = edit), as a segmenter would give it;
- edited_first_frame.png: frame 0 with the object's look changed (what a user would paint);
- edited_frame_K.png (some examples): an edited later frame K, for stage 2;
- ground_truth.mp4: the true edited clip, to compare a result with.
`examples/examples.json` indexes them (paths relative to `examples/`, a suggested prompt, a box
x0,y0,x1,y1 covering the object on every frame) and `examples/README.md` describes them.

    python scripts/make_examples.py                 # writes examples/
    python scripts/make_examples.py --out /tmp/ex   # elsewhere
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from maskedit.tools import toyworld  # noqa: E402
from maskedit.method.masks import grow_box, write_mask_video  # noqa: E402
from maskedit.media.video import write_image, write_video  # noqa: E402

EXAMPLES = (
    # name, seed, kind, object index, (width, height), frames, later frames, scene options
    ("color_single", 11, "color", 0, (320, 192), 33, (), dict(num_objects=1, pan=True)),
    ("pattern_crossing", 23, "pattern", 0, (256, 256), 25, (), dict(num_objects=2, occlusion=True, pan=False)),
    ("shape_later_frame", 40, "shape", 1, (320, 192), 33, (16,), dict(num_objects=2, occlusion=False, pan=True)),
)


def covering_box(region: np.ndarray) -> tuple[int, int, int, int]:
    """One box (x0, y0, x1, y1 exclusive) around the region on every frame, grown like a loose box."""
    ys, xs = np.nonzero(region.any(axis=0))
    height, width = region.shape[1:]
    return grow_box((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), height, width)


def make_examples(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name, seed, kind, obj, (width, height), frames, later, options in EXAMPLES:
        scene = toyworld.random_scene(seed, width, height, frames, **options)
        edit = toyworld.make_edit(scene, kind, obj, later, name=name)
        folder = out / name
        fps = edit.source.fps
        write_video(folder / "clip.mp4", edit.source.frames, fps)
        write_mask_video(folder / "mask.mp4", edit.source_mask, fps)
        write_image(folder / "edited_first_frame.png", edit.edited_first_frame)
        later_entries = []
        for k, frame in edit.edited_later.items():
            write_image(folder / f"edited_frame_{k}.png", frame)
            later_entries.append({"index": k, "image": f"{name}/edited_frame_{k}.png"})
        write_video(folder / "ground_truth.mp4", edit.target.frames, fps)
        box = covering_box(edit.region)
        index.append({
            "name": name, "kind": kind, "width": width, "height": height, "frames": frames, "fps": fps,
            "clip": f"{name}/clip.mp4", "mask_video": f"{name}/mask.mp4",
            "edited_first_frame": f"{name}/edited_first_frame.png", "edited_later_frames": later_entries,
            "ground_truth": f"{name}/ground_truth.mp4", "box": ",".join(str(v) for v in box),
            "train_prompt": edit.caption, "prompt": edit.edited_caption, "seed": seed,
        })
    (out / "examples.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "README.md").write_text(readme(index))
    return index


def readme(index: list[dict]) -> str:
    lines = [
        "# Example clips",
        "",
        "Procedural toy clips drawn by `python scripts/make_examples.py` (`maskedit.tools.toyworld`; seeded, so they",
        "redraw identically). Each folder has the clip, the object's mask video (white = edit), the edited first",
        "frame, sometimes an edited later frame, and the ground-truth edited clip. `examples.json` lists them",
        "with a suggested prompt (caption of the edited clip), the caption of the original (`train_prompt`) and",
        "a box `x0,y0,x1,y1` that covers the object on every frame (use it instead of the mask video).",
        "",
        "| example | size | frames | edit | edited later frames | box |",
        "|---|---|---|---|---|---|",
    ]
    for e in index:
        later = ", ".join(str(x["index"]) for x in e["edited_later_frames"]) or "–"
        lines.append(f"| `{e['name']}` | {e['width']}x{e['height']} | {e['frames']} | {e['kind']} | {later} | {e['box']} |")
    lines += ["", "Prompts:", ""]
    for e in index:
        lines.append(f"- `{e['name']}`: “{e['prompt']}” (original: “{e['train_prompt']}”)")
    first = index[0]
    later = next(e for e in index if e["edited_later_frames"])
    k = later["edited_later_frames"][0]
    lines += [
        "",
        "Try them with the command line. The built-in tiny model is random: it shows the workflow, not the",
        "quality; few steps keep it quick on a CPU (leave --steps/--gen-steps out for the method's defaults).",
        "",
        "```",
        f"python -m maskedit edit --model tiny --video examples/{first['clip']} --mask-video examples/{first['mask_video']} \\",
        f"    --frames {first['frames']} --width {first['width']} --height {first['height']} \\",
        f"    --edited-frame examples/{first['edited_first_frame']} --steps 10 --gen-steps 4 \\",
        f"    --train-prompt \"{first['train_prompt']}\" \\",
        f"    --edit-prompt \"{first['prompt']}\" --out work/{first['name']}",
        f"python -m maskedit edit --model tiny --video examples/{later['clip']} --box {later['box']} \\",
        f"    --frames {later['frames']} --width {later['width']} --height {later['height']} \\",
        f"    --edited-frame examples/{later['edited_first_frame']} --edited-later {k['index']}=examples/{k['image']} \\",
        f"    --steps 10 --stage2-epochs 1 --gen-steps 4 --train-prompt \"{later['train_prompt']}\" \\",
        f"    --edit-prompt \"{later['prompt']}\" --out work/{later['name']}",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "examples"),
                        help="folder to write (default: the repository's examples/)")
    args = parser.parse_args(argv)
    index = make_examples(Path(args.out))
    for e in index:
        size = sum(p.stat().st_size for p in (Path(args.out) / e["name"]).iterdir())
        print(f"{e['name']}: {e['width']}x{e['height']}, {e['frames']} frames, {size / 1024:.0f} KiB")
    print(f"wrote {args.out}/examples.json and README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
