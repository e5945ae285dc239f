"""Every rank of a multi-process search walks the same global batches, in lock step.

`iterate_batches(..., shard=(rank, world))` gives rank r its contiguous part of
each global batch, and nothing for a batch too short to leave it any rows (a
last batch of fewer rows than ranks). A search step is a collective (its
gradients are averaged over ranks), so a rank must still take that step: here
it gets an empty batch for it, and contributes zero gradient.
"""

from __future__ import annotations

from typing import Iterator

import torch

from dnas_hw.data.folder import Split, iterate_batches, num_batches


def lockstep_batches(
    split: Split, batch_size: int, *, seed: int, epoch: int, rows: tuple[int, int], shard: tuple[int, int]
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Yield `(dense [b, D], sparse [b, F], labels [b], global_rows)` once per global batch of `rows`.

    `b` is this rank's share of the global batch's `global_rows` rows (possibly 0);
    the batches are `iterate_batches(split, batch_size, shuffle=True, ...)`'s.
    """
    start, stop = rows
    total = stop - start
    local = iterate_batches(split, batch_size, shuffle=True, seed=seed, epoch=epoch, rows=rows, shard=shard)
    empty = (torch.zeros(0, split.dense.shape[1]), torch.zeros(0, split.sparse.shape[1], dtype=torch.int64), torch.zeros(0))
    for step in range(num_batches(total, batch_size, drop_last=False)):
        global_rows = min(batch_size, total - step * batch_size)
        dense, sparse, y = next(local, None) or empty
        yield dense, sparse, y, global_rows
