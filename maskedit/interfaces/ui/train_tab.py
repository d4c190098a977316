"""4 · Train: the preset with its memory estimate, Start / Stop / Resume with the run's phase beside them, the exact
settings the next run uses, the live loss plot, the LoRA files; or skip training with an uploaded LoRA."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import DEFAULT_TRIGGER, TIMESTEP_SAMPLERS
from ...models.presets import PRESETS
from ...studio.inputs import TrainInputs, generate_settings
from . import hints
from .components import AsSentDropdown, AsSentNumber, limit_slider, loss_axis, loss_frame, loss_plot


def layout(page) -> SimpleNamespace:
    preset0, tiny = page.preset0, page.tiny
    with gr.Tab("4 · Train", id="train"):
        with gr.Row():
            with gr.Column(scale=1):
                preset = AsSentDropdown(list(PRESETS), value=page.default_preset, label="Preset")
                preset_estimate = gr.Markdown(page.studio.estimate_line(page.default_preset), elem_id="train-estimate")
                with gr.Row():
                    train_btn = gr.Button("Start", variant="primary", elem_id="train-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                    resume_btn = gr.Button("Resume", elem_id="resume-btn")
                train_status = gr.Markdown("Not started: Start trains the LoRA with the settings below.",
                                           elem_id="train-status", label="training status")
                with gr.Accordion("Advanced", open=False):
                    steps_in = AsSentNumber(10 if tiny else preset0.train_steps, label="Steps", precision=0,
                                            elem_id="train-steps")
                    lr_in = AsSentNumber(preset0.learning_rate, label="Learning rate", elem_id="train-lr")
                    rank_in = AsSentNumber(preset0.rank, label="LoRA rank", precision=0, elem_id="train-rank")
                    seed_in = AsSentNumber(0, label="Seed", precision=0)
                    # memory options act on the 14B model only: hidden on the tiny model (and said so)
                    swap_in = limit_slider("blocks_to_swap", value=preset0.blocks_to_swap, visible=not tiny,
                                           label="Blocks swapped to CPU (of 40)")
                    fp8_in = gr.Checkbox(preset0.fp8, label="fp8 base weights", visible=not tiny)
                    if tiny:
                        gr.Markdown("Block swapping and fp8 are for the 14B model: not offered on the tiny model.")
                    ckpt_in = gr.Checkbox(preset0.gradient_checkpointing, label="Gradient checkpointing")
                    tsampler_in = AsSentDropdown(list(TIMESTEP_SAMPLERS), value=preset0.timestep_sampler,
                                                 elem_id="timestep-sampler",
                                                 label="Timestep distribution (uniform: the reference's; shifted: "
                                                       "through the flow shift, Wan2.2's default per expert)")
                    budget_in = AsSentNumber(page.studio.budget_s,
                                             label="Seconds per GPU call (ZeroGPU's limit; locally a checkpoint is "
                                                   "saved between calls)")
                first_run = TrainInputs("", DEFAULT_TRIGGER, page.default_preset, steps_in.value, lr_in.value,
                                        rank_in.value, 0, swap_in.value, fp8_in.value, ckpt_in.value, budget_in.value,
                                        timestep_sampler=tsampler_in.value)
                preset_text = gr.Code(page.studio.exact_settings(None, first_run, page.first_generation),
                                      label="Exact settings of the next run", language=None, elem_id="exact-settings",
                                      lines=8, max_lines=14, wrap_lines=True, show_line_numbers=False)
            with gr.Column(scale=2):
                plot = loss_plot(label="Training loss", elem_id="loss-plot")
                lora_files = gr.File(label="LoRA files (diffusers, ComfyUI, metadata)", file_count="multiple",
                                     interactive=False, elem_id="lora-files")
                with gr.Accordion("Loss points (JSON)", open=False):
                    loss_json = gr.JSON(label="loss points")
                with gr.Accordion("Skip training: upload a LoRA (.safetensors)", open=False):
                    if page.two_experts:  # one file per expert; a one-transformer base keeps its one-file input
                        lora_in = gr.File(label="LoRA pair: …high_noise… and …low_noise….safetensors "
                                          "(either order; lora.json may come along)", file_count="multiple",
                                          file_types=[".safetensors", ".json"], elem_id="lora-upload")
                    else:
                        lora_in = gr.File(label="LoRA", file_types=[".safetensors"], elem_id="lora-upload")
                    lora_status = gr.Markdown(label="LoRA upload status", elem_id="lora-status")
    return SimpleNamespace(preset=preset, preset_estimate=preset_estimate, preset_text=preset_text, steps_in=steps_in,
                           lr_in=lr_in, rank_in=rank_in, seed_in=seed_in, swap_in=swap_in, fp8_in=fp8_in,
                           ckpt_in=ckpt_in, budget_in=budget_in, tsampler_in=tsampler_in, train_btn=train_btn,
                           stop_btn=stop_btn,
                           resume_btn=resume_btn, train_status=train_status, plot=plot, lora_files=lora_files,
                           loss_json=loss_json, lora_in=lora_in, lora_status=lora_status)


def wire(page, w) -> None:
    studio, state, tiny = page.studio, page.state, page.tiny

    def h_preset(name):
        chosen = studio.preset(name)
        return (chosen.train_steps if not tiny else 10, chosen.learning_rate, chosen.rank,
                chosen.blocks_to_swap, chosen.fp8, chosen.gradient_checkpointing,
                chosen.generation_steps if not tiny else 4, chosen.guidance_scale, chosen.flow_shift,
                chosen.sampler, studio.estimate_line(name), chosen.timestep_sampler, chosen.step_cache,
                chosen.negative_prompt)

    # what the next run uses, written again whenever a field it reads changes (and after a clip is loaded)
    exact_inputs = [*w.train_widgets, w.gen_steps, w.cfg, w.shift, w.scale, w.sampler, state]

    def h_exact(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                gradient_checkpointing, budget_s, timestep_sampler, gen_steps, cfg, shift, lora_scale, sampler, st):
        inputs = TrainInputs(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                             gradient_checkpointing, budget_s, timestep_sampler=timestep_sampler or None)
        try:
            settings = generate_settings(gen_steps, cfg, shift, lora_scale, sampler=sampler)
        except Exception:  # noqa: BLE001 (a field being typed: the training part is still shown)
            settings = None
        return studio.exact_settings(st, inputs, settings)

    w.exact = dict(fn=h_exact, inputs=exact_inputs, outputs=[w.preset_text], api_visibility="private",
                   show_progress="hidden")
    w.preset.change(page.guard(h_preset), [w.preset],
                    [w.steps_in, w.lr_in, w.rank_in, w.swap_in, w.fp8_in, w.ckpt_in, w.gen_steps, w.cfg,
                     w.shift, w.sampler, w.preset_estimate, w.tsampler_in, w.step_cache, w.negative_prompt],
                    api_visibility="private").then(**w.exact).then(**w.bg_change)
    for widget in (w.steps_in, w.lr_in, w.rank_in, w.swap_in, w.fp8_in, w.ckpt_in, w.tsampler_in, w.gen_steps, w.cfg,
                   w.shift, w.scale, w.sampler):
        widget.change(**w.exact)
    w.preview.change(**w.exact)  # a clip was loaded: its frames and size

    train_outputs = [w.plot, w.train_status, w.loss_json, w.lora_files, state]

    def train_handler(resume: bool):
        @page.guard
        def handler(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                    gradient_checkpointing, budget_s, timestep_sampler=None, st=None, request: gr.Request = None,
                    progress=gr.Progress()):  # timestep_sampler None: optional for clients (the preset's)
            st = page.sess(st, request)
            inputs = TrainInputs(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                                 gradient_checkpointing, budget_s, timestep_sampler=timestep_sampler or None)
            if warning := studio.memory_warning(preset, blocks_to_swap, fp8):
                gr.Warning(warning)  # also on the status line; the run goes on (studio.estimate says why)
            axis = None  # the plot's x-axis spans the run's steps (set by page-only updates; see loss_axis)
            for view in studio.train(st, inputs, resume=resume):
                progress(view.done_of, desc=view.status.split("  \n")[0].replace("*", ""), unit="steps")
                # Gradio's LinePlot fixes its colour domain from the first value it gets: an empty first
                # frame draws every line without a stroke, so the plot waits for points
                frame = loss_frame(view.rows) if view.rows else None
                total = view.done_of[1] if view.done_of else (view.points["step"][-1] if view.points["step"] else 0)
                if total and total != axis:
                    axis = total
                    if view.phase in ("done", "stopped"):  # the last output stays a plain value for API clients
                        yield loss_axis(total), gr.skip(), gr.skip(), gr.skip(), st
                    else:
                        frame = loss_axis(total, frame)
                frame = frame if frame is not None else gr.update()
                notes: list[str] = []
                files = page.serving.side(view.files, notes) if view.files is not None else gr.update()
                status = view.status + "".join(f"  \n⚠️ {note}" for note in notes)
                status += hints.after("train") if view.phase == "done" else (
                    hints.after("stopped") if view.phase == "stopped" else "")
                yield frame, status, view.points, files if files is not None else gr.update(), st
        return handler

    # the progress bar sits on the plot: the status line beside the buttons stays readable while it runs
    w.train_btn.click(train_handler(False), [*w.train_widgets, state], train_outputs, api_name="train",
                      show_progress_on=[w.plot], **page.gpu)
    w.resume_btn.click(train_handler(True), [*w.train_widgets, state], train_outputs, api_name="resume_training",
                       show_progress_on=[w.plot], **page.gpu)

    @page.guard
    def h_stop(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.stop_training(st), st

    w.stop_btn.click(h_stop, [state], [w.train_status, state], api_name="stop_training")

    @page.guard
    def h_use_lora(file, st, request: gr.Request):
        st = page.sess(st, request)
        return (studio.use_lora(st, file) + hints.after("lora") if file else gr.update()), st

    w.lora_in.upload(h_use_lora, [w.lora_in, state], [w.lora_status, state], api_name="use_lora")
