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
    from ...perception.segmentation import BACKENDS, DEFAULT_SAM2_MODEL

    segment = subparsers.add_parser(
        "segment", formatter_class=HelpFormatter, help="segment the object to edit from a few clicks (SAM2 or offline)",
        description=paragraph("Segment the object to edit through the whole clip from a few clicks on one frame: "
                               "SAM2 when its weights load (auto), else an approximate offline segmenter. Writes "
                               "the tight masks, their loose boxes (the region to edit) and a preview, all with the "
                               "clip's frame count and fps; give masks.mp4 to `prepare --mask-video`."),
        epilog=f"example:\n  {PROG} segment --video clip.mp4 --point 420,260 --point 40,30,0 --out work/masks\n"
               f"  {PROG} segment --video clip.mp4 --point 420,260 --point 600,300,1,2 --frame 24 --out work/masks\n"
               f"  {PROG} prepare --video clip.mp4 --mask-video work/masks/masks.mp4 --out work/prepared\n\n"
               "points: X,Y[,LABEL[,OBJECT]] in pixels of the clip as read (x right, y down); LABEL 1 = on the\n"
               "object (default), 0 = not the object; OBJECT groups points into several objects (default 1).\n"
               "writes: masks.mp4 (tight, white = object), boxes.mp4 (loose boxes, white = edit, black = keep),\n"
               "overlay.mp4 (preview: mask in red, boxes in yellow, clicks on the prompted frame).",
    )
    segment.add_argument("--video", required=True, metavar="V",
                         help="the clip: a video file (mp4, mov, webm, ...) or a folder of frames")
    segment.add_argument("--point", action="append", default=[], metavar="X,Y[,L[,O]]",
                         help="a click: X,Y on the object, X,Y,0 on what is not the object; repeat for more clicks")
    segment.add_argument("--box", metavar="x0,y0,x1,y1",
                         help="a box around the object (pixels, x1 and y1 exclusive), with or instead of clicks")
    segment.add_argument("--frame", type=int, default=0, metavar="K",
                         help="the frame the clicks are on (default 0); the masks are tracked forward and backward")
    segment.add_argument("--backend", choices=BACKENDS, default="auto",
                         help="sam2, the offline fallback (approximate), or auto: SAM2 when its weights load "
                              "(on a CPU only from the local cache), else the fallback (default %(default)s)")
    segment.add_argument("--sam2-model", default=DEFAULT_SAM2_MODEL, metavar="ID|DIR",
                         help="SAM2 checkpoint in transformers format: hub id or local folder (default %(default)s)")
    segment.add_argument("--device", help="device for SAM2, e.g. cuda or cpu (default: cuda when available)")
    segment.add_argument("--margin", type=float, default=masks.BOX_MARGIN,
                         help="growth of each box, a fraction of its size (default %(default)s = 10%%)")
    segment.add_argument("--min-area", type=int, default=masks.MIN_COMPONENT_AREA, metavar="PIXELS",
                         help="mask specks smaller than this get no box (default %(default)s)")
    segment.add_argument("--out", required=True, metavar="DIR", help="folder for masks.mp4, boxes.mp4, overlay.mp4")
    segment.set_defaults(handler=run_segment)
    return segment


def run_segment(args) -> int:
    from tqdm import tqdm

    from ...perception.segmentation import load_segmenter, parse_point, segment_clip, write_segmentation
    from ...media.video import read_video

    if not args.point and not args.box:
        raise MaskEditError("give at least one click on the object: --point X,Y (or a --box x0,y0,x1,y1)")
    if args.margin < 0 or args.min_area < 0:
        raise MaskEditError("--margin and --min-area must be 0 or more")
    clicks = [parse_point(text) for text in args.point]
    points = [(x, y) for x, y, _, _ in clicks]
    labels = [label for _, _, label, _ in clicks]
    objects = [obj for _, _, _, obj in clicks]
    box = masks.parse_box(args.box) if args.box else None
    clip = read_video(args.video)
    for note in clip.notes:
        print(f"note: {note}")
    print(f"clip: {clip.num_frames} frames, {clip.width}x{clip.height}, {clip.fps:g} fps", flush=True)
    segmenter = load_segmenter(args.backend, model_id=args.sam2_model, device=args.device)
    print(f"segmenter: {segmenter.label}", flush=True)
    if segmenter.note:
        print(f"note: {segmenter.note}", flush=True)
    try:
        with tqdm(total=clip.num_frames, desc="segmenting", unit="frame", dynamic_ncols=True) as bar:
            result = segment_clip(segmenter, clip.frames, points, labels, args.frame, box=box, object_ids=objects,
                                  margin=args.margin, min_area=args.min_area,
                                  progress=lambda done, total: bar.update(done - bar.n))
    finally:
        segmenter.release()  # frees the GPU for the video model
    outputs = write_segmentation(args.out, clip.frames, result, clip.fps, points=points, labels=labels)
    for note in result.notes:
        if note != segmenter.note:
            print(f"note: {note}")
    print(f"the boxes cover {float(result.boxes.mean()):.0%} of the frames")
    print(f"wrote {outputs.masks} (white = object), {outputs.boxes} (white = edit), {outputs.overlay} (preview)")
    print(f"next: {PROG} prepare --video {args.video} --mask-video {outputs.masks} --out PREPARED_DIR")
    return 0


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
