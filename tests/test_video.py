"""Tests for maskedit.media.video: reading, conforming and writing clips and images."""

import os

import numpy as np
import pytest
from PIL import Image

from maskedit.media import video
from maskedit.errors import MaskEditError
from maskedit.media.video import Clip


def gradient_frames(num_frames=9, height=64, width=96):
    """Smooth moving colour gradient, uint8 (F, H, W, 3)."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [np.stack([(x * 2 + t * 4) % 256, y * 3 % 256, np.full_like(x, 90 + t)], axis=-1) for t in range(num_frames)]
    return np.stack(frames).astype(np.uint8)


def numbered_frames(num_frames, height=16, width=16):
    """Frame i is filled with the value i, so selections can be read back."""
    return np.broadcast_to(np.arange(num_frames, dtype=np.uint8)[:, None, None, None], (num_frames, height, width, 3)).copy()


# ----- frame counts


def test_frame_count_rules():
    assert [n for n in range(1, 50) if video.is_valid_frame_count(n)] == list(range(1, 50, 4))
    assert not video.is_valid_frame_count(0)
    assert video.largest_valid_frame_count(120) == 117
    assert video.largest_valid_frame_count(49) == 49
    assert video.largest_valid_frame_count(52) == 49
    video.check_frame_count(81)
    with pytest.raises(MaskEditError, match="4k\\+1"):
        video.check_frame_count(48)


# ----- reading and writing


def test_mp4_round_trip(tmp_path):
    frames = gradient_frames()
    path = tmp_path / "out" / "clip.mp4"
    video.write_video(path, frames, fps=12.5)
    assert os.listdir(tmp_path / "out") == ["clip.mp4"]
    clip = video.read_video(path)
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(12.5)
    assert np.abs(clip.frames.astype(int) - frames).mean() < 4


def test_gif_and_folder(tmp_path):
    frames = gradient_frames(num_frames=5, height=32, width=48)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    clip = video.read_video(tmp_path / "clip.gif")
    assert clip.frames.shape == (5, 32, 48, 3)
    assert clip.fps == pytest.approx(10)

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 1, 2, 10):  # natural order: 10 comes last
        Image.fromarray(numbered_frames(11)[i]).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    clip = video.read_video(folder, folder_fps=8)
    assert clip.fps == 8
    assert clip.frames[:, 0, 0, 0].tolist() == [0, 1, 2, 10]


def test_folder_of_mixed_sizes_is_refused(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    Image.new("RGB", (32, 16)).save(tmp_path / "b.png")
    with pytest.raises(MaskEditError, match="differ in size"):
        video.read_video(tmp_path)


@pytest.mark.parametrize("make", ["random_mp4", "text", "text_mp4", "missing", "empty_folder", "empty_mp4", "image"])
def test_unreadable_inputs_raise_maskedit_error(tmp_path, make):
    path = {"random_mp4": tmp_path / "bad.mp4", "text": tmp_path / "notes.txt", "text_mp4": tmp_path / "notes.mp4",
            "missing": tmp_path / "nope.mp4", "empty_folder": tmp_path / "empty", "empty_mp4": tmp_path / "empty.mp4",
            "image": tmp_path / "one.png"}[make]
    if make == "random_mp4":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    elif make in ("text", "text_mp4"):
        path.write_text("hello\n" * 100)
    elif make == "empty_folder":
        path.mkdir()
    elif make == "empty_mp4":
        path.write_bytes(b"")
    elif make == "image":
        Image.new("RGB", (16, 16)).save(path)
    with pytest.raises(MaskEditError) as info:
        video.read_video(path)
    assert type(info.value) is MaskEditError
    assert str(path) in str(info.value)


def test_write_video_refuses_odd_size_and_leaves_nothing(tmp_path):
    with pytest.raises(MaskEditError, match="even"):
        video.write_video(tmp_path / "odd.mp4", gradient_frames(height=33, width=48), fps=16)
    assert os.listdir(tmp_path) == []


def test_write_video_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    def failing_write_frames(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"half a video")
        yield
        raise BrokenPipeError("ffmpeg went away")

    monkeypatch.setattr(video.imageio_ffmpeg, "write_frames", failing_write_frames)
    with pytest.raises(MaskEditError, match="could not write"):
        video.write_video(tmp_path / "clip.mp4", gradient_frames(), fps=16)
    assert os.listdir(tmp_path) == []


def test_write_video_refuses_bad_arrays(tmp_path):
    with pytest.raises(MaskEditError, match="uint8"):
        video.write_video(tmp_path / "a.mp4", gradient_frames().astype(np.float32), fps=16)
    with pytest.raises(MaskEditError, match="fps"):
        video.write_video(tmp_path / "a.mp4", gradient_frames(), fps=0)


def test_image_round_trip_and_errors(tmp_path):
    image = gradient_frames(1)[0]
    video.write_image(tmp_path / "sub" / "frame.png", image)
    assert np.array_equal(video.read_image(tmp_path / "sub" / "frame.png"), image)
    Image.fromarray(image).convert("RGBA").save(tmp_path / "rgba.png")
    assert video.read_image(tmp_path / "rgba.png").shape == image.shape
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(MaskEditError, match="could not be read as an image"):
        video.read_image(tmp_path / "bad.png")
    with pytest.raises(MaskEditError):
        video.read_image(tmp_path / "missing.png")


# ----- selecting frames


def test_select_first_and_uniform():
    frames = numbered_frames(20)
    kept, note = video.select_frames(frames, 5, mode="first", start=3)
    assert kept[:, 0, 0, 0].tolist() == [3, 4, 5, 6, 7]
    assert "5 of 20" in note
    kept, note = video.select_frames(frames, 5, mode="uniform")
    assert kept[:, 0, 0, 0].tolist() == [0, 5, 10, 14, 19]  # linspace 0, 4.75, 9.5, 14.25, 19 rounded
    kept, _ = video.select_frames(frames, 9, mode="uniform", start=10)
    assert kept[:, 0, 0, 0].tolist() == [10, 11, 12, 13, 15, 16, 17, 18, 19]  # 14.5 rounds up


def test_select_uniform_indices_strictly_increase():
    for total in range(5, 60):
        for num in range(5, total + 1, 4):
            indices = video.select_frame_indices(total, num, "uniform")
            assert indices[0] == 0 and indices[-1] == total - 1
            assert np.all(np.diff(indices) >= 1)


def test_select_all_frames_is_unchanged():
    frames = numbered_frames(9)
    kept, note = video.select_frames(frames, 9)
    assert kept is frames and note is None


def test_select_errors():
    with pytest.raises(MaskEditError, match="4k\\+1"):
        video.select_frames(numbered_frames(20), 8)
    with pytest.raises(MaskEditError, match="has 12 frames .* 17 are needed"):
        video.select_frames(numbered_frames(12), 17)
    with pytest.raises(MaskEditError, match="8 from frame 4"):
        video.select_frames(numbered_frames(12), 9, start=4)
    with pytest.raises(MaskEditError, match="3 frame"):
        video.select_frames(numbered_frames(3), 1)
    with pytest.raises(MaskEditError, match="mode"):
        video.select_frames(numbered_frames(20), 5, mode="random")


# ----- geometry and conforming


def test_resize_center_crop_sizes_and_no_op():
    frames = gradient_frames(2, height=72, width=128)
    out = video.resize_center_crop(frames, 64, 48)
    assert out.shape == (2, 48, 64, 3) and out.dtype == np.uint8
    out = video.resize_center_crop(frames, 32, 64)  # portrait from landscape: crops the sides
    assert out.shape == (2, 64, 32, 3)
    same = gradient_frames(2, height=48, width=64)
    assert video.resize_center_crop(same, 64, 48) is same
    with pytest.raises(MaskEditError, match="multiples of 16"):
        video.resize_center_crop(frames, 60, 48)


def test_resize_center_crop_keeps_the_centre():
    frames = np.zeros((1, 64, 128, 3), np.uint8)
    frames[:, :, 32:96] = 255  # the central half is white
    out = video.resize_center_crop(frames, 64, 64)  # no scaling, crop columns 32..95
    assert out.min() == 255


def test_default_size():
    assert video.default_size(720, 1280) == video.LANDSCAPE_SIZE == (832, 480)
    assert video.default_size(1280, 720) == video.PORTRAIT_SIZE == (480, 832)
    assert video.default_size(512, 512) == video.LANDSCAPE_SIZE


def test_conform_clip_defaults_and_notes():
    clip = Clip(gradient_frames(30, height=36, width=64), fps=30.0)
    out = video.conform_clip(clip, width=64, height=32)
    assert out.num_frames == 29 and (out.width, out.height) == (64, 32)
    assert out.fps == pytest.approx(30.0 * 28 / 29)
    notes = " | ".join(out.notes)
    assert "kept 29 of 30 frames" in notes and "fps 30 →" in notes and "centre-cropped to 64x32" in notes

    out = video.conform_clip(clip, num_frames=9, width=64, height=32, mode="first", start=2)
    assert out.num_frames == 9 and out.fps == 30.0
    assert not any("fps" in note for note in out.notes)


def test_conform_clip_caps_at_81_and_uses_default_size():
    clip = Clip(np.zeros((100, 48, 64, 3), np.uint8), fps=24.0)
    out = video.conform_clip(clip)
    assert out.num_frames == 81 and (out.width, out.height) == video.LANDSCAPE_SIZE


def test_conform_clip_that_already_fits_changes_nothing():
    clip = Clip(gradient_frames(9, height=32, width=48), fps=16.0)
    out = video.conform_clip(clip, width=48, height=32)
    assert out.notes == [] and out.fps == 16.0 and np.array_equal(out.frames, clip.frames)


def test_fit_and_check_image_size():
    image = gradient_frames(1, height=480, width=640)[0]
    with pytest.raises(MaskEditError, match="640x480 but the clip is 832x480.*fit"):
        video.check_image_size(image, 832, 480)
    fitted = video.fit_image(image, 832, 480)
    assert fitted.shape == (480, 832, 3)
    video.check_image_size(fitted, 832, 480)


# ----- reading only what is kept (issue 13)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_frames=9), dict(num_frames=5, mode="first", start=3),
                                    dict(num_frames=9, width=32, height=48), dict(num_frames=17, start=4),
                                    dict(num_frames=21, width=96, height=64)])
def test_read_conformed_equals_conform_clip_of_read_video(tmp_path, kwargs):
    path = tmp_path / "clip.mp4"
    video.write_video(path, gradient_frames(num_frames=23, height=72, width=100), fps=8.0)
    expected = video.conform_clip(video.read_video(path), **kwargs)
    clip, info = video.read_conformed(path, **kwargs)
    assert np.array_equal(clip.frames, expected.frames)
    assert clip.fps == expected.fps and clip.notes == expected.notes
    assert (info.width, info.height, info.num_frames, info.fps) == (100, 72, 23, 8.0)


def test_read_conformed_of_a_folder_reads_only_the_kept_images(tmp_path, monkeypatch):
    frames = gradient_frames(num_frames=13, height=32, width=48)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"f{i}.png")
    expected = video.conform_clip(video.read_video(tmp_path), 5, 32, 32)
    read = []
    original = video.read_image
    monkeypatch.setattr(video, "read_image", lambda p: read.append(p.name) or original(p))
    clip, info = video.read_conformed(tmp_path, 5, 32, 32)
    assert np.array_equal(clip.frames, expected.frames) and clip.notes == expected.notes
    assert read == ["f0.png", "f3.png", "f6.png", "f9.png", "f12.png"] and info.num_frames == 13


def _synthetic_source(path, width, height, seconds, fps=30):
    """A cheap-to-encode moving test pattern (ffmpeg's lavfi source), written straight to `path`."""
    import subprocess

    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"color=c=0x3366cc:s={width}x{height}:r={fps}:d={seconds},drawbox=x='t*100':y=100:w=200:h=200:"
                    "color=red:t=fill", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
                   check=True)


