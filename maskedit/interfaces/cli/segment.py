"""`python -m maskedit segment` and `caption`: masks from clicks, captions from Florence-2 (see cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...method import masks
from .common import PROG, HelpFormatter, paragraph
from ...defaults import DEFAULT_CAPTION_MODEL, DEFAULT_TRIGGER
from ...errors import MaskEditError


def add_segment_parser(subparsers) -> argparse.ArgumentParser:
    from ...perception.segmentation import BACKENDS, DEFAULT_SAM2_MODEL, DEFAULT_SAM3_MODEL

    segment = subparsers.add_parser(
        "segment", formatter_class=HelpFormatter,
        help="segment what to edit from a sentence (SAM 3) or a few clicks (SAM 3, SAM2 or offline)",
        description=paragraph("Segment what to edit through the whole clip: every instance a sentence names (--text, "
                               "SAM 3), and/or the objects a few clicks on one frame mark (--point: SAM 3 or SAM2 when "
                               "their weights load (auto), else an approximate offline segmenter). Several objects "
                               "make one region, their union. Writes the tight masks, their loose boxes (the region "
                               "to edit), a preview and objects.json, all with the clip's frame count and fps; give "
                               "masks.mp4 to `prepare --mask-video`."),
        epilog=f"example:\n  {PROG} segment --video clip.mp4 --point 420,260 --point 40,30,0 --out work/masks\n"
               f"  {PROG} segment --video clip.mp4 --point 420,260 --point 600,300,1,2 --frame 24 --out work/masks\n"
               f"  {PROG} segment --video clip.mp4 --text \"the dog\" --out work/masks        # every dog\n"
               f"  {PROG} segment --video clip.mp4 --text \"the dog\" --keep 1,3 --point 90,40,1,4 --out work/masks\n"
               f"  {PROG} prepare --video clip.mp4 --mask-video work/masks/masks.mp4 --out work/prepared\n\n"
               "points: X,Y[,LABEL[,OBJECT]] in pixels of the clip as read (x right, y down); LABEL 1 = on the\n"
               "object (default), 0 = not the object; OBJECT groups points into several objects (default 1).\n"
               "With --text, the instances found are objects 1, 2, ... (highest score first, listed with their\n"
               "score and area on frame 0): clicks with an instance's number refine it (from its frame-0 box),\n"
               "clicks with a higher number add an object; --keep lists the objects to keep (default: all).\n"
               "writes: masks.mp4 (tight, white = object), boxes.mp4 (loose boxes, white = edit, black = keep),\n"
               "overlay.mp4 (preview: each object in its colour, boxes in yellow, clicks on the prompted frame),\n"
               "objects.json (each object: what made it, score, area on frame 0, frames).",
    )
    segment.add_argument("--video", required=True, metavar="V",
                         help="the clip: a video file (mp4, mov, webm, ...) or a folder of frames")
    segment.add_argument("--text", action="append", default=[], metavar="TEXT",
                         help="what to edit in a few words (\"the red car\", \"both dogs\"): every instance is "
                              "found and tracked (SAM 3); repeat for more")
    segment.add_argument("--point", action="append", default=[], metavar="X,Y[,L[,O]]",
                         help="a click: X,Y on the object, X,Y,0 on what is not the object; repeat for more clicks")
    segment.add_argument("--box", metavar="x0,y0,x1,y1",
                         help="a box around the object (pixels, x1 and y1 exclusive), with or instead of clicks")
    segment.add_argument("--keep", metavar="1,3", help="keep only these objects (numbers as listed; default all)")
    segment.add_argument("--frame", type=int, default=0, metavar="K",
                         help="the frame the clicks are on (default 0); the masks are tracked forward and backward")
    segment.add_argument("--backend", choices=BACKENDS, default="auto",
                         help="for clicks: sam3, sam2, the offline fallback (approximate), or auto: SAM 3 on a GPU, "
                              "then SAM2, whichever weights load (on a CPU only from the local cache), else the "
                              "fallback (default %(default)s); text always uses SAM 3")
    segment.add_argument("--sam3-model", default=DEFAULT_SAM3_MODEL, metavar="ID|DIR",
                         help="SAM 3 checkpoint in transformers format: hub id (gated) or local folder "
                              "(default %(default)s)")
    segment.add_argument("--sam2-model", default=DEFAULT_SAM2_MODEL, metavar="ID|DIR",
                         help="SAM2 checkpoint in transformers format: hub id or local folder (default %(default)s)")
    segment.add_argument("--device", help="device for SAM 3 / SAM2, e.g. cuda or cpu (default: cuda when available)")
    segment.add_argument("--margin", type=float, default=masks.BOX_MARGIN,
                         help="growth of each box, a fraction of its size (default %(default)s = 10%%)")
    segment.add_argument("--min-area", type=int, default=masks.MIN_COMPONENT_AREA, metavar="PIXELS",
                         help="mask specks smaller than this get no box (default %(default)s)")
    segment.add_argument("--out", required=True, metavar="DIR",
                         help="folder for masks.mp4, boxes.mp4, overlay.mp4, objects.json")
    segment.set_defaults(handler=run_segment)
    return segment


def run_segment(args) -> int:
    import json

    import numpy as np
    from tqdm import tqdm

    from ...limits import check_points_count, check_settings, check_text_prompt
    from ...media.video import read_video
    from ...perception.segmentation import (SegmentationBackends, Segmentation, frame_box, object_color, parse_point,
                                            segment_clip, segment_text, union_region, write_segmentation)

    if not args.point and not args.box and not args.text:
        raise MaskEditError("give what to edit: --text \"the red car\", or at least one click on the object: "
                            "--point X,Y (or a --box x0,y0,x1,y1)")
    check_settings({"margin": "--margin", "min_area": "--min-area"}, margin=args.margin, min_area=args.min_area)
    texts = [check_text_prompt(text) for text in args.text]
    clicks = [parse_point(text) for text in args.point]
    if clicks:
        check_points_count(len(clicks))
    keep = _numbers(args.keep, "--keep") if args.keep else None
    box = masks.parse_box(args.box) if args.box else None
    clip = read_video(args.video)
    for note in clip.notes:
        print(f"note: {note}")
    print(f"clip: {clip.num_frames} frames, {clip.width}x{clip.height}, {clip.fps:g} fps", flush=True)
    backends = SegmentationBackends(args.backend, sam2_model=args.sam2_model, sam3_model=args.sam3_model,
                                    device=args.device)
    objects: dict[int, dict] = {}  # number → {"masks", "label", "approximate", "notes", what made it}
    notes: list[str] = []
    try:
        if texts:
            finder = backends.text()
            print(f"text segmenter: {finder.label}", flush=True)
            for text in texts:
                with tqdm(total=clip.num_frames, desc=f"finding \"{text}\"", unit="frame", dynamic_ncols=True) as bar:
                    found = segment_text(finder, clip.frames, text,
                                         progress=lambda done, total: bar.update(done - bar.n))
                if not found.instances:
                    print(f"note: nothing matching \"{text}\" was found")
                notes += [n for n in found.notes if n not in notes]
                for instance in found.instances:
                    objects[len(objects) + 1] = dict(kind="text", text=text, score=round(float(instance.score), 4),
                                                     masks=instance.masks, label=found.label, approximate=False)
        if clicks or box:
            segmenter = backends.clicks()
            print(f"segmenter: {segmenter.label}", flush=True)
            if segmenter.note:
                print(f"note: {segmenter.note}", flush=True)
            numbers = list(dict.fromkeys(obj for _, _, _, obj in clicks)) or [1]
            for index, number in enumerate(numbers):
                picked = [c for c in clicks if c[3] == number]
                refined = objects.get(number)
                start = box if index == 0 and box else (frame_box(refined["masks"][args.frame]) if refined else None)
                with tqdm(total=clip.num_frames, desc=f"segmenting object {number}", unit="frame",
                          dynamic_ncols=True) as bar:
                    result = segment_clip(segmenter, clip.frames, [(x, y) for x, y, _, _ in picked],
                                          [label for _, _, label, _ in picked], args.frame, box=start,
                                          margin=args.margin, min_area=args.min_area,
                                          progress=lambda done, total: bar.update(done - bar.n))
                notes += [n for n in result.notes if n not in notes and n != segmenter.note]
                objects[number] = dict(kind="clicks", points=[[x, y, label] for x, y, label, _ in picked],
                                       masks=result.region, label=result.label, approximate=result.approximate,
                                       **({"text": refined["text"]} if refined and refined.get("text") else {}),
                                       **({"box": list(start)} if start else {}))
    finally:
        for line in backends.describe():  # which backend ran, and what the others would need
            print(f"backend: {line}")
        backends.release()  # frees the GPU for the video model
    if keep is not None:
        unknown = sorted(set(keep) - set(objects))
        if unknown:
            raise MaskEditError(f"--keep names object(s) {', '.join(map(str, unknown))}, but the objects are "
                                f"{', '.join(map(str, sorted(objects))) or 'none'}")
    kept = {n: o for n, o in sorted(objects.items()) if keep is None or n in keep}
    for number, record in sorted(objects.items()):
        record.update(area=int(record["masks"][0].sum()), frames=int(record["masks"].any(axis=(1, 2)).sum()))
        score = f", score {record['score']:.2f}" if "score" in record else ""
        what = f"\"{record['text']}\"" if record["kind"] == "text" else f"{len(record['points'])} click(s)"
        print(f"object {number} ({object_color(number)[0]}): {what}{score}, {record['area']} px on frame 0, on "
              f"{record['frames']} of {clip.num_frames} frames" + ("" if number in kept else " — dropped (--keep)"))
    if not kept:
        raise MaskEditError("no object to edit: nothing was found, or --keep dropped everything; try other words, "
                            "click on the object, or keep another object")
    region, box_lists = union_region([o["masks"] for o in kept.values()], [], clip.num_frames, clip.height,
                                     clip.width, margin=args.margin, min_area=args.min_area)
    if not region.any():
        raise MaskEditError(f"the objects are found on no frame (or only as specks smaller than {args.min_area} "
                            "pixels); click on the middle of the object, add more clicks, or use other words")
    union = np.logical_or.reduce([o["masks"] for o in kept.values()])
    approximate = any(o["approximate"] for o in kept.values())
    labels = sorted({o["label"] for o in kept.values()})
    result = Segmentation(union, region, "; ".join(labels), approximate, args.frame, notes, box_lists)
    points = [(x, y) for o in kept.values() for x, y, _ in o.get("points", [])]
    point_labels = [label for o in kept.values() for _, _, label in o.get("points", [])]
    outputs = write_segmentation(args.out, clip.frames, result, clip.fps, points=points, labels=point_labels,
                                 tints=[(o["masks"], object_color(n)[1]) for n, o in kept.items()])
    listed = [{"id": n, **{k: v for k, v in o.items() if k != "masks"}, "kept": n in kept}
              for n, o in sorted(objects.items())]
    (outputs.masks.parent / "objects.json").write_text(json.dumps(listed, indent=2))
    for note in notes:
        print(f"note: {note}")
    print(f"the boxes cover {float(result.boxes.mean()):.0%} of the frames")
    print(f"wrote {outputs.masks} (white = object), {outputs.boxes} (white = edit), {outputs.overlay} (preview), "
          "objects.json")
    print(f"next: {PROG} prepare --video {args.video} --mask-video {outputs.masks} --out PREPARED_DIR")
    return 0


def _numbers(text: str, option: str) -> list[int]:
    """"1,3" → [1, 3] (object numbers)."""
    try:
        numbers = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        raise MaskEditError(f"{option} takes object numbers separated by commas, e.g. 1,3; got {text!r}") from None
    if not numbers or min(numbers) < 1:
        raise MaskEditError(f"{option} takes object numbers 1, 2, ... separated by commas, e.g. 1,3; got {text!r}")
    return numbers


def add_caption_parser(subparsers) -> argparse.ArgumentParser:

    caption = subparsers.add_parser(
        "caption", formatter_class=HelpFormatter, help="caption an image (Florence-2), e.g. for --train-prompt",
        description=paragraph("Caption an image with Florence-2 <DETAILED_CAPTION>, without its boilerplate opening "
                               "(\"The image shows ...\"). Prints only the caption: give it as --train-prompt to "
                               "`train` (of the original first frame) or --edit-prompt to `generate` (of the edited "
                               "one), which put the "
                               f"trigger token ({DEFAULT_TRIGGER}) before it themselves; --trigger prints the whole "
                               "prompt instead."),
        epilog=f"example:\n  {PROG} caption work/prepared/first_frame.png\n"
               f"  {PROG} train --prepared work/prepared --train-prompt \"$({PROG} caption work/prepared/first_frame.png)\" "
               "--out work/lora\n"
               f"  {PROG} caption --trigger {DEFAULT_TRIGGER} edited.png      # the full prompt\n\n"
               "Without the captioner's weights (offline, nothing cached) it stops and asks you to type the prompt.",
    )
    caption.add_argument("image", metavar="IMAGE", help="an image file (png, jpg, webp, bmp) or a video (its first frame)")
    caption.add_argument("--trigger", metavar="TOKEN",
                         help="print the whole prompt, this token before the caption (default: the caption alone)")
    caption.add_argument("--caption-model", default=DEFAULT_CAPTION_MODEL, metavar="ID|DIR",
                         help="Florence-2 in transformers format: hub id or local folder (default %(default)s)")
    caption.add_argument("--device", help="e.g. cuda or cpu (default: cuda when available)")
    caption.set_defaults(handler=run_caption)
    return caption


def run_caption(args) -> int:
    from ...perception.captioning import load_captioner
    from ...media.video import IMAGE_EXTENSIONS, read_image, read_video

    path = Path(args.image)
    image = read_image(path) if path.suffix.lower() in IMAGE_EXTENSIONS else read_video(path).frames[0]
    captioner = load_captioner(args.caption_model, device=args.device)
    print(f"captioner: {captioner.label}", file=sys.stderr, flush=True)
    try:
        prompt = captioner.caption(image, trigger=args.trigger or "")
    finally:
        captioner.release()
    print(prompt)
    return 0
