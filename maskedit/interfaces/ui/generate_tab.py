"""5 · Generate: the method or a baseline, the sampler and its settings, Generate / Preview / Cancel, the edited
video beside the original, the report, and the session's gallery."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import NEGATIVE_PROMPTS, SAMPLERS, STEP_CACHES, TINY
from ...errors import MaskEditError
from ...method.composite import DEFAULT_FEATHER, DEFAULT_MASK_MARGIN
from ...studio.inputs import TrainInputs, generate_settings
from . import hints
from .components import METHOD_CHOICES, AsSentDropdown, AsSentNumber, AsSentRadio, image_input, limit_slider

COMPOSITE_REGION_CHOICES = [("the loose boxes (the method's region)", "boxes"),
                            ("the tight mask grown by the margin below", "mask")]
COMPOSITE_INFO = ("Outside the region the video is your source clip, bit for bit; inside, the generated pixels. "
                  "It cuts off anything the model drew beyond the region (a shadow, a reflection): the report "
                  "shows how much.")
TINY_COMPOSITE_NOTE = ("ℹ️ With the built-in tiny model compositing starts on: its random weights draw noise, so "
                       "the video shows your source clip with only the edited region changed. Untick it to see "
                       "every pixel as the model generated it.")


def composite_default(page) -> bool:
    """Whether the page's compositing starts on (the Generate tab's checkbox, /generate, /preview and /edit):
    on for the built-in random tiny models (the offline demo shows the source with only the region changed),
    else off (the library's default; a trained small model from a folder too)."""
    from ...models.loading import TINY_WAN22

    return page.runtime.model.name in (TINY, TINY_WAN22)


def layout(page) -> SimpleNamespace:
    preset0, first = page.preset0, page.first_generation
    with gr.Tab("5 · Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                method = AsSentRadio(METHOD_CHOICES, value="mask-lora", label="Method")
                gen_steps = AsSentNumber(first.steps, label="Steps", precision=0)
                cfg = AsSentNumber(first.guidance_scale, label="Guidance (CFG)")
                shift = AsSentNumber(first.flow_shift, label="Flow shift")
                sampler = AsSentDropdown(list(SAMPLERS), value=first.sampler, elem_id="sampler",
                                      label="Sampler (euler: the reference's flow-matching Euler; unipc: Wan's)")
                seed_gen = AsSentNumber(0, label="Seed", precision=0)
                scale = limit_slider("lora_scale", value=1.0, step=0.05, label="LoRA scale")
                composite = gr.Checkbox(composite_default(page), label="Keep the background exactly: composite the "
                                        "generated region onto the source", info=COMPOSITE_INFO, elem_id="composite")
                feather = limit_slider("feather", value=DEFAULT_FEATHER, elem_id="feather",
                                       label="Feather (pixels of blend inside the region's border; 0 = a hard cut)")
                gr.Markdown(TINY_COMPOSITE_NOTE, visible=composite_default(page), elem_id="composite-note")
                with gr.Accordion("Advanced", open=False):
                    composite_region = AsSentRadio(COMPOSITE_REGION_CHOICES, value="boxes", label="Composite on",
                                                      elem_id="composite-region")
                    composite_margin = limit_slider(
                        "composite_margin", value=DEFAULT_MASK_MARGIN, elem_id="composite-margin",
                        label="Margin around the tight mask when compositing on it (pixels)")
                    cfg2 = AsSentNumber(None, label="Guidance of the low-noise expert (CFG 2; empty: the same as CFG)",
                                     visible=page.two_experts, elem_id="cfg2")
                    negative_prompt = AsSentDropdown(
                        list(NEGATIVE_PROMPTS), value=preset0.negative_prompt, allow_custom_value=True,
                        elem_id="negative-prompt", label="Negative prompt (reference: the reference code's English "
                        "list, the method's; wan: Wan's Chinese default; or type your own)")
                    step_cache = AsSentDropdown(list(STEP_CACHES), value=preset0.step_cache, elem_id="step-cache",
                                                label="Step cache (off: exact; magcache / teacache skip transformer "
                                                      "evaluations for speed)")
                    step_cache_threshold = AsSentNumber(None, elem_id="step-cache-threshold",
                                                        label="Step cache threshold (empty: magcache 0.12, teacache "
                                                              "0.275; higher skips more)")
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
                    # a long clip: Resume continues from the next window
                    resume_generate_btn = gr.Button("Resume", elem_id="resume-generate-btn")
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
                           negative_prompt=negative_prompt, step_cache=step_cache,
                           step_cache_threshold=step_cache_threshold,
                           composite=composite, feather=feather, composite_region=composite_region,
                           composite_margin=composite_margin,
                           use_ckpt=use_ckpt, gen_bg_status=gen_bg_status, gen_btn=gen_btn, preview_btn=preview_btn,
                           cancel_btn=cancel_btn, resume_generate_btn=resume_generate_btn, edited_video=edited_video,
                           sbs_video=sbs_video,
                           report=report,
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
                   swap, fp8, ckpt, budget_s, sampler_name, cfg2_value=None, negative_prompt=None, step_cache=None,
                   step_cache_threshold=None, composite=None, feather=None, composite_region=None,
                   composite_margin=None, st=None, request: gr.Request = None,
                   progress=gr.Progress()):  # cfg2 … composite_margin = None: optional for clients (the defaults)
        st = page.sess(st, request)
        settings = generate_settings(steps, cfg_value, shift_value, lora_scale, seed, method_name, sampler_name,
                                     cfg2_value, negative_prompt, step_cache, step_cache_threshold, composite,
                                     feather, composite_region, composite_margin)
        # the Train tab's settings: the naive LoRA (naive-lora, feature-blend) is trained with them when not yet
        train_inputs = TrainInputs(caption_text, trigger_text, preset_name, train_steps, lr, rank, train_seed, swap,
                                   fp8, ckpt, budget_s, edit_caption=prompt_text)
        # a generator: a cancelled call closes it between steps, which stops the denoising (studio.generation)
        for kind, value in studio.generate_events(
                st, prompt_text, settings, edited_frame=edited_file, fit=fit, use_checkpoint=use_checkpoint,
                preset=preset_name, train_inputs=train_inputs,
                progress=lambda done, desc: progress(done, desc=desc, unit="steps")):
            if kind == "warning":
                gr.Warning(value)
            elif kind == "progress":  # encode, denoise k/n (with the time left), decode
                progress(value[0], desc=value[1], unit="steps")
            elif kind in ("step", "waiting"):  # a yield per step and per wait: a cancelled call stops at the next
                yield (gr.skip(),) * 5
            elif kind == "window":  # a long clip: the video so far, the windows done and the estimate for the rest
                yield page.serving.file(value.preview) if value.preview else gr.skip(), gr.skip(), value.markdown(), \
                    gr.skip(), st
            elif kind == "result":
                edited, side_by_side, report, report_json = page.serving.result(value)
                yield edited, side_by_side, report + "\n" + hints.after("generate"), report_json, st
                return
        raise MaskEditError("generation ended without a result")

    # not in the "gpu" group: it may wait for a background run whose chunks take the GPU in turn (the model
    # itself is guarded by the studio's lock)
    generate_inputs = [w.prompt, w.new_edit, w.method, w.gen_steps, w.cfg, w.shift, w.seed_gen, w.scale, w.fit_edited,
                       w.use_ckpt, w.preset, w.caption, w.trigger, w.steps_in, w.lr_in, w.rank_in, w.seed_in,
                       w.swap_in, w.fp8_in, w.ckpt_in, w.budget_in, w.sampler, w.cfg2, w.negative_prompt, w.step_cache,
                       w.step_cache_threshold, w.composite, w.feather, w.composite_region, w.composite_margin, state]
    generate_event = w.gen_btn.click(h_generate, generate_inputs, results, api_name="generate",
                                     concurrency_id="generate", concurrency_limit=1)
    generate_event.then(h_gallery, [state], [w.gallery], api_visibility="private")
    # Resume: Generate with the same inputs continues a long clip after its finished windows (`workflow.long_clip`)
    resume_event = w.resume_generate_btn.click(h_generate, generate_inputs, results, api_visibility="private",
                                      concurrency_id="generate", concurrency_limit=1)
    resume_event.then(h_gallery, [state], [w.gallery], api_visibility="private")

    @page.guard
    def h_preview(prompt_text, edited_file, method_name, seed, lora_scale, fit, use_checkpoint, preset_name,
                  speed_lora, negative_prompt=None, composite=None, feather=None, composite_region=None,
                  composite_margin=None, st=None, request: gr.Request = None,
                  progress=gr.Progress()):  # negative_prompt … composite_margin: optional for clients
        st = page.sess(st, request)
        settings = generate_settings(seed=seed, lora_scale=lora_scale, method=method_name or "mask-lora",
                                     negative_prompt=negative_prompt, composite=composite, feather=feather,
                                     composite_region=composite_region, composite_margin=composite_margin)
        result = studio.preview(st, prompt_text, settings, speed_lora=speed_lora, preset=preset_name,
                                edited_frame=edited_file, fit=fit, use_checkpoint=use_checkpoint,
                                progress=lambda done, desc: progress(done, desc=desc, unit="steps"),
                                warn=gr.Warning)
        edited, side_by_side, report, report_json = page.serving.result(result)
        return edited, side_by_side, report + "\n" + hints.after("generate"), report_json, st

    preview_event = w.preview_btn.click(h_preview, [w.prompt, w.new_edit, w.method, w.seed_gen, w.scale,
                                                    w.fit_edited, w.use_ckpt, w.preset, w.speed_lora_in,
                                                    w.negative_prompt, w.composite, w.feather, w.composite_region,
                                                    w.composite_margin, state],
                        results, api_name="preview", concurrency_id="generate",
                        concurrency_limit=1)
    preview_event.then(h_gallery, [state], [w.gallery], api_visibility="private")

    @page.guard
    def h_cancel(st, request: gr.Request):
        st = page.sess(st, request)
        studio.stop_generation(st)
        return st

    # Cancel ends a queued call at once and closes a running one at its next yield (a denoising step, or about
    # twice a second while it waits for the background training or the GPU); the stop file also stops the
    # worker between steps and is honoured by every wait (`Studio.generate_events`)
    w.cancel_btn.click(h_cancel, [state], [state], api_visibility="private",
                       cancels=[generate_event, resume_event, preview_event])
