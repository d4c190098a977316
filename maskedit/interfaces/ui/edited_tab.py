"""3 · Edited frames: a frame to edit elsewhere, the edited first frame, optional edited later frames (stage 2),
the captions, and the background run's loss while you edit."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import DEFAULT_TRIGGER
from . import hints
from .components import AsSentNumber, image_input, loss_plot


def layout(page) -> SimpleNamespace:
    with gr.Tab("3 · Edited frames", id="edited"):
        with gr.Row():
            with gr.Column():
                gr.Markdown("**Get a frame to edit** in any image editor (frame 0 for the edited first frame).")
                frame_index = AsSentNumber(0, label="Frame", precision=0)
                frame_btn = gr.Button("Get frame")
                frame_file = gr.File(label="Frame (PNG)", interactive=False, elem_id="frame-file")
            with gr.Column():
                edited_in = image_input(label="Edited first frame", type="filepath", sources=["upload"],
                                        elem_id="edited-in")
                fit_edited = gr.Checkbox(False, label="Fit (resize and centre-crop) to the clip's size")
                edited_status = gr.Markdown(elem_id="edited-status", label="edited frame status")
                edited_preview = gr.Image(label="Edited first frame as used (clip size)", interactive=False,
                                          type="filepath", height=200)
                examples_edited = [str(page.examples_dir / e["edited_first_frame"]) for e in page.examples
                                   if (page.examples_dir / e["edited_first_frame"]).is_file()]
                if examples_edited:
                    gr.Examples(examples_edited, inputs=[edited_in], label="Edited first frames of the examples")
        with gr.Accordion("Edited later frames (optional, stage 2)", open=False):
            with gr.Row():
                later_in = image_input(label="Edited frame K", type="filepath", sources=["upload"], elem_id="later-in")
                later_index = AsSentNumber(16, label="K (frame index)", precision=0, elem_id="later-index")
            later_caption = gr.Textbox("", label="Caption of edited frame K (stage 2 trains it under its own "
                                       "caption; empty: captioned automatically)", elem_id="later-caption")
            later_btn = gr.Button("Add later frame")
            later_clear = gr.Button("Remove later frames")
            later_status = gr.Markdown("No edited later frames (stage 2 is skipped).", label="edited later frames",
                                      elem_id="later-status")
        with gr.Row():
            caption = gr.Textbox("", label="Caption of the ORIGINAL first frame (training)", lines=2,
                                 elem_id="caption")
            prompt = gr.Textbox(label="Prompt: caption of the EDITED first frame (generation)", lines=2,
                                elem_id="prompt")
        with gr.Row():
            caption_btn = gr.Button("Caption both automatically")
            trigger = gr.Textbox(DEFAULT_TRIGGER, label="Trigger token")
        caption_status = gr.Markdown(label="caption status", elem_id="caption-status")
        with gr.Accordion("Training (runs in the background while you edit)", open=True):
            bg_status = gr.Markdown("Background training starts as soon as the masks are confirmed.",
                                    elem_id="bg-status", label="background training")
            bg_plot = loss_plot(label="Training loss (background)", elem_id="bg-plot")
    return SimpleNamespace(frame_index=frame_index, frame_btn=frame_btn, frame_file=frame_file, edited_in=edited_in,
                           fit_edited=fit_edited, edited_status=edited_status, edited_preview=edited_preview,
                           later_in=later_in, later_index=later_index, later_caption=later_caption,
                           later_btn=later_btn, later_clear=later_clear, later_status=later_status, caption=caption,
                           prompt=prompt, caption_btn=caption_btn, trigger=trigger, caption_status=caption_status,
                           bg_status=bg_status, bg_plot=bg_plot)


def wire(page, w) -> None:
    studio, state = page.studio, page.state

    @page.guard
    def h_frame(index, st, request: gr.Request):
        st = page.sess(st, request)
        return page.serving.file(studio.frame(st, index)), st

    w.frame_btn.click(h_frame, [w.frame_index, state], [w.frame_file, state], api_visibility="private")

    @page.guard
    def h_edited(image, fit, st, request: gr.Request):
        st = page.sess(st, request)
        if not image:
            return None, "", st
        path, text = studio.set_edited_frame(st, image, fit)
        return page.serving.file(path), text + hints.after("edited"), st

    w.edited_in.change(h_edited, [w.edited_in, w.fit_edited, state], [w.edited_preview, w.edited_status, state],
                       api_name="set_edited_frame")
    w.fit_edited.change(h_edited, [w.edited_in, w.fit_edited, state], [w.edited_preview, w.edited_status, state],
                        api_visibility="private")

    @page.guard
    def h_later(image, index, fit, frame_caption, st, request: gr.Request):
        st = page.sess(st, request)
        return studio.add_later_frame(st, image, index, fit, frame_caption) + hints.after("later"), st

    w.later_btn.click(h_later, [w.later_in, w.later_index, w.fit_edited, w.later_caption, state],
                      [w.later_status, state], api_name="add_later_frame").success(**w.bg_change)

    @page.guard
    def h_later_clear(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.clear_later_frames(st), st

    w.later_clear.click(h_later_clear, [state], [w.later_status, state],
                        api_visibility="private").success(**w.bg_change)

    @page.guard
    def h_caption(prompt_text=None, st=None, request: gr.Request = None):  # prompt_text optional for clients
        """Both captions; before there is an edited first frame only the original's, and the prompt stays as it
        was (returned as it came: a client gets a value, never an update)."""
        st = page.sess(st, request)
        original, edited = studio.caption(st)
        text = "Captions filled in" if edited is not None else (
            "Caption of the original first frame filled in (upload the edited first frame to caption it too)")
        return original, edited if edited is not None else (prompt_text or ""), text + hints.after("caption"), st

    w.caption_btn.click(h_caption, [w.prompt, state], [w.caption, w.prompt, w.caption_status, state],
                        api_name="caption", **page.gpu)
