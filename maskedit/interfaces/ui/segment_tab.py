"""2 · Segment: clicks on the first frame (include / exclude), the live mask, propagation through the clip and the
loose boxes; or an uploaded mask video or a box."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...workflow.session import parse_points
from . import hints
from .components import EXCLUDE, INCLUDE
from .messages import app_message


def layout(page) -> SimpleNamespace:
    with gr.Tab("2 · Segment", id="segment"):
        gr.Markdown("Click on the first frame: **include** points on the object, **exclude** points on "
                    "what is not. The mask updates after each click; then **Propagate** through the clip.")
        with gr.Row():
            with gr.Column():
                first_frame = gr.Image(label="First frame (click)", interactive=False, type="numpy",
                                       elem_id="first-frame")
                with gr.Row():
                    mode = gr.Radio([INCLUDE, EXCLUDE], value=INCLUDE, label="Click adds")
                with gr.Row():
                    undo_btn = gr.Button("Undo")
                    clear_btn = gr.Button("Clear")
                points_box = gr.Textbox("[]", label="Points (JSON [[x, y, label], ...]; 1 = object)",
                                        elem_id="points")
                margin = gr.Slider(0, 0.5, value=0.1, step=0.01, label="Box margin (fraction of the box)")
                segment_btn = gr.Button("Propagate", variant="primary", elem_id="propagate-btn")
                bg_toggle = gr.Checkbox(page.background, label="Train in the background as soon as the masks are "
                                        "confirmed (needs the caption of the original first frame)",
                                        elem_id="bg-toggle")
            with gr.Column():
                with gr.Row():
                    overlay_video = gr.Video(label="Mask overlay", interactive=False, elem_id="overlay-video")
                    boxes_video = gr.Video(label="Loose boxes (white = edit)", interactive=False)
                segment_notes = gr.Markdown(elem_id="segment-notes", label="segmentation notes")
                with gr.Accordion("…or upload a mask video (white = edit) or give a box", open=False):
                    mask_in = gr.File(label="Mask video", file_types=["video", "image"])
                    box_in = gr.Textbox(label="Box x0,y0,x1,y1 (pixels of the conformed clip)")
                    fit_mask = gr.Checkbox(False, label="Fit a mask of another size to the clip")
                    mask_btn = gr.Button("Use this region")
    return SimpleNamespace(first_frame=first_frame, mode=mode, undo_btn=undo_btn, clear_btn=clear_btn,
                           points_box=points_box, margin=margin, segment_btn=segment_btn, bg_toggle=bg_toggle,
                           overlay_video=overlay_video, boxes_video=boxes_video, segment_notes=segment_notes,
                           mask_in=mask_in, box_in=box_in, fit_mask=fit_mask, mask_btn=mask_btn)


def wire(page, w) -> None:
    studio, state, gpu = page.studio, page.state, page.gpu

    @page.guard
    def h_click(kind, st, request: gr.Request, evt: gr.SelectData):
        st = page.sess(st, request)
        image = studio.click(st, evt.index[0], evt.index[1], kind == INCLUDE)
        return image, studio.points_json(st), st

    @page.guard
    def h_undo(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.undo_click(st), studio.points_json(st), st

    @page.guard
    def h_clear(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.set_points(st, [], []), "[]", st

    @page.guard
    def h_points_edit(text, st, request: gr.Request):
        st = page.sess(st, request)
        points, labels = parse_points(text) if text and text.strip() not in ("", "[]") else ([], [])
        return studio.set_points(st, points, labels), st

    w.first_frame.select(h_click, [w.mode, state], [w.first_frame, w.points_box, state], api_visibility="private",
                         **gpu)
    w.undo_btn.click(h_undo, [state], [w.first_frame, w.points_box, state], api_visibility="private", **gpu)
    w.clear_btn.click(h_clear, [state], [w.first_frame, w.points_box, state], api_visibility="private", **gpu)
    w.points_box.submit(h_points_edit, [w.points_box, state], [w.first_frame, state], api_visibility="private", **gpu)

    @page.guard
    def h_segment(points_json, margin, st, request: gr.Request):
        st = page.sess(st, request)
        overlay_path, boxes_path, text = studio.segment(st, points_json, margin)
        return (page.serving.file(overlay_path), page.serving.file(boxes_path), app_message(text) + hints.after("segment"),
                st)

    w.segment_btn.click(h_segment, [w.points_box, w.margin, state], [w.overlay_video, w.boxes_video, w.segment_notes,
                                                                     state],
                        api_name="segment", **gpu).success(**w.bg_change)  # the masks are confirmed: training may start

    @page.guard
    def h_mask(mask_video, box, margin, fit, st, request: gr.Request):
        st = page.sess(st, request)
        overlay_path, boxes_path, text = studio.use_mask(st, mask_video, box, margin, fit)
        return page.serving.file(overlay_path), page.serving.file(boxes_path), text + hints.after("segment"), st

    w.mask_btn.click(h_mask, [w.mask_in, w.box_in, w.margin, w.fit_mask, state],
                     [w.overlay_video, w.boxes_video, w.segment_notes, state], api_name="use_mask",
                     **gpu).success(**w.bg_change)
