"""The session service under bad input and faults (issue 13, app side), without Gradio: a failed call keeps the
session's work, every setting is held to its range before any work, a diverged run leaves no adapter, a
restart resumes the cached checkpoint, a closed (cancelled) generation stops its worker, paths are shown
relative to the session."""

import math
import time
from pathlib import Path

import numpy as np
import pytest

from maskedit.workflow import session
from maskedit.errors import MaskEditError
from maskedit.models.presets import GenerateSettings
from maskedit.studio.inputs import generate_settings
from maskedit.studio.service import Studio, TrainInputs
from maskedit.media.video import write_image, write_video

from test_studio import FPS, local_gpu


def make_studio(root: Path, pipe, cache: Path) -> Studio:
    from maskedit.perception.segmentation_fallback import FallbackSegmenter

    return Studio(session.SessionStore(root), local_gpu(pipe, FallbackSegmenter()), model_name="tiny", is_tiny=True,
                  chunk_steps=2, allowed_roots=lambda: [cache.parent], cache_root=cache)


@pytest.fixture
def files(tmp_path, synthetic_clip):
    frames, _ = synthetic_clip
    write_video(tmp_path / "clip.mp4", frames, FPS)
    write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    (tmp_path / "text.mp4").write_text("this is a text file, not a video\n" * 20)
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp_path


@pytest.fixture
def studio(files, tiny_pipe):
    return make_studio(files / "sessions", tiny_pipe, files / "cache")


def loaded(studio, files, name="tab"):
    st = studio.session(name)
    studio.load_video(st, files / "clip.mp4", 9, "64x64")
    studio.use_mask(st, box="10,10,40,40")
    studio.set_edited_frame(st, files / "edited.png")
    return st


def session_files(st) -> dict:
    return {str(p.relative_to(st.folder)): p.read_bytes() for p in sorted(Path(st.folder).rglob("*")) if p.is_file()}


def test_a_failed_load_video_keeps_the_session(studio, files, step_counter):
    st = loaded(studio, files)
    list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    before, lora = session_files(st), st.lora
    assert lora and any(name.startswith("prepared/") for name in before)
    for video, start_s, words in [(files / "text.mp4", 0, "text.mp4"), (files / "clip.mp4", math.nan, "start time"),
                                  (files / "clip.mp4", 1e9, "start time"), (files / "clip.mp4", 0, "number of frames")]:
        frames = 6 if words == "number of frames" else 9
        with pytest.raises(MaskEditError, match=words) as error:
            studio.load_video(st, video, frames, "64x64", start_s)
        assert str(files) not in str(error.value)  # no server path in the message
        assert session_files(st) == before and st.lora == lora  # clip, masks, prepared files and LoRA as they were
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=1))  # the session still works
    assert Path(result.edited).is_file() and len(step_counter) == 2


@pytest.mark.parametrize("inputs, words", [
    (dict(steps=0), "number of training steps"), (dict(steps=10**9), "number of training steps"),
    (dict(rank=100_000), "LoRA rank"), (dict(learning_rate=math.nan), "learning rate"),
    (dict(seed=2**70), "seed"),
])
def test_training_settings_are_held_to_their_ranges_before_any_work(studio, files, step_counter, inputs, words):
    st = loaded(studio, files)
    with pytest.raises(MaskEditError, match=words):
        next(studio.train(st, TrainInputs("a box", **inputs)))
    assert not step_counter


@pytest.mark.parametrize("values, words", [
    (dict(steps=10**7), "generation steps"), (dict(guidance_scale=math.nan), "guidance"),
    (dict(flow_shift=math.inf), "flow shift"), (dict(seed=2**70), "seed"), (dict(steps=0), "generation steps"),
    (dict(lora_scale=-1), "LoRA scale"),
])
def test_generation_settings_from_a_form_are_held_to_their_ranges(values, words):
    with pytest.raises(MaskEditError, match=words):
        generate_settings(**values)
    assert generate_settings(4.0, 1, 5, 1, 3) == GenerateSettings(4, 1.0, 5.0, 1.0, 3)


def test_segmentation_inputs_are_checked_before_any_work(studio, files):
    st = loaded(studio, files)
    before = session_files(st)
    for points, margin, words in [("[[20, 20, 1]]", math.nan, "box margin"),
                                  ("[" * 100_000 + "]" * 100_000, 0.1, "nested too deeply"),
                                  (str([[1, 1, 1]] * 300), 0.1, "number of clicks")]:
        with pytest.raises(MaskEditError, match=words):
            studio.segment(st, points, margin)
    assert session_files(st) == before


