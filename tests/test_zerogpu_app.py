"""app.py, unchanged, under ZeroGPU's own code path (spaces' real decorator, forked workers, pickling queues),
driven through gradio_client on the tiny model at 9 frames of 64x64, with the Space's own defaults: background
training on (driven by the session's calls), a real (tiny) SAM2 segmenter and Florence-2 captioner loaded once at
start-up, spaces counting durations for today's card (the CPU shim reports it), and every call sized by the plan
of Wan2.1-480P (MASKEDIT_PLAN_MODEL), so that both sizes run: training with `full` takes `xlarge`, with
`zerogpu` `large`.

The device API stand-in runs in this process (`zerogpu_local.device_api`); it says "not idle", so every GPU
call is a new worker process, and it refuses any call asking for more than PER_CALL_LIMIT_S. After every
test, `check_new_calls` holds each GPU call made since the last check to the rules of a Space:

- schedule -> allow -> release, released as not failed (unless the test expected a failure);
- the duration requested is what the app's own duration function computes from that call's real
  arguments (the recorder pickles them in the main process; the function is called again here); the device
  API is asked for the size the call was decorated with and for that duration as spaces scales it for the
  size (`zerogpu.scheduled_seconds`), within the per-call limit, and the call ran within it;
- nothing a GPU call returned or yielded holds a tensor that lives on the GPU.

What the app must keep for these tests: the endpoints /load_video, /segment (points JSON, margin first),
/set_edited_frame, /train, /resume_training, /generate, /edit, /set_background, /training_status (an
empty budget in /train and /set_background meaning the server's MASKEDIT_GPU_BUDGET), and a
`duration=` function per GPU wrapper, reachable by its name as an attribute of app.py (today
`_train_duration`, `_generation_duration`; the recorder names it, it is looked up there). The helpers below
and the GPU functions' names (SEGMENT, TRAIN, GENERATE) are the only places that know the endpoints'
arguments and the app's names.
"""

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("spaces")
from gradio_client import Client, handle_file  # noqa: E402

from maskedit.media.video import read_video, write_image, write_video  # noqa: E402
from maskedit.models import zerogpu  # noqa: E402
from maskedit.studio.estimate import CallSizer  # noqa: E402
from zerogpu_harness import launched  # noqa: E402
from zerogpu_local import recorder  # noqa: E402
from zerogpu_local.device_api import Policy  # noqa: E402

FRAMES, SIZE, FPS = 9, 64, 8.0
PER_CALL_LIMIT_S = 300  # what the stand-in grants at most per call ("a few minutes"; REFERENCE.md)
BUDGET_S = 5  # seconds of training per GPU call: the smallest the app accepts
FIRST_STEPS = 30  # the flow's run; doubled until it takes >= 3 calls on this machine (see the flow test)
CHUNK_STEPS = 10  # the app's --chunk-steps here: a run of FIRST_STEPS takes >= 3 calls however fast the machine
LONG_BUDGET_S = 200  # a budget no call of the run reaches (calls then end on CHUNK_STEPS alone)
CAPTION_TEXT, TRIGGER = "a red disk on a gradient", "p3rs0n"
# the app's GPU functions, by name (the recorder reports each call under its function's name)
SEGMENT, TRAIN, GENERATE, CAPTION = "gpu_segment_clip", "_train_on_gpu", "gpu_generate", "gpu_caption"
IMAGE_MASK = "gpu_image_mask"
PLAN_MODEL = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"  # the base whose plans size the tiny model's calls here
SIZER = CallSizer(PLAN_MODEL, default_preset="zerogpu")  # the app's sizer for that base on ZeroGPU (the tiny
# model has no start-up placement; a call naming no preset follows the Space's default preset)


