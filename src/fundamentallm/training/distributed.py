"""Data-parallel training over several processes (PyTorch DDP, Li et al. 2020), launched
with torchrun:

    torchrun --nproc-per-node 4 -m fundamentallm train data.txt ...

Every process holds a full replica of the model and trains on its own share of each step's
batches (the sampler deals them out); DDP averages the gradients during backward, so every
replica takes the same step. With N processes and `--batch-size B`, a step sees N x B
sequences: the same step as one process with N x B.

Rank 0 alone writes files (checkpoints, metrics, the console). Every decision that could
differ between processes (when to stop: the clock, Ctrl-C) is rank 0's, broadcast, so no
process ever waits on a collective the others have left.

Without torchrun (no WORLD_SIZE in the environment) `Cluster` is a single process and every
method does nothing: the same loop runs either way.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from fundamentallm.errors import UserError
from fundamentallm.scoring import Shard

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # Small control messages (agree, gather) go through a CPU (gloo) group: over NCCL each
    # would be a GPU round trip and a host sync on every step.
    control: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of `value` over all processes (a collective: every process calls it)."""
        return self.sum(value) / self.world_size if self.distributed else value

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over all processes (a collective: every process calls it)."""
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def shard(self) -> Shard:
        """This process's share of a scoring pass (scoring.py)."""
        return Shard(self.rank, self.world_size, self.sum)

    def agree(self, value: Any) -> Any:
        """Rank 0's `value` (a picklable object), on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, on every process."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def on_main(self, work: Callable[[], T]) -> T | None:
        """`work()` on rank 0 only (its result there, None elsewhere). If it fails with a
        UserError, every process fails with the same message instead of waiting for rank 0."""
        result, error = None, None
        if self.main:
            try:
                result = work()
            except UserError as exc:
                error = str(exc)
        error = self.agree(error)
        if error:
            raise UserError(error)
        return result

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control)

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 does the work first (e.g. building a token cache); the others then find it done."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()


def join_cluster(device: torch.device) -> Cluster:
    """The processes torchrun started (WORLD_SIZE, RANK, LOCAL_RANK), or a single one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Cluster()
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"multi-process training needs CPUs or CUDA GPUs, not {device.type}")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"process {rank} needs GPU {local_rank}, but this machine has "
                            f"{torch.cuda.device_count()}; start fewer processes per node")
        torch.cuda.set_device(local_rank)  # "cuda" now means this process's own GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo") if device.type == "cuda" else None  # None: the gloo default
    return Cluster(rank, world_size, local_rank, control)


def abandon_cluster() -> None:
    """Leave the process group on the way out of a failure (whatever state it is in)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the failure being reported matters, not this one
            pass


def leave_cluster(cluster: Cluster) -> None:
    if cluster.distributed and dist.is_initialized():
        dist.destroy_process_group()
