"""What the sum of ops timed one by one misses: measured on whole reference models.

Inside a served model an op costs more than timed back to back, because the
rest of the model (and, on a shared host, other processes) runs between two
of its calls and ages its weights and tables out of the nearest caches; and a
whole-model call pays once what no op pays: the call itself, the split of
`sparse` into its columns, the final squeeze and sigmoid. Measured on whole
models, the first is proportional to the ops' time (at batch 64 on the
development machine, models ran 1.45x the sum of their ops, to within 2%, from
a 180 us model to a 2.3 ms one) and the second is constant. So, per batch size:

    latency(arch) = overhead + factor * sum of the arch's op latencies

with `factor` the Theil-Sen slope (the median of pairwise slopes, robust to
one noisy model) of whole-model latency against the op sum over the reference
archs (at least 1; 1 where their op sums are too close for a slope), and
`overhead` the median of `latency - factor * op sum`. The profiler
folds `factor` into the op rows (`in_model_factor` in the LUT's metadata), so
the LUT stays a plain sum: `overhead + sum of rows`.

The reference archs are the space's smallest and `REFERENCE_SAMPLES` archs
drawn from a seed stream of their own (never the validation's).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from dnas_hw.ops import OpCall
from dnas_hw.runners import time_archs
from dnas_hw.timing import TimingStats

REFERENCE_SAMPLES = 4
PERCENTILES = ("p10_us", "p50_us", "p90_us")


def reference_archs(space, seed: int = 0, samples: int = REFERENCE_SAMPLES) -> list:
    """The space's smallest arch and `samples` random ones, from a stream of their own."""
    rng = random.Random(f"model-overhead:{seed}")
    return [space.smallest()] + [space.sample(rng) for _ in range(samples)]


# A pair of reference archs gives a slope only if their op sums differ by this fraction of the larger one;
# closer pairs would give a slope made of timing noise.
MIN_SPAN = 0.25


def theil_sen_slope(x: Sequence[float], y: Sequence[float], min_span: float = MIN_SPAN) -> float | None:
    """The median slope over pairs of points whose x differ by at least `min_span` of the larger; None if none do."""
    slopes = [
        (y[j] - y[i]) / (x[j] - x[i])
        for i, j in itertools.combinations(range(len(x)), 2)
        if abs(x[j] - x[i]) >= min_span * max(abs(x[i]), abs(x[j]))
    ]
    return float(np.median(slopes)) if slopes else None


@dataclass(frozen=True)
class InModel:
    """One batch size's fit: `latency = overhead + factor * op sum`, and the points it was fitted to."""

    factor: float
    overhead: TimingStats
    references: list[dict]  # per reference arch: whole_us, ops_us (p50)


def fit_in_model(whole: Sequence[TimingStats], ops: Sequence[dict[str, float]]) -> tuple[float, TimingStats]:
    """`(factor, overhead)` from whole-model stats and the matching op sums (`{percentile: us}`) of the references.

    The factor is at least 1: ops do not run faster inside a model than back to
    back (a fit below 1 is timing noise); where the references' op sums are too
    close to give a slope, it is 1.
    """
    slope = theil_sen_slope([o["p50_us"] for o in ops], [w.p50_us for w in whole])
    factor = 1.0 if slope is None else max(1.0, slope)
    overhead = [float(np.median([getattr(w, p) - factor * o[p] for w, o in zip(whole, ops)])) for p in PERCENTILES]
    return factor, TimingStats(*overhead, sum(w.repeats for w in whole))


def measure_in_model(
    space,
    op_stats: Callable[[OpCall, int], TimingStats],
    *,
    backend: str,
    device: str,
    threads: int,
    batch_sizes: Sequence[int],
    seed: int = 0,
) -> dict[int, InModel]:
    """Time the reference archs whole and fit each batch size; `op_stats(call, b)` gives an op's measured row."""
    archs = reference_archs(space, seed)
    whole = time_archs(
        archs, backend=backend, device=device, threads=threads, batch_sizes=batch_sizes,
        cardinalities=space.cardinalities, seed=seed,
    )
    fits = {}
    for b in batch_sizes:
        ops = [
            {p: sum(getattr(op_stats(c, b), p) for _, c in arch.ops().named()) for p in PERCENTILES} for arch in archs
        ]
        timed = [w[b] for w in whole]
        factor, overhead = fit_in_model(timed, ops)
        references = [{"whole_us": round(w.p50_us, 3), "ops_us": round(o["p50_us"], 3)} for w, o in zip(timed, ops)]
        fits[int(b)] = InModel(factor, overhead, references)
    return fits