def make_disk_clip():
    """A red disk moving over a smooth gradient: frames uint8 (9, 64, 64, 3)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for t in range(FRAMES):
        frame = np.stack([40 + x * 60 // SIZE, 90 + y * 60 // SIZE, np.full_like(x, 150)], -1).astype(np.uint8)
        frame[(x - 18 - 3 * t) ** 2 + (y - 22 - t) ** 2 <= 81] = (230, 40, 30)
        frames[t] = frame
    return frames


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zerogpu_inputs")
    frames = make_disk_clip()
    write_video(folder / "clip.mp4", frames, FPS)
    write_image(folder / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from maskedit.perception.captioning import save_tiny_florence2
    from maskedit.perception.segmentation_sam2 import save_tiny_sam2

    models = tmp_path_factory.mktemp("zerogpu_models")
    policy = Policy(idle=False, max_duration_s=PER_CALL_LIMIT_S)
    env = {"MASKEDIT_LORA_CACHE": "session",  # one LoRA cache per session, as on a Space
           "MASKEDIT_CHUNK_STEPS": str(CHUNK_STEPS),  # calls end on the time budget or after CHUNK_STEPS steps
           "MASKEDIT_PLAN_MODEL": PLAN_MODEL, "MASKEDIT_SAM2_MODEL": save_tiny_sam2(models / "sam2")}
    with launched(["--model", "tiny", "--segmenter", "sam2", "--captioner", save_tiny_florence2(models / "florence2")],
                  tmp_path_factory.mktemp("zerogpu_app"), policy=policy, env=env) as app:
        app.checked = {"records": 0, "schedules": 0}
        yield app


@pytest.fixture(autouse=True)
def _no_answer_left(request):
    """A test's queued one-off answers end with it: a refusal meant for a call that never came would otherwise
    refuse a later test's call."""
    yield
    if "server" in request.fixturenames:
        left = request.getfixturevalue("server").api.unused_answers()
        assert not left, f"answers queued but never used: {left}"


@pytest.fixture(scope="module")
def app_module():
    import app  # the same file the server runs (off ZeroGPU here: spaces.GPU is a no-op in this process)

    return app


# ----- the app's endpoints (the only place that knows their arguments)


def prepare(c, inputs):
    c.predict(handle_file(str(inputs / "clip.mp4")), FRAMES, f"{SIZE}x{SIZE}", 0, api_name="/load_video")
    c.predict("[[18, 22, 1]]", 0.1, api_name="/segment")
    c.predict(handle_file(str(inputs / "edited.png")), False, api_name="/set_edited_frame")


def train_settings(steps, budget=BUDGET_S, preset="full"):
    """The Train tab's values."""
    return [CAPTION_TEXT, TRIGGER, preset, steps, 1e-4, 4, 0, 0, False, False, budget]


def train(c, steps, api="/train", **settings):
    """Runs /train (or /resume_training) to its end; returns (every status text, loss points, LoRA file)."""
    job = c.submit(*train_settings(steps, **settings), api_name=api)
    job.result()
    _, _, points, files = job.outputs()[-1]
    return [o[1] for o in job.outputs()], points, next(f for f in files if Path(f).name == "lora.safetensors")


def generate(c, steps=2, seed=0):
    edited, _, _, report = c.predict("a flipped disk", None, "mask-lora", steps, 5.0, 5.0, seed, 1.0, False,
                                     api_name="/generate")
    return edited, report


def edit(c, inputs):
    """/edit: the whole edit in one call (segment from a click, train 4 steps, generate 2)."""
    return c.predict(
        video=handle_file(str(inputs / "clip.mp4")), points_json="[[18, 22, 1]]", mask_video=None, box="",
        edited_first=handle_file(str(inputs / "edited.png")), later_files=[], later_indices="",
        train_caption=CAPTION_TEXT, prompt_text="a flipped disk", trigger_text=TRIGGER, num_frames=FRAMES,
        size=f"{SIZE}x{SIZE}", start_s=0, margin_value=0.1, preset_name="full", train_steps=4, gen_steps_value=2,
        cfg_value=5.0, shift_value=5.0, seed=0, lora_scale=1.0, fit=False, api_name="/edit")


def lora_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_lora(a, b):
    a, b = lora_tensors(a), lora_tensors(b)
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape and bool((a[key] == b[key]).all()), key


# ----- what every GPU call must satisfy