def test_duplicate_later_frames_follow_the_cli_rule(studio, files, step_counter):
    st = loaded(studio, files)
    studio.add_later_frame(st, files / "edited.png", 4)
    with pytest.raises(MaskEditError, match="edited later frame 4 is given twice"):
        studio.add_later_frame(st, files / "edited.png", 4.0)
    other = studio.session("edit")
    with pytest.raises(MaskEditError, match="given twice"):  # refused before the clip is even loaded
        studio.edit(other, files / "clip.mp4", box="10,10,40,40", edited_first=files / "edited.png",
                    later_files=[files / "edited.png"] * 2, later_indices="4, 4", train_caption="a box", prompt="p",
                    num_frames=9, size="64x64", train_steps=2)
    with pytest.raises(MaskEditError, match="number of training steps"):  # 0 is refused, never the preset's 100
        studio.edit(other, files / "clip.mp4", box="10,10,40,40", edited_first=files / "edited.png",
                    train_caption="a box", prompt="p", num_frames=9, size="64x64", train_steps=0)
    assert not (Path(other.folder) / session.CLIP_FOLDER).exists() and not step_counter


def test_a_diverged_run_leaves_no_adapter_on_the_model(studio, files, tiny_pipe, monkeypatch):
    from maskedit.method.lora import ADAPTER_NAME
    from maskedit.method.training import LoraTrainer, TrainingDiverged

    original = LoraTrainer.flow_matching_loss
    monkeypatch.setattr(LoraTrainer, "flow_matching_loss",
                        lambda self, *args: original(self, *args) * float("nan"))
    st = loaded(studio, files)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    assert ADAPTER_NAME not in (getattr(tiny_pipe.transformer, "peft_config", None) or {})
    assert st.lora is None


def test_a_restarted_server_resumes_the_cached_checkpoint(files, tiny_pipe, step_counter):
    first = make_studio(files / "sessions", tiny_pipe, files / "cache")
    st = loaded(first, files)
    run = first.train(st, TrainInputs("a box", steps=6, rank=4))
    for view in run:
        if view.points["step"] and view.points["step"][-1] >= 3:
            break  # the server dies during the second call (the first call's checkpoint is at step 2)
    del run  # abandoned, not stopped: like kill -9, only what was saved remains
    trained_before = len(step_counter)
    # a new server process: new session store, the same LoRA cache
    second = make_studio(files / "sessions_after_restart", tiny_pipe, files / "cache")
    st2 = loaded(second, files, "new-tab")
    views = list(second.train(st2, TrainInputs("a box", steps=6, rank=4), resume=True))
    assert "done" in views[-1].status and views[-1].points["step"][-1] == 6
    assert len(step_counter) - trained_before <= 4  # continued from its step (>= 2), not from step 0


def test_closing_a_generation_stops_its_worker_and_frees_the_model(studio, files, monkeypatch):
    from maskedit.workflow import generate

    st = loaded(studio, files)
    denoised = []
    original = generate.generate_edit

    def counting(*args, callback=None, **kwargs):
        return original(*args, callback=lambda e: (denoised.append(e.step), callback(e)), **kwargs)

    monkeypatch.setattr(generate, "generate_edit", counting)
    events = studio.generate_events(st, "a flipped box", GenerateSettings(steps=200, method="no-lora"))
    for kind, _ in events:
        if kind == "step":
            break
    events.close()  # what Gradio does to a cancelled call
    stopped_at = len(denoised)
    assert stopped_at < 200 and studio.gpu_lock.acquire(blocking=False)
    studio.gpu_lock.release()
    time.sleep(0.5)
    assert len(denoised) == stopped_at  # the worker ended with the close: nothing runs on
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="no-lora"))
    assert Path(result.edited).is_file()


def test_status_and_messages_show_paths_relative_to_the_session(studio, files):
    st = loaded(studio, files)
    list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    status = studio.training_status(st)
    assert status["lora_in_use"].startswith("LoRA cache/") and str(files) not in str(status)
    with pytest.raises(MaskEditError) as error:
        studio.set_edited_frame(st, files / "noise.png")
    assert str(files) not in str(error.value)


# ----- issue 22: every input checked before the session changes; Cancel honoured in every wait


def next_within(events, seconds: float):
    """The generator's next item, or AssertionError when it gives none within `seconds` (a wait that cannot be
    cancelled never yields)."""
    import queue
    import threading

    box = queue.Queue()
    threading.Thread(target=lambda: box.put(next(events, None)), daemon=True).start()
    try:
        return box.get(timeout=seconds)
    except queue.Empty:
        raise AssertionError(f"nothing came out within {seconds} s: the wait cannot be cancelled") from None


