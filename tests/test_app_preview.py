"""The Generate tab's Preview button through gradio_client on the tiny model: without a speed LoRA it says
what to set (no traceback); with a (tiny, random) speed LoRA it returns a 4-step CFG-1 preview; the page
shows the base."""

import pytest

from test_app import FRAMES, assert_user_error, client, inputs, prepare, server, train  # noqa: E402,F401
from test_preview import speed_file  # noqa: E402
from maskedit.models.loading import build_tiny_pipeline  # noqa: E402
from maskedit.workflow.preview import SPEED_LORA_ENV  # noqa: E402
from maskedit.media.video import read_video  # noqa: E402


def test_preview_button_explains_a_missing_speed_lora_then_previews_with_one(server, inputs, tmp_path,  # noqa: F811
                                                                             monkeypatch):
    from gradio_client.exceptions import AppError

    monkeypatch.delenv(SPEED_LORA_ENV, raising=False)
    c = client(server)
    props = [component.get("props", {}) for component in c.config["components"]]
    assert any("base: built-in tiny model" in str(p.get("value")) for p in props)  # the page names the base
    sizes = next(p["choices"] for p in props if p.get("label") == "Size (WxH)")
    assert [choice[0] for choice in sizes][:2] == ["auto", "64x64 (tiny test)"]  # the base's sizes first
    prepare(c, inputs)
    train(c, 2)
    with pytest.raises(AppError) as error:
        c.predict("a flipped box", None, "mask-lora", 0, 1.0, False, False, "full", "", api_name="/preview")
    assert_user_error(error, "needs a step-distilled speed LoRA", "Generate → Advanced → Speed LoRA")
    assert "--speed-lora" not in str(error.value)  # the app names its own field, not the CLI's flag

    speed = speed_file(tmp_path, build_tiny_pipeline)
    edited, side_by_side, report, report_json = c.predict("a flipped box", None, "mask-lora", 0, 1.0, False, False,
                                                          "full", str(speed), api_name="/preview")
    assert read_video(edited).num_frames == FRAMES and read_video(side_by_side).num_frames == FRAMES
    assert (report_json["steps"], report_json["guidance_scale"]) == (4, 1.0) and report_json["lora"]
    assert "4 steps, CFG 1" in report
    edited2, *_ = c.predict("a flipped box", None, "mask-lora", 2, 5.0, 5.0, 0, 1.0, False, api_name="/generate")
    assert read_video(edited2).num_frames == FRAMES  # the full render right after, as before
