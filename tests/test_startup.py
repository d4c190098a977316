"""`python -m maskedit --help` and `python app.py --help` answer before torch or gradio is imported (they take
seconds to import; the answer must not wait for them), and every flag of the app says what it does and its
default."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_{how}({target!r}, run_name="__main__")
except SystemExit as exit_:
    code = exit_.code
else:
    code = 0
print("IMPORTED", "torch" in sys.modules, "gradio" in sys.modules, "diffusers" in sys.modules, code)
"""


def probe(how: str, target: str, argv: list[str]) -> tuple[str, list[str]]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(how=how, target=target, argv=argv)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    last = result.stdout.strip().splitlines()[-1].split()
    return result.stdout, last[1:]


@pytest.mark.parametrize("command", ["", "train", "edit", "generate", "prepare", "segment", "caption", "presets"])
def test_cli_help_imports_no_model_code(command):
    text, (torch, gradio, diffusers, code) = probe("module", "maskedit", ["maskedit", *filter(None, [command]), "--help"])
    assert code == "0" and "usage:" in text
    assert (torch, gradio, diffusers) == ("False", "False", "False")


def test_app_help_imports_no_model_code_and_every_flag_has_help():
    text, (torch, gradio, diffusers, code) = probe("path", "app.py", ["app.py", "--help"])
    assert code == "0" and (torch, gradio, diffusers) == ("False", "False", "False")
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_for_flags", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for action in module.build_parser()._actions:
        if action.dest != "help":
            assert action.help and "[MASKEDIT_" in action.help, action.dest
    assert "(default:" in text
