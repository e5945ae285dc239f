"""Model inputs drawn like real traffic: pools of input sets for timing and for export's parity check.

- An *input pool* is a list of input sets (tuples of tensors); every timed call
  consumes the next set, cycling. The pool is large enough (`pool_sets`) that
  the embedding rows one call touches were not touched by the calls just
  before it, as in real serving, where each request brings new ids.
- Dense features look like Criteo's (log1p of heavy-tailed counts), never zeros;
  ids are spread over the whole id range without repeats (within a pool, as far
  as the range allows): the worst case for the caches. Given a data source
  (`dnas_hw.data.ids`), a pool replays consecutive rows of the data instead:
  its ids with their real frequency skew, and its dense features.

The profiler's runners (`profiler.runners`) time models on these pools;
`dnas_hw.export` checks an exported model against torch on one set.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from dnas_hw.data.ids import DATA, IdSource

# A pool holds about this many samples (batch_size x sets), so consecutive calls
# touch different embedding rows; at least MIN_SETS and at most MAX_SETS sets.
POOL_SAMPLES = 1 << 15
MIN_SETS = 16
MAX_SETS = 4096


def pool_sets(batch_size: int, samples: int = POOL_SAMPLES) -> int:
    """How many input sets a pool at `batch_size` holds (about `samples` samples in all)."""
    return int(min(MAX_SETS, max(MIN_SETS, math.ceil(samples / batch_size))))


def spread_ids(num_ids: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` int64 ids in [0, num_ids): no id repeats until all `num_ids` have been used."""
    if num_ids >= count:
        return rng.choice(num_ids, size=count, replace=False).astype(np.int64)
    reps = math.ceil(count / num_ids)
    return np.concatenate([rng.permutation(num_ids) for _ in range(reps)])[:count].astype(np.int64)


def dense_features(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Criteo-like dense features of `shape`: log1p of heavy-tailed counts, float32."""
    counts = np.floor(rng.lognormal(mean=1.5, sigma=2.0, size=shape))
    return np.log1p(counts).astype(np.float32)


def dlrm_input_pool(
    num_dense: int,
    cardinalities_or_rows: Sequence[int],
    batch_size: int,
    n: int | None = None,
    seed: int = 0,
    ids: IdSource | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` input sets `(dense [B, num_dense] float32, sparse [B, F] int64)` for a DLRM.

    Spread ids (`ids` None or spread): feature f's ids lie in [0, cardinalities_or_rows[f])
    and do not repeat across the pool while the range allows. Data ids: the pool is
    `n * B` consecutive rows of the data (`IdSource.window`, seeded by `seed`), dense
    features and ids as stored. `n` defaults to `pool_sets(batch_size)`.
    """
    n = pool_sets(batch_size) if n is None else int(n)
    if ids is not None and ids.kind == DATA:
        dense, sparse = ids.window(n * batch_size, seed, num_dense, len(cardinalities_or_rows))
        dense = dense.reshape(n, batch_size, num_dense)
        sparse = sparse.reshape(n, batch_size, len(cardinalities_or_rows))
        return [(torch.from_numpy(dense[i]), torch.from_numpy(sparse[i])) for i in range(n)]
    rng = np.random.default_rng(seed)
    dense = dense_features((n, batch_size, num_dense), rng)
    sparse = np.stack([spread_ids(int(c), n * batch_size, rng) for c in cardinalities_or_rows], axis=1)
    sparse = sparse.reshape(n, batch_size, len(cardinalities_or_rows))
    return [(torch.from_numpy(dense[i]), torch.from_numpy(np.ascontiguousarray(sparse[i]))) for i in range(n)]
