"""The app in a real browser (Playwright driving Debian's chromium) on the tiny model: upload a clip, click
on the first frame and see the point and the mask overlay, train and see the loss plot update, generate.
A screenshot of each tab is saved under tests/artifacts/ (git-ignored).

Skipped when playwright or a chromium binary is missing (`apt-get install -y chromium`; Playwright's own
browser download is not used).
"""

import contextlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("gradio")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")

ARTIFACTS = Path(__file__).parent / "artifacts"
WIDTH, HEIGHT, FRAMES = 320, 192, 17
CENTRE = (90, 96)


def make_clip(folder: Path):
    from maskedit.media.video import write_image, write_video

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    for t in range(FRAMES):
        frame = np.stack([40 + x * 60 // WIDTH, 90 + y * 60 // HEIGHT, np.full_like(x, 150)], -1).astype(np.uint8)
        frame[(x - CENTRE[0] - 4 * t) ** 2 + (y - CENTRE[1]) ** 2 <= 30 ** 2] = (230, 40, 30)
        frames[t] = frame
    write_video(folder / "clip.mp4", frames, 8.0)
    edited = frames[0].copy()
    edited[(x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2 <= 30 ** 2] = (40, 60, 230)
    write_image(folder / "edited.png", edited)
    return folder / "clip.mp4", folder / "edited.png"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    import app

    demo = app.create_demo("tiny", segmenter="fallback", captioner="none",
                           work_dir=tmp_path_factory.mktemp("browser_sessions"), chunk_steps=4)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, **app.launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def browser_page(url: str, height: int = 1000):
    """A chromium page (1400 x `height`) open at `url`; actions wait up to 60 s."""
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.set_default_timeout(60_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def test_browser_flow(url, tmp_path):
    clip, edited = make_clip(tmp_path)
    with browser_page(url) as page:
        expect = playwright_api.expect
        expect(page.locator("#banner")).to_contain_text("tiny model")

        # 1 · video
        page.locator("#video-in input[type=file]").set_input_files(str(clip))
        page.locator("#video-in video").first.wait_for()
        page.locator("#load-btn").click()
        expect(page.locator("#clip-notes")).to_contain_text("17 frames")
        page.screenshot(path=str(ARTIFACTS / "tab1_video.png"), full_page=True)

        # 2 · segment: a click adds a point and shows the live mask
        page.get_by_role("tab", name="2 · Segment").click()
        image = page.locator("#first-frame img").first
        image.wait_for()
        box = image.bounding_box()
        image.click(position={"x": box["width"] * CENTRE[0] / WIDTH, "y": box["height"] * CENTRE[1] / HEIGHT})
        expect(page.locator("#points textarea")).to_have_value(
            __import__("re").compile(r"\[\[\d+(\.\d+)?, \d+(\.\d+)?, 1\]\]"))
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "tab2_segment_click.png"), full_page=True)
        page.locator("#propagate-btn").click()
        expect(page.locator("#segment-notes")).to_contain_text("boxes cover")
        page.screenshot(path=str(ARTIFACTS / "tab2_segment.png"), full_page=True)

        # 3 · edited frames
        page.get_by_role("tab", name="3 · Edited frames").click()
        page.locator("#edited-in input[type=file]").set_input_files(str(edited))
        expect(page.locator("#edited-status")).to_contain_text("Edited first frame set")
        page.locator("#caption textarea").fill("a red disk on a blue gradient")
        page.locator("#prompt textarea").fill("a blue disk on a blue gradient")
        page.screenshot(path=str(ARTIFACTS / "tab3_edited.png"), full_page=True)

        # 4 · train: the plot updates while it runs
        page.get_by_role("tab", name="4 · Train").click()
        page.locator("#train-btn").click()
        expect(page.locator("#train-status")).to_contain_text("done", timeout=120_000)
        expect(page.locator("#loss-plot canvas, #loss-plot svg").first).to_be_visible()
        expect(page.locator("#lora-files a")).to_have_count(3)  # diffusers, ComfyUI, metadata
        page.wait_for_timeout(1500)  # let the chart finish drawing
        page.screenshot(path=str(ARTIFACTS / "tab4_train.png"), full_page=True)
        # the lines are drawn, not only the axes: Gradio's LinePlot renders Vega-Lite as SVG, one
        # <g class="mark-line"><path stroke=… d=…> per series; an unstroked path is invisible
        page.wait_for_function("""() => {
            const paths = [...document.querySelectorAll('#loss-plot svg g.mark-line path')];
            const drawn = paths.filter(p => (p.getAttribute('d') || '').includes('L'))
                               .map(p => (p.getAttribute('stroke') || '').toLowerCase());
            return drawn.includes('#9aa0a6') && drawn.includes('#d62728');
        }""", timeout=10_000)

        # 5 · generate
        page.get_by_role("tab", name="5 · Generate").click()
        page.locator("#generate-btn").click()
        expect(page.locator("#report")).to_contain_text("background PSNR", timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "tab5_generate.png"), full_page=True)
        assert not page.locator("text=Traceback").count()


@pytest.fixture(scope="module")
def sam3_url(tmp_path_factory):
    """The app with a tiny random SAM 3 for text (clicks: the offline fallback)."""
    from maskedit.perception.segmentation_sam3 import save_tiny_sam3
    from test_app import running_app

    sam3 = save_tiny_sam3(tmp_path_factory.mktemp("browser_sam3"))
    with running_app("tiny", tmp_path_factory.mktemp("browser_sessions_sam3"), sam3_model=sam3) as url:
        yield url


def test_browser_text_prompt_and_several_objects(sam3_url, tmp_path):
    """Type what to edit → every instance listed (score, area) and ticked; untick one; click a second object →
    the region is the union; the backends line says what runs."""
    import re

    clip, _ = make_clip(tmp_path)
    with browser_page(sam3_url, height=1200) as page:
        expect = playwright_api.expect
        expect.set_options(timeout=60_000)  # SAM 3 and the fallback take seconds on a shared CPU
        page.locator("#video-in input[type=file]").set_input_files(str(clip))
        page.locator("#video-in video").first.wait_for()
        page.locator("#load-btn").click()
        expect(page.locator("#clip-notes")).to_contain_text("17 frames")
        page.get_by_role("tab", name="2 · Segment").click()
        expect(page.locator("#segment-backends")).to_contain_text("SAM 3 (text and clicks)")
        expect(page.locator("#segment-backends")).to_contain_text("offline fallback (colour clicks): chosen")

        page.locator("#segment-text textarea, #segment-text input").first.fill("the disk")
        page.locator("#find-btn").click()
        expect(page.locator("#segment-notes")).to_contain_text("instance(s) of \"the disk\"")
        boxes = page.locator("#objects input[type=checkbox]")
        expect(boxes.first).to_be_checked()
        found = boxes.count()
        assert found >= 1
        expect(page.locator("#objects-table")).to_contain_text("text \"the disk\"")
        expect(page.locator("#segment-backends")).to_contain_text("in use for text")
        page.screenshot(path=str(ARTIFACTS / "tab2_text.png"), full_page=True)

        boxes.first.uncheck()  # drop the first instance
        if found == 1:
            expect(page.locator("#segment-notes")).to_contain_text("No object is kept")
        else:
            expect(page.locator("#segment-notes")).to_contain_text(re.compile(r"[Bb]oxes cover"))
        image = page.locator("#first-frame img").first
        box = image.bounding_box()
        image.click(position={"x": box["width"] * CENTRE[0] / WIDTH, "y": box["height"] * CENTRE[1] / HEIGHT})
        expect(page.locator("#points textarea")).to_have_value(re.compile(r"\[\[\d+(\.\d+)?, \d+(\.\d+)?, 1\]\]"))
        page.locator("#propagate-btn").click()
        expect(page.locator("#segment-notes")).to_contain_text("Segmented with")
        expect(page.locator("#segment-backends")).to_contain_text("offline fallback (colour clicks): in use")
        expect(page.locator("#objects input[type=checkbox]")).to_have_count(found + 1)
        if found > 1:
            expect(page.locator("#segment-notes")).to_contain_text(f"union of {found} objects")
        page.screenshot(path=str(ARTIFACTS / "tab2_objects.png"), full_page=True)
        assert not page.locator("text=Traceback").count()
