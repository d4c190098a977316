"""Issue 15 through the session service (no Gradio): the fast preview (speed LoRA stacked for 4 steps at CFG 1,
removed afterwards; a clear message without one), a two-expert (Wan2.2-style) base trained, offered for
download per expert and generated with, and the base's banner and size menu."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from test_preview import speed_file
from test_studio import FPS, local_gpu
from maskedit.workflow import session
from maskedit.errors import MaskEditError
from maskedit.method.experts import EXPERTS, expert_file_names, expert_module
from maskedit.models.loading import build_tiny_pipeline, build_tiny_two_expert_pipeline
from maskedit.models.presets import GenerateSettings
from maskedit.workflow.preview import NO_SPEED_LORA, SPEED_LORA_ENV
from maskedit.models.speed import SPEED_ADAPTER, has_speed_lora
from maskedit.studio.runtime import base_banner, load_model, size_choices
from maskedit.studio.service import Studio, TrainInputs
from maskedit.media.video import read_video, write_image, write_video


def make_studio(tmp_path, pipe, model_name, frames, check_uploads=True):
    from maskedit.perception.segmentation_fallback import FallbackSegmenter

    write_video(tmp_path / "clip.mp4", frames, FPS)
    write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    calls = []
    gpu = local_gpu(pipe, FallbackSegmenter())
    generate = gpu.generate

    def counted_generate(*args, **kwargs):  # records the options of every GPU generation call
        calls.append(kwargs)
        yield from generate(*args, **kwargs)

    gpu.generate = counted_generate
    from maskedit.studio.uploads import base_transformers

    studio = Studio(session.SessionStore(tmp_path / "sessions"), gpu, model_name=model_name, is_tiny=True,
                    chunk_steps=2, allowed_roots=lambda: [tmp_path], cache_root=tmp_path / "cache",
                    transformers=(lambda: base_transformers(pipe)) if check_uploads else None)
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
    from maskedit.method.lora import ADAPTER_NAME

    assert all(ADAPTER_NAME in expert_module(pipe, e).peft_config for e in EXPERTS)  # both experts' LoRAs loaded
    high, low = (speed_file(tmp_path, build_tiny_two_expert_pipeline, e, seed=7 + i) for i, e in enumerate(EXPERTS))
    preview = studio.preview(st, "a flipped box", GenerateSettings(), speed_lora=f"{high},{low}")
    assert preview.report["steps"] == 4 and read_video(preview.edited).num_frames == 9
    assert all(SPEED_ADAPTER not in expert_module(pipe, e).peft_config for e in EXPERTS)


def test_banner_and_size_menu_follow_the_base(tiny_pipe):
    loaded, _, line = load_model("tiny")
    assert f"; {base_banner(loaded)}; serves " in line and "base: built-in tiny model" in line
    assert line.endswith("any width and height in multiples of 16 (320x192, the examples' size, takes seconds per "
                         "step on a CPU); 4k+1 frames, up to 81")
    fixed = ["auto", "832x480 (landscape 480p)", "480x832 (portrait 480p)", "64x64 (tiny test)"]
    as_720p = SimpleNamespace(pipe=tiny_pipe, name="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers")
    assert size_choices(as_720p, fixed) == ["auto", "1280x720 (landscape 720p)", "720x1280 (portrait 720p)",
                                            "832x480 (landscape 480p)", "480x832 (portrait 480p)", "64x64 (tiny test)"]
    assert "Wan2.1-I2V-14B-720P" in base_banner(as_720p)
    as_480p = SimpleNamespace(pipe=tiny_pipe, name="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
    assert size_choices(as_480p, fixed)[:3] == ["auto", "832x480 (landscape 480p)", "480x832 (portrait 480p)"]
    assert "1280x720" not in " ".join(size_choices(as_480p, fixed))


def test_a_presets_speed_lora_pair_goes_on_both_experts_and_comes_off_both(tmp_path):
    from maskedit.models.presets import get_preset
    from maskedit.studio.generation import apply_preset_options

    pipe = build_tiny_two_expert_pipeline()
    high, low = (speed_file(tmp_path, build_tiny_two_expert_pipeline, e, seed=7 + i) for i, e in enumerate(EXPERTS))
    preset = get_preset("zerogpu").with_overrides(speed_lora=f"{high},{low}")
    result = apply_preset_options(pipe, preset)
    assert result["speed_lora"] == f"{high},{low}" and not result["warnings"]
    assert all(SPEED_ADAPTER in expert_module(pipe, e).peft_config for e in EXPERTS)
    apply_preset_options(pipe, None)
    assert all(SPEED_ADAPTER not in (getattr(expert_module(pipe, e), "peft_config", None) or {}) for e in EXPERTS)


# ----- a LoRA pair uploaded for a two-expert base, and guidance_scale_2


def expert_pair_files(folder, seed=3, names=("edit_high_noise.safetensors", "edit_low_noise.safetensors")):
    """A random two-expert LoRA written by `save_expert_loras` (with lora.json) into folder/maskedit, and its
    two files copied under other names (`names`: high, low). Returns (MaskEdit's folder, [high, low])."""
    import shutil

    from test_preview import random_lora
    from maskedit.method.experts import save_expert_loras

    source = build_tiny_two_expert_pipeline()
    for offset, expert in enumerate(EXPERTS):
        random_lora(expert_module(source, expert), rank=4, seed=seed + offset)
    written = save_expert_loras(source, folder / "maskedit", {"base_model": "tiny-wan2.2", "trigger": "p3rs0n"})
    copies = [folder / name for name in names]
    for expert, copy in zip(EXPERTS, copies):
        shutil.copyfile(written[expert], copy)
    return folder / "maskedit", copies


def lora_weights(module) -> dict:
    from maskedit.method.lora import lora_state_dict

    return {k: v.clone() for k, v in lora_state_dict(module).items()}


def test_an_uploaded_pair_gives_each_expert_its_own_lora_in_either_order(tmp_path, synthetic_clip):
    from maskedit.method.experts import load_expert_loras

    pipe = build_tiny_two_expert_pipeline()
    studio, st, _ = make_studio(tmp_path, pipe, "tiny-wan2.2", synthetic_clip[0])
    folder, (high, low) = expert_pair_files(tmp_path)
    message = studio.use_lora(st, [str(low), str(high)])
    assert "edit_high_noise.safetensors" in message and "edit_low_noise.safetensors" in message
    stored = Path(st.lora).parent
    assert sorted(p.name for p in stored.iterdir()) == ["lora_high_noise.safetensors", "lora_low_noise.safetensors"]
    studio.generate(st, "a flipped box", GenerateSettings(steps=2))
    reference = build_tiny_two_expert_pipeline()
    load_expert_loras(reference, folder)
    for expert in EXPERTS:  # each expert carries the file written for it, not the other one
        got, expected = lora_weights(expert_module(pipe, expert)), lora_weights(expert_module(reference, expert))
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)

    # the whole folder MaskEdit wrote (lora.json, diffusers and ComfyUI files): its diffusers pair and lora.json
    files = sorted(str(p) for p in folder.iterdir())
    assert len(files) == 5
    studio.use_lora(st, files)
    assert sorted(p.name for p in Path(st.lora).parent.iterdir()) == ["lora.json", "lora_high_noise.safetensors",
                                                                     "lora_low_noise.safetensors"]
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=2, guidance_scale_2=2.5))
    assert result.report["guidance_scale_2"] == 2.5 and "low-noise 2.5" in result.report_markdown


