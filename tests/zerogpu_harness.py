"""Launch an app under `python -m zerogpu_local` for a test, with the device API stand-in in the test process.

    with launched(["--model", "tiny"], tmp_path) as app:   # app.url, app.api (DeviceAPI), app.log_text()
        ...
    # on exit: SIGTERM to the app, then every worker PID the stand-in saw must be gone (killed by PID if not,
    # and the test fails)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zerogpu_local.device_api import DeviceAPI, Policy

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240  # building and packing the tiny model on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, ended but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class LaunchedApp:
    url: str
    api: DeviceAPI
    process: subprocess.Popen
    folder: Path
    record: Path

    def log_text(self) -> str:
        return (self.folder / "app.log").read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        return {pid for call in self.api.calls() for pid in call["pids"]}

    def stop(self) -> list[int]:
        """SIGTERM the app and wait; returns the worker PIDs that outlived it (then killed by PID here)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(pid) for pid in self.worker_pids()):
            time.sleep(0.1)
        survivors = sorted(pid for pid in self.worker_pids() if alive(pid))
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        return survivors


@contextmanager
def launched(app_args: list[str], folder: Path, *, policy: Policy | None = None, app_file: Path | None = None,
             env: dict[str, str] | None = None):
    """Start the app (app.py unless app_file) under the launcher; yields a LaunchedApp."""
    folder.mkdir(parents=True, exist_ok=True)
    api = DeviceAPI(policy).start()
    port = free_port()
    record = folder / "record" / "calls.jsonl"
    command = [sys.executable, "-m", "zerogpu_local", "--device-api", api.url, "--record", str(record)]
    if app_file is not None:
        command += ["--app", str(app_file)]
    command += ["--", *app_args, "--port", str(port)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "ZEROGPU_OFFLOAD_DIR": str(folder / "zerogpu-tensors"), "MASKEDIT_WORK_DIR": str(folder / "work"),
                   "MASKEDIT_CACHE_DIR": str(folder / "cache"), "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(folder / "app.log", "wb")
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    app = LaunchedApp(f"http://127.0.0.1:{port}/", api, process, folder, record)
    try:
        _wait_until_up(app)
        yield app
    finally:
        _stop(app)
        log.close()
        api.stop()


def _wait_until_up(app: LaunchedApp) -> None:
    import httpx

    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        if app.process.poll() is not None:
            raise AssertionError(f"the app exited ({app.process.returncode}):\n{app.log_text()[-3000:]}")
        try:
            if httpx.get(app.url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the app did not answer within {START_TIMEOUT_S} s:\n{app.log_text()[-3000:]}")


def _stop(app: LaunchedApp) -> None:
    """Every worker must end with the app; survivors are killed by PID and fail the test."""
    survivors = app.stop()
    assert not survivors, f"GPU worker processes outlived the app: {survivors}"
