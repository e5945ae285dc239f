"""DLRM with torchrec-sharded tables against the unsharded DLRM, under torchrun (gloo, CPU).

    PYTHONPATH=. OMP_NUM_THREADS=1 /tmp/trvenv/bin/torchrun --standalone --nproc_per_node 2 \
        examples/torchrec/check_sharded.py [--batch-size 256 2048 8192] [--repeats 20]

(a venv with torchrec: see requirements.txt here). For each CPU sharding type:

1. forward: each rank's contiguous part of a global batch through the sharded model
   equals the unsharded `dnas_hw.dlrm.model.DLRM` on those rows;
2. one training step on the global batch (sharded: exact SGD fused into the tables'
   backward, DDP and SGD for the rest) gives the model one step of
   `dnas_hw.train.train_step` gives (SGD, sparse gradients), at the same learning
   rate: torchrec divides the embedding gradients by the world size in the
   backward all-to-all (its default), as DDP averages the dense ones. Compared:
   the logits, and this rank's table shards against the unsharded tables (with
   the size of the step's update, so that a mismatch cannot hide under it);
3. the sparse part's time per global batch size, forward and forward + backward
   (with the fused update), against the per-rank unsharded lookups (no
   communication): what a LUT for sharded tables must hold.

Rank 0 prints the results.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

from dnas_hw.dlrm.arch import Arch
from dnas_hw.dlrm.model import build_model
from dnas_hw.train import make_optimizers, split_parameters, train_step
from examples.torchrec.sparse import SHARDING_TYPES, load_tables, shard, with_torchrec_tables

LR = 0.1
ARCH = Arch(
    num_dense=13,
    bottom_mlp=(64, 16),
    emb_dims=tuple(16 if f % 2 else 8 for f in range(26)),  # multiples of 4, as torchrec's kernels need
    emb_rows=tuple(100_000 + 37 * f for f in range(26)),
    interaction="dot",
    top_mlp=(64,),
)


def batch(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(size, ARCH.num_dense, generator=g), torch.randint(0, 10**7, (size, ARCH.num_sparse), generator=g),
            torch.randint(0, 2, (size,), generator=g).float())


def sharded_dlrm(sharding: str) -> nn.Module:
    model, tables = with_torchrec_tables(build_model(ARCH, seed=0))
    sharded = shard(model, sharding, lr=LR)
    load_tables(sharded, tables)
    return sharded


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 2):
        dist.barrier()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1e3


def table_gap(sharded: nn.Module, reference: nn.Module) -> float:
    """Max |this rank's table shards - the same part of the reference's tables|."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    worst = 0.0
    for key, value in sharded.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = reference.sparse_arch.tables[int(key.split(".")[-2][1:])].table.weight
            for s in value.local_shards():
                (r0, c0), (nr, nc) = s.metadata.shard_offsets, s.metadata.shard_sizes
                worst = max(worst, (s.tensor - full[r0 : r0 + nr, c0 : c0 + nc]).abs().max().item())
    return worst


def check(sharding: str, global_batch: int) -> dict[str, float]:
    """Max |sharded - unsharded| of the logits before and after one step, of the tables after it, and the step's size."""
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    rank, world = dist.get_rank(), dist.get_world_size()
    reference, sharded = build_model(ARCH, seed=0), sharded_dlrm(sharding)
    dense, sparse, labels = batch(global_batch, seed=1)
    mine = slice(rank * global_batch // world, (rank + 1) * global_batch // world)
    loss_fn = nn.BCEWithLogitsLoss()

    def gap() -> float:
        with torch.no_grad():
            return (sharded(dense[mine], sparse[mine]) - reference(dense[mine], sparse[mine])).abs().max().item()

    before = gap()
    dense_opt = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(sharded.named_parameters())),
                                      lambda params: torch.optim.SGD(params, lr=LR))
    dense_opt.zero_grad()
    loss_fn(sharded(dense[mine], sparse[mine]), labels[mine]).backward()  # the tables update inside
    dense_opt.step()
    tables_before = [t.table.weight.detach().clone() for t in reference.sparse_arch.tables]
    train_step(reference, make_optimizers(*split_parameters(reference), "sgd", LR), loss_fn, dense, sparse, labels)
    update = max((t.table.weight - w).abs().max().item() for t, w in zip(reference.sparse_arch.tables, tables_before))
    return {"forward": before, "after_step": gap(), "tables": table_gap(sharded, reference), "update": update}


def timings(sharding: str, global_batch: int, repeats: int) -> dict[str, float]:
    rank, world = dist.get_rank(), dist.get_world_size()
    _, sparse, _ = batch(global_batch, seed=2)
    mine = sparse[rank * global_batch // world : (rank + 1) * global_batch // world]
    sharded_sparse = sharded_dlrm(sharding).module.sparse_arch
    local = build_model(ARCH, seed=0)
    local_opt = make_optimizers(*split_parameters(local), "sgd", LR)

    def fwd_bwd(part, optimizers=()):
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        torch.cat(part(mine), dim=1).sum().backward()
        for o in optimizers:
            o.step()

    with torch.no_grad():
        out = {"sharded_fwd_ms": median_ms(lambda: sharded_sparse(mine), repeats),
               "local_fwd_ms": median_ms(lambda: local.sparse_arch.eval()(mine), repeats)}
    local.sparse_arch.train()
    out["sharded_fwd_bwd_ms"] = median_ms(lambda: fwd_bwd(sharded_sparse), repeats)
    out["local_fwd_bwd_ms"] = median_ms(lambda: fwd_bwd(local.sparse_arch, local_opt), repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[256, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    import torchrec

    if rank == 0:
        print(f"torch {torch.__version__}, torchrec {torchrec.__version__}, world {world}, gloo, CPU")
    for sharding in SHARDING_TYPES:
        gaps = check(sharding, global_batch=64)
        if rank == 0:
            print(f"{sharding}: max |logit diff| forward {gaps['forward']:.2e}, after one SGD step {gaps['after_step']:.2e}; "
                  f"tables after the step {gaps['tables']:.2e} (largest update {gaps['update']:.2e})")
        for b in args.batch_size:
            t = timings(sharding, b, args.repeats)
            if rank == 0:
                print(f"  global batch {b:5d}: sparse part forward {t['sharded_fwd_ms']:7.2f} ms sharded vs "
                      f"{t['local_fwd_ms']:7.2f} ms local; forward+backward {t['sharded_fwd_bwd_ms']:7.2f} vs "
                      f"{t['local_fwd_bwd_ms']:7.2f} ms", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
