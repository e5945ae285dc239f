"""Several training processes as one: torch.distributed set up from torchrun's environment.

    torchrun --nproc_per_node 2 -m dnas_hw.app.cli train --data D --arch A --out O

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
unevenly.

Embedding tables keep sparse gradients, but not through DDP: DDP all-reduces
each table's sparse gradient on its own (26 collectives a step for Criteo,
measured to cost more than the whole step saves on 2 processes). Instead the
tables are left out of DDP and `SparseGradGather` sends all their gradients in
one all-gather per step, from a hook that runs when the last table's gradient
has been accumulated. A table's gathered gradient holds every rank's rows,
values divided by the world size: the rows one process would have, so the
sparse optimizers step exactly as in one process (up to rounding).
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


def _is_sparse(module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding) and module.sparse


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(dense parameters, sparse-gradient embedding weights).

    The split the optimizers need (`dnas_hw.train.make_optimizers`) and
    `data_parallel` too: DistributedDataParallel takes the dense ones, the
    sparse ones go to a `SparseGradGather`.
    """
    sparse_ids = {id(m.weight) for m in model.modules() if _is_sparse(m)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) not in sparse_ids], [p for p in params if id(p) in sparse_ids]


def data_parallel(model: nn.Module) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when several processes train, else `model` itself.

    Sparse-gradient embedding tables are left to a `SparseGradGather` (see the
    module docstring). Buffers are not broadcast before each forward: the
    models' buffers are constant index tensors, identical on every rank.
    """
    if not is_active():
        return model
    sparse = {id(p) for p in split_parameters(model)[1]}
    tables = [(name, p) for name, p in model.named_parameters() if id(p) in sparse]
    if tables and not hasattr(model, "_dnas_hw_sparse_gather"):  # once per model: its hooks stay registered
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, [n for n, _ in tables])
        with torch.no_grad():
            for _, p in tables:  # DDP broadcasts rank 0's weights; do the same for the tables it leaves out
                dist.broadcast(p, src=0)
        model._dnas_hw_sparse_gather = SparseGradGather([p for _, p in tables])
    return nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)


class SparseGradGather:
    """Averages the sparse gradients of `tables` (weights [rows_f, d_f]) over ranks, one all-gather per step.

    Each table's gradient is a sparse COO tensor (indices [1, n_f], values [n_f, d_f]).
    Per step: one all-gather of the counts n_f, one of all tables' row indices,
    and one of the values per distinct width d, each padded to the largest
    rank's size. Table f's new gradient: every rank's rows in rank order (the
    order one process has them in, as ranks hold contiguous parts of the
    batch), values divided by the world size.
    """

    def __init__(self, tables: list[nn.Parameter]):
        self.tables = tables
        self.by_width: dict[int, list[int]] = {}
        for f, p in enumerate(tables):
            self.by_width.setdefault(p.shape[1], []).append(f)
        self._arrived = 0
        for p in tables:
            p.register_post_accumulate_grad_hook(self._arrive)

    def _arrive(self, _param: torch.Tensor) -> None:
        self._arrived += 1
        if self._arrived == len(self.tables):
            self._arrived = 0
            self.gather()

    def gather(self) -> None:
        grads = [p.grad for p in self.tables]
        if not all(g.is_sparse for g in grads):
            raise RuntimeError("SparseGradGather: a table's gradient is dense; build its embedding with sparse=True")
        counts = _all_gather_padded(torch.tensor([g._nnz() for g in grads]))  # [world, F]
        rows = _all_gather_padded(torch.cat([g._indices()[0] for g in grads]), counts.sum(dim=1))
        values = {
            d: _all_gather_padded(torch.cat([grads[f]._values() for f in members]), counts[:, members].sum(dim=1))
            for d, members in self.by_width.items()
        }
        parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.tables]
        for r, n in enumerate(counts):
            rows_r = rows[r].split(n.tolist())
            for d, members in self.by_width.items():
                for f, v in zip(members, values[d][r].split(n[members].tolist())):
                    parts[f].append((rows_r[f], v))
        world = len(counts)
        for p, part in zip(self.tables, parts):
            ids = torch.cat([i for i, _ in part]).unsqueeze(0)
            vals = torch.cat([v for _, v in part]).div_(world)
            p.grad = torch.sparse_coo_tensor(ids, vals, p.shape, is_coalesced=False, check_invariants=False)


def _all_gather_padded(t: torch.Tensor, sizes: torch.Tensor | None = None) -> list[torch.Tensor] | torch.Tensor:
    """Every rank's `t` (first dims `sizes[r]`, padded to the largest for the collective).

    Without `sizes` (equal shapes) the result is stacked: [world, *t.shape].
    """
    world = world_size()
    if sizes is None:
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t)
        return torch.stack(out)
    longest = int(sizes.max())
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype)
    padded[: len(t)] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [o[: int(n)] for o, n in zip(out, sizes)]


def loss_weight(local_rows: int, global_rows: int) -> float:
    """The factor on a rank's mean loss over its `local_rows` of a `global_rows` batch.

    DDP averages gradients over ranks; with this factor the average is the
    gradient of the mean over the whole batch. 1.0 when the batch splits evenly.
    """
    return local_rows * world_size() / global_rows


def average_grads(params: Sequence[nn.Parameter]) -> None:
    """Replace the dense gradients of `params` by their mean over ranks, in one all-reduce.

    For steps that do not go through DistributedDataParallel. Every rank must pass
    the same parameters with the same set of gradients present (a parameter
    without a gradient is skipped; sparse gradients belong to `SparseGradGather`).
    """
    if not is_active():
        return
    grads = [p.grad for p in params if p.grad is not None and not p.grad.is_sparse]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world_size())
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def same_on_all_ranks(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether `tensors` hold the same values on every rank (the same answer on every rank; inf counts as a value)."""
    if not is_active():
        return True
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    both = torch.cat([flat, -flat])  # one MAX all-reduce gives the maximum and minus the minimum
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return bool(torch.equal(both[: len(flat)], -both[len(flat):]))
