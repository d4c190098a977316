"""Issue 11's rules in the session service (without Gradio): training captions (the ORIGINAL first frame's and
each edited later frame's, typed or made by the captioner, never the edit's prompt), feature-level blending on
the naive LoRA, and the sampler from the settings to the pipe."""

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from maskedit.workflow import session
from maskedit.errors import MaskEditError
from maskedit.method.lora import read_metadata
from maskedit.models.presets import PRESETS, GenerateSettings
from maskedit.studio.runs import run_training_chunk
from maskedit.studio.service import GpuCalls, Studio, TrainInputs
from maskedit.media.video import read_image, write_image, write_video

FPS = 8.0
LATER = 4


def gpu_calls(pipe, captions: list | None, requests: list, generations: list):
    """Plain GPU calls on `pipe`. captions: None = no captioner (each call fails as the app's does without
    Florence-2), else a list that records the images captioned (each captioned "auto <mean brightness>")."""
    from maskedit.studio.generation import run_generation

    def caption(image):
        if captions is None:
            raise MaskEditError("automatic captions are off in this app; type the prompt yourself")
        captions.append(image)
        return f"auto {float(np.mean(image)):.1f}"

    def train_chunk(request):
        requests.append(request)
        return run_training_chunk(pipe, request)

    def generate(*args, **kwargs):
        generations.append((args, kwargs))
        return run_generation(pipe, *args, **kwargs)

    return GpuCalls(train_chunk=train_chunk, generate=generate, image_mask=None, segment_clip=None, caption=caption)


@pytest.fixture
def files(tmp_path, synthetic_clip):
    frames, _ = synthetic_clip
    write_video(tmp_path / "clip.mp4", frames, FPS)
    write_image(tmp_path / "edited.png", np.ascontiguousarray(frames[0][:, ::-1]))
    write_image(tmp_path / "later.png", np.ascontiguousarray(frames[LATER][::-1]))
    return tmp_path


def make_studio(files, pipe, captions=None):
    requests, generations = [], []
    studio = Studio(session.SessionStore(files / "sessions"), gpu_calls(pipe, captions, requests, generations),
                    model_name="tiny", is_tiny=True, allowed_roots=lambda: [files], cache_root=files / "cache")
    st = studio.session("tab")
    studio.load_video(st, files / "clip.mp4", 9, "64x64")
    studio.use_mask(st, box="10,10,40,40")
    studio.set_edited_frame(st, files / "edited.png")
    return studio, st, requests, generations


def test_missing_training_captions_are_made_by_the_captioner_never_taken_from_the_prompt(files, tiny_pipe):
    captions = []
    studio, st, requests, _ = make_studio(files, tiny_pipe, captions)
    studio.add_later_frame(st, files / "later.png", LATER)
    inputs, later, notes = studio.training_captions(st, TrainInputs("", edit_caption="a flipped box"))
    original = session.load_clip(studio.sub(st, session.CLIP_FOLDER))[0].frames[0]
    later_frame = read_image(st.later[str(LATER)])
    assert inputs.caption == f"auto {original.mean():.1f}"  # the ORIGINAL first frame, not the edited one
    assert later == {LATER: f"auto {later_frame.mean():.1f}"} and len(captions) == 2 and len(notes) == 2
    assert "a flipped box" not in (inputs.caption, *later.values())
    # typed captions are kept and nothing is captioned
    studio.clear_later_frames(st)  # a frame is added once (a repeated K is refused): clear, then add it captioned
    studio.add_later_frame(st, files / "later.png", LATER, caption="a mirrored box")
    inputs, later, notes = studio.training_captions(st, TrainInputs("a box"))
    assert (inputs.caption, later, notes, len(captions)) == ("a box", {LATER: "a mirrored box"}, [], 2)
    # they reach the training call and its cache key
    list(studio.train(st, TrainInputs("a box", steps=1, rank=4, edit_caption="a flipped box")))
    request = requests[0]
    assert (request.caption, request.captions(), request.edit_caption) == ("a box", {LATER: "a mirrored box"},
                                                                           "a flipped box")
    assert request.key() == studio._key(st, inputs, request.config, st.later, later_captions=later)[0]


