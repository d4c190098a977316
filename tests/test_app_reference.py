"""Issue 26's settings through the app's API (gradio_client, tiny model): the negative prompt, the step cache and
the timestep sampler are fields of the page; a render's report carries the paper's CLIP measures and lists the
session's earlier results (every method) side by side."""

import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from test_app import client, inputs, prepare, server  # noqa: E402,F401  (fixtures)
from test_app_bases import component  # noqa: E402


def test_the_page_offers_the_reference_settings(server):
    c = Client(server[0], verbose=False)
    negative = component(c, "negative-prompt")
    assert negative["value"] == "reference" and [choice[1] for choice in negative["choices"]] == ["reference", "wan"]
    cache = component(c, "step-cache")
    assert cache["value"] == "off" and [choice[1] for choice in cache["choices"]] == ["off", "magcache", "teacache"]
    sampler = component(c, "timestep-sampler")
    assert sampler["value"] == "uniform" and "shifted" in [choice[1] for choice in sampler["choices"]]


def test_a_render_reports_its_settings_and_the_clip_measures_side_by_side(server, inputs):
    c = client(server)
    prepare(c, inputs)
    args = ("a flipped box", None, "no-lora", 3, 5.0, 5.0, 0, 1.0, False)
    _, _, first_report, first = c.predict(*args, api_name="/generate")
    assert first["negative_prompt"] == "reference" and first["step_cache"] == "off"
    assert first["evaluations"] == first["full_evaluations"] == 6
    _, _, report, second = c.predict(*args, negative_prompt="wan", step_cache="magcache", step_cache_threshold=0.5,
                                     api_name="/generate")
    assert second["negative_prompt"] == "wan" and second["step_cache"] == "magcache"
    assert second["step_cache_threshold"] == 0.5 and second["evaluations"] == 6
    assert 0.0 < second["input_similarity"] <= 1.0 and -1.0 <= second["clip_score"] <= 1.0
    assert "CLIP score (each frame vs the edited first frame" in report and "input similarity" in report
    assert "This session's results, side by side" in report
    assert f"{first['clip_score']:.4f}" in report  # the earlier render's measures, beside this one's
    with pytest.raises(Exception) as excinfo:
        c.predict(*args, step_cache="fast", api_name="/generate")
    assert "fast" in str(excinfo.value)  # not one of the choices
