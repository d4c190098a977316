"""The API-only endpoint `/edit` (everything in one call) and the hidden widgets that name the inputs and outputs
of the API-only endpoints (labelled: `client.view_api()` shows the labels)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import DEFAULT_TRIGGER
from ...errors import MaskEditError
from ...models.presets import GenerateSettings, get_preset
from ...studio.inputs import generate_settings
from .components import AsSentNumber, image_input
from .generate_tab import composite_default


def layout(page) -> SimpleNamespace:
    with gr.Row(visible=False):
        return SimpleNamespace(
            api_video=gr.Video(label="video"), api_mask=gr.File(label="mask video"),
            api_edited=image_input(type="filepath", label="edited first frame"),
            api_later=gr.File(file_count="multiple", label="edited later frames"),
            api_later_idx=gr.Textbox(label="later frame numbers"),
            api_later_captions=gr.Textbox("{}", label="later frame captions"),  # JSON {"K": caption}
            api_lora=gr.File(file_count="multiple", label="LoRA files"), api_json=gr.JSON(label="training status"),
            api_bool=gr.Checkbox(label="fit"), api_edit_video=gr.Video(label="edited video"),
            api_edit_sbs=gr.Video(label="original | edited"), api_edit_report=gr.Markdown(label="report"),
            api_edit_json=gr.JSON(label="report (JSON)"))


def wire(page, w) -> None:
    studio, state = page.studio, page.state

    @page.guard
    def h_edit(video, points_json, mask_video, box, edited_first, later_files, later_indices, train_caption,
               prompt_text, trigger_text, num_frames, size, start_s, margin_value, preset_name, train_steps,
               gen_steps_value, cfg_value, shift_value, seed, lora_scale, fit, later_captions, sampler_name,
               cfg2_value=None, composite=None, feather=None, composite_region=None, composite_margin=None,
               st=None, request: gr.Request = None):  # None: optional for clients
        st = page.sess(st, request)
        settings = generate_settings(gen_steps_value, cfg_value, shift_value, lora_scale, seed,
                                     sampler=sampler_name, guidance_scale_2=cfg2_value, composite=composite,
                                     feather=feather, composite_region=composite_region,
                                     composite_margin=composite_margin)
        # a generator: a cancelled call closes it at its next yield (a training or denoising step), which stops
        # the work and frees the GPU for the next client
        for kind, value in studio.edit_events(
                st, video, points_json=points_json, mask_video=mask_video, box=box, edited_first=edited_first,
                later_files=later_files, later_indices=later_indices, later_captions=later_captions,
                train_caption=train_caption, prompt=prompt_text,
                trigger=trigger_text, num_frames=num_frames, size=size, start_s=start_s, margin=margin_value,
                preset=preset_name, train_steps=train_steps, settings=settings, fit=fit):
            if kind == "result":
                result, files = value
                edited, side_by_side, report_markdown, report, served_files = page.serving.result(result, files)
                yield edited, side_by_side, served_files, report_markdown, report, st
                return
            yield (gr.skip(),) * 6
        raise MaskEditError("the edit ended without a result")

    defaults = GenerateSettings()
    edit_btn = gr.Button(visible=False)
    edit_btn.click(h_edit, [w.api_video, w.points_box, w.api_mask, gr.Textbox(visible=False, label="box"),
                            w.api_edited, w.api_later, w.api_later_idx,
                            gr.Textbox(visible=False, label="train caption"), gr.Textbox(visible=False, label="prompt"),
                            gr.Textbox(DEFAULT_TRIGGER, visible=False, label="trigger"),
                            AsSentNumber(17, visible=False, precision=0, label="num frames"),
                            gr.Textbox("auto", visible=False, label="size"),
                            AsSentNumber(0, visible=False, label="start s"),
                            AsSentNumber(0.1, visible=False, label="margin"),
                            gr.Textbox("full", visible=False, label="preset"),
                            AsSentNumber(get_preset("full").train_steps, visible=False, precision=0, label="train steps"),
                            AsSentNumber(defaults.steps, visible=False, precision=0, label="generation steps"),
                            AsSentNumber(defaults.guidance_scale, visible=False, label="guidance scale"),
                            AsSentNumber(defaults.flow_shift, visible=False, label="flow shift"),
                            AsSentNumber(defaults.seed, visible=False, precision=0, label="seed"),
                            AsSentNumber(defaults.lora_scale, visible=False, label="lora scale"), w.api_bool,
                            w.api_later_captions, gr.Textbox(defaults.sampler, visible=False, label="sampler"),
                            AsSentNumber(None, visible=False, label="guidance scale 2"),
                            gr.Checkbox(composite_default(page), visible=False, label="composite"),
                            AsSentNumber(defaults.feather, visible=False, precision=0, label="feather"),
                            gr.Textbox(defaults.composite_region, visible=False, label="composite region"),
                            AsSentNumber(defaults.composite_margin, visible=False, precision=0,
                                         label="composite margin"), state],
                   [w.api_edit_video, w.api_edit_sbs, w.api_lora, w.api_edit_report, w.api_edit_json, state],
                   api_name="edit", **page.gpu)