def test_edit_checks_every_input_before_the_session_changes(studio, files, step_counter):
    st = loaded(studio, files)
    list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    before, lora, trained = session_files(st), st.lora, len(step_counter)
    write_image(files / "small.png", np.zeros((32, 32, 3), np.uint8))
    later = dict(later_files=[files / "edited.png"], later_indices="4")
    base = dict(box="10,10,40,40", edited_first=files / "edited.png", train_caption="a box", prompt="p",
                num_frames=9, size="64x64", train_steps=2)
    for changes, words in [
        (dict(later, later_captions='{"4": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested too deeply"),
        (dict(later, later_captions='{"5": "a car"}'), "not among the edited later frames"),
        (dict(box="10,10,400,40"), "leaves the 64x64 frame"),
        (dict(box="", points_json="[[100, 10, 1]]"), "outside the 64x64 frame"),
        (dict(later_files=[files / "edited.png"], later_indices="20"), "outside the prepared clip's frames 1..8"),
        (dict(later_files=[files / "edited.png"], later_indices="2.5"), "whole number"),
        (dict(edited_first=files / "small.png"), "is 32x32 but the clip is 64x64"),
        (dict(edited_first=files / "noise.png"), "could not be read as an image"),
        (dict(size="9" * 5000 + "x64"), "characters long"),
        (dict(num_frames=True), "number of frames"),
        (dict(preset="bogus"), "unknown preset"),
        (dict(train_steps=10.5), "number of training steps"),
        (dict(fit="yes"), "fit checkbox"),
    ]:
        with pytest.raises(MaskEditError, match=words):
            studio.edit(st, files / "clip.mp4", **{**base, **changes})
        assert session_files(st) == before and st.lora == lora, words  # clip, masks, edited frame, LoRA as they were
    assert len(step_counter) == trained


def test_closing_an_edit_stops_its_training_and_frees_the_gpu(studio, files, step_counter):
    st = studio.session("edit")
    events = studio.edit_events(st, files / "clip.mp4", box="10,10,40,40", edited_first=files / "edited.png",
                                train_caption="a box", prompt="p", num_frames=9, size="64x64", train_steps=10_000)
    for kind, view in events:
        if kind == "train" and view.points["step"]:
            break
    events.close()  # what Gradio does to a cancelled /edit
    stopped = len(step_counter)
    assert studio.gpu_lock.acquire(blocking=False)
    studio.gpu_lock.release()
    time.sleep(1.0)
    assert len(step_counter) == stopped < 50  # nothing runs on after the close


def test_cancel_is_honoured_while_generate_waits_for_the_background_run(files, tiny_pipe):
    from maskedit.workflow.generate import GenerationStopped

    studio = make_studio(files / "sessions", tiny_pipe, files / "cache")
    st = loaded(studio, files)
    studio.background(st, True, TrainInputs("a box", steps=10_000, rank=4))  # trains for minutes
    job = studio.jobs[st.folder]
    try:
        events = studio.generate_events(st, "a flipped box", GenerateSettings(steps=1))
        assert next_within(events, 20)[0] == "waiting"
        studio.stop_generation(st)  # the Generate tab's Cancel
        started = time.perf_counter()
        with pytest.raises(GenerationStopped, match="waited for the background training"):
            for kind, _ in events:
                assert kind == "waiting"
        assert time.perf_counter() - started < 5
        assert not list(Path(st.folder).rglob("edited.mp4")) and job.active  # nothing generated; training goes on
        closed = studio.generate_events(st, "a flipped box", GenerateSettings(steps=1))
        assert next_within(closed, 20)[0] == "waiting"
        closed.close()  # a cancelled call closes its generator: the wait ends at once
        assert job.active
    finally:
        job.cancel()
        job.wait(60)


def test_cancel_is_honoured_while_generate_waits_for_the_gpu(studio, files):
    from maskedit.workflow.generate import GenerationStopped

    st = loaded(studio, files)
    studio.gpu_lock.acquire()  # another session's call holds the model
    try:
        events = studio.generate_events(st, "a flipped box", GenerateSettings(steps=1, method="no-lora"))
        assert next_within(events, 20)[0] == "waiting"
        studio.stop_generation(st)
        with pytest.raises(GenerationStopped, match="waited for the GPU"):
            list(events)
    finally:
        studio.gpu_lock.release()
    assert not list(Path(st.folder).rglob("edited.mp4"))
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="no-lora"))  # a new call runs
    assert Path(result.edited).is_file()


def test_cancel_stops_a_running_generation_between_steps(studio, files):
    from maskedit.workflow.generate import GenerationStopped

    st = loaded(studio, files)
    events = studio.generate_events(st, "a flipped box", GenerateSettings(steps=200, method="no-lora"))
    for kind, _ in events:
        if kind == "step":
            break
    studio.stop_generation(st)
    steps = []
    with pytest.raises(GenerationStopped):
        for kind, value in events:
            steps.append(value)
    assert len(steps) < 10 and not list(Path(st.folder).rglob("edited.mp4"))