def test_memory_is_bounded_by_the_conformed_clip_not_the_source(tmp_path):
    """A 10-second 1080p clip (300 frames, 1.87 GB decoded) conformed to 17 frames of 832x480 (20 MB):
    the peak of Python/numpy allocations stays within the conformed clip plus a few source frames."""
    import tracemalloc

    path = tmp_path / "big.mp4"
    _synthetic_source(path, 1920, 1080, 10)
    source_frame = 1920 * 1080 * 3
    tracemalloc.start()
    try:
        clip, info = video.read_conformed(path, 17, 832, 480)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.num_frames == 300 and clip.frames.shape == (17, 480, 832, 3)
    conformed = clip.frames.nbytes
    assert peak < conformed + 4 * source_frame, (peak, conformed)  # the whole source would be 300 frames
    assert "warning" not in " ".join(clip.notes)


def test_sources_beyond_the_limits_are_refused_before_decoding(tmp_path, monkeypatch):
    from maskedit import limits

    wide = tmp_path / "wide.mp4"
    video.write_video(wide, np.zeros((5, 16, limits.MAX_SOURCE_SIDE + 16, 3), np.uint8), 8.0)
    for read in (video.read_video, video.read_conformed, video.probe_video):
        with pytest.raises(MaskEditError, match=rf"wide.mp4 is too large to edit: it is 4112x16, larger than 4096"):
            read(wide)
    monkeypatch.setattr(video, "MAX_SOURCE_SECONDS", 1.0)
    long = tmp_path / "long.mp4"
    video.write_video(long, gradient_frames(num_frames=17, height=16, width=16), 8.0)
    with pytest.raises(MaskEditError, match=r"it lasts 2.1\d* s, longer than 1 s"):
        video.read_conformed(long)
    monkeypatch.setattr(video, "MAX_SOURCE_FRAMES", 4)
    for i in range(5):
        Image.fromarray(gradient_frames(1, 16, 16)[0]).save(tmp_path / f"{i}.png")
    with pytest.raises(MaskEditError, match="holds 5 frames, more than 4"):
        video.read_conformed(tmp_path)


def test_a_truncated_file_is_read_with_a_warning(tmp_path):
    path = tmp_path / "long.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (41, 32, 32, 3), dtype=np.uint8)  # the frames fill the file
    video.write_video(path, noise, 8.0)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    clip, info = video.read_conformed(cut, 5, 32, 32)
    assert 5 <= info.num_frames < 41 and clip.frames.shape == (5, 32, 32, 3)
    assert clip.notes[0].startswith(f"warning: {cut} looks truncated or damaged: its header says 5.1")
    assert f"only {info.num_frames} frames could be decoded" in clip.notes[0]
    clean, _ = video.read_conformed(path, 5, 32, 32)
    assert not any(note.startswith("warning") for note in clean.notes)
