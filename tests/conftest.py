"""Shared fixtures: a small synthetic clip (in memory and as an mp4) and the tiny random pipeline.

Tests never touch the network: HF_HUB_OFFLINE is set before anything imports huggingface_hub.
Torch runs on one CPU thread (MASKEDIT_TEST_THREADS overrides): the tiny model's ops are too small to
gain from more, and on a small shared machine oversubscribed OpenMP threads made the suite 5-10x slower.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

TEST_THREADS = int(os.environ.get("MASKEDIT_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _test_threads():
    """Every test starts with TEST_THREADS torch threads, whatever an earlier test (e.g. a benchmark's
    main()) set."""
    torch.set_num_threads(TEST_THREADS)
    yield


@pytest.fixture(scope="session", autouse=True)
def _session_lora_cache(tmp_path_factory):
    """Module- and session-scoped fixtures that train (set up before any per-test fixture) cache their LoRAs
    in a temporary folder, never in ~/.cache."""
    old = os.environ.get("MASKEDIT_CACHE_DIR")
    os.environ["MASKEDIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("lora_cache_session"))
    yield
    if old is None:
        os.environ.pop("MASKEDIT_CACHE_DIR", None)
    else:
        os.environ["MASKEDIT_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _lora_cache_dir(tmp_path_factory, monkeypatch):
    """Every test has its own empty LoRA cache (MASKEDIT_CACHE_DIR), so no test writes to ~/.cache and no
    test reuses another's LoRA. Returns the folder."""
    folder = tmp_path_factory.mktemp("lora_cache")
    monkeypatch.setenv("MASKEDIT_CACHE_DIR", str(folder))
    return folder


CLIP_FRAMES = 9
CLIP_SIZE = 64  # width = height
CLIP_FPS = 8.0
BOX_SIZE = 20


def make_synthetic_clip(num_frames=CLIP_FRAMES, height=CLIP_SIZE, width=CLIP_SIZE, box=BOX_SIZE, step=3):
    """A textured coloured box moving right and down over a smooth gradient.

    Returns (frames uint8 (F, H, W, 3), region bool (F, H, W)) with region True exactly on the box.
    """
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    region = np.zeros((num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        background = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                               np.full_like(x, 60 + 10 * t)], axis=-1)
        frames[t] = background.astype(np.uint8)
        x0, y0 = 6 + step * t, 10 + (step // 2) * t
        x0, y0 = min(x0, width - box), min(y0, height - box)
        by, bx = np.mgrid[0:box, 0:box]
        checker = ((by // 4 + bx // 4) % 2).astype(bool)
        patch = np.where(checker[..., None], np.array([220, 40, 40]), np.array([250, 210, 30])).astype(np.uint8)
        frames[t, y0:y0 + box, x0:x0 + box] = patch
        region[t, y0:y0 + box, x0:x0 + box] = True
    return frames, region


@pytest.fixture
def synthetic_clip():
    """(frames uint8 (9, 64, 64, 3), region bool (9, 64, 64)): a textured box moving over a gradient."""
    return make_synthetic_clip()


@pytest.fixture
def clip_file(tmp_path, synthetic_clip):
    """The synthetic clip written as an H.264 mp4 at 8 fps; returns its path."""
    from maskedit.media.video import write_video

    path = tmp_path / "inputs" / "clip.mp4"
    write_video(path, synthetic_clip[0], CLIP_FPS)
    return path


@pytest.fixture
def mask_file(tmp_path, synthetic_clip):
    """The synthetic clip's region as a mask video (white = edit) at 8 fps; returns its path."""
    from maskedit.method.masks import write_mask_video

    path = tmp_path / "inputs" / "mask.mp4"
    write_mask_video(path, synthetic_clip[1], CLIP_FPS)
    return path


@pytest.fixture
def tiny_pipe():
    """A fresh tiny random Wan I2V pipeline (`maskedit.models.loading.build_tiny_pipeline()`), on the CPU."""
    from maskedit.models.loading import build_tiny_pipeline

    return build_tiny_pipeline()


@pytest.fixture
def step_counter(monkeypatch):
    """Counts LoraTrainer.train_step calls (a list that grows by one per step; a cache hit runs none)."""
    from maskedit.method.training import LoraTrainer

    calls, original = [], LoraTrainer.train_step

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(LoraTrainer, "train_step", counting)
    return calls


@pytest.fixture
def nan_loss_at(monkeypatch):
    """`nan_loss_at(n)`: the n-th LoraTrainer.flow_matching_loss call of the test returns NaN (a diverging run)."""
    from maskedit.method.training import LoraTrainer

    original = LoraTrainer.flow_matching_loss

    def patch(call: int) -> None:
        calls = [0]

        def nan_at(self, sample, t, noise):
            calls[0] += 1
            loss = original(self, sample, t, noise)
            return loss * float("nan") if calls[0] == call else loss

        monkeypatch.setattr(LoraTrainer, "flow_matching_loss", nan_at)

    return patch


@pytest.fixture(scope="module")
def prepared_edit():
    """(PreparedClip of the synthetic clip with its box region, the edited first frame: the box painted blue)."""
    from maskedit.media.video import Clip
    from maskedit.workflow.prepare import PreparedClip

    frames, region = make_synthetic_clip()
    edited = frames[0].copy()
    edited[region[0]] = (30, 60, 240)
    return PreparedClip(Clip(frames, CLIP_FPS), region), edited
