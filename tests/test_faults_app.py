"""Issue 13's fault suite through gradio_client: bad settings, bad files and cancelled calls against one app on
the tiny model (9 frames at 64x64, 3 steps per GPU call). Each case asserts the gr.Error's message, no traceback
in the server's log or output, the server still answering and the session's work kept (its clip, masks, edited
frame and trained LoRA: a mask-LoRA generation still runs at the end).

Issue 22 grew it by the app's side of every class it found: values Gradio refused or rounded before our checks
(each widget now hands its value over as sent, and the sliders carry exactly `maskedit.limits`' ranges), numbers
and JSON of unbounded size, huge and 16-bit images, LoRA files that are no LoRAs, a cancelled /edit, Cancel's
wiring, and the server's memory after the largest uploads."""

import logging
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from maskedit.studio.generation import WORKER_NAME  # noqa: E402
from maskedit.media.video import write_image, write_video  # noqa: E402
from test_app import FPS, FRAMES, SIZE, assert_user_error, make_disk_clip, running_app  # noqa: E402
from hostile_files import png_header_only, sparse_safetensors, streamed_png, tiny_lora, TINY_LAYER  # noqa: E402

CAPTION = "a red disk on a gradient"
TRAIN = dict(trigger="p3rs0n", preset="full", steps=3, lr=1e-4, rank=4, seed=0, swap=0, fp8=False, ckpt=False,
             budget=110)
