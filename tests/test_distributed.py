"""Data-parallel training (maskedit.memory.distributed): two gloo processes on CPU against one process.

The workers join the group exactly as under `accelerate launch` / `torchrun` (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT in the environment, then `init_distributed()`); torch.multiprocessing only
starts them. After one step on two windows, the LoRA of both ranks must equal, bit for bit, a single
process's step on both windows with the averaged loss (batch_size=2).
"""

import os
import socket

import torch
import torch.multiprocessing as mp

from maskedit.memory.distributed import DistributedContext, init_distributed, shard, shutdown
from maskedit.models.loading import build_tiny_pipeline
from maskedit.method.training import LoraTrainer, TrainConfig, clip_items

from conftest import make_synthetic_clip

WORLD = 2


def two_windows():
    frames, region = make_synthetic_clip()  # 9 frames → windows of 5 at 0 and 4
    items = clip_items(frames, region, "p3rs0n, a box", window=5, stride=4)
    assert len(items) == 2
    return items


def _worker(rank, port, folder):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = init_distributed()
    try:
        trainer = LoraTrainer(build_tiny_pipeline(), two_windows(), TrainConfig(steps=1, checkpoint_every=0),
                              distributed=context)
        loss = trainer.train_step()
        torch.save({"params": [p.detach().clone() for p in trainer.params], "loss": loss,
                    "rank": context.rank, "backend": context.backend}, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        shutdown(context)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_step_equals_one_process_on_both_samples(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["backend"] for r in results] == ["gloo", "gloo"]

    single = LoraTrainer(build_tiny_pipeline(), two_windows(), TrainConfig(steps=1, batch_size=2, checkpoint_every=0))
    loss = single.train_step()
    for result in results:
        assert result["loss"] == loss  # the averaged loss
        assert all(torch.equal(a, b) for a, b in zip(single.params, result["params"]))

    one_sample = LoraTrainer(build_tiny_pipeline(), two_windows(), TrainConfig(steps=1, checkpoint_every=0))
    one_sample.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(single.params, one_sample.params))  # the batch mattered


def test_global_batch_schedule_keeps_single_process_behaviour():
    # batch_size 1 in one process draws exactly what the trainer always drew: positions = steps
    trainer = LoraTrainer(build_tiny_pipeline(), two_windows(), TrainConfig(steps=2, batch_size=2, checkpoint_every=0))
    assert trainer.global_batch == 2
    assert {id(trainer.sample_for_step(i)) for i in range(2)} == {id(s) for s in trainer.samples}


def test_without_a_launcher_there_is_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() is None
    shutdown(None)


def test_generation_jobs_are_sharded_round_robin():
    seeds = list(range(7))
    parts = [shard(seeds, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == seeds
    assert DistributedContext(1, 3, 1, "gloo").shard(seeds) == [1, 4]
    assert DistributedContext(0, 2, 0, "gloo").is_main


def test_launched_processes_share_independent_jobs(monkeypatch):
    from maskedit.memory.distributed import process_share

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert process_share([0, 1, 2]) == [0, 1, 2]  # no launcher: everything here
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert process_share([0, 1, 2, 3, 4]) == [1, 3]


def test_generate_seeds_writes_one_folder_per_seed(tmp_path, clip_file, synthetic_clip):
    import PIL.Image

    from maskedit.workflow import prepare
    from maskedit.interfaces.cli.main import main

    prepared = prepare.prepare_clip(clip_file, box="10,10,40,40", width=64, height=64)
    prepare.save_prepared(prepared, tmp_path / "prepared")
    PIL.Image.fromarray(255 - prepared.frames[0]).save(tmp_path / "edited.png")
    code = main(["generate", "--prepared", str(tmp_path / "prepared"), "--edited-frame", str(tmp_path / "edited.png"),
                 "--edit-prompt", "a box", "--model", "tiny", "--method", "no-lora", "--steps", "2", "--seeds", "3,5",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seed_3", "seed_5"]
    assert all((tmp_path / "out" / f"seed_{s}" / "edited.mp4").is_file() for s in (3, 5))
    assert main(["generate", "--prepared", str(tmp_path / "prepared"), "--edited-frame", str(tmp_path / "edited.png"),
                 "--edit-prompt", "a box", "--model", "tiny", "--method", "no-lora", "--seeds", "1,x",
                 "--out", str(tmp_path / "bad")]) == 2
