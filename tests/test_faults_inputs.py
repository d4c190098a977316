"""Issue 22's fault suite for the library (no server): every hostile value or file is a MaskEditError that names
what is wrong — never an OverflowError, ValueError, RecursionError or DecompressionBombError — and is refused
before any work, from as little of the input as possible (a header, not the pixels or tensors).

Classes (the issue's numbering): 1 parsers with bounded size and syntax (plus a seeded fuzz of them), 2 images
bounded from their header and converted faithfully in every mode, 3 settings that must be whole numbers or
names, 5 LoRA files checked from their header then in bounded chunks, and a generated video that cannot be an
edit refused, 6 the message for a long clip, 7 frame rates checked for plausibility. The app's side of each
class is in test_faults_app.py, the session's in test_studio_faults.py."""

from __future__ import annotations

import math
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskedit import limits
from maskedit.errors import MaskEditError
from maskedit.interfaces.cli import main as cli
from maskedit.media import video
from maskedit.method import masks
from maskedit.perception.segmentation_prompts import parse_point
from maskedit.studio.inputs import TrainInputs, generate_settings
from maskedit.studio.uploads import SINGLE, check_lora_upload
from maskedit.workflow import prepare, session

from hostile_files import (TINY_LAYER, container_says_1k, lora, png_header_only, sparse_safetensors, streamed_png,
                           tiny_lora, video_at)

# ----- 1. parsers: bounded size, depth and number syntax

