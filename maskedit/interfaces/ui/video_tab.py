"""1 · Video: upload a clip or pick an example, choose frames, size and start; see the conformed clip."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ...defaults import DEFAULT_HANDOVER_FRAMES, DEFAULT_WINDOW_FRAMES
from ...models.presets import SIZE_CHOICES
from ...studio.runtime import size_choices
from . import hints
from .components import AsSentDropdown, AsSentNumber


def example_rows(page, sizes: list[str]) -> tuple[list[list], list[str]]:
    """(rows [clip, frames, size menu entry], labels "name · frames · WxH") of the examples; the size of each is
    the menu's entry for it (added to `sizes` when the menu lacks it)."""
    rows, labels = [], []
    for entry in page.examples:
        size = f"{entry['width']}x{entry['height']}"
        choice = next((c for c in sizes if c.split(" ")[0] == size), None)
        if choice is None:
            choice = f"{size} (example)"
            sizes.append(choice)
        rows.append([str(page.examples_dir / entry["clip"]), int(entry["frames"]), choice])
        labels.append(f"{entry['name']} · {entry['frames']} frames · {size}")
    return rows, labels


def layout(page) -> SimpleNamespace:
    sizes = size_choices(page.runtime.model, SIZE_CHOICES)
    rows, labels = example_rows(page, sizes)
    # the tiny model's defaults are the examples' (33 frames at 320x192: seconds per step on a CPU); the real model's
    # are the preset's (49 frames at the size the clip suggests)
    frames0, size0 = (rows[0][1], rows[0][2]) if page.tiny and rows else (17 if page.tiny else 49, "auto")
    with gr.Tab("1 · Video", id="video"):
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(label="Clip", sources=["upload"], elem_id="video-in")
                with gr.Row():
                    frames_in = AsSentNumber(frames0, precision=0, step=4, label="Frames (4k+1; 0 = all)",
                                             elem_id="frames-in")
                    size_in = AsSentDropdown(sizes, value=size0, label="Size (WxH)", allow_custom_value=True,
                                             elem_id="size-in")
                    start_in = AsSentNumber(0, label="Start time (s)")
                with gr.Row():  # clips longer than one window (METHOD.md §7b)
                    window_in = AsSentNumber(DEFAULT_WINDOW_FRAMES, precision=0, step=4, elem_id="window-frames",
                                             label="Window (frames, 4k+1): a longer clip is edited window by window")
                    handover_in = AsSentNumber(DEFAULT_HANDOVER_FRAMES, precision=0, step=4, elem_id="handover-frames",
                                               label="Hand-over frames between windows (1+4m)")
                load_btn = gr.Button("Load clip", variant="primary", elem_id="load-btn")
            with gr.Column():
                preview = gr.Video(label="Conformed clip", interactive=False, elem_id="preview")
                clip_notes = gr.Markdown(elem_id="clip-notes", label="clip notes")
        if rows:
            gr.Examples(rows, inputs=[video_in, frames_in, size_in], example_labels=labels,
                        label="Examples (procedural clips; click one, then Load clip)", elem_id="examples")
    return SimpleNamespace(video_in=video_in, frames_in=frames_in, size_in=size_in, start_in=start_in,
                           window_in=window_in, handover_in=handover_in, load_btn=load_btn, preview=preview,
                           clip_notes=clip_notes)


def wire(page, w) -> None:
    @page.guard
    def h_load(video, num_frames, size, start_s, st, request: gr.Request):
        st = page.sess(st, request)
        preview_path, notes, frame = page.studio.load_video(st, video, num_frames, size, start_s)
        return (page.serving.file(preview_path), notes + hints.after("video"), frame, "[]", None, None, "", st)

    @page.guard
    def h_windows(window_frames, handover_frames, st, request: gr.Request):
        st = page.sess(st, request)
        return page.studio.set_windows(st, window_frames, handover_frames), st

    # clips longer than one window: the session's windows (/set_windows: window_frames, handover_frames)
    windows = [w.window_in, w.handover_in, page.state]
    w.window_in.change(h_windows, windows, [w.clip_notes, page.state], api_name="set_windows")
    w.handover_in.change(h_windows, windows, [w.clip_notes, page.state], api_visibility="private")

    w.load_event = w.load_btn.click(h_load, [w.video_in, w.frames_in, w.size_in, w.start_in, page.state],
                                    [w.preview, w.clip_notes, w.first_frame, w.points_box, w.overlay_video,
                                     w.boxes_video, w.segment_notes, page.state], api_name="load_video", **page.gpu)