def check_new_calls(server, app_module, failed_ok=0) -> list[dict]:
    """The GPU calls since the last check, each {"function", "duration", "answer", "call" (the stand-in's
    view, None when refused)}, after asserting the rules in this module's docstring. The recorder's result
    records since the last check are in server.results."""
    deadline = time.time() + 10  # releases are posted just after the client gets its last output
    while True:
        records = recorder.read(server.record)[server.checked["records"]:]
        schedules = server.api.requests("schedule")[server.checked["schedules"]:]
        calls = {c["token"]: c for c in server.api.calls()}
        durations = [r for r in records if r["event"] == "duration"]
        granted = [calls[s.params["allowToken"]] for s in schedules if s.answer == "grant"]
        if all(c["released"] for c in granted) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert len(durations) == len(schedules), (durations, schedules)
    out, failed = [], 0
    for record, request in zip(durations, schedules):
        asked = int(request.params["durationSeconds"])  # what spaces schedules: the duration scaled for the size
        args, kwargs = record["call_args"]
        if record["duration_fn"] is not None:
            expected = getattr(app_module, record["duration_fn"])(*args, **kwargs)
            assert float(expected) == record["value"], record
        assert request.params.get("gpuSize") == record["size"] == kwargs.get("gpu_size", getattr(
            args[0] if args else None, "gpu_size", None)), (record, request.params)  # the task got its own size
        assert asked == zerogpu.scheduled_seconds(record["value"], record["size"]), (record, asked)
        assert (asked > PER_CALL_LIMIT_S) == (request.answer == "illegal-duration"), (record, request)
        call = calls.get(request.params.get("allowToken"))
        if call is not None:  # a new worker allows itself once; a reused one (an "idle" grant) does not
            assert call["released"] and (len(call["pids"]) == 1 or (call["idle"] and not call["pids"])), call
            assert call["seconds"] <= asked, call  # it held the GPU within what it asked for
            failed += bool(call["failed"])
        kind = {SEGMENT: "segmentation", IMAGE_MASK: "segmentation", CAPTION: "caption",
                GENERATE: "preview" if kwargs.get("preview") is not None else "generation"}.get(record["function"])
        if kind is not None:  # training: the tests check the preset they trained with
            assert record["size"] == SIZER.size(kind, kwargs.get("preset")), record
        out.append({"function": record["function"], "duration": asked, "size": record["size"],
                    "answer": request.answer, "call": call})
    assert failed <= failed_ok, out
    results = [r for r in records if r["event"] == "result"]
    assert all(r["on_gpu"] == 0 for r in results), results
    server.results = results
    for call in calls.values():  # per token: schedule, then allow (a new worker only), then release
        mine = [r.endpoint for r in server.api.requests()
                if r.params.get("allowToken") == call["token"] and r.endpoint in ("schedule", "allow", "release")]
        assert mine == ["schedule", "allow", "release"] if call["pids"] else ["schedule", "release"], (mine, call)
    server.checked = {"records": server.checked["records"] + len(records),
                      "schedules": server.checked["schedules"] + len(schedules)}
    return out


# ----- tests


def test_edit_flow_through_forked_workers(server, inputs, app_module):
    c = Client(server.url, verbose=False)
    prepare(c, inputs)
    # Calls end on a time budget, so how many a run takes depends on the machine and its load: grow the run
    # until it takes three calls or more, so that later runs of as many steps (the chunked-training tests
    # below) still take two or more if the machine gets faster meanwhile.
    steps, calls = FIRST_STEPS, []
    calls += check_new_calls(server, app_module)
    results = list(server.results)
    for _ in range(6):
        status, points, lora = train(c, steps)
        calls += check_new_calls(server, app_module)
        results += server.results
        chunks = [call for call in calls if call["function"] == TRAIN]
        if len(chunks) >= 3:
            break
        steps, calls = steps * 2, [call for call in calls if call["function"] != TRAIN]
    else:
        pytest.fail(f"{steps // 2} training steps still fitted in fewer than three {BUDGET_S} s GPU calls")
    assert points["step"] == list(range(1, steps + 1)) and all(np.isfinite(points["loss"]))
    assert "done" in status[-1]
    edited, report = generate(c)
    assert read_video(edited).num_frames == FRAMES and report["frames"] == FRAMES
    calls += check_new_calls(server, app_module)
    results += server.results
    functions = [call["function"] for call in calls]
    assert SEGMENT in functions and functions[-1] == GENERATE
    pids = [call["call"]["pids"][0] for call in calls]
    assert len(set(pids)) == len(pids)  # "not idle": each call, each chunk, in a new worker process
    assert len({call["duration"] for call in chunks}) == 1 and chunks[0]["duration"] > BUDGET_S  # + transfers
    assert {call["size"] for call in chunks} == {SIZER.size("training", "full")} == {"xlarge"}  # 14B bf16: a card
    assert results and all(r["tensors"] == 0 for r in results)  # plain data crosses the boundary
    server.flow = {"client": c, "points": points, "lora": lora, "steps": steps}  # a chunked run, reused below


