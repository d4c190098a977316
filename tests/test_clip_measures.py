"""The paper's Table 1 measures beside background PSNR: the CLIP score (each generated frame vs the edited first
frame) and the input similarity (each generated frame vs its source frame), with the base's own CLIP image
encoder; unavailable (and said so) on a base without one (Wan2.2)."""

import json

import numpy as np
import pytest

from maskedit.media import metrics
from maskedit.media.video import write_image
from maskedit.method.clip_features import clip_image_features, has_image_encoder
from maskedit.models.presets import GenerateSettings
from maskedit.workflow import generate, prepare


@pytest.fixture(scope="module")
def clip(prepared_edit):
    return prepared_edit


def test_the_arithmetic_is_cosine_similarity_over_frames_after_the_first():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(metrics.cosine_similarities(a, np.array([[1.0, 0.0]])), [1.0, 0.0, np.sqrt(0.5)])
    np.testing.assert_allclose(metrics.cosine_similarities(a, -a), [-1.0, -1.0, -1.0])
    generated = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    source = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    measures = metrics.clip_measures(generated, np.array([[1.0, 0.0]]), source)
    assert measures == {"clip_score": pytest.approx(0.5), "input_similarity": pytest.approx(0.5)}  # frames 1, 2
    with pytest.raises(ValueError, match="row by row"):
        metrics.cosine_similarities(a, np.ones((2, 2)))
    with pytest.raises(ValueError, match="differ"):
        metrics.clip_measures(generated, generated[:1], source[:2])


def test_features_come_from_the_pipes_own_image_encoder(tiny_pipe, clip):
    prepared, edited = clip
    features = clip_image_features(tiny_pipe, prepared.frames)
    dim = tiny_pipe.image_encoder.config.hidden_size
    assert features.shape == (prepared.num_frames, dim) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(clip_image_features(tiny_pipe, prepared.frames[3]), features[3:4], atol=1e-6)
    assert not np.allclose(clip_image_features(tiny_pipe, edited), features[0])
    # the measures: a clip against itself is perfect on input similarity
    same = generate.edit_clip_measures(tiny_pipe, prepared, edited, prepared.frames)
    assert same["input_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= same["clip_score"] < 1.0 and "paper's figures" in same["clip_note"]


def test_a_base_without_an_image_encoder_says_the_measures_are_unavailable(clip):
    from maskedit.models.loading import build_tiny_two_expert_pipeline

    prepared, edited = clip
    two = build_tiny_two_expert_pipeline()
    assert not has_image_encoder(two) and clip_image_features(two, prepared.frames) is None
    measures = generate.edit_clip_measures(two, prepared, edited, prepared.frames)
    assert measures["clip_score"] is None and measures["input_similarity"] is None
    assert "unavailable" in measures["clip_note"] and "no CLIP image encoder" in measures["clip_note"]


def test_the_report_shows_both_measures_for_every_method_side_by_side(tiny_pipe, clip, tmp_path):
    from maskedit.studio.generation import format_report, run_generation, session_reports

    prepared, edited = clip
    prepare.save_prepared(prepared, tmp_path / "prepared")
    write_image(tmp_path / "edited.png", edited)
    reports = []
    for number, settings in ((1, GenerateSettings(method="no-lora", steps=2)),
                             (2, GenerateSettings(method="no-lora", steps=2, seed=1, negative_prompt="wan"))):
        out = tmp_path / "results" / str(number)
        events = list(run_generation(tiny_pipe, tmp_path / "prepared", tmp_path / "edited.png", "a blue box", out,
                                     settings))
        reports.append(events[-1]["report"])
        assert json.loads((out / "report.json").read_text())["clip_score"] == pytest.approx(reports[-1]["clip_score"])
    report = reports[-1]
    assert report["negative_prompt"] == "wan" and 0.0 < report["input_similarity"] <= 1.0
    others = session_reports(tmp_path / "results", exclude=tmp_path / "results" / "2")
    assert [r["result"] for r in others] == [1]
    text = format_report(report, others)
    assert f"| CLIP score (each frame vs the edited first frame, frames 1..) | {report['clip_score']:.4f} |" in text
    assert f"| input similarity (each frame vs its source frame, frames 1..) | {report['input_similarity']:.4f} |" \
        in text
    assert "paper's figures (Table 1) come from its own CLIP" in text and "negative prompt wan" in text
    assert "side by side" in text and "| 1 | no-lora | " in text and f"{reports[0]['clip_score']:.4f}" in text
    unavailable = format_report(dict(report, clip_score=None, input_similarity=None,
                                     clip_note=generate.CLIP_UNAVAILABLE))
    assert "| CLIP score (each frame vs the edited first frame, frames 1..) | unavailable" in unavailable
