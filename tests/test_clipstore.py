"""Long clips on disk (METHOD.md §7b): frames decoded into memory-mapped files, ffmpeg selections of thousands of
frames, streamed video writing."""

import numpy as np
import pytest

from maskedit.errors import MaskEditError
from maskedit.media import clipstore, video


def _long_clip(num_frames=301, height=32, width=48):
    """A clip whose every frame is told apart by its index (a bright bar at a position and a level per frame)."""
    t = np.arange(num_frames)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = (t * 7 % 256)[:, None, None]
    frames[..., 1] = (t // 3 % 256)[:, None, None]
    for i in range(num_frames):
        frames[i, :, i % width, 2] = 255
    return frames


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    video.write_video(path, _long_clip(), 24.0)
    return path


@pytest.mark.parametrize("num_frames, mode, start", [(297, "uniform", 0), (261, "first", 17), (149, "uniform", 4)])
def test_read_conformed_into_a_memmap_equals_the_in_memory_read(long_file, tmp_path, num_frames, mode, start):
    """Long selections (more than ffmpeg's select terms: a range, or picked from every frame) give exactly the frames
    conform_clip(read_video()) keeps, written into a memory-mapped .npy."""
    expected = video.conform_clip(video.read_video(long_file), num_frames, 32, 32, mode, start)
    clip, info = video.read_conformed(long_file, num_frames, 32, 32, mode, start, into=tmp_path / "frames.npy")
    assert isinstance(clip.frames, np.memmap) and not clip.frames.flags.writeable
    np.testing.assert_array_equal(clip.frames, expected.frames)
    assert clip.fps == pytest.approx(expected.fps) and info.num_frames == 301
    in_memory, _ = video.read_conformed(long_file, num_frames, 32, 32, mode, start)
    np.testing.assert_array_equal(in_memory.frames, expected.frames)
    assert not list(tmp_path.glob(".*partial*"))


def test_array_writer_leaves_nothing_when_it_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with clipstore.array_writer(tmp_path / "a.npy", (4, 2, 2), np.uint8) as out:
            out[0] = 1
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with clipstore.array_writer(tmp_path / "a.npy", (4, 2, 2), bool) as out:
        out[1:] = True
    array = clipstore.open_array(tmp_path / "a.npy")
    assert clipstore.is_mapped(array[1:3]) and clipstore.mean_over_frames(array, 1) == 1.0
    assert clipstore.mean_over_frames(array) == 0.75
    with pytest.raises(MaskEditError, match="prepare the clip again"):
        clipstore.open_array(tmp_path / "missing.npy")


def test_video_writer_streams_frames_and_refuses_bad_ones(tmp_path, long_file):
    frames = _long_clip(40)
    with video.video_writer(tmp_path / "v.mp4", 48, 32, 24.0) as send:
        send(frames[:10])
        for frame in frames[10:]:
            send(frame)
    assert video.probe_video(tmp_path / "v.mp4").num_frames == 40
    with pytest.raises(MaskEditError, match="expected uint8"):
        with video.video_writer(tmp_path / "w.mp4", 48, 32, 24.0) as send:
            send(frames[0, :16])
    with pytest.raises(KeyError):  # the caller's own error passes through as it is; no file is left
        with video.video_writer(tmp_path / "x.mp4", 48, 32, 24.0) as send:
            send(frames[0])
            raise KeyError("caller")
    assert not (tmp_path / "w.mp4").exists() and not (tmp_path / "x.mp4").exists()
    picked = video.read_frames_at(long_file, range(0, 300, 1))
    assert picked.shape[0] == 300


def test_array_digest_of_a_long_array_is_fed_in_chunks_and_unchanged(monkeypatch, tmp_path):
    import hashlib

    from maskedit.media import hashing

    array = np.random.default_rng(0).integers(0, 255, (37, 6, 5, 3), dtype=np.uint8)
    reference = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    reference.update(array.tobytes())
    monkeypatch.setattr(hashing, "DIGEST_CHUNK_BYTES", 500)
    assert hashing.array_digest(array) == reference.hexdigest()
    assert hashing.array_digest(clipstore.copy_array(array, tmp_path / "a.npy")) == reference.hexdigest()
