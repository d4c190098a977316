"""The app on a two-expert base (`--model tiny-wan2.2`, Wan2.2-A14B's layout) through gradio_client: a LoRA
pair uploaded on /use_lora and the low-noise expert's guidance on /generate; the one-transformer app keeps its
one-file /use_lora and hides (and refuses) the low-noise guidance."""

import pytest
from gradio_client import Client, handle_file

from test_app import assert_user_error, client, inputs, prepare, running_app, server  # noqa: E402,F401  (fixtures)
from test_studio_bases import expert_pair_files  # noqa: E402
from maskedit.media.video import read_video  # noqa: E402


@pytest.fixture(scope="module")
def wan22_server(tmp_path_factory):
    with running_app("tiny-wan2.2", tmp_path_factory.mktemp("s"), chunk_steps=3, background=False) as url:
        yield url


def component(c: Client, elem_id: str) -> dict:
    """The props of the page's component with `elem_id`."""
    return next(comp["props"] for comp in c.config["components"] if comp.get("props", {}).get("elem_id") == elem_id)


def lora_in_use(c: Client):
    return c.predict(api_name="/training_status")["lora_in_use"]


def test_two_expert_app_takes_a_lora_pair_and_the_low_noise_guidance(wan22_server, inputs, tmp_path):
    import torch
    from safetensors.torch import save_file

    c = Client(wan22_server, verbose=False)
    assert component(c, "cfg2")["visible"] is True
    prepare(c, inputs)
    folder, (high, low) = expert_pair_files(tmp_path)
    with pytest.raises(Exception) as excinfo:  # one file of the pair
        c.predict([handle_file(str(high))], api_name="/use_lora")
    assert_user_error(excinfo, "alone is not enough", "upload both files together")
    assert lora_in_use(c) is None
    message = c.predict([handle_file(str(low)), handle_file(str(high))], api_name="/use_lora")  # either order
    assert "edit_high_noise.safetensors" in message and "edit_low_noise.safetensors" in message
    in_use = lora_in_use(c)
    assert in_use.endswith("lora_high_noise.safetensors")

    wide = tmp_path / "wide_low_noise.safetensors"
    save_file({"blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 48),
               "blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(wide))
    with pytest.raises(Exception) as excinfo:  # a failed upload keeps the pair in use
        c.predict([handle_file(str(high)), handle_file(str(wide))], api_name="/use_lora")
    assert_user_error(excinfo, "does not fit this model's low-noise expert")
    assert lora_in_use(c) == in_use

    edited, _, report, report_json = c.predict(prompt_text="a flipped box", edited_file=None, method_name="mask-lora",
                                               steps=2, cfg2_value=2.5, api_name="/generate")
    assert read_video(edited).num_frames == 9
    assert report_json["guidance_scale_2"] == 2.5 and "low-noise 2.5" in report and report_json["lora"]
    _, _, _, same = c.predict(prompt_text="a flipped box", edited_file=None, method_name="mask-lora", steps=2,
                              api_name="/generate")  # left out: the same as CFG
    assert same["guidance_scale_2"] is None
    with pytest.raises(Exception) as excinfo:
        c.predict(prompt_text="a flipped box", edited_file=None, steps=2, cfg2_value=0.5, api_name="/generate")
    assert_user_error(excinfo, "guidance_scale_2", "at least 1")

    # the folder MaskEdit wrote, uploaded whole
    c.predict([handle_file(str(p)) for p in sorted(folder.iterdir())], api_name="/use_lora")
    assert lora_in_use(c).endswith("lora_high_noise.safetensors")


def test_one_transformer_app_keeps_its_one_file_upload_and_hides_the_low_noise_guidance(server, inputs, tmp_path):
    from test_preview import random_lora
    from maskedit.method.lora import save_lora
    from maskedit.models.loading import build_tiny_pipeline

    c = client(server)
    assert component(c, "cfg2")["visible"] is False
    source = build_tiny_pipeline()
    random_lora(source.transformer, rank=4, seed=1)
    single = save_lora(source, tmp_path / "single", {"trigger": "p3rs0n"})
    assert "lora.safetensors" in c.predict(handle_file(str(single)), api_name="/use_lora")  # one file, as before
    with pytest.raises(Exception) as excinfo:
        c.predict(prompt_text="a flipped box", edited_file=None, steps=2, cfg2_value=3.0, api_name="/generate")
    assert_user_error(excinfo, "guidance_scale_2 (3)", "one transformer")