PARSERS = {
    "points": session.parse_points, "size": session.parse_size, "captions": session.parse_later_captions,
    "later frames": session.parse_later_frames, "box": masks.parse_box, "CLI point": parse_point,
    "frame number": lambda text: prepare.parse_frame_index(text, 81),
}
DIGITS = "9" * 5000
HOSTILE = {  # name: (parser, value, words of the message)
    "point label 1e999": ("points", "[[10, 10, 1e999]]", "1e999, which is not finite"),
    "coordinate of 5,000 digits": ("points", f"[[{DIGITS}, 10, 1]]", "5,000 digits"),
    "points nested 100,000 deep": ("points", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "point label 1.5": ("points", "[[10, 10, 1.5]]", "use 1 (the object) or 0"),
    "point label true": ("points", "[[10, 10, true]]", "needs finite numbers"),
    "NaN coordinate": ("points", "[[NaN, 10]]", "NaN, which is not a number JSON allows"),
    "Infinity coordinate": ("points", "[[Infinity, 10]]", "Infinity"),
    "300 points": ("points", str([[1, 1, 1]] * 300), "number of clicks"),
    "10 MB of points": ("points", "[" + "0," * 5_000_000 + "0]", "at most 400,000"),
    "size of 5,000 digits": ("size", DIGITS + "x64", "5,003 characters long"),
    "size 10**9": ("size", "1000000000x64", "width"),
    "captions nested 100,000 deep": ("captions", '{"4": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "caption frame of 5,000 digits": ("captions", f'{{"{DIGITS}": "a car"}}', "5,000 characters"),
    "caption that is a number": ("captions", '{"4": 12}', "must be text"),
    "caption of 3,000 characters": ("captions", '{"4": "' + "a" * 3000 + '"}', "at most 2,000"),
    "later frames 1e999": ("later frames", "[1e999]", "not finite"),
    "later frame 2.5": ("later frames", "4, 2.5", "whole number"),
    "later frames of 5,000 digits": ("later frames", f"[{DIGITS}]", "5,000 digits"),
    "box corner of 5,000 digits": ("box", f"1,2,3,{DIGITS}", "characters long"),
    "box corner 2.5": ("box", "1,2,3.5,4", "whole number"),
    "CLI point 1e999": ("CLI point", "1e999,3", "finite number"),
    "CLI point object of 5,000 digits": ("CLI point", f"3,4,1,{DIGITS}", "5,000 characters"),
    "frame number 2.5": ("frame number", 2.5, "whole number"),
    "frame number True": ("frame number", True, "whole number"),
    "frame number of 5,000 digits": ("frame number", DIGITS, "5,000 characters"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_text_is_refused_with_our_message(case):
    parser, value, words = HOSTILE[case]
    with pytest.raises(MaskEditError) as error:  # any other exception type fails the test
        PARSERS[parser](value)
    assert words in str(error.value)
    assert len(str(error.value)) < 600  # the message quotes the value, never all of it


def test_parsers_still_read_good_values():
    points, labels = session.parse_points('{"points": [[1.5, 2, 0], {"x": 3, "y": 4}]}')
    assert points.tolist() == [[1.5, 2.0], [3.0, 4.0]] and labels.tolist() == [0, 1]
    assert session.parse_size("832x480 (landscape)") == (832, 480)
    assert session.parse_later_captions('{"16": " a blue car ", "24": ""}') == {16: "a blue car"}
    assert session.parse_later_frames("[16, 24.0]") == [16, 24] and session.parse_later_frames("4, 8") == [4, 8]
    assert masks.parse_box(" 1, 2,3 ,4") == (1, 2, 3, 4) and parse_point("3.5,4,0,2") == (3.5, 4.0, 0, 2)
    assert prepare.parse_frame_index(4.0, 9) == 4


NUMBERS = ["0", "1", "-3", "2.5", "18", "1e3", "1e999", "-1e999", "1e-999", "NaN", "Infinity", "true", "null", "9" * 40,
           "9" * 5000, "1" + "0" * 400, '"7"', "0.1"]


def fuzzed(rng: random.Random, parser: str) -> str:
    """A random text shaped like what `parser` reads (so that it gets past the syntax to the numbers), with
    numbers drawn from NUMBERS (several beyond every bound) and, now and then, deep nesting or huge length."""
    def number():
        return rng.choice(NUMBERS)

    def value(depth):
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return number()
        if roll < 0.8:
            return "[" + ", ".join(value(depth + 1) for _ in range(rng.randint(0, 4))) + "]"
        return "{" + ", ".join(f'"{number().strip(chr(34))}": {value(depth + 1)}' for _ in range(rng.randint(0, 3))) + "}"

    bare = lambda count: ",".join(number() for _ in range(count))  # noqa: E731
    text = {"points": lambda: value(0), "captions": lambda: value(0), "later frames": lambda: rng.choice(
                [value(0), bare(rng.randint(1, 3))]),
            "size": lambda: f"{number()}x{number()}", "box": lambda: bare(rng.choice((3, 4, 4, 5))),
            "CLI point": lambda: bare(rng.randint(2, 4)), "frame number": number}[parser]()
    if rng.random() < 0.05:
        depth = rng.choice((50, 5000))
        text = "[" * depth + text + "]" * depth
    return text


def test_fuzzed_texts_give_a_value_or_our_message():
    """2,100 seeded random texts shaped like each parser's input (300 each): each returns or raises
    MaskEditError, nothing else (no OverflowError, ValueError, RecursionError, TypeError)."""
    rng = random.Random(22)
    for name, parser in PARSERS.items():
        for _ in range(300):
            text = fuzzed(rng, name)
            try:
                parser(text)
            except MaskEditError:
                pass
            except Exception as error:  # noqa: BLE001
                raise AssertionError(f"{name} raised {type(error).__name__} for {text[:200]!r}") from error


def test_numbers_beyond_float_and_text_numbers_are_refused_by_name():
    with pytest.raises(MaskEditError, match=r"seed \(seed\) is a number of about 5,001 digits"):
        limits.check("seed", 10**5000)  # float(10**5000) would raise OverflowError
    with pytest.raises(MaskEditError, match=r"number of training steps \(steps\) is the text '5'"):
        limits.check("train_steps", "5", "steps")
    assert limits.check_flag("false", "fit") is False and limits.check_flag(None, "fit", True) is True
    with pytest.raises(MaskEditError, match="must be true or false"):
        limits.check_flag("yes please", "fit")


# ----- 3. settings that must be whole numbers, names or true/false (what Gradio rounded or refused)


@pytest.mark.parametrize("fields, words", [
    (dict(steps=True), "(train_steps) is True"), (dict(steps=10.5), "(train_steps) is 10.5"),
    (dict(steps="5"), "is the text '5'"), (dict(budget_s=0), "(budget_s) is 0"),
    (dict(budget_s=math.inf), "(budget_s) is inf"), (dict(blocks_to_swap=40), "at most 39"),
    (dict(preset="bogus"), "unknown preset 'bogus'"), (dict(preset=3), "unknown preset 3"),
    (dict(trigger="a" * 5000), "at most 2,000"), (dict(rank=4.5), "LoRA rank"),
    (dict(fp8="maybe"), "fp8 checkbox"),
])
def test_training_inputs_are_parsed_and_held_to_their_ranges(fields, words):
    with pytest.raises(MaskEditError) as error:
        TrainInputs("a box", **fields).cleaned()
    assert words in str(error.value)


def test_training_inputs_keep_their_types():
    inputs = TrainInputs(" a box ", preset="24GB", steps=7.0, fp8="False", budget_s=60, blocks_to_swap=39).cleaned()
    assert (inputs.caption, inputs.preset, inputs.steps, inputs.fp8, inputs.budget_s, inputs.blocks_to_swap) == \
        ("a box", "24gb", 7, False, 60.0, 39)  # "False" is False, never a truthy text


@pytest.mark.parametrize("values, words", [
    (dict(method="bogus"), "the method is 'bogus'; choose one of mask-lora"),
    (dict(sampler="bogus"), "the sampler is 'bogus'; choose one of euler"),
    (dict(steps=True), "generation steps (generation_steps) is True"), (dict(steps=2.5), "is 2.5"),
    (dict(lora_scale="1"), "is the text '1'"),
])
def test_generation_settings_refuse_names_and_numbers_of_the_wrong_kind(values, words):
    with pytest.raises(MaskEditError) as error:
        generate_settings(**values)
    assert words in str(error.value)
    assert generate_settings(lora_scale=4.0).lora_scale == 4.0  # the limit's end, which the old slider refused


# ----- 2. images: bounded from the header, every mode faithful


def _save(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def test_a_16_bit_greyscale_png_keeps_its_values(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = _save(tmp_path / "grey16.png", Image.fromarray(ramp))
    image = video.read_image(path)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert abs(float(image.mean()) - float(ramp.mean()) / 257) < 0.6  # not all white (PIL's own RGB clips at 255)
    assert image[0, 0].tolist() == [0, 0, 0] and image[-1, -1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode, make, expected", [
    ("L", lambda: Image.new("L", (8, 6), 100), [100, 100, 100]),
    ("1", lambda: Image.new("1", (8, 6), 1), [255, 255, 255]),
    ("P", lambda: Image.new("RGB", (8, 6), (200, 30, 10)).convert("P", palette=Image.Palette.ADAPTIVE), [200, 30, 10]),
    ("CMYK", lambda: Image.new("CMYK", (8, 6), (0, 255, 255, 0)), [255, 0, 0]),
    ("RGBA opaque", lambda: Image.new("RGBA", (8, 6), (10, 20, 30, 255)), [10, 20, 30]),
    ("LA opaque", lambda: Image.new("LA", (8, 6), (70, 255)), [70, 70, 70]),
])
def test_every_image_mode_is_converted_faithfully(tmp_path, mode, make, expected):
    path = _save(tmp_path / ("frame.tif" if mode == "CMYK" else "frame.png"), make())
    image = video.read_image(path)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected).max() <= 1


def test_a_partly_transparent_image_is_refused(tmp_path):
    image = Image.new("RGBA", (10, 10), (10, 20, 30, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    with pytest.raises(MaskEditError, match=r"partly transparent \(1.00% of its pixels\)"):
        video.read_image(_save(tmp_path / "cutout.png", image))


@pytest.mark.parametrize("make, words", [
    (lambda p: streamed_png(p, 12000, 12000), "12000x12000 pixels, larger than 4096 pixels on a side"),
    (lambda p: png_header_only(p, 20000, 20000), "larger than 4096 pixels on a side"),  # PIL: DecompressionBombError
    (lambda p: png_header_only(p, 5000, 10), "5000x10"),
])
def test_a_huge_image_is_refused_from_its_header(tmp_path, make, words):
    path = make(tmp_path / "huge.png")
    tracemalloc.start()
    try:
        with pytest.raises(MaskEditError) as error:
            video.read_image(path, "edited first frame")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert words in str(error.value) and "edited first frame" in str(error.value)
    assert peak < 20 * 2**20  # not one row of pixels decoded
    with pytest.raises(MaskEditError, match="larger than 4096"):
        video.check_image_header(path)


@pytest.fixture
def prepared_folder(tmp_path, synthetic_clip):
    frames, _ = synthetic_clip
    video.write_video(tmp_path / "clip.mp4", frames, 8.0)
    prepared = prepare.prepare_clip(tmp_path / "clip.mp4", box="10,10,40,40", width=64, height=64)
    return prepare.save_prepared(prepared, tmp_path / "prepared")


def test_the_cli_refuses_a_decompression_bomb_with_its_message(tmp_path, prepared_folder, capsys):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    code = cli.main(["generate", "--prepared", str(prepared_folder), "--edited-frame", str(bomb), "--prompt", "x",
                     "--method", "no-lora", "--model", "tiny", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "Traceback" not in err and "DecompressionBomb" not in err
    assert "error: the edited first frame" in err and "larger than 4096 pixels on a side" in err


# ----- 5. LoRA files: the header first (names, dtypes, shapes, sizes), then the values in bounded chunks


@pytest.fixture(scope="module")
def transformer():
    from maskedit.models.loading import build_tiny_pipeline

    return build_tiny_pipeline().transformer


def upload(path, transformer):
    return check_lora_upload([path], {SINGLE: transformer}, False)


def test_a_small_lora_of_the_tiny_model_passes(tmp_path, transformer):
    assert upload(tiny_lora(tmp_path / "ok.safetensors"), transformer)[SINGLE].name == "ok.safetensors"
    assert upload(tiny_lora(tmp_path / "bf16.safetensors", dtype=torch.bfloat16), transformer)


@pytest.mark.parametrize("make, words", [
    (lambda p: tiny_lora(p, dtype=torch.int32), "holds I32 values; a LoRA's weights are floating point"),
    (lambda p: lora(p, {f"{TINY_LAYER}.weight": torch.zeros(32, 32)}), "has no LoRA name"),
    (lambda p: lora(p, {f"{TINY_LAYER}.lora_A.weight": torch.zeros(4, 32)}), "holds no pairs of LoRA weights"),
    (lambda p: tiny_lora(p, b=3e38), "holds a weight of 3e+38"),
    (lambda p: tiny_lora(p, a=math.nan), "NaN or infinite"),
    (lambda p: lora(p, {f"{TINY_LAYER}.lora_A.weight": torch.zeros(4, 32), f"{TINY_LAYER}.lora_B.weight":
                        torch.zeros(32, 4), f"{TINY_LAYER}.alpha": torch.tensor(1e6)}), "alpha"),
    (lambda p: lora(p, {f"{TINY_LAYER}.lora_A.weight": torch.zeros(300, 32), f"{TINY_LAYER}.lora_B.weight":
                        torch.zeros(32, 300)}), "rank 300"),
    (lambda p: lora(p, {f"{TINY_LAYER}.lora_A.weight": torch.zeros(4, 32, 1), f"{TINY_LAYER}.lora_B.weight":
                        torch.zeros(32, 4)}), "2-D matrices"),
    (lambda p: p.write_bytes(b"\xff" * 8 + b"{}"), "more than the file holds"),
    (lambda p: p.write_bytes(b"\x04\x00\x00\x00\x00\x00\x00\x00[[[["), "nested too deeply"),
    (lambda p: p.write_bytes(b"\x03\x00\x00\x00\x00\x00\x00\x00[1,"), "not valid JSON"),
    (lambda p: p.write_bytes(tiny_lora(p).read_bytes()[:-7]), "cut short"),
])
def test_a_file_that_is_no_lora_for_this_model_is_refused(tmp_path, transformer, make, words):
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(MaskEditError) as error:
        upload(path, transformer)
    assert words in str(error.value)


def test_a_large_file_is_refused_from_its_header_alone(tmp_path, transformer):
    """512 MB of LoRA-named bf16 weights that do not fit the model: refused from the header, nothing read."""
    path = sparse_safetensors(tmp_path / "big.safetensors", {f"{TINY_LAYER}.lora_A.weight": ("BF16", [4, 2**26]),
                                                             f"{TINY_LAYER}.lora_B.weight": ("BF16", [32, 4])})
    assert path.stat().st_size > 512 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(MaskEditError, match="takes 32 inputs, the LoRA's A is"):
            upload(path, transformer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_values_are_checked_in_bounded_chunks(tmp_path):
    """A LoRA-named file of 256 MB of zeros (a sparse file) is read a chunk at a time."""
    from maskedit.media.tensor_files import CHUNK_BYTES
    from maskedit.method.lora import check_lora_file

    path = sparse_safetensors(tmp_path / "wide.safetensors", {"blocks.0.x.lora_A.weight": ("F32", [64, 2**20]),
                                                              "blocks.0.x.lora_B.weight": ("F32", [2**20, 64])},
                              item_bytes=4)
    tracemalloc.start()
    try:
        check_lora_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * CHUNK_BYTES


def test_a_generated_video_that_cannot_be_an_edit_is_refused(synthetic_clip):
    from maskedit.workflow.generate import check_generated

    frames, _ = synthetic_clip
    good = frames.astype(np.float32) / 255
    check_generated(good, frames)
    for bad, words in [(np.full_like(good, np.nan), "NaN or infinite"), (np.zeros_like(good), "same value (0)"),
                       (np.round(good), "pure black or white"), (np.full_like(good, 0.5), "same value (128)")]:
        with pytest.raises(MaskEditError, match="not usable") as error:
            check_generated(bad, frames)
        assert words in str(error.value) and "LoRA" in str(error.value)


def test_a_nan_generation_is_a_failure_not_a_black_video(prepared_folder, tiny_pipe, monkeypatch):
    from maskedit.workflow.generate import generate_edit

    prepared = prepare.load_prepared(prepared_folder)
    original = type(tiny_pipe).__call__

    def poisoned(self, *args, **kwargs):  # what a LoRA of 3e38 weights makes of every frame
        output = original(self, *args, **kwargs)
        output.frames[0][...] = np.nan
        return output

    monkeypatch.setattr(type(tiny_pipe), "__call__", poisoned)
    with pytest.raises(MaskEditError, match="NaN or infinite"):
        generate_edit(tiny_pipe, prepared, prepared.frames[0], "a box", steps=1, method="no-lora")


# ----- 6. the message for a long clip, 7. frame rates checked for plausibility


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    frames = np.random.default_rng(0).integers(0, 255, (161, 32, 32, 3), dtype=np.uint8)
    video.write_video(folder / "c161.mp4", frames, 16.0)
    return folder / "c161.mp4", frames


def test_every_frame_of_a_161_frame_clip_can_be_selected(long_clip):
    path, frames = long_clip
    assert video.select_expression(range(161)).count("(") < 400  # a balanced sum: ffmpeg nests ~8 deep, not 160
    got = video.read_frames_at(path, range(161))
    assert got.shape == (161, 32, 32, 3)
    assert np.array_equal(got, video.read_video(path).frames)


def test_prepare_frames_161_reads_the_clip_or_names_the_frame_limit(long_clip, tmp_path, capsys):
    path, _ = long_clip
    args = ["prepare", "--video", str(path), "--box", "4,4,20,20", "--width", "32", "--height", "32"]
    assert cli.main([*args, "--frames", "161", "--out", str(tmp_path / "p")]) == 0  # was "could not be read as a video"
    assert prepare.load_prepared(tmp_path / "p").num_frames == 161
    capsys.readouterr()
    limit = limits.LIMITS["num_frames"].high
    assert cli.main([*args, "--frames", str(limit + 4), "--out", str(tmp_path / "q")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"number of frames (--frames) is {limit + 4}" in err and f"at most {limit}" in err
    assert "could not be read" not in err


def test_a_container_saying_1000_fps_is_refused_with_its_timing(tmp_path):
    path = video_at(tmp_path / "k1000.mp4", 1000, seconds=2, size=16)  # 2,000 frames
    with pytest.raises(MaskEditError) as error:
        video.read_conformed(path, 9, 16, 16)
    text = str(error.value)
    assert "implausible frame rate" in text and "2000 frames in 2 s (1000 fps)" in text and "1..240 fps" in text


def test_a_container_without_a_usable_rate_is_read_from_its_frames_and_duration(tmp_path):
    source = video_at(tmp_path / "v25.mp4", 25, seconds=2)
    path = container_says_1k(tmp_path / "v25_1k.mkv", source)
    clip, info = video.read_conformed(path, 9, 32, 32)
    assert info.fps == pytest.approx(25) and any("read at 25 fps, from its 50 frames in 2 s" in n for n in clip.notes)
    assert (clip.num_frames - 1) / clip.fps == pytest.approx(49 / 25, rel=0.02)  # the clip keeps its 2 s
    assert video.read_video(path).fps == pytest.approx(25)


def test_a_plausible_container_rate_is_kept(tmp_path):
    fps, notes = video.source_fps(tmp_path / "x.mp4", 29.97, 60, 2.0)
    assert (fps, notes) == (29.97, [])
    assert video.source_fps(tmp_path / "x.mp4", 0, 10, None) == (16.0, ["frame rate unknown; assumed 16 fps"])
    with pytest.raises(MaskEditError, match="container says 0.01 fps"):
        video.source_fps(tmp_path / "x.mp4", 0.01, 10, None)
