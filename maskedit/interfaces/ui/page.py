"""The page: a header, five tabs in the order of the workflow, the API-only endpoints, and the session's state.

Each tab module has `layout(page)` (its widgets, built inside the page's Blocks) and `wire(page, w)` (its events;
`w` holds every tab's widgets by name, since an event may read another tab's fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ...models.presets import GenerateSettings, Preset
from ...studio.runtime import Runtime, model_line
from ...studio.service import Studio
from ...studio.setup import background_default, on_zero_gpu, open_studio
from ...workflow.session import session_name
from . import api, background_training, edited_tab, generate_tab, segment_tab, train_tab, video_tab
from .components import read_examples
from .messages import Messages
from .serving import Serving

TABS = (video_tab, segment_tab, edited_tab, train_tab, generate_tab)
PAGE_CSS = ".whole-items video, .whole-items img {object-fit: contain !important}"
"""The page's own style (`launch(css=…)`): the gallery shows its videos whole (Gradio crops them to square cells)."""


@dataclass
class Page:
    """What every tab's layout and wiring share."""

    studio: Studio
    runtime: Runtime
    messages: Messages
    state: gr.State
    examples_dir: Path
    examples: list[dict]
    background: bool  # the background-training toggle's initial value
    default_preset: str
    serving: Serving  # every file a handler returns goes through it (the work and cache folders may be anywhere)
    gpu: dict = field(default_factory=lambda: dict(concurrency_id="gpu", concurrency_limit=1))

    @property
    def tiny(self) -> bool:
        return self.runtime.model.is_tiny

    @property
    def two_experts(self) -> bool:
        return self.studio.two_experts  # Wan2.2-A14B: a LoRA pair, and the low-noise expert's CFG

    @property
    def preset0(self) -> Preset:
        return self.studio.preset(self.default_preset)  # adapted to the base (720P sizes, Wan2.2's blocks)

    @property
    def first_generation(self) -> GenerateSettings:
        """The Generate tab's first settings: the preset's (4 steps on the tiny model)."""
        preset = self.preset0
        return GenerateSettings(steps=4 if self.tiny else preset.generation_steps, guidance_scale=preset.guidance_scale,
                                flow_shift=preset.flow_shift, lora_scale=1.0, sampler=preset.sampler)

    def guard(self, fn):
        return self.messages.guard(fn)

    def sess(self, st, request):
        return self.studio.session(getattr(request, "session_hash", None), st)



def one_namespace(groups: list[SimpleNamespace]) -> dict:
    """The tabs' widgets under one namespace. Two tabs naming a widget alike would leave one of them unwired (its
    events attached to the other): refused when the page is built."""
    merged: dict = {}
    for group in groups:
        for name, value in vars(group).items():
            if name in merged:
                raise RuntimeError(f"two parts of the page name a widget {name!r}: give one of them another name")
            merged[name] = value
    return merged

def build_page(runtime: Runtime, gpu, *, examples_dir: Path, banner: str | None = None, work_dir=None,
               gpu_budget: float | None = None, chunk_steps: int | None = None, background: bool | None = None,
               background_driver: str | None = None, lora_cache: str | None = None) -> gr.Blocks:
    """The app's page over `runtime` with the GPU calls `gpu` (`studio.inputs.GpuCalls`); the other arguments are
    `app.create_demo`'s. The returned Blocks has `.studio`, the service behind it (for tests and scripts)."""
    from gradio.utils import get_upload_folder

    studio = open_studio(runtime, gpu, work_dir=work_dir, gpu_budget=gpu_budget, chunk_steps=chunk_steps,
                         background_driver=background_driver, lora_cache=lora_cache,
                         allowed_roots=lambda: [get_upload_folder(), examples_dir])
    root = studio.store.root
    folders = [(root.resolve(), ""), (root, "")] + (
        [(studio.cache_root.resolve(), "LoRA cache/"), (studio.cache_root, "LoRA cache/")] if studio.cache_root else [])

    def on_session_end(value):
        if value is not None:
            studio.end_session(value.folder)

    with gr.Blocks(title="MaskEdit") as demo:
        page = Page(studio, runtime, Messages(folders), gr.State(None, delete_callback=on_session_end), examples_dir,
                    read_examples(examples_dir), background_default(background),
                    "zerogpu" if on_zero_gpu() else "full", Serving(lambda: [studio.store.root, studio.cache_root]))
        gr.Markdown("# MaskEdit — edit a whole video from one edited frame\n"
                    "Load a clip, mark the object, edit its first frame elsewhere, train a small mask-aware LoRA "
                    "on the clip, then generate the edited video.")
        gr.Markdown(banner or "", visible=bool(banner), elem_id="banner")
        gr.Markdown(model_line(runtime.model), elem_id="model-line")
        # Number inputs carry no minimum of their own: maskedit.limits checks every setting, and its message names
        # the setting and its range (Gradio's own check says only "Value 0 is less than minimum value 1")
        with gr.Tabs():
            widgets = [tab.layout(page) for tab in TABS]
        widgets += [api.layout(page), background_training.layout(page)]
        w = SimpleNamespace(**one_namespace(widgets))
        background_training.wire(page, w)  # first: the tabs' events chain its `w.bg_change`
        for module in (*TABS, api):
            module.wire(page, w)

        def on_unload(request: gr.Request):
            session_hash = getattr(request, "session_hash", None)
            if session_hash:
                studio.end_session(studio.store.root / session_name(session_hash))

        demo.unload(on_unload)
    demo.studio = studio
    return demo
