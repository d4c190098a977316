"""The session service (`maskedit.studio`) without Gradio: one method per user action on the tiny model, the
typed progress events and their accumulator, chunked training through the LoRA cache, background jobs, and
the session folders' helpers."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from maskedit.workflow import prepare, train
from maskedit.workflow import session
from maskedit.errors import MaskEditError
from maskedit.workflow.lora_cache import cache_key
from maskedit.models.presets import GenerateSettings
from maskedit.studio.progress import (
    ChunkEnded, ChunkStarted, RenderProgress, TrainProgress, UserStopped, format_eta, from_wire, loss_rows, to_wire,
)
from maskedit.studio.runs import ChunkRequest, run_training_chunk, train_in_chunks
from maskedit.studio.service import GpuCalls, Studio, TrainInputs
from maskedit.method.training import StepEvent, TrainConfig
from maskedit.media.video import Clip, write_image, write_video

FPS = 8.0


def local_gpu(pipe, segmenter=None):
    """The GPU calls of a local run: plain functions on `pipe` (the app wraps the same in @spaces.GPU)."""
    from maskedit.perception.segmentation import segment_clip
    from maskedit.studio.generation import run_generation

    def caption(image):
        raise MaskEditError("automatic captions are off here; type the prompt yourself")

    return GpuCalls(
        train_chunk=lambda request: run_training_chunk(pipe, request),
        generate=lambda *args, **kwargs: run_generation(pipe, *args, **kwargs),
        image_mask=lambda frame, points, labels: segmenter.image_mask(frame, points, labels),
        segment_clip=lambda frames, points, labels, margin: segment_clip(segmenter, frames, points, labels, 0,
                                                                         margin=margin),
        caption=caption)


@pytest.fixture
def studio_and_files(tmp_path, tiny_pipe, synthetic_clip):
    from maskedit.perception.segmentation_fallback import FallbackSegmenter

    frames, region = synthetic_clip
    write_video(tmp_path / "clip.mp4", frames, FPS)
    write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    studio = Studio(session.SessionStore(tmp_path / "sessions"), local_gpu(tiny_pipe, FallbackSegmenter()),
                    model_name="tiny", is_tiny=True, chunk_steps=2, allowed_roots=lambda: [tmp_path],
                    cache_root=tmp_path / "shared_cache")
    return studio, tmp_path


def test_one_method_per_action_without_gradio(studio_and_files, step_counter):
    studio, files = studio_and_files
    st = studio.session("tab-1")
    preview, notes, first = studio.load_video(st, files / "clip.mp4", 9, "64x64")
    assert first.shape == (64, 64, 3) and "9 frames" in notes and Path(preview).is_file()
    overlay = studio.click(st, 30, 30, include=True)
    assert overlay.shape == (64, 64, 3) and studio.points_json(st) == "[[30.0, 30.0, 1]]"
    studio.use_mask(st, box="10,10,40,40")
    used, _ = studio.set_edited_frame(st, files / "edited.png")
    assert Path(used).is_file() and st.edited == used
    views = list(studio.train(st, TrainInputs("a box", steps=3, rank=4)))
    assert views[-1].files and views[-1].points["step"] == [1, 2, 3] and "done" in views[-1].status
    assert "GPU call 2" in views[-1].status and len(step_counter) == 3  # 3 steps at 2 per call
    assert str(files) not in " ".join(v.status for v in views)  # messages name no server folder
    seen = []
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=2), progress=lambda *view: seen.append(view))
    assert Path(result.edited).is_file() and result.report["frames"] == 9 and studio.gallery(st)
    # what the Generate tab showed, phase by phase: encode, denoise k/n (with the time left), decode, write
    assert [desc.split(" ")[0] for _, desc in seen] == ["preparing", "encoding", "denoising", "denoising",
                                                          "denoising", "decoding", "writing"]
    assert [done for done, _ in seen] == [(0, 2), (0, 2), (0, 2), (1, 2), (2, 2), (2, 2), (2, 2)]
    assert "+ the decode (not measured yet)" in seen[3][1]
    assert set(result.report["phase_seconds"]) == {"encoding", "denoising", "decoding", "writing"}
    seen.clear()
    studio.generate(st, "a flipped box", GenerateSettings(steps=2), progress=lambda *view: seen.append(view))
    decode = result.report["phase_seconds"]["decoding"]  # the first render's decode: the second one counts it
    assert f"(decode ≈ {format_eta(decode)})" in seen[3][1]

    # the same inputs in another session reuse the LoRA of the first: a cache shared by both
    other = studio.session("tab-2")
    studio.load_video(other, files / "clip.mp4", 9, "64x64")
    studio.use_mask(other, box="10,10,40,40")
    (view,) = list(studio.train(other, TrainInputs("a box", steps=3, rank=4)))
    assert len(step_counter) == 3 and "reusing the cached LoRA" in view.status and view.rows
    with pytest.raises(MaskEditError, match="generation steps"):
        studio.generate(other, "x", GenerateSettings(steps=0))


def test_bad_input_is_refused_before_any_work(studio_and_files, step_counter):
    studio, files = studio_and_files
    st = studio.session("tab")
    with pytest.raises(MaskEditError, match="no video is loaded"):
        studio.segment(st, "[[1, 2]]")
    studio.load_video(st, files / "clip.mp4", 9, "64x64")
    with pytest.raises(MaskEditError, match="not part of this session"):
        studio.use_mask(st, mask_video="/etc/hostname")
    studio.use_mask(st, box="10,10,40,40")
    with pytest.raises(MaskEditError, match="caption"):
        list(studio.train(st, TrainInputs("  ")))
    with pytest.raises(MaskEditError, match="learning rate"):
        list(studio.train(st, TrainInputs("a box", learning_rate=-1)))
    assert not step_counter


def test_progress_events_cross_as_dicts_and_accumulate():
    from maskedit.workflow.lora_cache import CacheNote

    events = [ChunkStarted(0), CacheNote("miss", "training a new LoRA", "k", "p"), train.EditTrainingStage(1, 2, 0, "c1"), StepEvent(1, 2, 0.5, 0.1, 0.1),
              StepEvent(2, 2, 0.4, 0.1, 0.2), train.EditTrainingStage(2, 3, 0, "c2"), StepEvent(1, 3, 0.3, 0.2, 0.2),
              ChunkEnded(2, 1, 3), ChunkStarted(1), UserStopped(2, 2, 3, "p/lora.safetensors")]
    wire = [to_wire(e) for e in events]
    assert all(isinstance(d, dict) and isinstance(d["event"], str) for d in wire)
    assert [from_wire(d) for d in wire] == events
    progress = TrainProgress()
    for data in wire:
        progress.add(data)
    assert progress.steps == [1, 2, 3] and progress.total == 5 and progress.partial == "p/lora.safetensors"
    assert progress.stopped_at == 2 and progress.phase == "stopped" and "GPU call 2" in progress.line()
    assert progress.line().startswith("**stopped** — step 3 / 5")


def test_training_progress_names_each_phase_with_its_own_progress():
    """The Train tab's status line: what runs now (encoding the condition, step k / n, saving, done) and its
    progress; the encoding event crosses a ZeroGPU call like the others."""
    from maskedit.workflow.train import EditTrainingDone, EditTrainingEncoding

    progress = TrainProgress(total=2)
    assert progress.line().startswith("**starting** — ")
    encoding = EditTrainingEncoding("stage 1: encoding 1 sample(s)", 1, 1)
    assert from_wire(to_wire(encoding)) == encoding
    progress.add(to_wire(encoding))
    assert progress.phase == "encoding" and progress.line().startswith(
        "**encoding the condition** — stage 1: 1 sample; VAE, text and image encoders, once per run · step 0 / 2 next")
    progress.add(train.EditTrainingStage(1, 2, 0, "c1"))
    progress.add(StepEvent(1, 2, 0.5, 0.25, 0.25))
    assert progress.phase == "training" and progress.encode_s is not None
    assert progress.line().startswith("**training** — step 1 / 2 · 0.25 s/step · ETA 0s · encoded in ")
    progress.add(StepEvent(2, 2, 0.4, 0.25, 0.5))
    assert progress.line().startswith("**saving** — step 2 / 2 · 0.25 s/step done; writing the checkpoint")
    progress.add(EditTrainingDone("l/lora.safetensors", {}))
    assert progress.phase == "done" and progress.line().startswith("**done** — step 2 / 2")


def test_render_progress_counts_the_decode_in_the_time_left():
    progress = RenderProgress(4)
    assert progress.view() == ((0, 4), "preparing the render")
    progress.add("phase", "encoding")
    assert progress.view() == ((0, 4), "encoding the prompt, the edited frame and the condition")
    progress.add("phase", "denoising")
    progress.add("step", (1, 4, 2.0))
    assert progress.view() == ((1, 4), "denoising step 1 / 4 · 2.0 s/step · ≈ 6s left + the decode (not measured yet)")
    known = RenderProgress(4, {"encoding": 8.0, "decoding": 20.0})
    known.add("phase", "encoding")
    assert known.view() == ((0, 4), "encoding the prompt, the edited frame and the condition (≈ 8s last time)")
    known.add("phase", "denoising")
    known.add("step", (2, 4, 2.0))
    assert known.view() == ((2, 4), "denoising step 2 / 4 · 2.0 s/step · ≈ 24s left (decode ≈ 20s)")
    known.add("phase", "decoding")
    assert known.view() == ((4, 4), "decoding the video (VAE) (≈ 20s last time)")


def test_chunked_training_equals_one_run(tmp_path, tiny_pipe, synthetic_clip):
    from safetensors.torch import load_file

    frames, region = synthetic_clip
    prepare.save_prepared(prepare.PreparedClip(Clip(frames, FPS), region), tmp_path / "prepared")
    config = TrainConfig(steps=7, rank=4, alpha=4.0, checkpoint_every=0)

    def run(cache, max_steps):
        request = ChunkRequest(str(tmp_path / "prepared"), str(tmp_path / cache), "a box", config, "p3rs0n", "tiny",
                               max_steps=max_steps, budget_s=1e9)
        calls = []

        def call(again):
            calls.append(again)
            from dataclasses import replace

            return run_training_chunk(tiny_pipe, replace(request, resume=again))

        events = list(train_in_chunks(call))
        assert isinstance(events[-1], train.EditTrainingDone)
        return load_file(events[-1].lora_path), len(calls)

    whole, calls_whole = run("whole", None)
    chunked, calls_chunked = run("chunked", 2)
    assert calls_whole == 1 and calls_chunked == 4
    assert whole.keys() == chunked.keys()
    for key in whole:
        assert np.array_equal(whole[key].numpy(), chunked[key].numpy()), key


def test_background_job_driven_by_the_session():
    """ZeroGPU: no thread; each drive_one() is one chunk (a GPU call of the session)."""
    import tempfile

    from maskedit.studio.background_job import BackgroundJob

    def fake_chunk(again, chunks=[]):  # noqa: B006 (counts calls)
        chunks.append(again)
        start = 2 * (len(chunks) - 1)
        yield train.EditTrainingStage(1, 4, start, "c")
        for step in (start + 1, start + 2):
            yield StepEvent(step, 4, 1.0 / step, 0.01, 0.01)
        yield (train.EditTrainingDone("x/lora.safetensors", {}) if start + 2 == 4 else ChunkEnded(1, start + 2, 4))

    job = BackgroundJob("0" * 16, fake_chunk, Path(tempfile.mkdtemp()) / "stop", resume=False)
    list(job.drive_one())
    assert job.snapshot()["steps"] == [1, 2] and job.active
    list(job.drive_one())
    assert job.status == "done" and job.lora == "x/lora.safetensors" and job.snapshot()["steps"] == [1, 2, 3, 4]
    assert list(job.drive_one()) == []  # ended: nothing more runs


def test_path_checks_and_points(tmp_path):
    inside = tmp_path / "s1" / "file.png"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    assert session.check_path(inside, [tmp_path / "s1"]) == inside.resolve()
    for outside in (tmp_path / "s2" / "file.png", tmp_path / "s1" / ".." / "s2" / "x", "/etc/passwd"):
        with pytest.raises(MaskEditError, match="not part of this session"):
            session.check_path(outside, [tmp_path / "s1"])
    link = tmp_path / "s1" / "link"
    os.symlink("/etc", link)
    with pytest.raises(MaskEditError):
        session.check_path(link / "passwd", [tmp_path / "s1"])
    points, labels = session.parse_points('[[1, 2], [3, 4, 0], {"x": 5, "y": 6, "label": 1}]')
    assert points.tolist() == [[1, 2], [3, 4], [5, 6]] and labels.tolist() == [1, 0, 1]
    for bad in ("", "[]", "[[1]]", "[[1, 2, 5]]", "{", '[["a", 2]]'):
        with pytest.raises(MaskEditError):
            session.parse_points(bad)


def test_session_store_names_and_stale_folders(tmp_path):
    store = session.SessionStore(tmp_path, max_age=100)
    a, b = store.folder("abc123"), store.folder("../../etc")
    assert a.parent == tmp_path and b.parent == tmp_path and a != b
    old = time.time() - 1000
    os.utime(a, (old, old))
    assert store.remove_stale() == [a] and not a.exists() and b.exists()
    store.remove("/etc")  # outside the root: ignored
    assert Path("/etc").exists()
    store.remove(b)
    assert not b.exists()


def test_train_key_ignores_the_edited_first_frame(synthetic_clip):
    frames, region = synthetic_clip
    prepared = prepare.PreparedClip(Clip(frames, FPS), region)
    key = cache_key(prepared, "a box", "p3rs0n", TrainConfig(), "tiny")
    assert key == cache_key(prepared, "a box", "p3rs0n", TrainConfig(), "tiny")
    assert key != cache_key(prepared, "a cat", "p3rs0n", TrainConfig(), "tiny")
    assert key != cache_key(prepared, "a box", "p3rs0n", TrainConfig(steps=5), "tiny")
    moved = prepare.PreparedClip(Clip(frames, FPS), np.roll(region, 1, axis=2))
    assert key != cache_key(moved, "a box", "p3rs0n", TrainConfig(), "tiny")
    assert key != cache_key(prepared, "a box", "p3rs0n", TrainConfig(), "tiny", {4: frames[4]})


def test_naive_train_key_is_its_own_and_ignores_the_boxes(synthetic_clip):
    frames, region = synthetic_clip
    prepared = prepare.PreparedClip(Clip(frames, FPS), region)
    moved = prepare.PreparedClip(Clip(frames, FPS), np.roll(region, 1, axis=2))
    naive = cache_key(prepared, "a box", "p3rs0n", TrainConfig(condition="stock"), "tiny")
    assert naive != cache_key(prepared, "a box", "p3rs0n", TrainConfig(), "tiny")
    assert naive == cache_key(moved, "a box", "p3rs0n", TrainConfig(condition="stock"), "tiny")
    assert naive != cache_key(prepared, "a box", "p3rs0n", TrainConfig(steps=5, condition="stock"), "tiny")
    assert naive == cache_key(prepared, "a box", "p3rs0n", TrainConfig(), "tiny", naive=True)  # the override


def test_model_choice_is_announced_and_an_explicit_model_must_load(tmp_path):
    from maskedit.studio.runtime import load_model

    with pytest.raises(MaskEditError, match="--model") as excinfo:
        load_model(str(tmp_path / "no-such-model"))
    assert "(no such folder)" in str(excinfo.value) and "(hub id)" not in str(excinfo.value)  # said whole
    loaded, banner, line = load_model("tiny")
    assert loaded.name == "tiny" and "tiny model" in banner and "tiny model" in line


def test_losses_smoothing_and_eta():
    rows = loss_rows([1, 2, 3], [1.0, 0.0, 1.0])
    assert len(rows) == 6 and rows[3] == {"step": 1, "loss": 1.0, "series": "smoothed (moving average)"}
    assert format_eta(75) == "1m 15s" and format_eta(None) == "–"


def test_gpu_size_per_training_call_follows_its_plan(tmp_path):
    """The size comes from the plan of the preset trained (tests/test_zerogpu_hardware.py covers every kind)."""
    from maskedit.defaults import DEFAULT_MODEL_ID

    def studio(name, is_tiny):
        return Studio(session.SessionStore(tmp_path), local_gpu(None), model_name=name, is_tiny=is_tiny)

    real = studio(DEFAULT_MODEL_ID, False)
    assert real.sizer.size("training", "full") == "xlarge"  # 14B in bf16, every block resident: a whole card
    assert real.sizer.size("training", "zerogpu") == "large"  # fp8, encoders off the GPU: half a card
    assert studio("tiny", True).sizer.size("training", "full") == "large"  # no plan: the smallest size
    with pytest.raises(MaskEditError, match="GPU size"):
        ChunkRequest("p", "c", "a box", TrainConfig(), "p3rs0n", "m", gpu_size="huge")


def test_a_start_up_placement_is_kept_by_training_and_other_memory_settings_are_refused(tmp_path):
    """On ZeroGPU a real base's weights are placed once at start-up with the zerogpu preset's memory settings
    (`runtime.place_for_zerogpu`; here on the CPU with the tiny pipeline standing in for a 14B one): training
    with those settings keeps that placement (the same streamer, fp8 stores, encoders offloaded), and a preset
    with other memory settings is refused before any GPU time."""
    from maskedit.memory.offload import ENCODER_OFFLOAD_ATTRIBUTE, memory_setup
    from maskedit.method.conditioning import stage1_sample
    from maskedit.method.training import LoraTrainer, TrainItem
    from maskedit.models.loading import LoadedModel, build_tiny_pipeline
    from maskedit.studio.estimate import CallSizer
    from maskedit.studio.runtime import place_for_zerogpu

    pipe = build_tiny_pipeline()
    assert place_for_zerogpu(LoadedModel(pipe, "tiny", "tiny", True), device="cpu") is None  # tiny: moved whole
    assert memory_setup(pipe.transformer) is None
    placement = place_for_zerogpu(LoadedModel(pipe, "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "stand-in", False),
                                  device="cpu")
    setup = memory_setup(pipe.transformer)
    assert placement == "zerogpu" and setup.streamer is not None and setup.streamer.fp8
    assert getattr(pipe, ENCODER_OFFLOAD_ATTRIBUTE, None) is not None
    studio = Studio(session.SessionStore(tmp_path), local_gpu(pipe), model_name="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                    is_tiny=False, sizer=CallSizer("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", placement))
    config, _ = studio.train_config(TrainInputs("a box", preset="zerogpu", steps=1, fp8=True), 9)
    frames = np.zeros((9, 64, 64, 3), np.uint8)
    region = np.zeros((9, 64, 64), bool)
    region[:, 16:48, 16:48] = True
    LoraTrainer(pipe, [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))], config, device="cpu")
    assert memory_setup(pipe.transformer).streamer is setup.streamer  # not placed again
    for preset, fp8 in (("full", False), ("zerogpu", False), ("24gb", False)):
        with pytest.raises(MaskEditError, match="placed the model's weights once at start-up for the zerogpu"):
            studio.train_config(TrainInputs("a box", preset=preset, fp8=fp8), 9)
