"""The product as a user gets it, for the tests that run it so (`test_readme*.py`).

A user's machine here: a process of its own started with the README's command, no MASKEDIT_* (nor HF_*, GRADIO_*)
variables, HOME and TMPDIR in sibling folders (a HOME under the system temp folder would pass falsely: Gradio
serves from that folder), and no network. "No network" is HF_ENDPOINT at a closed local port, NOT
HF_HUB_OFFLINE, which a user does not set: every hub request is refused at once, as on a machine without a
connection, and the app must find that out by itself.

The README's blocks run verbatim, each as its own client script; only the port changes when 7860 is taken on a
shared machine (`app_port`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEFAULT_PORT = 7860  # the README's
START_TIMEOUT_S = 300  # a busy 2-core machine
STEPS_MARKER = "<!-- client-steps"
USER_VARIABLES = ("MASKEDIT_", "HF_", "HUGGINGFACE_", "GRADIO_", "SPACES_", "SPACE_ID", "XDG_CACHE_HOME", "TMPDIR",
                  "PYTHONPATH", "OMP_NUM_THREADS")
"""Variables of the test machine that a user's plain shell does not have (the test runner's, our CI's)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def app_port() -> int:
    """The README's port, or a free one when another process on this machine holds it."""
    return DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port()


@dataclass
class UserMachine:
    """HOME and TMPDIR (siblings under `base`), and the environment of a user's shell without network."""

    base: Path
    home: Path
    tmp: Path
    env: dict

    @classmethod
    def create(cls, base: Path) -> "UserMachine":
        home, tmp = base / "home", base / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(USER_VARIABLES)}
        env.update(HOME=str(home), TMPDIR=str(tmp), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
        return cls(base, home, tmp, env)

    def run(self, args: list[str], cwd: Path = ROOT, timeout: float = 900) -> subprocess.CompletedProcess:
        """A command in a shell of this machine; returns it finished (stdout, stderr, returncode, .seconds)."""
        started = time.perf_counter()
        result = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        result.seconds = time.perf_counter() - started
        return result


@dataclass
class RunningApp:
    url: str
    port: int
    process: subprocess.Popen
    log: Path
    started_s: float  # seconds from the command to the port answering

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def started(machine: UserMachine, command: list[str], name: str = "app"):
    """`command` (e.g. ["app.py"] or ["-m", "zerogpu_local", "--", "--model", "tiny"]) run by this Python in the
    repository on `machine`, with `--port` added only when the README's port is taken; yields a RunningApp once its
    port answers, and ends it (SIGTERM) after."""
    port = app_port()
    args = [sys.executable, *command]
    if port != DEFAULT_PORT:  # the launcher (-m zerogpu_local) passes what follows "--" to app.py
        args += (["--"] if command[0] == "-m" and "--" not in command else []) + ["--port", str(port)]
    log = machine.base / f"{name}.log"
    started_at = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(args, cwd=ROOT, env=machine.env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{' '.join(command)} ended with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError(f"{' '.join(command)} did not answer in {START_TIMEOUT_S} s") from None
                time.sleep(0.2)
        yield RunningApp(f"http://127.0.0.1:{port}/", port, process, log, time.perf_counter() - started_at)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the launcher's workers end with it
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def python_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def client_steps() -> str:
    """The step-by-step client block (right after the client-steps marker)."""
    text = README.read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(STEPS_MARKER):], re.S).group(1)


def edit_block() -> str:
    """The README's /edit block: the first python block after the step-by-step one that calls /edit."""
    return next(block for block in python_blocks() if 'api_name="/edit"' in block)


def client_setup(steps: str) -> str:
    """The lines of the step-by-step block up to its first call (imports, Client, the example's folder): what the
    /edit block builds on, as a reader runs it after the first block."""
    return steps[:steps.index("client.predict")]


def bash_commands(text: str) -> list[str]:
    """The commands of ```bash blocks in `text`, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return commands


RUNNER = """\
import json, sys
names = sys.argv[3:]
namespace = {}
exec(compile(open(sys.argv[1]).read(), "README.md", "exec"), namespace)
json.dump({name: namespace[name] for name in names}, open(sys.argv[2], "w"), default=str)
"""


def start_client(machine: UserMachine, code: str, port: int, names: list[str], name: str) -> tuple:
    """Start `code` (a README block, on `port`) as a client script of its own; returns (process, result file)."""
    if port != DEFAULT_PORT:
        code = code.replace(f":{DEFAULT_PORT}/", f":{port}/")
    script, result = machine.base / f"{name}.py", machine.base / f"{name}.json"
    script.write_text(code)
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(script), str(result), *names], cwd=ROOT,
                               env=machine.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, result


def finish_client(started_client: tuple, timeout: float = 900) -> tuple[dict, str]:
    """Wait for a client script; returns (its named values, its stdout). Fails with its stderr if it failed."""
    process, result = started_client
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"the README block failed:\n{err[-4000:]}"
    return json.loads(result.read_text()), out
