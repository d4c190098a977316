"""The app in a real browser (Playwright driving Debian's chromium) on the tiny model: every button of the page, in
the order of the workflow, on the bundled example `color_single` (picked from the Video tab's examples, loaded at 9
frames to stay quick): click on the first frame (the frame picker: a point and the live mask), Undo, Clear,
Propagate; Find (no SAM 3 here: it says what it needs), Remove unticked objects, Remove all objects, then a box with
"Add this region"; Get frame, the edited first frame, Add and Remove later frames, Caption
both automatically (no captioner here: it says so); Start (the loss plot draws its two named curves), Stop, Resume;
Generate, Resume (one window: it renders again), Preview (no speed LoRA here: it says what to set), Cancel. A
test fails when the page has a button this test does not press. A screenshot of each tab is saved under tests/artifacts/ (git-ignored).

Skipped when playwright or a chromium binary is missing (`apt-get install -y chromium`; Playwright's own
browser download is not used).
"""

import contextlib
import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).parent / "artifacts"
EXAMPLE = next(e for e in json.loads((ROOT / "examples" / "examples.json").read_text()) if e["name"] == "color_single")
WIDTH, HEIGHT, FRAMES = EXAMPLE["width"], EXAMPLE["height"], 9
BOX = tuple(map(int, EXAMPLE["box"].split(",")))
CENTRE = ((BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2)  # on the object in frame 0
PRESSED = {"Load clip", "Undo", "Clear", "Propagate", "Find", "Remove unticked objects", "Remove all objects",
           "Add this region", "Get frame", "Add later frame",
           "Remove later frames", "Caption both automatically", "Start", "Stop", "Resume", "Generate",
           "Preview (4 steps)", "Cancel"}
"""Every visible button of the page, by its label: the test presses each."""


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from test_app import running_app

    with running_app("tiny", tmp_path_factory.mktemp("browser_sessions"), chunk_steps=4) as address:
        yield address


def test_the_page_has_no_button_this_test_does_not_press(url):
    config = httpx.get(url + "config").json()
    labels = {str(c["props"].get("value")) for c in config["components"]
              if c["type"] == "button" and c["props"].get("visible") is not False}
    assert labels == PRESSED


def test_every_button_in_a_browser(url, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    expect = playwright_api.expect
    expect.set_options(timeout=120_000)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.set_default_timeout(120_000)
            page.goto(url)
            expect(page.locator("#banner")).to_contain_text("tiny model")
            expect(page.locator("#model-line")).to_contain_text("multiples of 16")

            # 1 · video: the example (named, with its size), at 9 frames
            page.get_by_text(f"color_single · {EXAMPLE['frames']} frames · {WIDTH}x{HEIGHT}").click()
            page.locator("#video-in video").first.wait_for()
            expect(page.locator("#frames-in input")).to_have_value(str(EXAMPLE["frames"]))
            page.locator("#frames-in input").fill(str(FRAMES))
            page.locator("#load-btn").click()
            expect(page.locator("#clip-notes")).to_contain_text(f"{FRAMES} frames, {WIDTH}x{HEIGHT}")
            expect(page.locator("#clip-notes")).to_contain_text("2 · Segment")  # the next step's hint
            page.screenshot(path=str(ARTIFACTS / "tab1_video.png"), full_page=True)

            # 2 · segment: the frame picker (a click adds a point and the live mask), Undo, Clear, Propagate
            page.get_by_role("tab", name="2 · Segment").click()
            image = page.locator("#first-frame img").first
            image.wait_for()
            points = page.locator("#points textarea")

            def click_object():
                box = image.bounding_box()
                image.click(position={"x": box["width"] * CENTRE[0] / WIDTH, "y": box["height"] * CENTRE[1] / HEIGHT})
                expect(points).to_have_value(re.compile(r"\[\[\d+(\.\d+)?, \d+(\.\d+)?, 1\]\]"))

            click_object()
            page.get_by_role("button", name="Undo").click()
            expect(points).to_have_value("[]")
            click_object()
            page.get_by_role("button", name="Clear").click()
            expect(points).to_have_value("[]")
            click_object()
            page.locator("#propagate-btn").click()
            expect(page.locator("#segment-notes")).to_contain_text("boxes cover")
            expect(page.locator("#segment-notes")).to_contain_text("Masks ready")
            assert "overlay.mp4" not in page.locator("#segment-notes").inner_text()  # the page's own words
            expect(page.locator("#objects input[type=checkbox]")).to_have_count(1)
            page.locator("#segment-text textarea, #segment-text input").first.fill("the triangle")
            page.locator("#find-btn").click()  # no SAM 3 here: said (what to download), nothing lost
            expect(page.get_by_text("text prompts need SAM 3, and it is not available here").first).to_be_visible()
            expect(page.locator("#objects input[type=checkbox]")).to_have_count(1)
            page.get_by_role("button", name="Remove unticked objects").click()  # none is unticked: it stays
            expect(page.locator("#segment-notes")).to_contain_text("boxes cover")
            expect(page.locator("#objects input[type=checkbox]")).to_have_count(1)
            page.get_by_role("button", name="Remove all objects").click()
            expect(page.locator("#segment-notes")).to_contain_text("All objects removed")
            expect(page.locator("#objects input[type=checkbox]")).to_have_count(0)
            page.get_by_text("…or upload a mask video (white = edit) or give a box").click()
            page.get_by_label("Box x0,y0,x1,y1 (pixels of the conformed clip)").fill(EXAMPLE["box"])
            page.get_by_role("button", name="Add this region").click()
            expect(page.locator("#segment-notes")).to_contain_text("Region from the box")
            expect(page.locator("#objects input[type=checkbox]")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "tab2_segment.png"), full_page=True)

            # 3 · edited frames: Get frame, the edited first frame, a later frame added and removed, captions
            page.get_by_role("tab", name="3 · Edited frames").click()
            page.get_by_role("button", name="Get frame").click()
            expect(page.locator("#frame-file a").first).to_have_attribute("href", re.compile(r"frame_000\.png$"))
            edited = ROOT / "examples" / EXAMPLE["edited_first_frame"]
            page.locator("#edited-in input[type=file]").set_input_files(str(edited))
            expect(page.locator("#edited-status")).to_contain_text("Edited first frame set")
            page.get_by_text("Edited later frames (optional, stage 2)").click()
            page.locator("#later-in input[type=file]").set_input_files(str(edited))
            page.locator("#later-index input").fill("4")
            page.get_by_role("button", name="Add later frame").click()
            expect(page.locator("#later-status")).to_contain_text("frame 4")
            page.get_by_role("button", name="Remove later frames").click()
            expect(page.locator("#later-status")).to_contain_text("No edited later frames")
            page.get_by_role("button", name="Caption both automatically").click()  # no captioner in this app
            expect(page.get_by_text("automatic captions are off in this app").first).to_be_visible()
            page.locator("#caption textarea").fill(EXAMPLE["train_prompt"])
            page.locator("#prompt textarea").fill(EXAMPLE["prompt"])
            page.screenshot(path=str(ARTIFACTS / "tab3_edited.png"), full_page=True)

            # 4 · train: the phase beside the buttons, the plot's two named curves; Stop; Resume
            page.get_by_role("tab", name="4 · Train").click()
            expect(page.locator("#exact-settings")).to_contain_text(f"{FRAMES} frames at {WIDTH}x{HEIGHT} (the loaded clip)")
            page.locator("#train-btn").click()
            expect(page.locator("#train-status")).to_contain_text("done")
            expect(page.locator("#train-status")).to_contain_text("5 · Generate")
            expect(page.locator("#lora-files a")).to_have_count(3)  # diffusers, ComfyUI, metadata
            page.wait_for_function("""() => {
                const paths = [...document.querySelectorAll('#loss-plot svg g.mark-line path')];
                const drawn = paths.filter(p => (p.getAttribute('d') || '').includes('L'))
                                   .map(p => (p.getAttribute('stroke') || '').toLowerCase());
                return drawn.includes('#9aa0a6') && drawn.includes('#d62728');
            }""", timeout=20_000)  # the lines are drawn (Vega-Lite SVG), not only the axes
            legend = page.locator("#loss-plot").inner_text()
            assert "loss at each step" in legend and "smoothed (moving average)" in legend  # named curves
            ticks = page.evaluate("""() => {
                const axes = [...document.querySelectorAll('#loss-plot svg g[aria-roledescription="axis"]')];
                const x = axes.find(g => (g.getAttribute('aria-label') || '').startsWith('X-axis'));
                return x ? [...x.querySelectorAll('.role-axis-label text')].map(t => t.textContent) : null;
            }""")
            assert ticks and all(t.isdigit() for t in ticks) and len(set(ticks)) == len(ticks), ticks  # whole steps
            page.screenshot(path=str(ARTIFACTS / "tab4_train.png"), full_page=True)
            page.locator("#stop-btn").click()
            expect(page.locator("#train-status")).to_contain_text("Stopping after the current step")
            page.locator("#resume-btn").click()  # the run is finished: resuming it reuses its LoRA
            expect(page.locator("#train-status")).to_contain_text("done")

            # 5 · generate; Preview says what to set; Cancel
            page.get_by_role("tab", name="5 · Generate").click()
            page.locator("#generate-btn").click()
            expect(page.locator("#report")).to_contain_text("background PSNR")
            expect(page.locator("#report")).to_contain_text("this render")  # the table has headers
            expect(page.locator("#gallery video, #gallery img").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "tab5_generate.png"), full_page=True)
            page.locator("#resume-generate-btn").click()  # one window: nothing to resume, so it renders again
            expect(page.locator("#gallery video, #gallery img")).to_have_count(2)
            page.locator("#preview-btn").click()
            expect(page.get_by_text("needs a step-distilled speed LoRA").first).to_be_visible()
            page.get_by_role("button", name="Cancel").click()
            page.wait_for_timeout(500)
            assert not page.locator("text=Traceback").count()
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)  # what the page showed
            raise
        finally:
            browser.close()


