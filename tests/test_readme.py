"""The README's app flows on the product as shipped: `python app.py` in a process of its own with no flags and no
MASKEDIT_* variables, on a user's machine without network (`shipped.UserMachine`: HOME and TMPDIR siblings, the
hub unreachable), driven by the README's blocks verbatim from two client scripts at once.

The default LoRA cache then lives in that HOME (~/.cache/maskedit/loras), outside every folder Gradio serves by
itself: the LoRA files, videos and reports must still reach the clients, while nothing else of the HOME may.
"""

import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from maskedit.media.video import read_video
from shipped import UserMachine, client_setup, client_steps, edit_block, finish_client, start_client, started

STEP_VALUES = ["edited", "side_by_side", "report", "info", "loss_plot", "status", "loss_points", "lora_files"]
EDIT_VALUES = ["edited", "side_by_side", "lora_files", "report", "info"]
LORA_NAMES = ["lora.json", "lora.safetensors", "lora_comfyui.safetensors"]


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    return UserMachine.create(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def plain_app(machine):
    """`python app.py`, exactly as the README starts it."""
    with started(machine, ["app.py"]) as app:
        yield app


def run_readme_blocks(machine, app, tag: str) -> tuple[dict, dict, float]:
    """The step-by-step block and the /edit block, each a client script of its own, run at the same time against
    `app`; returns (step values, /edit values, seconds of the two together)."""
    started_at = time.perf_counter()
    steps = start_client(machine, client_steps(), app.port, STEP_VALUES, f"{tag}_steps")
    edit = start_client(machine, client_setup(client_steps()) + edit_block(), app.port, EDIT_VALUES, f"{tag}_edit")
    step_values, printed = finish_client(steps)
    edit_values, _ = finish_client(edit)
    assert step_values["edited"] in printed  # the block's own print
    return step_values, edit_values, time.perf_counter() - started_at


def check_readme_results(step_values: dict, edit_values: dict) -> None:
    edited = read_video(step_values["edited"])
    assert edited.num_frames == 9 and (edited.width, edited.height) == (320, 192)
    assert step_values["info"]["method"] == "mask-lora"
    assert step_values["loss_points"]["step"] == list(range(1, 11))
    assert "done" in step_values["status"]
    assert sorted(Path(f).name for f in step_values["lora_files"]) == LORA_NAMES
    assert all(Path(f).stat().st_size > 0 for f in step_values["lora_files"])
    edited = read_video(edit_values["edited"])
    assert edited.num_frames == 33 and (edited.width, edited.height) == (320, 192)
    assert read_video(edit_values["side_by_side"]).width == 640
    assert sorted(Path(f).name for f in edit_values["lora_files"]) == LORA_NAMES
    assert "background PSNR" in edit_values["report"]


def check_nothing_else_is_served(app, folders: list[Path], home: Path) -> None:
    """The app's own folders (LoRA cache, session folders) and the rest of HOME stay unreadable by path."""
    secret = home / "private.txt"
    secret.write_text("not for the web")
    files = [secret] + [p for folder in folders for p in folder.rglob("*") if p.is_file()][:20]
    assert len(files) > 1, folders
    for path in files:
        response = httpx.get(f"{app.url}gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)


def test_the_readme_blocks_run_on_a_plain_python_app_py(machine, plain_app):
    step_values, edit_values, seconds = run_readme_blocks(machine, plain_app, "plain")
    check_readme_results(step_values, edit_values)
    cache = machine.home / ".cache" / "maskedit" / "loras"  # the default cache, in the user's HOME
    assert len(list(cache.glob("*/lora.safetensors"))) == 2, list(cache.rglob("*"))
    log = plain_app.log_text()
    assert "Traceback" not in log and "InvalidPathError" not in log, log[-3000:]
    check_nothing_else_is_served(plain_app, [cache, machine.tmp / "maskedit-sessions"], machine.home)
    print(f"\nplain app: started in {plain_app.started_s:.1f} s; the two README blocks together {seconds:.1f} s")


def test_the_page_names_the_default_model_and_why(plain_app):
    """No --model: the tiny model on a machine without CUDA, the real one (or the banner saying why not) with it."""
    import torch

    config = httpx.get(plain_app.url + "config").json()
    values = {c["props"].get("elem_id"): str(c["props"].get("value")) for c in config["components"]
              if c.get("props", {}).get("elem_id")}
    if torch.cuda.is_available():  # no network here: the default Wan2.1 cannot be fetched, so the fallback says so
        assert "Could not load" in values["banner"] and "tiny model" in values["banner"]
    else:
        assert "No CUDA GPU was found" in values["banner"] and "tiny model" in values["banner"]
    assert "**Model:** built-in tiny model" in values["model-line"] and "multiples of 16" in values["model-line"]


def test_every_api_value_is_named(plain_app):
    """`client.view_api()` names every input and output of every endpoint: no `value_N` (a client reads results
    by these names)."""
    info = Client(plain_app.url, verbose=False).view_api(print_info=False, return_format="dict")
    unnamed = [(name, kind, value.get("label") or value.get("parameter_name"))
               for name, endpoint in info["named_endpoints"].items()
               for kind in ("parameters", "returns") for value in endpoint[kind]
               if not value.get("label") or str(value.get("label")).startswith("value_")]
    assert not unnamed, unnamed
    endpoints = info["named_endpoints"]
    for name in ("/load_video", "/segment", "/use_mask", "/set_edited_frame", "/add_later_frame", "/caption", "/train",
                 "/resume_training", "/stop_training", "/use_lora", "/generate", "/preview", "/set_background",
                 "/edit", "/training_status", "/gallery"):
        assert name in endpoints, name
    assert [p["parameter_name"] for p in endpoints["/segment"]["parameters"]] == ["points_json", "margin"]


def test_without_network_the_captioner_is_reported_missing_in_seconds(machine, plain_app):
    """The default captioner (Florence-2-large) is neither cached nor reachable: "Caption both automatically" and
    Train with an empty caption say so within seconds, in the page's words, whole."""
    client = Client(plain_app.url, verbose=False)
    client.predict(video=handle_file(str(Path("examples/color_single/clip.mp4").resolve())), num_frames=9,
                   size="320x192", start_s=0, api_name="/load_video")
    started_at = time.perf_counter()
    with pytest.raises(Exception) as excinfo:
        client.predict(api_name="/caption")
    caption_s = time.perf_counter() - started_at
    text = str(excinfo.value)
    assert "cannot be reached" in text and "Florence-2" in text and "type" in text, text
    assert "--" not in text.replace("--captioner", ""), text  # the app's words, not the command line's
    client.predict(mask_video=None, box="132,108,220,189", margin=0.1, fit=False, api_name="/use_mask")
    started_at = time.perf_counter()
    with pytest.raises(Exception) as excinfo:
        client.predict(caption="", trigger="p3rs0n", preset="full", steps=2, learning_rate=1e-4, rank=4, seed=0,
                       blocks_to_swap=0, fp8=False, gradient_checkpointing=False, budget_s=110, api_name="/train")
    train_s = time.perf_counter() - started_at
    text = str(excinfo.value)
    assert "caption box of the ORIGINAL first frame" in text and "cannot be reached" in text, text
    assert caption_s < 20 and train_s < 20, (caption_s, train_s)
    print(f"\noffline: /caption answered in {caption_s:.1f} s, /train with an empty caption in {train_s:.1f} s")
