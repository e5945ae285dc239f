"""The `model_overhead` rows: what a whole model costs beyond the sum of its ops.

A whole-model call pays, once, what no op pays: the call itself (torch: the
outer modules' dispatch; onnxruntime: `session.run`'s dispatch, input binding
and output hand-back), the split of `sparse` into its columns, the final
squeeze and sigmoid, and whatever the runtime gains or loses by running the ops
together. None of these depends on the arch's choices, only on the feature
counts and the batch size, so they are measured directly on whole models:

    overhead(B) = median over reference archs r of [ latency(r, B) - sum of r's op rows at B ]

with the reference archs the space's smallest and `REFERENCE_SAMPLES` archs
drawn from their own seed stream (never the validation's). Each percentile is
formed the same way.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np

from dnas_hw.ops import OpCall
from dnas_hw.runners import time_archs
from dnas_hw.timing import TimingStats

REFERENCE_SAMPLES = 3


def reference_archs(space, seed: int = 0, samples: int = REFERENCE_SAMPLES) -> list:
    """The space's smallest arch and `samples` random ones, from a stream of their own."""
    rng = random.Random(f"model-overhead:{seed}")
    return [space.smallest()] + [space.sample(rng) for _ in range(samples)]


def measure_overhead(
    space,
    op_stats: Callable[[OpCall, int], TimingStats],
    *,
    backend: str,
    device: str,
    threads: int,
    batch_sizes: Sequence[int],
    seed: int = 0,
) -> tuple[dict[int, TimingStats], dict[int, list[dict]]]:
    """`({batch_size: overhead stats}, {batch_size: [per reference arch: whole_us, ops_us]})`.

    `op_stats(call, batch_size)` gives an op's measured row (all of a reference
    arch's ops must be measured already).
    """
    archs = reference_archs(space, seed)
    whole = time_archs(
        archs, backend=backend, device=device, threads=threads, batch_sizes=batch_sizes,
        cardinalities=space.cardinalities, seed=seed,
    )
    stats, details = {}, {}
    for b in batch_sizes:
        diffs = {"p10_us": [], "p50_us": [], "p90_us": []}
        details[int(b)] = []
        for arch, timed in zip(archs, whole):
            ops = [op_stats(c, b) for _, c in arch.ops().named()]
            for p in diffs:
                diffs[p].append(getattr(timed[b], p) - sum(getattr(s, p) for s in ops))
            details[int(b)].append(
                {"whole_us": round(timed[b].p50_us, 3), "ops_us": round(sum(s.p50_us for s in ops), 3)}
            )
        repeats = sum(t[b].repeats for t in whole)
        stats[int(b)] = TimingStats(*(float(np.median(diffs[p])) for p in ("p10_us", "p50_us", "p90_us")), repeats)
    return stats, details
