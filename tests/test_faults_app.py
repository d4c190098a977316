"""Issue 13's fault suite through gradio_client: bad settings, bad files and cancelled calls against one app on
the tiny model (9 frames at 64x64, 3 steps per GPU call). Each case asserts the gr.Error's message, no traceback
in the server's log or output, the server still answering and the session's work kept (its clip, masks, edited
frame and trained LoRA: a mask-LoRA generation still runs at the end)."""

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
    "feather nan": ("/generate", lambda i: (*generate_args(), None, True, math.nan), ["feather", "nan"]),
    "composite 'yes'": ("/generate", lambda i: (*generate_args(), None, "yes"), ["composite", "true or false"]),
    "start_s nan": ("/load_video", lambda i: (i / "clip.mp4", FRAMES, "64x64", math.nan), ["start time", "nan"]),
    "text file as video": ("/load_video", lambda i: (i / "text.mp4", FRAMES, "64x64", 0),
                           ["text.mp4", "could not be read as a video"]),
    "margin nan": ("/segment", lambda i: ("[[18, 22, 1]]", math.nan), ["box margin", "nan"]),
    "deep points JSON": ("/segment", lambda i: ("[" * 100_000 + "]" * 100_000, 0.1), ["nested too deeply"]),
    "random bytes as edited frame": ("/set_edited_frame", lambda i: (i / "noise.png", False),
                                     ["edited first frame is not an image"]),
    "0-byte LoRA": ("/use_lora", lambda i: (i / "empty.safetensors",), ["not a LoRA file or is damaged", "0 bytes"]),
}
FULL_ARITY = {"/train": 11, "/generate": 27, "/load_video": 4, "/segment": 2, "/set_edited_frame": 2, "/use_lora": 1}


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


@pytest.mark.parametrize("api", ["/generate", "/train"])
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
        args = train_args(steps=10_000, seed=7)
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
