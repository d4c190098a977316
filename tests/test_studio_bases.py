"""Issue 15 through the session service (no Gradio): the fast preview (speed LoRA stacked for 4 steps at CFG 1,
removed afterwards; a clear message without one), a two-expert (Wan2.2-style) base trained, offered for
download per expert and generated with, and the base's banner and size menu."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from test_preview import speed_file
from test_studio import FPS, local_gpu
from maskedit import session
from maskedit.errors import MaskEditError
from maskedit.experts import EXPERTS, expert_file_names, expert_module
from maskedit.models import build_tiny_pipeline, build_tiny_two_expert_pipeline
from maskedit.presets import GenerateSettings
from maskedit.preview import NO_SPEED_LORA, SPEED_LORA_ENV
from maskedit.speed import SPEED_ADAPTER, has_speed_lora
from maskedit.studio.runtime import base_banner, load_model, size_choices
from maskedit.studio.service import Studio, TrainInputs
from maskedit.video import read_video, write_image, write_video


def make_studio(tmp_path, pipe, model_name, frames):
    from maskedit.segmentation_fallback import FallbackSegmenter

    write_video(tmp_path / "clip.mp4", frames, FPS)
    write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    calls = []
    gpu = local_gpu(pipe, FallbackSegmenter())
    generate = gpu.generate

    def counted_generate(*args, **kwargs):  # records the options of every GPU generation call
        calls.append(kwargs)
        yield from generate(*args, **kwargs)

    gpu.generate = counted_generate
    studio = Studio(session.SessionStore(tmp_path / "sessions"), gpu, model_name=model_name, is_tiny=True,
                    chunk_steps=2, allowed_roots=lambda: [tmp_path], cache_root=tmp_path / "cache")
    st = studio.session("tab")
    studio.load_video(st, tmp_path / "clip.mp4", 9, "64x64")
    studio.use_mask(st, box="10,10,40,40")
    studio.set_edited_frame(st, tmp_path / "edited.png")
    return studio, st, calls


def test_preview_without_a_speed_lora_says_what_to_set_before_any_gpu_work(tmp_path, tiny_pipe, synthetic_clip,
                                                                         monkeypatch):
    monkeypatch.delenv(SPEED_LORA_ENV, raising=False)
    studio, st, calls = make_studio(tmp_path, tiny_pipe, "tiny", synthetic_clip[0])
    with pytest.raises(MaskEditError) as error:
        studio.preview(st, "a flipped box", GenerateSettings(method="no-lora"), speed_lora="  ", preset="full")
    assert str(error.value) == NO_SPEED_LORA and calls == [] and st.results == 0


def test_preview_stacks_the_speed_lora_and_leaves_the_full_render_unchanged(tmp_path, synthetic_clip, monkeypatch):
    monkeypatch.delenv(SPEED_LORA_ENV, raising=False)
    pipe = build_tiny_pipeline()
    studio, st, calls = make_studio(tmp_path, pipe, "tiny", synthetic_clip[0])
    list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    full = GenerateSettings(steps=2, seed=3)
    before = studio.generate(st, "a flipped box", full)
    speed = speed_file(tmp_path, build_tiny_pipeline)
    result = studio.preview(st, "a flipped box", full, speed_lora=str(speed), preset="full")
    report = result.report
    assert (report["steps"], report["guidance_scale"], report["flow_shift"]) == (4, 1.0, 5.0)
    assert report["speed_lora"] == str(speed) and "preview: speed LoRA" in report["preview"]
    assert report["seed"] == 3 and report["method"] == "mask-lora" and report["lora"]  # the same edit LoRA
    assert calls[-1]["preview"].speed_lora == str(speed) and not has_speed_lora(pipe)
    preview_frames = read_video(result.edited).frames
    after = studio.generate(st, "a flipped box", full)
    assert np.array_equal(read_video(after.edited).frames, read_video(before.edited).frames)  # bit for bit
    assert not np.array_equal(preview_frames, read_video(before.edited).frames)
    monkeypatch.setenv(SPEED_LORA_ENV, str(speed))  # the environment's speed LoRA when the field is empty
    assert studio.preview(st, "a flipped box", full, speed_lora="").report["speed_lora"] == str(speed)


def test_two_expert_base_trains_offers_per_expert_files_and_generates_and_previews(tmp_path, synthetic_clip):
    pipe = build_tiny_two_expert_pipeline()
    studio, st, _ = make_studio(tmp_path, pipe, "tiny-wan2.2", synthetic_clip[0])
    views = list(studio.train(st, TrainInputs("a box", steps=2, rank=4)))
    names = sorted(Path(f).name for f in views[-1].files)
    assert names == sorted(["lora.json", *expert_file_names()])
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=2))
    assert read_video(result.edited).num_frames == 9
    from maskedit.lora import ADAPTER_NAME

    assert all(ADAPTER_NAME in expert_module(pipe, e).peft_config for e in EXPERTS)  # both experts' LoRAs loaded
    high, low = (speed_file(tmp_path, build_tiny_two_expert_pipeline, e, seed=7 + i) for i, e in enumerate(EXPERTS))
    preview = studio.preview(st, "a flipped box", GenerateSettings(), speed_lora=f"{high},{low}")
    assert preview.report["steps"] == 4 and read_video(preview.edited).num_frames == 9
    assert all(SPEED_ADAPTER not in expert_module(pipe, e).peft_config for e in EXPERTS)


def test_banner_and_size_menu_follow_the_base(tiny_pipe):
    loaded, _, line = load_model("tiny")
    assert line.endswith(base_banner(loaded)) and "base: built-in tiny model" in line
    fixed = ["auto", "832x480 (landscape 480p)", "480x832 (portrait 480p)", "64x64 (tiny test)"]
    as_720p = SimpleNamespace(pipe=tiny_pipe, name="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers")
    assert size_choices(as_720p, fixed) == ["auto", "1280x720 (landscape 720p)", "720x1280 (portrait 720p)",
                                            "832x480 (landscape 480p)", "480x832 (portrait 480p)", "64x64 (tiny test)"]
    assert "Wan2.1-I2V-14B-720P" in base_banner(as_720p)
    as_480p = SimpleNamespace(pipe=tiny_pipe, name="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
    assert size_choices(as_480p, fixed)[:3] == ["auto", "832x480 (landscape 480p)", "480x832 (portrait 480p)"]
    assert "1280x720" not in " ".join(size_choices(as_480p, fixed))


def test_a_presets_speed_lora_pair_goes_on_both_experts_and_comes_off_both(tmp_path):
    from maskedit.presets import get_preset
    from maskedit.studio.generation import apply_preset_options

    pipe = build_tiny_two_expert_pipeline()
    high, low = (speed_file(tmp_path, build_tiny_two_expert_pipeline, e, seed=7 + i) for i, e in enumerate(EXPERTS))
    preset = get_preset("zerogpu").with_overrides(speed_lora=f"{high},{low}")
    result = apply_preset_options(pipe, preset)
    assert result["speed_lora"] == f"{high},{low}" and not result["warnings"]
    assert all(SPEED_ADAPTER in expert_module(pipe, e).peft_config for e in EXPERTS)
    apply_preset_options(pipe, None)
    assert all(SPEED_ADAPTER not in (getattr(expert_module(pipe, e), "peft_config", None) or {}) for e in EXPERTS)
