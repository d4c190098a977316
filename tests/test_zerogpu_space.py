"""The Space's configuration is what ZeroGPU supports, and the code runs on the Space's Python.

ZeroGPU's documentation lists the Python and PyTorch versions it supports (`maskedit.models.zerogpu`:
SUPPORTED_PYTHON, SUPPORTED_TORCH, with their source). The README front matter names the Python; pre-requirements.txt (installed by Spaces before
requirements.txt, and read by nothing else) pins torch; requirements.txt's wider local range must keep
that pin. The tests pin `spaces` to the version the CPU shim was written for. These machines run the tests on Python 3.11 with torch 2.13 (CPU): the torch 2.8
wheels for Python 3.10 are CUDA builds that cannot be installed here, so Python 3.10 is checked by
vermin (syntax and standard library) and, where a 3.10 interpreter exists, by compiling every file with it.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from maskedit.models.zerogpu import SUPPORTED_PYTHON, SUPPORTED_TORCH

ROOT = Path(__file__).resolve().parent.parent
SPACE_PYTHON = "3.10.13"  # the front matter's (one of SUPPORTED_PYTHON; this machine has an interpreter of it)


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md has no front matter"
    return {key.strip(): value.strip().strip('"') for key, value in
            (line.split(":", 1) for line in match.group(1).splitlines() if ":" in line and not line.startswith(" "))}


def requirements(name: str) -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            out[requirement.name.lower()] = requirement
    return out


def python_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True)
    files = tracked.stdout.split() if tracked.returncode == 0 and tracked.stdout.strip() else \
        [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if ".venv" not in p.parts]
    return sorted(files)


def test_front_matter_and_space_pins_are_what_zerogpu_supports():
    meta = front_matter()
    assert meta["python_version"] == SPACE_PYTHON and SPACE_PYTHON in SUPPORTED_PYTHON
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    space = requirements("pre-requirements.txt")
    local = requirements("requirements.txt")
    torch_pin = Version(next(iter(space["torch"].specifier)).version)
    assert str(torch_pin) in SUPPORTED_TORCH, (torch_pin, SUPPORTED_TORCH)
    assert [Version(v) for v in SUPPORTED_TORCH] == sorted(Version(v) for v in SUPPORTED_TORCH)
    assert Version(SUPPORTED_TORCH[0]) >= Version("2.8.0")  # since the Blackwell update (ahead-of-time compile too)
    for name, requirement in space.items():  # installing requirements.txt afterwards keeps every Space pin
        pinned = next(iter(requirement.specifier)).version
        assert len(requirement.specifier) == 1 and str(requirement.specifier).startswith("=="), requirement
        assert local[name].specifier.contains(pinned, prereleases=True), (name, pinned, local[name])
    assert Version(meta["sdk_version"]) in local["gradio"].specifier
    from zerogpu_local.cpu_shim import SPACES_VERSION

    assert str(requirements("requirements-test.txt")["spaces"].specifier) == f"=={SPACES_VERSION}"
    assert local["spaces"].specifier.contains(SPACES_VERSION)  # the tested version is one the Space may get


def test_the_code_runs_on_python_3_10_per_vermin():
    pytest.importorskip("vermin")
    run_vermin = "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())"
    result = subprocess.run([sys.executable, "-c", run_vermin, "--target=3.10-", "--violations", "--no-tips",
                             "--eval-annotations", "-q", *python_files()], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def python_3_10() -> str | None:
    """A runnable Python 3.10 (the Space's 3.10.13 first, from pyenv's versions or PATH), or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(pyenv.glob(f"{SPACE_PYTHON}*/bin/python3.10")) + sorted(pyenv.glob("3.10*/bin/python3.10"))
    candidates += [found] if (found := shutil.which("python3.10")) else []
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return str(candidate)
    return None


def test_every_file_compiles_with_a_python_3_10_interpreter():
    python310 = python_3_10()
    if python310 is None:
        pytest.skip("no runnable Python 3.10 on this machine (vermin still checks 3.10 compatibility)")
    script = ("import ast, sys\nfor path in sys.argv[1:]:\n    ast.parse(open(path, encoding='utf-8').read(), path)\n"
              "print(sys.version)")
    result = subprocess.run([python310, "-c", script, *python_files()], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3.10"), result.stdout