# ----- text prompts and several objects (SAM 3, tiny and random; clicks: the offline fallback)

CLIP_WIDTH, CLIP_HEIGHT, CLIP_FRAMES = 320, 192, 17
CLIP_CENTRE = (90, 96)


def make_clip(folder: Path):
    """A 17-frame 320x192 clip of a red disk moving right on a gradient, and its edited first frame (blue disk)."""
    WIDTH, HEIGHT, FRAMES, CENTRE = CLIP_WIDTH, CLIP_HEIGHT, CLIP_FRAMES, CLIP_CENTRE
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
        page.locator("#frames-in input").fill(str(CLIP_FRAMES))  # the page starts at the examples' 33
        page.locator("#load-btn").click()
        expect(page.locator("#clip-notes")).to_contain_text(f"{CLIP_FRAMES} frames")
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
        image.click(position={"x": box["width"] * CLIP_CENTRE[0] / CLIP_WIDTH,
                              "y": box["height"] * CLIP_CENTRE[1] / CLIP_HEIGHT})
        expect(page.locator("#points textarea")).to_have_value(re.compile(r"\[\[\d+(\.\d+)?, \d+(\.\d+)?, 1\]\]"))
        page.locator("#propagate-btn").click()
        expect(page.locator("#segment-notes")).to_contain_text("Segmented with")
        expect(page.locator("#segment-backends")).to_contain_text("offline fallback (colour clicks): in use")
        expect(page.locator("#objects input[type=checkbox]")).to_have_count(found + 1)
        if found > 1:
            expect(page.locator("#segment-notes")).to_contain_text(f"union of {found} objects")
        page.screenshot(path=str(ARTIFACTS / "tab2_objects.png"), full_page=True)
        assert not page.locator("text=Traceback").count()
