"""Several training processes as one: torch.distributed set up from torchrun's environment.

    torchrun --nproc_per_node 2 -m dnas_hw.cli train --data D --arch A --out O

torchrun sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`;
`session()` joins the process group they describe (gloo for CPU tensors, and
nccl for CUDA tensors when a GPU is present) and leaves it at the end. Without
them, or with `WORLD_SIZE=1`, every function here is the one-process identity:
rank 0 of 1, no communication.

Data parallel training with the same numbers as one process: every rank walks
the same global batches and takes its contiguous part of each
(`iterate_batches(..., shard=(rank, world))`); DistributedDataParallel averages
the ranks' gradients. Each rank's loss is weighted by `loss_weight` so that
the average is the global batch mean even when a short last batch splits
unevenly. Embedding tables keep sparse gradients: DDP all-reduces a sparse
gradient as a sparse tensor (gloo), which the sparse optimizers take as is.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from dnas_hw.errors import UserError


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Whether this process writes outputs (rank 0)."""
    return rank() == 0


def shard() -> tuple[int, int]:
    """`(rank, world)`, as `iterate_batches(..., shard=)` takes it."""
    return rank(), world_size()


def _backend() -> str:
    # A device-keyed backend: collectives on CPU tensors go through gloo, on CUDA tensors through nccl.
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Join the process group torchrun describes (if any) for the duration of the block."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        yield
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE={world} but {missing} not set: launch with torchrun")
    dist.init_process_group(backend=_backend())
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if is_active():
        dist.barrier()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The element-wise sum of `values` over all ranks (float64)."""
    if not is_active():
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def data_parallel(model: nn.Module) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when several processes train, else `model` itself.

    Buffers are not broadcast before each forward: the models' buffers are
    constant index tensors, identical on every rank.
    """
    if not is_active():
        return model
    return nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)


def loss_weight(local_rows: int, global_rows: int) -> float:
    """The factor on a rank's mean loss over its `local_rows` of a `global_rows` batch.

    DDP averages gradients over ranks; with this factor the average is the
    gradient of the mean over the whole batch. 1.0 when the batch splits evenly.
    """
    return local_rows * world_size() / global_rows
