"""Screenshots of the app's five tabs, each at the end of its step, taken in Chromium (Playwright) while a user's
flow runs on the bundled example `color_single`: pick the example, load it; click on the object and propagate;
upload the edited first frame and type the captions; train; generate. Also one screenshot while training and one
while generating, to see their progress.

    python scripts/screenshots.py                       # starts `python app.py --port P`, writes outputs/screenshots/
    python scripts/screenshots.py --out DIR -- --model tiny --segmenter fallback   # app flags after --

The app runs as a new user's would: its HOME is a fresh folder under the output folder (so the default LoRA cache,
~/.cache/maskedit/loras, starts empty and training really runs), without MASKEDIT_* variables.

Needs playwright (`pip install playwright`) and Debian's chromium (`apt-get install -y chromium`; Playwright's own
browser download is not used). The output folder is git-ignored. Prints each file and how long each step took.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "color_single"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(port: int, app_args: list[str], log: Path, home: Path) -> subprocess.Popen:
    """`python app.py --port PORT APP_ARGS` with HOME=`home` (emptied first), waited for until it answers."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKEDIT_")}
    env["HOME"] = str(home)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *app_args], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.time() + 300
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the app ended:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return process
        except OSError:
            if time.time() > deadline:
                raise SystemExit("the app did not answer in 300 s") from None
            time.sleep(0.3)


def take(page, out: Path, name: str, timings: dict, since: float) -> None:
    path = out / f"{name}.png"
    page.wait_for_timeout(800)  # let plots and videos finish drawing
    page.screenshot(path=str(path), full_page=True)
    timings[name] = round(time.perf_counter() - since, 1)
    print(f"{path}  ({timings[name]} s)", flush=True)


def run_flow(url: str, out: Path, chromium: str) -> dict:
    from playwright.sync_api import expect, sync_playwright

    example = next(e for e in json.loads((ROOT / "examples" / "examples.json").read_text()) if e["name"] == EXAMPLE)
    folder = ROOT / "examples"
    x0, y0, x1, y1 = map(int, example["box"].split(","))
    timings: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            expect.set_options(timeout=300_000)
            page.goto(url)
            page.locator("#load-btn").wait_for()

            # 1 · Video: the example, loaded
            since = time.perf_counter()
            page.locator("#video-in input[type=file]").set_input_files(str(folder / example["clip"]))
            page.locator("#video-in video").first.wait_for()
            page.locator("#load-btn").click()
            expect(page.locator("#clip-notes")).to_contain_text("frames")
            take(page, out, "1_video", timings, since)

            # 2 · Segment: one click on the object, then Propagate
            since = time.perf_counter()
            page.get_by_role("tab", name="2 · Segment").click()
            image = page.locator("#first-frame img").first
            image.wait_for()
            box = image.bounding_box()
            width, height = example["width"], example["height"]
            image.click(position={"x": box["width"] * (x0 + x1) / 2 / width, "y": box["height"] * (y0 + y1) / 2 / height})
            expect(page.locator("#points textarea")).not_to_have_value("[]")
            page.locator("#propagate-btn").click()
            expect(page.locator("#segment-notes")).to_contain_text("boxes cover")
            take(page, out, "2_segment", timings, since)

            # 3 · Edited frames: the edited first frame and both captions
            since = time.perf_counter()
            page.get_by_role("tab", name="3 · Edited frames").click()
            page.locator("#edited-in input[type=file]").set_input_files(str(folder / example["edited_first_frame"]))
            expect(page.locator("#edited-status")).to_contain_text("Edited first frame set")
            page.locator("#caption textarea").fill(example["train_prompt"])
            page.locator("#prompt textarea").fill(example["prompt"])
            page.locator("#prompt textarea").blur()
            take(page, out, "3_edited_frames", timings, since)

            # 4 · Train and 5 · Generate: while each runs, and done
            for tab, button, done, text, name in (("4 · Train", "#train-btn", "#train-status", "done", "4_train"),
                                                  ("5 · Generate", "#generate-btn", "#report", "background PSNR",
                                                   "5_generate")):
                since = time.perf_counter()
                page.get_by_role("tab", name=tab).click()
                page.locator(button).click()
                page.wait_for_timeout(2500)
                take(page, out, f"{name}_running", timings, since)
                expect(page.locator(done)).to_contain_text(text)
                take(page, out, name, timings, since)
        finally:
            browser.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "screenshots"), help="folder for the PNGs")
    parser.add_argument("--url", help="an app already running (default: start `python app.py` here)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium binary: apt-get install -y chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    process = None
    if args.url is None:
        port = free_port()
        process = start_app(port, app_args, out / "app.log", out / "home")
        args.url = f"http://127.0.0.1:{port}/"
    try:
        timings = run_flow(args.url, out, chromium)
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
    (out / "timings.json").write_text(json.dumps(timings, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
