"""5 · Generate: the method or a baseline, the sampler and its settings, Generate / Preview / Cancel, the edited
video beside the original, the report, and the session's gallery."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import SAMPLERS
from ...errors import MaskEditError
from ...studio.inputs import TrainInputs, generate_settings
from . import hints
from .components import METHOD_CHOICES, image_input


def layout(page) -> SimpleNamespace:
    first = page.first_generation
    with gr.Tab("5 · Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                method = gr.Radio(METHOD_CHOICES, value="mask-lora", label="Method")
                gen_steps = gr.Number(first.steps, label="Steps", precision=0)
                cfg = gr.Number(first.guidance_scale, label="Guidance (CFG)")
                shift = gr.Number(first.flow_shift, label="Flow shift")
                sampler = gr.Dropdown(list(SAMPLERS), value=first.sampler, elem_id="sampler",
                                      label="Sampler (euler: the reference's flow-matching Euler; unipc: Wan's)")
                seed_gen = gr.Number(0, label="Seed", precision=0)
                scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale")
                with gr.Accordion("Advanced", open=False):
                    cfg2 = gr.Number(None, label="Guidance of the low-noise expert (CFG 2; empty: the same as CFG)",
                                     visible=page.two_experts, elem_id="cfg2")
                    speed_lora_in = gr.Textbox(
                        "", label="Speed LoRA for the preview (file path or owner/repo/file.safetensors; "
                        "HIGH,LOW on a two-expert base)", placeholder="empty: $MASKEDIT_SPEED_LORA or the "
                        "preset's", elem_id="speed-lora")
                new_edit = image_input(label="Another edited first frame (optional)", type="filepath",
                                       sources=["upload"])
                use_ckpt = gr.Checkbox(False, label="Don't wait for training: use its latest checkpoint "
                                       "(training goes on afterwards)")
                gen_bg_status = gr.Markdown(elem_id="gen-bg-status", label="background training (Generate tab)")
                with gr.Row():
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                    preview_btn = gr.Button("Preview (4 steps)", elem_id="preview-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop")
            with gr.Column(scale=2):
                with gr.Row():
                    edited_video = gr.Video(label="Edited video", interactive=False, elem_id="edited-video")
                    sbs_video = gr.Video(label="Original | edited", interactive=False)
                report = gr.Markdown(elem_id="report", label="report")
                report_json = gr.JSON(label="report", visible=False)
                gallery = gr.Gallery(label="This session's results (newest first; one LoRA, many edits)",
                                     columns=4, rows=1, height=220, object_fit="contain", preview=False,
                                     fit_columns=False, elem_id="gallery", elem_classes="whole-items")
    return SimpleNamespace(method=method, gen_steps=gen_steps, cfg=cfg, shift=shift, sampler=sampler,
                           seed_gen=seed_gen, scale=scale, cfg2=cfg2, speed_lora_in=speed_lora_in, new_edit=new_edit,
                           use_ckpt=use_ckpt, gen_bg_status=gen_bg_status, gen_btn=gen_btn, preview_btn=preview_btn,
                           cancel_btn=cancel_btn, edited_video=edited_video, sbs_video=sbs_video, report=report,
                           report_json=report_json, gallery=gallery)


def wire(page, w) -> None:
    studio, state = page.studio, page.state
    results = [w.edited_video, w.sbs_video, w.report, w.report_json, state]

    @page.guard
    def h_gallery(st, request: gr.Request):
        return page.serving.gallery(studio.gallery(page.sess(st, request)))

    gallery_btn = gr.Button(visible=False)
    gallery_btn.click(h_gallery, [state], [w.gallery], api_name="gallery", concurrency_limit=None)

    @page.guard
    def h_generate(prompt_text, edited_file, method_name, steps, cfg_value, shift_value, seed, lora_scale, fit,
                   use_checkpoint, preset_name, caption_text, trigger_text, train_steps, lr, rank, train_seed,
                   swap, fp8, ckpt, budget_s, sampler_name, cfg2_value=None, st=None,
                   request: gr.Request = None, progress=gr.Progress()):  # cfg2 = None: optional for clients
        st = page.sess(st, request)
        settings = generate_settings(steps, cfg_value, shift_value, lora_scale, seed, method_name, sampler_name,
                                     cfg2_value)
        # the Train tab's settings: the naive LoRA (naive-lora, feature-blend) is trained with them when not yet
        train_inputs = TrainInputs(caption_text, trigger_text, preset_name, train_steps, lr, rank, train_seed, swap,
                                   fp8, ckpt, budget_s, edit_caption=prompt_text)
        # a generator: a cancelled call closes it between steps, which stops the denoising (studio.generation)
        for kind, value in studio.generate_events(
                st, prompt_text, settings, edited_frame=edited_file, fit=fit, use_checkpoint=bool(use_checkpoint),
                preset=preset_name, train_inputs=train_inputs,
                progress=lambda done, desc: progress(done, desc=desc, unit="steps")):
            if kind == "warning":
                gr.Warning(value)
            elif kind == "progress":  # encode, denoise k/n (with the time left), decode
                progress(value[0], desc=value[1], unit="steps")
            elif kind == "step":
                yield (gr.skip(),) * 5
            elif kind == "result":
                edited, side_by_side, report, report_json = page.serving.result(value)
                yield edited, side_by_side, report + "\n" + hints.after("generate"), report_json, st
                return
        raise MaskEditError("generation ended without a result")

    # not in the "gpu" group: it may wait for a background run whose chunks take the GPU in turn (the model
    # itself is guarded by the studio's lock)
    w.gen_btn.click(h_generate, [w.prompt, w.new_edit, w.method, w.gen_steps, w.cfg, w.shift, w.seed_gen, w.scale,
                                 w.fit_edited, w.use_ckpt, w.preset, w.caption, w.trigger, w.steps_in, w.lr_in,
                                 w.rank_in, w.seed_in, w.swap_in, w.fp8_in, w.ckpt_in, w.budget_in, w.sampler, w.cfg2,
                                 state],
                    results, api_name="generate", concurrency_id="generate",
                    concurrency_limit=1).then(h_gallery, [state], [w.gallery], api_visibility="private")

    @page.guard
    def h_preview(prompt_text, edited_file, method_name, seed, lora_scale, fit, use_checkpoint, preset_name,
                  speed_lora, st, request: gr.Request, progress=gr.Progress()):
        st = page.sess(st, request)
        settings = generate_settings(seed=seed, lora_scale=lora_scale, method=method_name or "mask-lora")
        result = studio.preview(st, prompt_text, settings, speed_lora=speed_lora, preset=preset_name,
                                edited_frame=edited_file, fit=fit, use_checkpoint=bool(use_checkpoint),
                                progress=lambda done, desc: progress(done, desc=desc, unit="steps"),
                                warn=gr.Warning)
        edited, side_by_side, report, report_json = page.serving.result(result)
        return edited, side_by_side, report + "\n" + hints.after("generate"), report_json, st

    w.preview_btn.click(h_preview, [w.prompt, w.new_edit, w.method, w.seed_gen, w.scale, w.fit_edited, w.use_ckpt,
                                    w.preset, w.speed_lora_in, state],
                        results, api_name="preview", concurrency_id="generate",
                        concurrency_limit=1).then(h_gallery, [state], [w.gallery], api_visibility="private")

    @page.guard
    def h_cancel(st, request: gr.Request):
        st = page.sess(st, request)
        studio.stop_generation(st)
        return st

    w.cancel_btn.click(h_cancel, [state], [state], api_visibility="private")
