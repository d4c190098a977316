"""4 · Train: the preset with its memory estimate and exact settings, Start / Stop / Resume, the live loss plot, the
LoRA files; or skip training with an uploaded LoRA."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import TIMESTEP_SAMPLERS
from ...models.presets import PRESETS
from ...studio.inputs import TrainInputs
from .components import AsSentDropdown, AsSentNumber, limit_slider, loss_frame, loss_plot


def layout(page) -> SimpleNamespace:
    preset0, tiny = page.preset0, page.tiny
    with gr.Tab("4 · Train", id="train"):
        with gr.Row():
            with gr.Column(scale=1):
                preset = AsSentDropdown(list(PRESETS), value=page.default_preset, label="Preset")
                preset_estimate = gr.Markdown(page.studio.estimate_line(page.default_preset), elem_id="train-estimate")
                preset_text = gr.Code(preset0.describe(), label="Exact settings", language=None)
                with gr.Accordion("Advanced", open=False):
                    steps_in = AsSentNumber(10 if tiny else preset0.train_steps, label="Steps", precision=0,
                                         elem_id="train-steps")
                    lr_in = AsSentNumber(preset0.learning_rate, label="Learning rate")
                    rank_in = AsSentNumber(preset0.rank, label="LoRA rank", precision=0)
                    seed_in = AsSentNumber(0, label="Seed", precision=0)
                    swap_in = limit_slider("blocks_to_swap", value=preset0.blocks_to_swap,
                                           label="Blocks swapped to CPU (of 40)")
                    fp8_in = gr.Checkbox(preset0.fp8, label="fp8 base weights")
                    ckpt_in = gr.Checkbox(preset0.gradient_checkpointing, label="Gradient checkpointing")
                    tsampler_in = AsSentDropdown(list(TIMESTEP_SAMPLERS), value=preset0.timestep_sampler,
                                                 elem_id="timestep-sampler",
                                                 label="Timestep distribution (uniform: the reference's; shifted: "
                                                       "through the flow shift, Wan2.2's default per expert)")
                    budget_in = AsSentNumber(page.studio.budget_s, label="Seconds per GPU call (chunk budget)")
                with gr.Row():
                    train_btn = gr.Button("Start", variant="primary", elem_id="train-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                    resume_btn = gr.Button("Resume", elem_id="resume-btn")
                train_status = gr.Markdown(elem_id="train-status")
            with gr.Column(scale=2):
                plot = loss_plot(label="Training loss", elem_id="loss-plot", height=380)
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
                        lora_in = gr.File(label="LoRA", file_types=[".safetensors"])
                    lora_status = gr.Markdown()
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
        return (chosen.describe(), chosen.train_steps if not tiny else 10, chosen.learning_rate, chosen.rank,
                chosen.blocks_to_swap, chosen.fp8, chosen.gradient_checkpointing,
                chosen.generation_steps if not tiny else 4, chosen.guidance_scale, chosen.flow_shift,
                chosen.sampler, studio.estimate_line(name), chosen.timestep_sampler, chosen.step_cache,
                chosen.negative_prompt)

    w.preset.change(page.guard(h_preset), [w.preset],
                    [w.preset_text, w.steps_in, w.lr_in, w.rank_in, w.swap_in, w.fp8_in, w.ckpt_in, w.gen_steps, w.cfg,
                     w.shift, w.sampler, w.preset_estimate, w.tsampler_in, w.step_cache, w.negative_prompt],
                    api_visibility="private").then(**w.bg_change)

    train_outputs = [w.plot, w.train_status, w.loss_json, w.lora_files, state]

    def train_handler(resume: bool):
        @page.guard
        def handler(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                    gradient_checkpointing, budget_s, timestep_sampler=None, st=None, request: gr.Request = None):
            st = page.sess(st, request)
            inputs = TrainInputs(caption, trigger, preset, steps, learning_rate, rank, seed, blocks_to_swap, fp8,
                                 gradient_checkpointing, budget_s, timestep_sampler=timestep_sampler or None)
            if warning := studio.memory_warning(preset, blocks_to_swap, fp8):
                gr.Warning(warning)  # also on the status line; the run goes on (studio.estimate says why)
            for view in studio.train(st, inputs, resume=resume):
                # Gradio's LinePlot fixes its colour domain from the first value it gets: an empty first
                # frame draws every line without a stroke, so the plot waits for points
                frame = loss_frame(view.rows) if view.rows else gr.update()
                yield frame, view.status, view.points, view.files if view.files is not None else gr.update(), st
        return handler

    w.train_btn.click(train_handler(False), [*w.train_widgets, state], train_outputs, api_name="train", **page.gpu)
    w.resume_btn.click(train_handler(True), [*w.train_widgets, state], train_outputs, api_name="resume_training",
                       **page.gpu)

    @page.guard
    def h_stop(st, request: gr.Request):
        st = page.sess(st, request)
        return studio.stop_training(st), st

    w.stop_btn.click(h_stop, [state], [w.train_status, state], api_name="stop_training")

    @page.guard
    def h_use_lora(file, st, request: gr.Request):
        st = page.sess(st, request)
        return (studio.use_lora(st, file) if file else gr.update()), st

    w.lora_in.upload(h_use_lora, [w.lora_in, state], [w.lora_status, state], api_name="use_lora")
