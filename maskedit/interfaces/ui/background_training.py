"""Train while you edit: background training follows the session's inputs (started when the masks are confirmed
and a caption is given, restarted when they change), and its loss plot and status line show on the Edited-frames
and Generate tabs. Its events span tabs, so they are wired here; `/set_background` and `/training_status` are
its endpoints."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...errors import MaskEditError
from ...studio.inputs import TrainInputs
from ...studio.progress import loss_rows
from .components import loss_axis, loss_frame
from .messages import app_message


def layout(page) -> SimpleNamespace:
    return SimpleNamespace(poll_timer=gr.Timer(2.0, active=False))  # ticks only while this page's run trains


def wire(page, w) -> None:
    studio = page.studio
    w.train_widgets = [w.caption, w.trigger, w.preset, w.steps_in, w.lr_in, w.rank_in, w.seed_in, w.swap_in,
                       w.fp8_in, w.ckpt_in, w.budget_in, w.tsampler_in]  # in the order of the handlers' arguments
    bg_widgets = [w.bg_toggle, *w.train_widgets]
    outputs = [w.bg_status, w.gen_bg_status, w.bg_plot, page.state, w.poll_timer]

    def bg_outputs(st, page_only: bool = False):
        """(loss plot, background line, the same line in the Generate tab, timer) of the session; page_only: the plot
        with its x-axis over the run's steps (an update an API client never gets)."""
        snap = studio.background_snapshot(st)
        frame = loss_frame(loss_rows(snap["steps"], snap["losses"])) if snap and snap["steps"] else gr.update()
        if page_only and snap and snap["steps"]:
            frame = loss_axis(snap["total_steps"] or snap["steps"][-1], frame)
        text = studio.background_text(snap) if snap else gr.update()
        running = bool(snap) and snap["status"] in ("queued", "training")
        return frame, text, text, gr.Timer(active=running)

    @page.guard
    def h_background(enabled, caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                     gradient_checkpointing, budget_s, timestep_sampler=None, st=None, request: gr.Request = None):
        st = page.sess(st, request)
        inputs = TrainInputs(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                             gradient_checkpointing, budget_s, timestep_sampler=timestep_sampler or None)
        try:
            line = studio.background(st, enabled, inputs)
        except MaskEditError as error:
            line = f"⚠️ Background training not started: {app_message(str(error))}"
        frame, _, _, timer = bg_outputs(st)
        return line, line, frame, st, timer

    w.bg_change = dict(fn=h_background, inputs=[*bg_widgets, page.state], outputs=outputs, api_visibility="private")

    def h_set_background(enabled, caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                         gradient_checkpointing, budget_s, timestep_sampler=None, st=None, request: gr.Request = None):
        return h_background(enabled, caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                            gradient_checkpointing, budget_s, timestep_sampler, st, request)[:4]

    def h_timer(st):
        return bg_outputs(st)[-1]

    # the endpoint's outputs are the ones a client reads (each named); the timer follows privately
    w.bg_toggle.change(h_set_background, [*bg_widgets, page.state], outputs[:4],
                       api_name="set_background").then(h_timer, [page.state], [w.poll_timer], api_visibility="private")
    for widget in (w.caption, w.trigger):
        widget.blur(**w.bg_change)
        widget.submit(**w.bg_change)
    for widget in (w.steps_in, w.lr_in, w.rank_in, w.seed_in, w.swap_in, w.fp8_in, w.ckpt_in, w.tsampler_in):
        widget.input(**w.bg_change)

    @page.guard
    def h_tick(st):
        """Thread driver: show the run's progress. Session driver (ZeroGPU): run its next chunk first."""
        if studio.background_driver == "session":
            for _ in studio.drive_background(st):
                pass
        return bg_outputs(st, page_only=True)

    w.poll_timer.tick(h_tick, [page.state], [w.bg_plot, w.bg_status, w.gen_bg_status, w.poll_timer],
                      api_visibility="private", show_progress="hidden",
                      **(page.gpu if studio.background_driver == "session" else dict(concurrency_limit=None)))

    @page.guard
    def h_status(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.training_status(st), st

    status_btn = gr.Button(visible=False)
    status_btn.click(h_status, [page.state], [w.api_json, page.state], api_name="training_status",
                     concurrency_limit=None)