def test_a_refused_upload_says_what_to_upload_and_keeps_the_sessions_lora(tmp_path, synthetic_clip):
    import torch
    from safetensors.torch import save_file

    pipe = build_tiny_two_expert_pipeline()
    studio, st, calls = make_studio(tmp_path, pipe, "tiny-wan2.2", synthetic_clip[0])
    _, (high, low) = expert_pair_files(tmp_path)
    studio.use_lora(st, [str(high), str(low)])
    kept = (st.lora, st.lora_source, {p.name: p.read_bytes() for p in Path(st.lora).parent.iterdir()})
    wrong_shape = tmp_path / "wide_low_noise.safetensors"  # a layer of another model's width
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 48),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(wrong_shape))
    no_layer = tmp_path / "deep_low_noise.safetensors"
    save_file({"blocks.7.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
               "blocks.7.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(no_layer))
    empty = tmp_path / "empty_low_noise.safetensors"
    empty.write_bytes(b"")
    nan = tmp_path / "nan_low_noise.safetensors"
    save_file({"blocks.0.attn1.to_q.lora_A.weight": torch.full((4, 32), float("nan")),
               "blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(nan))  # a pair: a LoRA but for its NaN
    unnamed = tmp_path / "edit.safetensors"
    unnamed.write_bytes(low.read_bytes())
    cases = [
        ([high], "edit_high_noise.safetensors alone is not enough: this base has two experts"),
        ([high, unnamed], "edit.safetensors: the name does not say which expert"),
        ([high, high], "2 high_noise files"),
        ([high, wrong_shape], "wide_low_noise.safetensors does not fit this model's low-noise expert "
                              "(blocks.0.attn1.to_q takes 32 inputs, the LoRA's A is [4, 48])"),
        ([high, no_layer], "blocks.7.attn1.to_q is not a layer of this model"),
        ([high, empty], "empty_low_noise.safetensors is not a LoRA file or is damaged (it is empty (0 bytes))"),
        ([high, nan], "NaN or infinite weights"),
        ([high, tmp_path / "notes.txt"], "notes.txt is not a .safetensors file"),
    ]
    (tmp_path / "notes.txt").write_text("x")
    for files, words in cases:
        with pytest.raises(MaskEditError) as error:
            studio.use_lora(st, [str(f) for f in files])
        assert words in str(error.value) and str(tmp_path) not in str(error.value), files
        assert (st.lora, st.lora_source, {p.name: p.read_bytes() for p in Path(st.lora).parent.iterdir()}) == kept
    assert calls == []  # nothing reached the GPU


def test_a_one_transformer_base_takes_one_file_and_refuses_a_pair_and_guidance_scale_2(tmp_path, synthetic_clip):
    from test_preview import random_lora
    from maskedit.method.lora import save_lora

    pipe = build_tiny_pipeline()
    studio, st, calls = make_studio(tmp_path, pipe, "tiny", synthetic_clip[0])
    _, (high, low) = expert_pair_files(tmp_path)
    with pytest.raises(MaskEditError, match="this model has one transformer .*a pair of …high_noise… / …low_noise… "
                                            "files is for a two-expert base"):
        studio.use_lora(st, [str(high), str(low)])
    assert st.lora is None
    source = build_tiny_pipeline()
    random_lora(source.transformer, rank=4, seed=1)
    single = save_lora(source, tmp_path / "single", {"trigger": "p3rs0n"})
    assert "lora.safetensors" in studio.use_lora(st, str(single))  # one file, as before
    assert Path(st.lora).name == "lora.safetensors"
    with pytest.raises(MaskEditError, match="guidance_scale_2 \\(3\\) .*one transformer"):
        studio.generate(st, "a flipped box", GenerateSettings(steps=2, guidance_scale_2=3.0))
    assert calls == [] and st.results == 0  # refused before any GPU work
    assert studio.generate(st, "a flipped box", GenerateSettings(steps=2)).report["guidance_scale_2"] is None


def test_without_the_model_the_base_is_judged_by_its_name(tmp_path, synthetic_clip):
    pipe = build_tiny_two_expert_pipeline()
    studio, st, _ = make_studio(tmp_path, pipe, "tiny-wan2.2", synthetic_clip[0], check_uploads=False)
    assert studio.two_experts
    _, (high, low) = expert_pair_files(tmp_path)
    studio.use_lora(st, [str(high), str(low)])
    assert Path(st.lora).name == "lora_high_noise.safetensors"


@pytest.mark.parametrize("model_name, swap, size", [
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 32, (832, 480)),
    ("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", 32, (1280, 720)),
    ("Wan-AI/Wan2.2-I2V-A14B-Diffusers", 36, (832, 480)),  # 4 resident blocks per expert
])
def test_the_train_tab_starts_from_the_preset_adapted_to_the_base(tmp_path, model_name, swap, size):
    from maskedit.perception.segmentation_fallback import FallbackSegmenter

    studio = Studio(session.SessionStore(tmp_path / "sessions"), local_gpu(None, FallbackSegmenter()),
                    model_name=model_name, is_tiny=False, allowed_roots=lambda: [tmp_path])
    chosen = studio.preset("24gb")
    assert (chosen.blocks_to_swap, (chosen.width, chosen.height)) == (swap, size)


def test_the_default_model_falls_back_to_the_tiny_one_with_a_banner_saying_why(monkeypatch):
    """With a CUDA GPU and no --model, the app loads Wan2.1-I2V-14B-480P; when it cannot be had (no network here, so
    found out in seconds), it runs the tiny model and the banner and the terminal line name the model and say why,
    whole. Asked for by name, the same model stops the app instead."""
    import time

    import torch

    from maskedit.models import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the default is the real model
    monkeypatch.setattr(loading, "default_device", lambda: "cpu")  # the tiny fallback runs here all the same
    started = time.perf_counter()
    loaded, banner, line = load_model(None)
    assert loaded.name == "tiny" and time.perf_counter() - started < 60
    why = ("could not load the model 'Wan-AI/Wan2.1-I2V-14B-480P-Diffusers' (hub id): it is not in the local "
           "Hugging Face cache, and the hub cannot be used (HF_HUB_OFFLINE is set). Pass a local diffusers-format "
           "folder of a Wan2.1 I2V model, a hub id you can reach, or --model tiny for the built-in small model.")
    assert banner == (f"⚠️ **Could not load `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`** ({why}). Using the built-in "
                      "**tiny model** instead: random weights, it shows the workflow, not the method's quality.")
    assert line.startswith(f"could not load Wan-AI/Wan2.1-I2V-14B-480P-Diffusers ({why}); running the built-in tiny")
    with pytest.raises(MaskEditError, match="the model given with --model / MASKEDIT_MODEL"):
        load_model("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
