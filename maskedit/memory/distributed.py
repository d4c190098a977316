"""Several GPUs (or CPU processes): data-parallel LoRA training and generation spread over processes.

`accelerate launch -m maskedit train …` (or `torchrun -m maskedit …`) starts one process per GPU with
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set; `init_distributed()` reads them and
joins the process group (NCCL on CUDA, gloo on CPU). Without them it returns None and everything runs
in one process as before.

Training: each process encodes the samples and trains its share of every global batch; the LoRA
gradients are summed over processes (`all_reduce_sum_`), each sample's loss weighted 1 / global batch,
so one step equals a single process's step on the whole batch with the averaged loss (see
`training.LoraTrainer`). Only rank 0 writes checkpoints and the LoRA files.

Generation: `shard(jobs)` gives each process its own clips or seeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import MaskEditError


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def all_reduce_sum_(self, tensors: list, value: float | None = None) -> float | None:
        """Sum `tensors` (in place; None entries count as zeros and are left None) and `value` over all
        processes, in one collective; returns the summed value."""
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        present = [t for t in tensors if t is not None]
        if len(present) != len(tensors):
            raise MaskEditError("every process must have a gradient for every LoRA parameter")
        extra = torch.tensor([0.0 if value is None else float(value)], dtype=torch.float64)
        groups: dict = {}
        for t in present:
            groups.setdefault((t.device, t.dtype), []).append(t)
        for (device, dtype), group in groups.items():
            flat = _flatten_dense_tensors(group)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for t, reduced in zip(group, _unflatten_dense_tensors(flat, group)):
                t.copy_(reduced)
        extra = extra.to(self.device)
        dist.all_reduce(extra, op=dist.ReduceOp.SUM)
        return None if value is None else float(extra.item())

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast_object(self, obj):
        import torch.distributed as dist

        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def shard(self, jobs: list) -> list:
        """This process's share of `jobs` (round robin: rank, rank + world, …)."""
        return shard(jobs, self.rank, self.world_size)


def shard(jobs: list, rank: int, world_size: int) -> list:
    return list(jobs)[rank::world_size]


def launched_rank() -> int:
    """This process's rank under the launcher (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def process_share(jobs: list) -> list:
    """This launched process's share of independent jobs (clips, seeds); needs no process group."""
    return shard(jobs, launched_rank(), launched_world_size())


def use_local_device() -> None:
    """Under a launcher with CUDA, make this process's GPU (LOCAL_RANK) the current one."""
    if launched_world_size() > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def launched_world_size() -> int:
    """Processes started by the launcher (1 when not launched by accelerate/torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(backend: str | None = None) -> DistributedContext | None:
    """Join the launcher's process group (env:// rendezvous); None when there is only one process."""
    if launched_world_size() <= 1:
        return None
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if backend is None:
        use_cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistributedContext(rank, world, local_rank, backend)


def shutdown(context: DistributedContext | None) -> None:
    import torch.distributed as dist

    if context is not None and dist.is_initialized():
        dist.destroy_process_group()
