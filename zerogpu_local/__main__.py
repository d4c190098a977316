"""Launch app.py, unchanged, under ZeroGPU's own code path on a CPU machine.

    python -m zerogpu_local [--device-api URL] [--stream] [--idle] [--max-duration S] [--record FILE]
                            [--app app.py] [-- APP ARGS...]

Sets SPACES_ZERO_GPU=true and SPACES_ZERO_DEVICE_API_URL (the given URL, or a granting stand-in started
in this process: `zerogpu_local.device_api`), installs the CPU shim (`zerogpu_local.cpu_shim`), then runs
the app as `__main__` with APP ARGS. Every `@spaces.GPU` call then goes through spaces' real decorator,
duration callables, schedule/allow/release, a forked worker and its pickling queues. For tests, and for
anyone preparing a Space who wants to see those semantics before deploying.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m zerogpu_local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device-api", default=None,
                        help="URL of a device API stand-in (default: start one here that grants every call)")
    parser.add_argument("--stream", action="store_true", help="the started stand-in answers in event-stream form")
    parser.add_argument("--idle", action="store_true",
                        help="the started stand-in lets spaces reuse a worker (default: a new process per call)")
    parser.add_argument("--max-duration", type=int, default=None,
                        help="the started stand-in refuses calls asking for more seconds (default: no limit)")
    parser.add_argument("--record", default=None, help="write a JSON-lines record of every GPU call here")
    parser.add_argument("--app", default=str(ROOT / "app.py"), help="the Gradio app file (default: app.py)")
    args = parser.parse_args(argv)

    api = None
    if args.device_api is None:
        from .device_api import DeviceAPI, Policy

        api = DeviceAPI(Policy(stream=args.stream, idle=args.idle, max_duration_s=args.max_duration)).start()
        print(f"zerogpu_local: device API stand-in at {api.url}", flush=True)
    os.environ["SPACES_ZERO_GPU"] = "true"
    os.environ["SPACES_ZERO_DEVICE_API_URL"] = args.device_api or api.url

    from . import cpu_shim

    cpu_shim.install()
    if args.record:
        from . import recorder

        recorder.install(args.record)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_with_workers)
    app = Path(args.app).resolve()
    sys.path.insert(0, str(app.parent))
    sys.argv = [str(app), *app_args]
    runpy.run_path(str(app), run_name="__main__")


def _stop_with_workers(signum, frame) -> None:
    """SIGTERM/SIGINT: end spaces' forked workers, then this process. Without this they outlive the app: a
    signal ends Python without its exit hooks, and spaces' workers are daemon processes that only those
    hooks stop."""
    for worker in multiprocessing.active_children():
        worker.kill()
        worker.join(5)
    os._exit(128 + signum)


if __name__ == "__main__":
    main()
