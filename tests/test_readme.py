"""The README's step-by-step gradio_client example runs as written against the app (tiny model) on an example
clip and produces the edit."""

import re
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- client-steps"


def client_steps() -> str:
    """The Python block right after the client-steps marker in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(MARKER):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    return match.group(1)


def launch_tiny_app(tmp_path):
    """The app on the tiny model, served on a free local port; returns (demo, port). Close it with demo.close()."""
    import app

    demo = app.create_demo("tiny", segmenter="fallback", captioner="none", work_dir=tmp_path / "sessions")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, **app.launch_kwargs())
    return demo, port


def test_the_readme_client_steps_run_as_written(tmp_path, capsys, monkeypatch):
    code = client_steps()
    assert 'Client("http://127.0.0.1:7860/")' in code
    demo, port = launch_tiny_app(tmp_path)
    try:
        monkeypatch.chdir(ROOT)  # the snippet's paths are relative to the repository, as a reader runs it
        namespace = {}
        exec(compile(code.replace(":7860/", f":{port}/"), "README.md", "exec"), namespace)  # noqa: S102
    finally:
        demo.close()
    from maskedit.media.video import read_video

    edited = read_video(namespace["edited"])
    assert edited.num_frames == 9 and (edited.width, edited.height) == (320, 192)
    assert namespace["info"]["method"] == "mask-lora" and len(namespace["loss_points"]["step"]) == 10
    assert sorted(Path(f).name for f in namespace["lora_files"]) == [
        "lora.json", "lora.safetensors", "lora_comfyui.safetensors"]
    assert str(namespace["edited"]) in capsys.readouterr().out


def test_view_api_names_every_output(tmp_path):
    from gradio_client import Client

    demo, port = launch_tiny_app(tmp_path)
    try:
        info = Client(f"http://127.0.0.1:{port}/", verbose=False).view_api(print_info=False, return_format="dict")
        config = demo.get_config_file()
    finally:
        demo.close()
    timers = [c for c in config["components"] if c["type"] == "timer"]
    assert timers and not any(t["props"]["active"] for t in timers)  # no tick until a background run trains
    endpoints = info["named_endpoints"]
    for name in ("/load_video", "/segment", "/use_mask", "/set_edited_frame", "/caption", "/train", "/generate",
                 "/edit", "/training_status"):
        assert name in endpoints, name
        for output in endpoints[name]["returns"]:
            assert output.get("label"), (name, output)
    assert [p["parameter_name"] for p in endpoints["/segment"]["parameters"]] == ["points_json", "margin"]
