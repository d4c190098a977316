"""2 · Segment: what to edit, as objects — typed ("the red car": every instance, SAM 3), clicked on the first frame
(include / exclude, the live mask, propagation through the clip) or uploaded as a mask video or a box. Each
object has its own colour and can be ticked off or removed; the edit region is the loose boxes of their union."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...workflow.session import parse_points
from . import hints
from .components import EXCLUDE, INCLUDE, AsSentDropdown, AsSentNumber, AsSentRadio, limit_slider
from .messages import app_message

OBJECT_COLUMNS = ["object", "colour", "made from", "score", "area on frame 0 (px)", "frames", "kept"]


def layout(page) -> SimpleNamespace:
    with gr.Tab("2 · Segment", id="segment"):
        gr.Markdown("Mark what to edit: **type it** (every instance is found and tracked through the clip), or "
                    "**click** on the first frame — include points on the object, exclude points on what is not; "
                    "the mask updates after each click, then **Propagate** through the clip. Several objects make "
                    "one edit region (their union); each has its own colour, and clicks can refine any of them.")
        backends = gr.Markdown(_backend_lines(page), elem_id="segment-backends")
        with gr.Row():
            with gr.Column():
                first_frame = gr.Image(label="First frame (click)", interactive=False, type="numpy",
                                       elem_id="first-frame")
                with gr.Row():
                    text_in = gr.Textbox(label="What to edit (text)", placeholder="the red car", scale=4,
                                         elem_id="segment-text")
                    find_btn = gr.Button("Find", scale=1, elem_id="find-btn")
                with gr.Row():
                    mode = AsSentRadio([INCLUDE, EXCLUDE], value=INCLUDE, label="Click adds")
                    target = AsSentDropdown([("a new object", "new")], value="new", label="Clicks go to",
                                            allow_custom_value=True, elem_id="click-target")
                with gr.Row():
                    undo_btn = gr.Button("Undo")
                    clear_btn = gr.Button("Clear")
                points_box = gr.Textbox("[]", label="Points (JSON [[x, y, label], ...]; 1 = object)",
                                        elem_id="points")
                margin = limit_slider("margin", value=0.1, step=0.01, label="Box margin (fraction of the box)")
                segment_btn = gr.Button("Propagate", variant="primary", elem_id="propagate-btn")
                bg_toggle = gr.Checkbox(page.background, label="Train in the background as soon as the masks are "
                                        "confirmed (needs the caption of the original first frame)",
                                        elem_id="bg-toggle")
            with gr.Column():
                with gr.Row():
                    overlay_video = gr.Video(label="Mask overlay", interactive=False, elem_id="overlay-video")
                    boxes_video = gr.Video(label="Loose boxes (white = edit)", interactive=False)
                segment_notes = gr.Markdown(elem_id="segment-notes", label="segmentation notes")
                objects_in = gr.CheckboxGroup([], value=[], label="Objects in the edit region (untick to leave one "
                                              "out)", elem_id="objects")
                objects_table = gr.Dataframe(headers=OBJECT_COLUMNS, value=None, interactive=False,
                                             label="Objects", elem_id="objects-table")
                with gr.Row():
                    remove_btn = gr.Button("Remove unticked objects")
                    clear_objects_btn = gr.Button("Remove all objects")
                with gr.Accordion("…or upload a mask video (white = edit) or give a box", open=False):
                    mask_in = gr.File(label="Mask video", file_types=["video", "image"])
                    box_in = gr.Textbox(label="Box x0,y0,x1,y1 (pixels of the conformed clip)")
                    fit_mask = gr.Checkbox(False, label="Fit a mask of another size to the clip")
                    mask_btn = gr.Button("Add this region")
        with gr.Row(visible=False):  # what the API-only endpoints take and give (labelled for view_api)
            api_instances = gr.JSON(label="instances found")
            api_objects = gr.JSON(label="objects")
            api_object_ids = gr.Textbox(label="object ids")
            api_object_id = AsSentNumber(label="object id", precision=0)
    return SimpleNamespace(first_frame=first_frame, mode=mode, undo_btn=undo_btn, clear_btn=clear_btn,
                           points_box=points_box, margin=margin, segment_btn=segment_btn, bg_toggle=bg_toggle,
                           overlay_video=overlay_video, boxes_video=boxes_video, segment_notes=segment_notes,
                           mask_in=mask_in, box_in=box_in, fit_mask=fit_mask, mask_btn=mask_btn, text_in=text_in,
                           find_btn=find_btn, target=target, objects_in=objects_in, objects_table=objects_table,
                           remove_btn=remove_btn, clear_objects_btn=clear_objects_btn, segment_backends=backends,
                           api_instances=api_instances, api_objects=api_objects, api_object_ids=api_object_ids,
                           api_object_id=api_object_id)


def _backend_lines(page) -> str:
    return "**Segmentation here:** " + "; ".join(page.runtime.segmentation_lines())


def wire(page, w) -> None:
    studio, state, gpu = page.studio, page.state, page.gpu
    region_outputs = [w.overlay_video, w.boxes_video, w.segment_notes, state]

    def served(region) -> tuple:
        """(overlay, boxes, notes) of a studio call with its two videos handed to Gradio (`serving`)."""
        overlay_path, boxes_path, text = region
        return page.serving.file(overlay_path), page.serving.file(boxes_path), text

    # ----- clicks (the live mask)
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

    @page.guard
    def h_target(value, st, request: gr.Request):
        st = page.sess(st, request)
        image, points = studio.set_click_target(st, value)
        return image, points, st

    w.first_frame.select(h_click, [w.mode, state], [w.first_frame, w.points_box, state], api_visibility="private",
                         **gpu)
    w.undo_btn.click(h_undo, [state], [w.first_frame, w.points_box, state], api_visibility="private", **gpu)
    w.clear_btn.click(h_clear, [state], [w.first_frame, w.points_box, state], api_visibility="private", **gpu)
    w.points_box.submit(h_points_edit, [w.points_box, state], [w.first_frame, state], api_visibility="private", **gpu)
    w.target.input(h_target, [w.target, state], [w.first_frame, w.points_box, state], api_visibility="private",
                   **gpu)

    # ----- the object list, shown again after every change
    @page.guard
    def h_objects(st, request: gr.Request):
        st = page.sess(st, request)
        rows = studio.object_rows(st)
        target = str(st.click_target) if studio.object(st, st.click_target) is not None else "new"
        return (studio.overlay(st, live=False), studio.points_json(st),
                gr.CheckboxGroup(choices=studio.object_choices(st), value=studio.kept_ids(st)),
                gr.Dataframe(value=rows or None, headers=OBJECT_COLUMNS),
                gr.Dropdown(choices=studio.target_choices(st), value=target), _backend_lines(page), st)

    refresh = dict(fn=h_objects, inputs=[state], outputs=[w.first_frame, w.points_box, w.objects_in, w.objects_table,
                                                          w.target, w.segment_backends, state],
                   api_visibility="private")
    w.load_event.success(**refresh)

    def confirmed(event) -> None:
        """After a change of the objects: show them again; the masks are confirmed, so training may start."""
        event.success(**refresh)
        event.success(**w.bg_change)

    # ----- making objects
    @page.guard
    def h_segment(points_json, margin, st, request: gr.Request):
        st = page.sess(st, request)
        overlay, boxes, text = served(studio.segment(st, points_json, margin))
        return overlay, boxes, app_message(text) + hints.after("segment"), st

    confirmed(w.segment_btn.click(h_segment, [w.points_box, w.margin, state], region_outputs, api_name="segment",
                                  **gpu))

    @page.guard
    def h_segment_text(text, margin, st, request: gr.Request):
        st = page.sess(st, request)
        overlay_path, boxes_path, notes, instances = studio.segment_text(st, text, margin)
        return (*served((overlay_path, boxes_path, notes)), instances, st)

    text_outputs = [w.overlay_video, w.boxes_video, w.segment_notes, w.api_instances, state]
    confirmed(w.find_btn.click(h_segment_text, [w.text_in, w.margin, state], text_outputs, api_name="segment_text",
                               **gpu))
    confirmed(w.text_in.submit(h_segment_text, [w.text_in, w.margin, state], text_outputs, api_visibility="private",
                               **gpu))

    @page.guard
    def h_mask(mask_video, box, margin, fit, st, request: gr.Request):
        st = page.sess(st, request)
        overlay, boxes, text = served(studio.use_mask(st, mask_video, box, margin, fit))
        return overlay, boxes, text + hints.after("segment"), st

    confirmed(w.mask_btn.click(h_mask, [w.mask_in, w.box_in, w.margin, w.fit_mask, state], region_outputs,
                               api_name="use_mask", **gpu))

    # ----- keeping, removing
    @page.guard
    def h_keep(object_ids, margin, st, request: gr.Request):
        st = page.sess(st, request)
        return (*served(studio.keep_objects(st, object_ids, margin)), st)

    confirmed(w.objects_in.input(h_keep, [w.objects_in, w.margin, state], region_outputs, api_visibility="private"))
    keep_btn = gr.Button(visible=False)
    confirmed(keep_btn.click(h_keep, [w.api_object_ids, w.margin, state], region_outputs, api_name="keep_objects"))

    @page.guard
    def h_remove_unticked(margin, st, request: gr.Request):
        st = page.sess(st, request)
        return (*served(studio.remove_unkept(st, margin)), st)

    confirmed(w.remove_btn.click(h_remove_unticked, [w.margin, state], region_outputs, api_visibility="private"))

    @page.guard
    def h_remove(object_id, margin, st, request: gr.Request):
        st = page.sess(st, request)
        return (*served(studio.remove_object(st, object_id, margin)), st)

    remove_btn = gr.Button(visible=False)
    confirmed(remove_btn.click(h_remove, [w.api_object_id, w.margin, state], region_outputs,
                               api_name="remove_object"))

    @page.guard
    def h_clear_objects(st, request: gr.Request):
        st = page.sess(st, request)
        studio.clear_objects(st)
        return None, None, "All objects removed: mark what to edit again.", st

    w.clear_objects_btn.click(h_clear_objects, [state], region_outputs, api_visibility="private").success(**refresh)

    @page.guard
    def h_list(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.describe_objects(st), st

    list_btn = gr.Button(visible=False)
    list_btn.click(h_list, [state], [w.api_objects, state], api_name="objects", concurrency_limit=None)