def test_edit_in_one_call_through_forked_workers(server, inputs, app_module):
    c = Client(server.url, verbose=False)
    edited, _, lora_files, _, report = edit(c, inputs)
    assert read_video(edited).num_frames == FRAMES and report["method"] == "mask-lora"
    assert any(Path(f).name == "lora.safetensors" for f in lora_files)
    calls = check_new_calls(server, app_module)
    functions = [call["function"] for call in calls]
    assert SEGMENT in functions and TRAIN in functions and functions[-1] == GENERATE


def test_chunks_across_workers_end_identical_whatever_the_cuts(server, inputs, app_module):
    whole = Client(server.url, verbose=False)  # another session: its own folder and LoRA cache
    prepare(whole, inputs)
    steps = server.flow["steps"]
    _, whole_points, whole_lora = train(whole, steps, budget=LONG_BUDGET_S)
    calls = check_new_calls(server, app_module)
    # no call reaches the long budget, so the run is cut by CHUNK_STEPS alone: other cuts than the flow's
    # time-budgeted run (in-process, tests/test_studio.py::test_chunked_training_equals_one_run proves a chunked
    # run equal to one uninterrupted call)
    assert len([call for call in calls if call["function"] == TRAIN]) == -(-steps // CHUNK_STEPS)
    assert whole_points["step"] == list(range(1, steps + 1))  # really trained, not taken from a cache
    assert server.flow["points"]["loss"] == whole_points["loss"]  # the flow's run took >= 2 calls
    assert_same_lora(server.flow["lora"], whole_lora)
    server.reference_lora = whole_lora


def test_a_reused_worker_and_event_stream_grants_end_identical(server, inputs, app_module):
    """With "idle" grants spaces keeps one worker for every call: nothing may rely on a fresh process either."""
    c = Client(server.url, verbose=False)
    prepare(c, inputs)
    steps = server.flow["steps"]
    server.api.policy.idle, server.api.policy.stream = True, True
    try:
        _, points, lora = train(c, steps)
    finally:
        server.api.policy.idle, server.api.policy.stream = False, False
    calls = [call for call in check_new_calls(server, app_module) if call["function"] == TRAIN]
    assert len(calls) >= 2 and all(call["call"]["pids"] == [] for call in calls[1:])  # no new worker after one
    assert len({r["pid"] for r in server.results if r["function"] == TRAIN}) == 1
    assert points["step"] == list(range(1, steps + 1))
    assert_same_lora(lora, server.reference_lora)


def test_a_refused_chunk_keeps_the_work_and_resume_ends_identical(server, inputs, app_module):
    c = Client(server.url, verbose=False)
    prepare(c, inputs)
    steps = server.flow["steps"]
    server.api.answer_next("grant", "no-gpu")  # the first chunk runs, the second finds no GPU
    with pytest.raises(Exception, match="No GPU was available") as excinfo:
        train(c, steps)
    assert "Traceback" not in str(excinfo.value)
    calls = check_new_calls(server, app_module)
    assert [call["answer"] for call in calls][-2:] == ["grant", "no-gpu"]
    status, points, lora = train(c, steps, api="/resume_training")
    assert any("resumed from the checkpoint at step" in text for text in status), status
    assert points["step"] == list(range(1, steps + 1))
    assert_same_lora(lora, server.reference_lora)
    check_new_calls(server, app_module)


@pytest.mark.parametrize("answer, words", [("no-gpu", "No GPU was available"),
                                           ("quota", "reached its GPU limit"),
                                           ("queue-timeout", "No GPU was available after 60s")])
def test_a_refusal_reaches_the_user_and_the_session_keeps_its_lora(server, app_module, answer, words):
    c = server.flow["client"]  # a session with a trained LoRA
    server.api.answer_next(answer)
    with pytest.raises(Exception, match=words) as excinfo:
        generate(c)
    assert "Traceback" not in str(excinfo.value)
    edited, _ = generate(c, seed=1)  # the same session, its LoRA kept: no training call, a new edit
    assert read_video(edited).num_frames == FRAMES
    calls = check_new_calls(server, app_module)
    assert [(call["function"], call["answer"]) for call in calls] == [(GENERATE, answer), (GENERATE, "grant")]


def test_a_call_over_the_per_call_limit_is_refused_with_its_duration(server, inputs, app_module):
    c = Client(server.url, verbose=False)
    prepare(c, inputs)
    with pytest.raises(Exception, match="larger than the maximum allowed"):
        train(c, 3, budget=PER_CALL_LIMIT_S)  # asks for the budget plus the app's allowance
    calls = check_new_calls(server, app_module)
    assert calls[-1]["answer"] == "illegal-duration" and calls[-1]["function"] == TRAIN
    assert calls[-1]["duration"] > PER_CALL_LIMIT_S


def test_background_training_driven_by_the_session(server, inputs, app_module):
    c = Client(server.url, verbose=False)
    prepare(c, inputs)
    steps = server.flow["steps"]
    c.predict(True, *train_settings(steps), api_name="/set_background")  # starts the run; on ZeroGPU no thread drives it
    edited, _ = generate(c)  # Generate runs what is left, chunk by chunk, each a GPU call
    assert read_video(edited).num_frames == FRAMES
    status = c.predict(api_name="/training_status")
    assert status["status"] == "done" and status["steps"] == list(range(1, steps + 1))
    calls = check_new_calls(server, app_module)
    assert len([call for call in calls if call["function"] == TRAIN]) >= 2
    shown = status["lora"]  # shown as the user sees it ("LoRA cache/<key>/lora.safetensors"), never a server path
    assert shown.startswith("LoRA cache/") and not Path(shown).is_absolute()
    on_server = [p for p in server.folder.rglob(Path(shown).name) if p.as_posix().endswith(shown.split("/", 1)[1])]
    assert on_server  # one per session cache holding this key (the flow's session trained the same inputs)
    for path in on_server:
        assert_same_lora(path, server.reference_lora)


def test_calls_take_the_size_their_plan_needs_and_models_load_once(server, inputs, app_module):
    """Training with the zerogpu preset fits half a card (`large`), with full it needs a whole one (the flow);
    segmentation and captions take `large`. The segmenter and the captioner were loaded once, at start-up:
    the calls of every worker (a new process each) found them loaded."""
    c = Client(server.url, verbose=False)
    prepare(c, inputs)
    _, points, _ = train(c, 2, preset="zerogpu")
    assert points["step"] == [1, 2]
    for _ in range(2):
        original, edited, _ = c.predict(api_name="/caption")  # the original and the edited first frame
        assert original and edited
    calls = check_new_calls(server, app_module)
    assert {(call["function"], call["size"]) for call in calls} == {(SEGMENT, "large"), (TRAIN, "large"),
                                                                     (CAPTION, "large")}
    assert SIZER.size("training", "zerogpu") == "large"
    assert len([call for call in calls if call["function"] == CAPTION]) == 4  # in four worker processes
    log = server.log_text()
    assert log.count("loaded the segmenter") == 1 and log.count("loaded the captioner") == 1, log[-3000:]


def test_no_worker_outlives_the_app(server):
    pids = server.worker_pids()
    assert len(pids) >= 10
    assert server.stop() == []