GENERATE = dict(prompt="a flipped disk", edited=None, method="mask-lora", steps=1, cfg=5.0, shift=5.0, seed=0,
                scale=1.0, fit=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fault_inputs")
    frames, _ = make_disk_clip()
    write_video(folder / "clip.mp4", frames, FPS)
    write_image(folder / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    (folder / "text.mp4").write_text("this is a text file named .mp4\n" * 40)
    (folder / "noise.png").write_bytes(np.random.default_rng(0).bytes(8192))
    (folder / "empty.safetensors").write_bytes(b"")
    streamed_png(folder / "huge.png", 12000, 12000)  # 140 KB on disk, 432 MB of pixels
    png_header_only(folder / "bomb.png", 30000, 30000)  # PIL's DecompressionBombError
    from PIL import Image

    ramp = np.linspace(0, 65535, SIZE * SIZE).reshape(SIZE, SIZE).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "grey16.png")
    cutout = Image.fromarray(np.ascontiguousarray(frames[0][:, ::-1])).convert("RGBA")
    cutout.putpixel((0, 0), (0, 0, 0, 0))
    cutout.save(folder / "cutout.png")
    import torch

    tiny_lora(folder / "int32.safetensors", dtype=torch.int32)
    tiny_lora(folder / "huge_weights.safetensors", b=3e38)
    from safetensors.torch import save_file

    save_file({f"{TINY_LAYER}.weight": torch.zeros(32, 32)}, str(folder / "checkpoint.safetensors"))
    sparse_safetensors(folder / "big.safetensors", {f"{TINY_LAYER}.lora_A.weight": ("BF16", [4, 2**23]),
                                                     f"{TINY_LAYER}.lora_B.weight": ("BF16", [32, 4])})  # 64 MB
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app("tiny", tmp_path_factory.mktemp("s"), chunk_steps=3, background=False) as url:
        yield url


def train_args(**changes):
    values = dict(TRAIN, **changes)
    return (CAPTION, values["trigger"], values["preset"], values["steps"], values["lr"], values["rank"],
            values["seed"], values["swap"], values["fp8"], values["ckpt"], values["budget"])


def generate_args(**changes):
    """Every input of /generate: the Generate tab's, then the Train tab's (for the naive-LoRA baseline), then the
    sampler."""
    values = dict(GENERATE, **changes)
    return (*values.values(), False, *train_args()[2:3], CAPTION, TRAIN["trigger"], *train_args()[3:], "euler")


def prepared_client(url, inputs) -> Client:
    c = Client(url, verbose=False)
    c.predict(handle_file(str(inputs / "clip.mp4")), FRAMES, f"{SIZE}x{SIZE}", 0, api_name="/load_video")
    c.predict("[[18, 22, 1]]", 0.1, api_name="/segment")
    c.predict(handle_file(str(inputs / "edited.png")), False, api_name="/set_edited_frame")
    return c


@pytest.fixture(scope="module")
def trained(server, inputs):
    """A client whose session has a clip, masks, an edited frame and a trained LoRA (every case must keep them)."""
    c = prepared_client(server, inputs)
    c.predict(*train_args(), api_name="/train")
    status = c.predict(api_name="/training_status")
    assert status["lora_in_use"]
    return c, status["lora_in_use"]


@pytest.fixture
def clean_log(caplog, capfd):
    """After the case: the app logged user errors only (no exception record) and printed no traceback."""
    caplog.set_level(logging.INFO, logger="maskedit.app")
    capfd.readouterr()
    yield
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, out + err
    assert not [r for r in caplog.records if r.name == "maskedit.app" and r.exc_info]


CASES = {  # (endpoint, its arguments, words the message must hold)
    "train steps 10**9": ("/train", lambda i: train_args(steps=10**9), ["number of training steps", "10000"]),
    "train steps 0": ("/train", lambda i: train_args(steps=0), ["number of training steps", "at least 1"]),
    "rank 100000": ("/train", lambda i: train_args(rank=100_000), ["LoRA rank", "256"]),
    "lr nan": ("/train", lambda i: train_args(lr=math.nan), ["learning rate", "nan"]),
    "train seed 2**70": ("/train", lambda i: train_args(seed=2**70), ["seed", "9223372036854775807"]),
    "cfg nan": ("/generate", lambda i: generate_args(cfg=math.nan), ["guidance scale", "nan"]),
    "generation steps 10**7": ("/generate", lambda i: generate_args(steps=10**7), ["generation steps", "1000"]),
    "seed 2**70": ("/generate", lambda i: generate_args(seed=2**70), ["seed", "9223372036854775807"]),
    "shift inf": ("/generate", lambda i: generate_args(shift=math.inf), ["flow shift", "inf"]),
    "cfg2 nan": ("/generate", lambda i: (*generate_args(), math.nan), ["guidance_scale_2", "nan"]),
    "cfg2 on one transformer": ("/generate", lambda i: (*generate_args(), 3.0), ["guidance_scale_2 (3)",
                                                                              "one transformer"]),
    "feather nan": ("/generate", lambda i: (*generate_args(), None, None, None, None, True, math.nan), ["feather", "nan"]),
    "composite 'yes'": ("/generate", lambda i: (*generate_args(), None, None, None, None, "yes"), ["composite", "true or false"]),
    "start_s nan": ("/load_video", lambda i: (i / "clip.mp4", FRAMES, "64x64", math.nan), ["start time", "nan"]),
    "text file as video": ("/load_video", lambda i: (i / "text.mp4", FRAMES, "64x64", 0),
                           ["text.mp4", "could not be read as a video"]),
    "margin nan": ("/segment", lambda i: ("[[18, 22, 1]]", math.nan), ["box margin", "nan"]),
    "deep points JSON": ("/segment", lambda i: ("[" * 100_000 + "]" * 100_000, 0.1), ["nested too deeply"]),
    "random bytes as edited frame": ("/set_edited_frame", lambda i: (i / "noise.png", False),
                                     ["edited first frame is not an image"]),
    "0-byte LoRA": ("/use_lora", lambda i: (i / "empty.safetensors",), ["not a LoRA file or is damaged", "0 bytes"]),
    # issue 22, class 3: what Gradio refused with a traceback, or rounded, before our checks saw it
    "train steps as text": ("/train", lambda i: train_args(steps="5"), ["number of training steps",
                                                                        "the text '5'"]),
    "train steps True": ("/train", lambda i: train_args(steps=True), ["number of training steps (train_steps) is True"]),
    "train steps 10.5": ("/train", lambda i: train_args(steps=10.5), ["number of training steps (train_steps) is 10.5"]),
    "budget 0 s": ("/train", lambda i: train_args(budget=0), ["seconds of training per GPU call (budget_s) is 0",
                                                              "at least 5"]),
    "budget Infinity": ("/train", lambda i: train_args(budget=math.inf), ["(budget_s) is inf", "at most 3600"]),
    "40 blocks swapped": ("/train", lambda i: train_args(swap=40), ["blocks swapped to CPU (blocks_to_swap) is 40",
                                                                    "at most 39"]),
    "unknown preset": ("/train", lambda i: train_args(preset="bogus"), ["unknown preset 'bogus'", "zerogpu"]),
    "fp8 as text": ("/train", lambda i: train_args(fp8="yes"), ["fp8 checkbox is 'yes'", "true or false"]),
    "unknown sampler": ("/generate", lambda i: (*generate_args()[:-1], "bogus"), ["the sampler is 'bogus'",
                                                                                 "euler, unipc"]),
    "unknown method": ("/generate", lambda i: generate_args(method="bogus"), ["the method is 'bogus'"]),
    "generation steps 2.5": ("/generate", lambda i: generate_args(steps=2.5), ["generation steps", "is 2.5"]),
    "later frame 2.5": ("/add_later_frame", lambda i: (i / "edited.png", 2.5, False, ""),
                        ["edited later frame number is 2.5", "whole number"]),
    "frames True": ("/load_video", lambda i: (i / "clip.mp4", True, "64x64", 0), ["number of frames", "True"]),
    # class 1: numbers and JSON of unbounded size
    "point label 1e999": ("/segment", lambda i: ("[[18, 22, 1e999]]", 0.1), ["1e999, which is not finite"]),
    "coordinate of 5,000 digits": ("/segment", lambda i: (f"[[{'9' * 5000}, 22, 1]]", 0.1), ["5,000 digits"]),
    "size of 5,000 digits": ("/load_video", lambda i: (i / "clip.mp4", FRAMES, "9" * 5000 + "x64", 0),
                             ["size is 5,003 characters long"]),
    "later_captions 100,000 deep": ("/edit", lambda i: edit_args(i, later_captions="[" * 100_000 + "]" * 100_000),
                                    ["later frames' captions is nested too deeply"]),
    # class 2: images bounded from the header, every mode
    "12000x12000 PNG as edited frame": ("/set_edited_frame", lambda i: (i / "huge.png", False),
                                        ["huge.png is 12000x12000 pixels, larger than 4096"]),
    "decompression bomb as edited frame": ("/set_edited_frame", lambda i: (i / "bomb.png", False),
                                           ["bomb.png", "larger than 4096 pixels on a side"]),
    "partly transparent edited frame": ("/set_edited_frame", lambda i: (i / "cutout.png", False),
                                        ["partly transparent"]),
    # class 5: LoRA files that are no LoRAs for this model
    "int32 LoRA": ("/use_lora", lambda i: (i / "int32.safetensors",), ["holds I32 values"]),
    "checkpoint as LoRA": ("/use_lora", lambda i: (i / "checkpoint.safetensors",), ["has no LoRA name"]),
    "LoRA of 3e38 weights": ("/use_lora", lambda i: (i / "huge_weights.safetensors",), ["a weight of 3e+38"]),
    "64 MB LoRA that cannot fit": ("/use_lora", lambda i: (i / "big.safetensors",), ["takes 32 inputs"]),
}
FULL_ARITY = {"/train": 12, "/generate": 30, "/load_video": 4, "/segment": 2, "/set_edited_frame": 2, "/use_lora": 1,
              "/add_later_frame": 4, "/edit": 29}


def edit_args(i, train_steps=2, later_captions="{}", client_files=False):
    """Every input of /edit in order (files as paths for `call`, or handle_file for a client)."""
    file = (lambda p: handle_file(str(p))) if client_files else (lambda p: p)
    return (file(i / "clip.mp4"), "[[18, 22, 1]]", None, "", file(i / "edited.png"), [], "", CAPTION,
            "a flipped disk", "p3rs0n", FRAMES, f"{SIZE}x{SIZE}", 0, 0.1, "full", train_steps, 1, 5.0, 5.0, 7, 1.0,
            False, later_captions, "euler", None)


def call(c: Client, url: str, api: str, args) -> str:
    """Call `api` in `c`'s session and return the error message it ends with (AssertionError if it succeeds).
    NaN and inf cannot go through gradio_client (its JSON refuses them), so every case is sent as raw JSON
    (`allow_nan`, as a hostile client would) with files uploaded first, like the client does."""
    import json

    import httpx

    data = []
    for value in args:
        if isinstance(value, Path):
            with open(value, "rb") as handle:
                (uploaded,) = httpx.post(f"{url}gradio_api/upload", files={"files": (value.name, handle)},
                                         timeout=60).json()
            value = {"path": uploaded, "orig_name": value.name, "meta": {"_type": "gradio.FileData"}}
        data.append(value)
    data += [None] * (FULL_ARITY[api] - len(data))  # the UI's defaults are not known here: None = "not given"
    response = httpx.post(f"{url}gradio_api/call{api}", content=json.dumps({"data": data, "session_hash":
                          c.session_hash}, allow_nan=True), headers={"content-type": "application/json"}, timeout=60)
    response.raise_for_status()
    text = httpx.get(f"{url}gradio_api/call{api}/{response.json()['event_id']}", timeout=300).text
    assert "event: error" in text, text[:2000]
    return text


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_request_is_a_clear_error_and_loses_nothing(server, inputs, trained, clean_log, case):
    c, lora = trained
    api, args, words = CASES[case]
    started = time.perf_counter()
    text = call(c, server, api, args(inputs))
    assert "Traceback" not in text and 'File "' not in text, text
    for word in words:
        assert word in text, text
    assert "see the server log" not in text and "Could not preprocess" not in text and "/tmp/" not in text, text
    assert time.perf_counter() - started < 60  # refused before any work (generous: the machine is shared)
    status = c.predict(api_name="/training_status")  # the server answers; the session keeps its LoRA
    assert status["lora_in_use"] == lora and not status["lora_in_use"].startswith("/")


def test_duplicate_later_frames_and_zero_train_steps_through_the_api(server, inputs, trained, clean_log):
    c, _ = trained
    c.predict(handle_file(str(inputs / "edited.png")), 4, False, api_name="/add_later_frame")
    with pytest.raises(Exception) as excinfo:
        c.predict(handle_file(str(inputs / "edited.png")), 4, False, api_name="/add_later_frame")
    assert_user_error(excinfo, "edited later frame 4 is given twice")
    fresh = Client(server, verbose=False)

    def edit(later=(), indices="", train_steps=2):  # /edit's inputs in order
        return (handle_file(str(inputs / "clip.mp4")), "[[18, 22, 1]]", None, "", handle_file(str(inputs / "edited.png")),
                [handle_file(str(inputs / "edited.png"))] * len(later), indices, CAPTION, "a flipped disk", "p3rs0n",
                FRAMES, f"{SIZE}x{SIZE}", 0, 0.1, "full", train_steps, 1, 5.0, 5.0, 0, 1.0, False)

    for args, words in [(edit([4, 4], "4, 4"), "edited later frame 4 is given twice"),
                        (edit(train_steps=0), "number of training steps (train_steps) is 0")]:
        with pytest.raises(Exception) as excinfo:
            fresh.predict(*args, api_name="/edit")
        assert_user_error(excinfo, words)
    assert fresh.predict(api_name="/training_status")["status"] == "none"  # nothing was trained


def wait_until_running(job, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if job.status().code in (Status.PROCESSING, Status.ITERATING):
            time.sleep(2.0)  # a few steps in
            return
        time.sleep(0.2)
    raise AssertionError("the call never started")


@pytest.mark.parametrize("api", ["/generate", "/train", "/edit"])
def test_a_cancelled_call_frees_the_server_for_the_next_client(server, inputs, trained, clean_log, api, monkeypatch):
    from maskedit.workflow import generate
    from maskedit.method.training import LoraTrainer

    steps = []  # the server runs in this process: count its denoising / training steps
    running_at_start = []  # other generation workers alive when a generation starts (the cancelled one must not be)
    if api == "/generate":
        original = generate.generate_edit

        def counted(*a, callback=None, **k):
            running_at_start.append([t for t in threading.enumerate() if t.name == WORKER_NAME and t.is_alive()
                                     and t is not threading.current_thread()])
            return original(*a, callback=lambda e: (steps.append(1), callback(e)), **k)

        monkeypatch.setattr(generate, "generate_edit", counted)
        args = generate_args(steps=1000, method="no-lora")
    else:
        original_step = LoraTrainer.train_step
        monkeypatch.setattr(LoraTrainer, "train_step", lambda self: (steps.append(1), original_step(self))[1])
        args = train_args(steps=10_000, seed=7) if api == "/train" else edit_args(inputs, 10_000, client_files=True)
    runner = prepared_client(server, inputs)
    job = runner.submit(*args, api_name=api)
    end = time.time() + 120
    while not steps and time.time() < end:
        time.sleep(0.05)
    assert steps, "the call never started"
    job.cancel()
    c, _ = trained
    started = time.perf_counter()
    edited, *_ = c.predict(*generate_args(steps=1, method="no-lora"), api_name="/generate")  # another client
    assert edited and time.perf_counter() - started < 90
    ran = len(steps)
    time.sleep(1.0)
    assert len(steps) == ran and ran < 200  # the cancelled run stopped within a few steps, not after 1000 / 10,000
    assert not [t for t in threading.enumerate() if t.name == WORKER_NAME and t.is_alive()]
    assert not any(running_at_start)  # the next call started only once the cancelled worker had ended
    assert c.predict(api_name="/training_status")


def test_the_session_still_generates_with_its_lora_after_every_fault(trained):
    c, _ = trained
    edited, side_by_side, report, *_ = c.predict(*generate_args(), api_name="/generate")
    assert edited and "mask-lora" in report


# ----- issue 22: values Gradio refused before now reach the studio; widgets carry exactly the limits' ranges


@pytest.fixture(scope="module")
def fresh(server, inputs):
    """A second prepared client for the cases that change the session on purpose."""
    return prepared_client(server, inputs)


def test_values_at_the_limits_that_gradio_refused_are_accepted(server, inputs, trained, fresh, clean_log):
    _, _, text = fresh.predict("[[18, 22, 1]]", 2.0, api_name="/segment")  # the margin's limit (the slider said 0.5)
    assert "boxes cover" in text
    c, _ = trained
    edited, _, report, _ = c.predict(*generate_args(scale=3.5), api_name="/generate")  # the slider stopped at 2
    assert edited and "mask-lora" in report


def test_a_16_bit_greyscale_edited_frame_keeps_its_values(fresh, inputs, clean_log):
    from maskedit.media.video import read_image

    used, status = fresh.predict(handle_file(str(inputs / "grey16.png")), False, api_name="/set_edited_frame")
    assert "Edited first frame set" in status
    mean = float(read_image(used).mean())
    assert abs(mean - (65535 / 2) / 257) < 2  # 127.5, not all white (Gradio's RGB conversion gave 255)


@pytest.fixture(scope="module")
def demo():
    import app

    return app.create_demo("tiny", segmenter="fallback", captioner="none", background=False)


def input_widgets(demo):
    """Every component some event takes as an input, once."""
    ids = {i for dep in demo.config["dependencies"] for i in dep["inputs"]}
    return [demo.blocks[i] for i in sorted(ids)]


def test_every_widget_hands_its_value_over_as_sent_and_sliders_carry_the_limits(demo):
    from maskedit.interfaces.ui.components import AS_SENT
    from maskedit.limits import LIMITS

    widgets = input_widgets(demo)
    assert len(widgets) > 30
    for widget in widgets:
        if isinstance(widget, (gr.Number, gr.Slider, gr.Dropdown, gr.Radio)):
            assert isinstance(widget, AS_SENT), f"{widget.label!r} checks values itself ({type(widget).__name__})"
            assert widget.preprocess("not checked here") == "not checked here"
        if isinstance(widget, gr.Slider):
            limit = LIMITS[widget.limit_name]
            assert (widget.minimum, widget.maximum) == (limit.low, limit.high), widget.label
        elif isinstance(widget, gr.Number):
            assert widget.minimum is None and widget.maximum is None, widget.label
        if isinstance(widget, gr.Image):
            assert widget.image_mode is None, widget.label  # Gradio never converts: read_image does, faithfully
    sliders = {w.limit_name for w in widgets if isinstance(w, gr.Slider)}
    assert sliders == {"margin", "lora_scale", "blocks_to_swap", "feather", "composite_margin"}


def test_cancel_ends_a_queued_or_running_generate_and_preview(demo):
    """The Generate tab's Cancel: its click also cancels the Generate and Preview events (a queued call ends at
    once, a running one at its next step or wait; `test_studio_faults` covers the stop file in every wait)."""
    dependencies = demo.config["dependencies"]
    by_api = {dep.get("api_name"): dep["id"] for dep in dependencies}
    cancel = [dep for dep in dependencies if any(isinstance(demo.blocks.get(target), gr.Button)
                                                  and demo.blocks[target].value == "Cancel"
                                                  for target, _ in dep["targets"])]
    assert cancel and {by_api["generate"], by_api["preview"]} <= {i for dep in cancel for i in dep["cancels"]}


def test_cancels_handler_touches_the_stop_file_every_wait_reads(demo):
    """Cancel's own handler (a private event): it writes the session's stop file, which Generate's waits and
    denoising steps read (`Studio.generate_events`)."""
    from types import SimpleNamespace

    from maskedit.workflow.session import STOP_GENERATION

    (index,) = [dep["id"] for dep in demo.config["dependencies"] if dep.get("api_name") == "h_cancel"]
    st = demo.studio.session("cancel-test")
    demo.fns[index].fn(st, SimpleNamespace(session_hash="cancel-test"))
    assert (Path(st.folder) / STOP_GENERATION).is_file()
    demo.studio.end_session(st.folder)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def test_memory_is_given_back_after_the_largest_uploads(server, inputs, fresh, tmp_path, clean_log):
    """The server runs in this process: its RSS after the largest accepted image (4096x4096, fitted to the clip)
    and after refused 12000x12000 images and a 64 MB LoRA stays near where it was."""
    from PIL import Image

    y, x = np.mgrid[0:4096, 0:4096]
    largest = np.stack([x // 16, y // 16, (x + y) // 32], axis=-1).astype(np.uint8)
    Image.fromarray(largest).save(tmp_path / "largest.png")
    del y, x, largest
    fresh.predict(handle_file(str(tmp_path / "largest.png")), True, api_name="/set_edited_frame")  # warm up
    before = rss_mb()
    for _ in range(2):
        fresh.predict(handle_file(str(tmp_path / "largest.png")), True, api_name="/set_edited_frame")
        for name, api in (("huge.png", "/set_edited_frame"), ("big.safetensors", "/use_lora")):
            with pytest.raises(Exception):
                fresh.predict(handle_file(str(inputs / name)), *([False] if api == "/set_edited_frame" else []),
                              api_name=api)
    after = rss_mb()
    print(f"server RSS around the largest uploads: {before:.0f} MB -> {after:.0f} MB")
    assert after - before < 120