def test_without_a_captioner_training_asks_for_the_captions_before_any_step(files, tiny_pipe, step_counter):
    studio, st, requests, _ = make_studio(files, tiny_pipe, captions=None)
    with pytest.raises(MaskEditError, match="ORIGINAL first frame.*not the edit's caption"):
        list(studio.train(st, TrainInputs("", steps=1, edit_caption="a flipped box")))
    studio.add_later_frame(st, files / "later.png", LATER)
    with pytest.raises(MaskEditError, match=f"edited later frame\\(s\\) {LATER}") as excinfo:
        list(studio.train(st, TrainInputs("a box", steps=1, edit_caption="a flipped box")))
    assert "ORIGINAL" not in str(excinfo.value)  # only what is missing is asked for
    with pytest.raises(MaskEditError, match="caption"):  # /edit: the prompt is never the training caption
        studio.edit(st, files / "clip.mp4", box="10,10,40,40", edited_first=files / "edited.png",
                    train_caption="", prompt="a flipped box", num_frames=9, size="64x64", train_steps=1)
    assert not requests and not step_counter


def test_edit_trains_on_the_typed_captions_and_records_the_prompt(files, tiny_pipe):
    studio, st, requests, _ = make_studio(files, tiny_pipe)
    with pytest.raises(MaskEditError, match="not among the edited later frames"):
        studio.edit(st, files / "clip.mp4", box="10,10,40,40", edited_first=files / "edited.png",
                    later_files=[files / "later.png"], later_indices=str(LATER), later_captions='{"2": "x"}',
                    train_caption="a box", prompt="a flipped box", num_frames=9, size="64x64", train_steps=1)
    result, lora_files = studio.edit(st, files / "clip.mp4", box="10,10,40,40", edited_first=files / "edited.png",
                                     train_caption="a box", prompt="a flipped box", num_frames=9, size="64x64",
                                     train_steps=2, settings=GenerateSettings(steps=1))
    meta = json.loads(next(Path(f) for f in lora_files if f.endswith("lora.json")).read_text())
    assert (meta["caption"], meta["edit_caption"]) == ("a box", "a flipped box")
    assert Path(result.edited).is_file() and requests[-1].edit_caption == "a flipped box"


def test_feature_blending_runs_on_the_naive_lora(files, tiny_pipe):
    studio, st, requests, generations = make_studio(files, tiny_pipe)
    with pytest.raises(MaskEditError, match="naive LoRA's training settings"):
        studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="feature-blend"))
    result = studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="feature-blend"),
                             train_inputs=TrainInputs("a box", steps=2, rank=4))
    assert requests and all(r.config.naive for r in requests)  # trained the naive baseline, nothing else
    lora_path = generations[-1][1]["lora_path"]
    assert lora_path == st.naive_lora and read_metadata(lora_path)["condition"] == "stock"
    assert st.lora is None and result.report["method"] == "feature-blend"  # the mask-aware slot is untouched
    count = len(requests)
    studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="naive-lora"),
                    train_inputs=TrainInputs("a box", steps=2, rank=4))
    assert len(requests) == count and generations[-1][1]["lora_path"] == lora_path  # one naive LoRA for both


def test_the_sampler_of_the_settings_reaches_the_pipe(files, tiny_pipe):
    assert all(p.generate_settings().sampler == p.sampler for p in PRESETS.values())
    assert PRESETS["full"].generate_settings(sampler="unipc").sampler == "unipc"
    with pytest.raises(MaskEditError, match="sampler"):
        GenerateSettings(sampler="ddim")
    studio, st, _, generations = make_studio(files, tiny_pipe)
    for sampler, kind in (("unipc", UniPCMultistepScheduler), ("euler", FlowMatchEulerDiscreteScheduler)):
        studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="no-lora", sampler=sampler))
        assert generations[-1][0][4].sampler == sampler and type(tiny_pipe.scheduler) is kind
    report = studio.generate(st, "a flipped box", GenerateSettings(steps=1, method="no-lora", sampler="unipc"))
    assert report.report["sampler"] == "unipc" and "unipc sampler" in report.report_markdown
