"""The command line as the README and `python -m maskedit --help` give it, run verbatim in a user's shell
(`shipped.UserMachine`: no MASKEDIT_* variables, HOME and TMPDIR siblings, no network) from a working copy of the
repository (its `maskedit` and `examples`, linked into a folder of the test's, so the commands' `work/` outputs land
there).

The help's step-by-step commands and its one-shot `edit` (the README's) run on the bundled example; the one-shot
edit reuses the LoRA that step 3 trained (same clip, masks, caption and settings: the default LoRA cache in the
user's HOME). Without network, a command that needs the captioner it cannot reach says so in seconds.
"""

import re
import shlex
import sys
import time

import pytest

from maskedit.media.video import read_video
from shipped import README, ROOT, UserMachine, bash_commands

COMMAND = "python -m maskedit"


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    return UserMachine.create(tmp_path_factory.mktemp("cli_user"))


@pytest.fixture(scope="module")
def clone(machine):
    """A reader's working copy: the repository's package and examples, run from a folder of its own."""
    folder = machine.base / "clone"
    folder.mkdir()
    for name in ("maskedit", "examples"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def help_commands(text: str) -> list[str]:
    """The commands printed in `--help`: lines that start with the program (after "N. "), continuations joined."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [re.sub(r"^\s*(\d+\.\s+)?", "", line).strip() for line in joined.splitlines()
            if re.match(rf"^\s*(\d+\.\s+)?{re.escape(COMMAND)} \w", line)]


def run(machine, clone, command: str):
    args = shlex.split(command)
    assert args[0] == "python"
    return machine.run([sys.executable, *args[1:]], cwd=clone)


def test_the_help_examples_and_the_readme_command_run_verbatim(machine, clone):
    started = time.perf_counter()
    help_run = machine.run([sys.executable, "-m", "maskedit", "--help"], cwd=clone)
    assert help_run.returncode == 0 and help_run.seconds < 30, (help_run.seconds, help_run.stderr)
    commands = help_commands(help_run.stdout)
    assert [c.split()[3] for c in commands] == ["prepare", "train", "generate", "edit"], commands
    readme = [c for c in bash_commands(README.read_text()) if c.startswith(f"{COMMAND} edit")]
    # the quick start's edit (the first; later sections show edits of the user's own clips, e.g. long.mp4)
    assert readme and " ".join(readme[0].split()) == " ".join(commands[-1].split())  # the same command
    seconds = {}
    for command in commands:
        result = run(machine, clone, command)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr and "deprecated" not in result.stderr
        seconds[command.split()[3]] = round(result.seconds, 1)
        if command.split()[3] == "edit":
            assert "reusing cached LoRA" in result.stdout  # the same run as step 3, from the default cache
            assert "decoding the video (VAE) ..." in result.stdout  # the phases after the steps are said
    assert (clone / "work" / "prepared" / "first_frame.png").is_file()
    assert (clone / "work" / "lora" / "lora.safetensors").is_file()
    for folder in ("result", "color_single"):
        edited = read_video(clone / "work" / folder / "edited.mp4")
        assert edited.num_frames == 33 and (edited.width, edited.height) == (320, 192)
    assert list((machine.home / ".cache" / "maskedit" / "loras").glob("*/lora.safetensors"))
    print(f"\nCLI: --help {help_run.seconds:.1f} s; {seconds}; all {time.perf_counter() - started:.0f} s")


def test_without_network_a_missing_captioner_is_said_in_seconds(machine, clone):
    """The README's edit without --train-prompt: Florence-2 would caption the original first frame, but it is not
    cached and the hub cannot be reached; the command says so, whole, before any work (no 30 "Retrying" lines)."""
    command = next(c for c in bash_commands(README.read_text()) if c.startswith(f"{COMMAND} edit"))
    without = re.sub(r'--train-prompt "[^"]*" ', "", command).replace("work/color_single", "work/offline")
    assert "--train-prompt" not in without
    result = run(machine, clone, without)
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: training needs the caption of the ORIGINAL first frame (--train-prompt)")
    assert "could not load the captioner 'florence-community/Florence-2-large': it is not in the local Hugging " \
           "Face cache, and the hub cannot be used (http://127.0.0.1:" in error and "cannot be reached" in error
    assert "Retrying" not in result.stderr and not (clone / "work" / "offline" / "edited.mp4").exists()
    assert result.seconds < 60, result.seconds  # imports included; minutes of retries before
    print(f"\noffline CLI edit without --train-prompt: answered in {result.seconds:.1f} s")
