"""Compositing the generated region onto the source (issue 27): the pure-numpy blend (`maskedit.method.composite`),
the edit step around it (`workflow.generate.composite_edit`: frame 0, the report's figures, off = unchanged), the
files it writes (edited.json, the mp4's comment), and the settings through the CLI and the studio (the app's
endpoints: tests/test_app.py, test_app_preview.py, test_faults_app.py)."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.limits import LIMITS
from maskedit.media.video import Clip, read_video, write_video
from maskedit.method.composite import (
    DEFAULT_FEATHER, RING_WIDTH, blend_weights, composite, distance_inside, grow_region, ring,
)
from maskedit.models.presets import GenerateSettings
from maskedit.studio.inputs import generate_settings
from maskedit.workflow import generate
from maskedit.workflow.prepare import PreparedClip

from test_cli import assert_user_error, run, write_inputs


def moving_boxes(num_frames, height, width, size=(40, 60), step=(3, 5), start=(20, 30)):
    """A box (size h x w) moving by `step` per frame, bool (F, H, W); returns (region, boxes [(y0, y1, x0, x1)])."""
    region = np.zeros((num_frames, height, width), bool)
    boxes = []
    for f in range(num_frames):
        y0, x0 = start[0] + step[0] * f, start[1] + step[1] * f
        y0, x0 = min(y0, height - size[0]), min(x0, width - size[1])
        region[f, y0:y0 + size[0], x0:x0 + size[1]] = True
        boxes.append((y0, y0 + size[0], x0, x0 + size[1]))
    return region, boxes


def random_frames(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def brute_distance(frame, cap):
    """Euclidean distance of each True pixel to the nearest False pixel of a small (H, W) frame, capped."""
    outside = np.argwhere(~frame)
    out = np.zeros(frame.shape)
    for y, x in np.argwhere(frame):
        out[y, x] = min(cap, np.sqrt(((outside - (y, x)) ** 2).sum(1)).min()) if len(outside) else cap
    return out


# ----- the blend itself


@pytest.mark.parametrize("feather", [0, 3, DEFAULT_FEATHER])
def test_outside_is_the_source_and_deep_inside_the_generated_exactly_at_832x480x49(feather):
    frames, height, width = 49, 480, 832
    region, boxes = moving_boxes(frames, height, width, size=(200, 300))
    source, generated = random_frames((frames, height, width, 3), 1), random_frames((frames, height, width, 3), 2)
    out = composite(source, generated, region, feather)
    assert out.dtype == np.uint8 and out.shape == source.shape
    assert np.array_equal(out[~region], source[~region])  # the background, bit for bit, on every frame
    alpha = blend_weights(region, feather)
    for f, (y0, y1, x0, x1) in enumerate(boxes):  # inside, from feather + 1 pixels in: the generated pixels
        inner = (f, slice(y0 + feather, y1 - feather), slice(x0 + feather, x1 - feather))
        assert np.array_equal(out[inner], generated[inner]) and (alpha[inner] == 1).all()
        if feather:
            assert (alpha[f, y0:y1, x0 + feather - 1] < 1).all()  # the last blended column
    blended = (alpha > 0) & (alpha < 1)
    assert np.array_equal(out[alpha == 1], generated[alpha == 1])
    # the band of blended pixels along a straight border is exactly `feather` pixels wide
    y0, y1, x0, x1 = boxes[10]
    middle = (y0 + y1) // 2
    assert int(blended[10, middle].sum()) == 2 * feather and int(blended[10, :, (x0 + x1) // 2].sum()) == 2 * feather


def test_the_feather_is_monotone_across_the_border():
    height, width, feather = 96, 128, 10
    region, ((y0, y1, x0, x1),) = moving_boxes(1, height, width, size=(60, 80), start=(18, 24))
    source = np.zeros((1, height, width, 3), np.uint8)
    generated = np.full_like(source, 200)
    out = composite(source, generated, region, feather)[0, ..., 0].astype(int)
    alpha = blend_weights(region, feather)[0]
    middle_row, middle_col = (y0 + y1) // 2, (x0 + x1) // 2
    for values in (out[middle_row, :middle_col + 1], out[middle_row, middle_col:][::-1],
                   out[:middle_row + 1, middle_col], out[middle_row:, middle_col][::-1],
                   alpha[middle_row, :middle_col + 1], alpha[:middle_row + 1, middle_col]):
        steps = np.diff(values)
        assert (steps >= 0).all()  # never falls going inward: from the source to the generated pixels
    row = out[middle_row, x0 - 2:x0 + feather + 3]  # across the left border: 0 0 | ramp of `feather` | 200 …
    assert list(row[:2]) == [0, 0] and (np.diff(row[2:2 + feather + 1]) > 0).all() and row[-1] == 200
    assert list(alpha[middle_row, x0:x0 + feather + 1]) == pytest.approx(
        [(d + 1) / (feather + 1) for d in range(feather)] + [1.0])


def test_hard_cut_the_frame_edge_and_empty_or_full_frames():
    height, width = 40, 48
    region = np.zeros((4, height, width), bool)
    region[0, :20, :24] = True  # touches the top-left corner of the frame
    region[2] = True  # the whole frame
    source, generated = random_frames((4, height, width, 3), 3), random_frames((4, height, width, 3), 4)
    out = composite(source, generated, region, 0)
    assert np.array_equal(out[region], generated[region]) and np.array_equal(out[~region], source[~region])
    out = composite(source, generated, region, 5)
    assert np.array_equal(out[0, :14, :18], generated[0, :14, :18])  # the frame's edge is not a border
    assert not np.array_equal(out[0, :20, 18:24], generated[0, :20, 18:24])  # the inner border is feathered
    assert np.array_equal(out[1], source[1]) and np.array_equal(out[3], source[3])  # nothing to edit: the source
    assert np.array_equal(out[2], generated[2])  # everything to edit: the generated frame


def test_any_window_of_frames_composites_as_in_the_whole_clip():
    region, _ = moving_boxes(17, 64, 80, size=(24, 30), step=(2, 3), start=(4, 4))
    source, generated = random_frames((17, 64, 80, 3), 5), random_frames((17, 64, 80, 3), 6)
    whole = composite(source, generated, region, 6)
    for start, stop in ((0, 9), (8, 17), (5, 6)):  # long clips: window by window, seams shared or not
        assert np.array_equal(composite(source[start:stop], generated[start:stop], region[start:stop], 6),
                              whole[start:stop])


def test_distances_growing_and_the_ring_are_exact_euclidean():
    rng = np.random.default_rng(7)
    for trial in range(12):
        frame = rng.random((23, 31)) < rng.uniform(0.4, 0.97)
        cap = float(rng.integers(1, 9))
        assert distance_inside(frame, cap) == pytest.approx(brute_distance(frame, cap), abs=1e-5)
    tight = np.zeros((2, 30, 30), bool)
    tight[0, 10:14, 12:15] = True
    tight[1, 0, 0] = True
    grown = grow_region(tight, 5)
    for f in range(2):
        expected = tight[f] | (brute_distance(~tight[f], 6) <= 5)
        assert np.array_equal(grown[f], expected)
        band = ring(tight, 3)[f]
        assert np.array_equal(band, ~tight[f] & (brute_distance(~tight[f], 4) <= 3))
    assert np.array_equal(grow_region(tight, 0), tight)


def test_bad_inputs_are_refused():
    region, _ = moving_boxes(2, 32, 32, size=(8, 8), step=(0, 0), start=(4, 4))
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(MaskEditError, match="feather"):
        composite(frames, frames, region, LIMITS["feather"].high + 1)
    with pytest.raises(MaskEditError, match="same clip"):
        composite(frames, frames[:1], region, 2)
    with pytest.raises(MaskEditError, match="uint8"):
        composite(frames.astype(np.float32), frames.astype(np.float32), region, 2)
    with pytest.raises(MaskEditError, match="region"):
        composite(frames, frames, region[:1], 2)


# ----- settings


def test_settings_are_typed_checked_and_default_to_off():
    settings = GenerateSettings()
    assert (settings.composite, settings.feather, settings.composite_region) == (False, DEFAULT_FEATHER, "boxes")
    assert settings.to_dict()["composite"] is False
    for bad, word in ((dict(feather=-1), "feather"), (dict(feather=65), "at most 64"),
                      (dict(composite_margin=1000), "composite_margin"), (dict(composite_region="blob"), "blob"),
                      (dict(composite="yes"), "true or false")):
        with pytest.raises(MaskEditError, match=word):
            GenerateSettings(**bad)
    form = generate_settings(composite=True, feather=3.0, composite_region="mask", composite_margin=20)
    assert (form.composite, form.feather, form.composite_region, form.composite_margin) == (True, 3, "mask", 20)
    assert generate_settings().composite is False  # a client that leaves it out: off
    with pytest.raises(MaskEditError, match="feather"):
        generate_settings(composite=True, feather=math.nan)


# ----- the edit step: frame 0, off, the figures


def synthetic_prepared(num_frames=9, height=64, width=64, tight=True):
    region, _ = moving_boxes(num_frames, height, width, size=(20, 24), step=(2, 3), start=(6, 6))
    frames = random_frames((num_frames, height, width, 3), 11)
    object_mask = np.zeros_like(region)
    object_mask[:, 12:18, 12:20] = True
    return PreparedClip(Clip(frames, 8.0, []), region, object_mask if tight else None)


def test_composite_edit_off_returns_the_generated_frames_unchanged():
    prepared = synthetic_prepared()
    generated = random_frames(prepared.frames.shape, 12)
    result = generate.composite_edit(prepared, prepared.frames[0], generated, GenerateSettings())
    assert result.frames is generated  # the same array: bit for bit what generation returned
    record = result.record
    assert record["on"] is False and record["frame_0"] == "generated" and record["ring_px"] == RING_WIDTH
    from maskedit.media.metrics import psnr

    assert record["background_psnr_generated_db"] == psnr(generated[1:], prepared.frames[1:], ~prepared.region[1:])
    band = ring(prepared.region[1:], RING_WIDTH)
    assert record["ring_psnr_generated_db"] == psnr(generated[1:], prepared.frames[1:], band)


def test_composite_edit_on_keeps_the_background_and_takes_the_edited_first_frame_whole():
    prepared = synthetic_prepared()
    generated = random_frames(prepared.frames.shape, 13)
    edited_first = random_frames(prepared.frames.shape[1:], 14)  # an edit that changed pixels outside the box too
    result = generate.composite_edit(prepared, edited_first, generated, GenerateSettings(composite=True, feather=2))
    out, region = result.frames, prepared.region
    assert np.array_equal(out[0], edited_first)  # frame 0: the user's edited frame itself
    assert np.array_equal(out[1:][~region[1:]], prepared.frames[1:][~region[1:]])
    inner = blend_weights(region, 2) == 1
    assert np.array_equal(out[1:][inner[1:]], generated[1:][inner[1:]])
    assert result.record["on"] and result.record["frame_0"] == "the edited first frame as given"

    # the tight mask grown by a margin: only that region is generated
    mask = generate.composite_edit(prepared, edited_first, generated,
                                   GenerateSettings(composite=True, composite_region="mask", composite_margin=3,
                                                    feather=0))
    grown = grow_region(prepared.tight, 3)
    assert np.array_equal(mask.frames[1:][grown[1:]], generated[1:][grown[1:]])
    assert np.array_equal(mask.frames[1:][~grown[1:]], prepared.frames[1:][~grown[1:]])
    assert mask.record["mask_margin_px"] == 3 and mask.record["region"] == "mask"
    with pytest.raises(MaskEditError, match="given as a box"):
        generate.composite_edit(synthetic_prepared(tight=False), edited_first, generated,
                                GenerateSettings(composite=True, composite_region="mask"))


def test_the_ring_shows_what_compositing_cut_off():
    prepared = synthetic_prepared()
    settings = GenerateSettings(composite=True)
    perfect = generate.composite_edit(prepared, prepared.frames[0], prepared.frames.copy(), settings).record
    assert perfect["ring_psnr_generated_db"] == math.inf and perfect["note"] == ""
    assert perfect["ring_mean_abs_diff_generated"] == 0.0
    shadow = prepared.frames.copy()  # the model drew a shadow just below each box, outside the region
    for f in range(1, prepared.num_frames):
        rows = np.flatnonzero(prepared.region[f].any(axis=1))
        cols = np.flatnonzero(prepared.region[f].any(axis=0))
        shadow[f, rows[-1] + 1:rows[-1] + 4, cols[0]:cols[-1] + 1] //= 4
    record = generate.composite_edit(prepared, prepared.frames[0], shadow, settings).record
    assert record["ring_psnr_generated_db"] < record["background_psnr_generated_db"] - 3
    assert "shadow" in record["note"] and record["ring_mean_abs_diff_generated"] > 5
    from maskedit.studio.generation import composite_rows

    report = "\n".join(composite_rows(record))
    assert f"| compositing | composited onto the source (loose boxes, feather {DEFAULT_FEATHER} px)" in report
    assert "4 px ring" in report and "⚠️" in report


# ----- the files: edited.json, the mp4's comment, H.264


def mp4_comment(path) -> str:
    import imageio_ffmpeg

    text = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, check=True).stdout
    return next((line.split("=", 1)[1] for line in text.splitlines() if line.startswith("comment=")), "")


def test_outputs_record_compositing_and_off_writes_todays_file(tmp_path):
    prepared = synthetic_prepared(height=64, width=96)
    prepared.frames[:] = np.linspace(0, 255, 96, dtype=np.uint8)[None, None, :, None]  # smooth: H.264 keeps it well
    generated = random_frames(prepared.frames.shape, 15)
    off = generate.composite_edit(prepared, prepared.frames[0], generated, GenerateSettings())
    outputs = generate.write_edit_outputs(tmp_path / "off", prepared, off.frames, off.record)
    write_video(tmp_path / "today.mp4", generated, prepared.fps)  # what the code wrote before compositing existed
    assert (tmp_path / "off" / "edited.mp4").read_bytes() == (tmp_path / "today.mp4").read_bytes()
    assert mp4_comment(outputs.edited) == ""
    sidecar = json.loads((tmp_path / "off" / generate.EDITED_JSON).read_text())
    assert sidecar["composite"]["on"] is False and sidecar["video"] == "edited.mp4"

    on = generate.composite_edit(prepared, prepared.frames[0], generated, GenerateSettings(composite=True, feather=4))
    outputs = generate.write_edit_outputs(tmp_path / "on", prepared, on.frames, on.record)
    assert outputs.background_psnr == math.inf  # the frames array, before the encode
    assert "composited onto the source (loose boxes, feather 4 px)" in mp4_comment(outputs.edited)
    sidecar = json.loads((tmp_path / "on" / generate.EDITED_JSON).read_text())
    assert sidecar["composite"]["feather_px"] == 4 and sidecar["background_psnr_db"] == math.inf
    decoded = read_video(outputs.edited).frames  # the mp4 is lossy: close to the source, not equal
    from maskedit.media.metrics import psnr

    far = ~grow_region(prepared.region, 8)  # away from the noisy box (H.264 blocks mix across it)
    assert 35 < psnr(decoded[1:], prepared.frames[1:], far[1:]) < math.inf
    generate.remove_edit_outputs(tmp_path / "on")
    assert not list((tmp_path / "on").iterdir())


# ----- the command line and the studio pass the settings through


@pytest.fixture(scope="module")
def prepared_folders(tmp_path_factory):
    """A clip prepared from its mask (with a tight mask) and one from a box (without)."""
    from maskedit.interfaces.cli import main as cli

    root = tmp_path_factory.mktemp("composite_cli")
    paths = write_inputs(root / "inputs")
    mask, box = root / "from_mask", root / "from_box"
    assert cli.main(["prepare", "--video", str(paths["clip"]), "--mask-video", str(paths["mask"]), "--width", "64",
                     "--height", "64", "--out", str(mask)]) == 0
    assert cli.main(["prepare", "--video", str(paths["clip"]), "--box", "4,8,54,42", "--width", "64", "--height",
                     "64", "--out", str(box)]) == 0
    return paths, mask, box


def test_cli_passes_composite_and_feather_through(capsys, tmp_path, prepared_folders):
    paths, mask, _ = prepared_folders
    common = ["generate", "--prepared", mask, "--edited-frame", paths["edited"], "--prompt", "a blue box",
              "--method", "no-lora", "--model", "tiny", "--steps", "1"]
    code, out, err = run(capsys, *common, "--composite", "mask", "--feather", "3", "--composite-margin", "5",
                         "--out", tmp_path / "on")
    assert code == 0, err
    record = json.loads((tmp_path / "on" / "edited.json").read_text())["composite"]
    assert (record["on"], record["region"], record["feather_px"], record["mask_margin_px"]) == (True, "mask", 3, 5)
    assert "compositing: composited onto the source (tight mask grown by 5 px, feather 3 px)" in out
    assert "4-pixel ring just outside the region" in out
    code, out, err = run(capsys, *common, "--out", tmp_path / "off")
    assert code == 0, err
    assert json.loads((tmp_path / "off" / "edited.json").read_text())["composite"]["on"] is False
    assert "compositing: not composited" in out


@pytest.mark.parametrize("flags, words", [
    (["--feather", "3"], ["--feather sets how --composite blends", "add --composite"]),
    (["--composite", "--feather", "65"], ["feather", "--feather", "at most 64"]),
    (["--composite", "--composite-margin", "4"], ["--composite-margin grows the tight mask"]),
    (["--composite", "mask"], ["given as a box", "--composite mask needs --mask-video"]),
])
def test_cli_refuses_bad_compositing_before_loading_a_model(capsys, tmp_path, prepared_folders, flags, words,
                                                            monkeypatch):
    from maskedit.interfaces.cli import main as cli

    paths, _, box = prepared_folders
    monkeypatch.setattr(cli, "_load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run(capsys, "generate", "--prepared", box, "--edited-frame", paths["edited"], "--prompt", "a box",
                       "--method", "no-lora", "--model", "tiny", *flags, "--out", tmp_path / "out")
    assert_user_error(code, err, tmp_path / "out", *words)


def test_studio_passes_the_settings_to_the_report(tmp_path, tiny_pipe, prepared_folders):
    from maskedit.studio.generation import format_report, run_generation

    paths, mask, _ = prepared_folders
    events = list(run_generation(tiny_pipe, mask, str(paths["edited"]), "a blue box", tmp_path / "out",
                                 GenerateSettings(steps=1, method="no-lora", composite=True, feather=5)))
    report = events[-1]["report"]
    assert report["composite"]["on"] and report["composite"]["feather_px"] == 5
    assert report["background_psnr_db"] == math.inf
    assert json.loads((tmp_path / "out" / "report.json").read_text())["composite"]["feather_px"] == 5
    assert "| compositing | composited onto the source (loose boxes, feather 5 px)" in format_report(report)


def test_in_the_studio_a_box_object_is_its_own_tight_mask(tmp_path, tiny_pipe, synthetic_clip):
    """In the app a box is one of the session's objects (issue 24) whose segmentation is the box itself, so
    compositing on the tight mask is offered for it and composites on the box grown by the margin; only the
    CLI's --box (no segmentation at all) is refused, before any work (`check_composite`, tested above)."""
    from maskedit.studio.service import Studio
    from maskedit.workflow import prepare, session

    from test_studio import local_gpu

    frames, _ = synthetic_clip
    write_video(tmp_path / "clip.mp4", frames, 8.0)
    studio = Studio(session.SessionStore(tmp_path / "sessions"), local_gpu(tiny_pipe), model_name="tiny",
                    is_tiny=True, allowed_roots=lambda: [tmp_path], cache_root=tmp_path / "cache")
    st = studio.session("tab")
    studio.load_video(st, tmp_path / "clip.mp4", 9, "64x64")
    studio.use_mask(st, box="10,10,40,40")
    prepared = prepare.load_prepared(studio.prepared_dir(st))
    box = np.zeros(prepared.tight.shape[1:], bool)
    box[10:40, 10:40] = True
    assert all(np.array_equal(frame, box) for frame in np.asarray(prepared.tight, bool))
    settings = GenerateSettings(composite=True, composite_region="mask", composite_margin=3)
    generate.check_composite(prepared, settings)  # accepted
    assert np.array_equal(generate.composite_region(prepared, settings)[0], grow_region(box[None], 3)[0])


def test_the_feather_benchmark_runs_and_a_hard_cut_keeps_a_true_edit(tmp_path, capsys):
    import importlib.util
    import sys

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    spec = importlib.util.spec_from_file_location("composite_feather", root / "benchmarks" / "composite_feather.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = tmp_path / "RESULTS.md"
    assert module.main(["--sizes", "64x64x5", "--edits", "1", "--feathers", "0,4", "--write",
                        "--results", str(results)]) == 0
    text = results.read_text()
    assert "<!-- composite_feather -->" in text and "| 64x64x5 | 24 px | 0 | ∞ | ∞ | 1.000 | ∞ |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 64x64x5 | 24 px | 4 |"))
    assert row.split("|")[4].strip() == "∞" and row.split("|")[5].strip() != "∞"  # background kept, edge blended
