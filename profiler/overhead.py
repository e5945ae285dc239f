"""What the sum of ops timed one by one misses: measured on whole reference models.

Inside a served model an op costs more than timed back to back, because the
rest of the model (and, on a shared host, other processes) runs between two
of its calls and ages its weights and tables out of the nearest caches; and a
whole-model call pays once what no op pays: the call itself, the split of
`sparse` into its columns, the final squeeze and sigmoid. Measured on whole
models, the first is proportional to each kind of op's time and the second is
constant. So, per batch size, with one factor per op kind (`linear`,
`embedding`, `interaction_dot`, ...):

    latency(arch) = overhead + sum over op kinds k of factor_k * (sum of the arch's k-op latencies)

fitted on whole reference models by relative least squares (errors measured
as fractions of each model's latency, the unit of the fidelity target) with
Huber weights (a reference spoiled by a burst of load counts little), and a
ridge term that pulls each kind's factor towards the one common factor of the
same fit with all ops pooled (a kind whose op sum hardly varies between the
references, like the 26 lookups of every DLRM, gets the common factor instead
of a factor made of noise). The profiler folds each kind's factor into its
op rows (`in_model_factor` in the LUT's metadata), so the LUT stays a plain
sum, `overhead + sum of rows`, the search's cost a sum of probability x row.

The reference archs are `REFERENCE_SAMPLES` archs spread over the model sizes
of the space: `CANDIDATES` archs drawn from a seed stream of their own (never
the validation's), ordered by their op sum, taken at evenly spaced quantiles.
Not the space's smallest arch: its tiny ops run off the line the space's
random archs follow (on the development machine +20% to +80% against the
line fitted on 50 random archs), and as the one point far from the others it
set the intercept. Measurements behind these choices: docs/profiling.md.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from dnas_hw.arch import Arch
from dnas_hw.ops import OpCall
from dnas_hw.runners import time_archs
from dnas_hw.timing import TimingStats
from lut.validate import GROUP

REFERENCE_SAMPLES = 12
CANDIDATES = 48
PERCENTILES = ("p10_us", "p50_us", "p90_us")
# Ridge weight on (factor_k - common factor)^2, against a sum of squared relative errors.
RIDGE = 0.01
# Relative error beyond which a reference's weight falls off (Huber).
HUBER_DELTA = 0.05
# A slope needs references whose op sums differ by this fraction of the largest; else the factor is 1.
MIN_SPAN = 0.25
# No kind of op runs more than twice as fast inside a model as alone; a fit below is degenerate.
MIN_FACTOR = 0.5
ITERATIONS = 50


def reference_archs(
    space, size: Callable[[Arch], float], seed: int = 0, samples: int = REFERENCE_SAMPLES, candidates: int = CANDIDATES,
) -> list[Arch]:
    """`samples` distinct archs at evenly spaced quantiles of `size` over `candidates` drawn ones (own seed stream)."""
    rng = random.Random(f"model-overhead:{seed}")
    pool: dict[str, Arch] = {}
    for _ in range(candidates):
        arch = space.sample(rng)
        pool.setdefault(json.dumps(arch.to_dict(), sort_keys=True), arch)
    ordered = sorted(pool.values(), key=size)
    picks = sorted({int((i + 0.5) / samples * len(ordered)) for i in range(samples)})
    return [ordered[i] for i in picks]


def _irls(x: np.ndarray, y: np.ndarray, prior: np.ndarray | None = None, ridge: float = 0.0) -> np.ndarray:
    """Coefficients c minimising sum of Huber((x c - y) / y) + ridge * |c[1:] - prior|^2 (iteratively reweighted)."""
    rel = 1.0 / y
    robust = np.ones_like(y)
    coef = np.zeros(x.shape[1])
    for _ in range(ITERATIONS):
        w = rel * np.sqrt(robust)
        a, b = x * w[:, None], y * w
        if prior is not None:
            penalty = np.sqrt(ridge) * np.eye(x.shape[1])[1:]
            a, b = np.vstack([a, penalty]), np.concatenate([b, np.sqrt(ridge) * prior])
        new = np.linalg.lstsq(a, b, rcond=None)[0]
        r = np.abs(x @ new - y) / y
        robust = np.minimum(1.0, HUBER_DELTA / np.maximum(r, 1e-12))
        if np.allclose(new, coef, rtol=1e-9, atol=1e-9):
            break
        coef = new
    return new


def _spans(op_sums_us: np.ndarray) -> bool:
    """Whether the references' op sums differ enough for a slope."""
    return len(op_sums_us) >= 2 and op_sums_us.max() - op_sums_us.min() >= MIN_SPAN * op_sums_us.max()


@dataclass(frozen=True)
class InModelFit:
    """One batch size's fit: `latency = overhead_us + sum_k factors[k] * ops_us[k]` (p50)."""

    factors: dict[str, float]
    overhead_us: float

    def predict(self, ops_us: Mapping[str, float]) -> float:
        return self.overhead_us + sum(self.factors[k] * us for k, us in ops_us.items())


def fit_in_model(
    whole_us: Sequence[float], ops_us: Sequence[Mapping[str, float]], kinds: Sequence[str] = (), ridge: float = RIDGE,
) -> InModelFit:
    """Per-kind factors and overhead from the references' whole-model p50 and their op sums per kind (`{op: us}`).

    Every kind in `kinds` or in `ops_us` gets a factor; one no reference runs
    gets the common factor (its column is zero, so the ridge alone sets it).
    Where the references' total op sums differ by less than `MIN_SPAN` of the
    largest, every factor is 1 and the overhead the median difference.
    """
    kinds = sorted(set(kinds) | {k for o in ops_us for k in o})
    y = np.asarray(whole_us, dtype=np.float64)
    x = np.array([[o.get(k, 0.0) for k in kinds] for o in ops_us], dtype=np.float64)
    totals = x.sum(axis=1)
    if not _spans(totals):
        return InModelFit({k: 1.0 for k in kinds}, float(np.median(y - totals)))
    common = _irls(np.column_stack([np.ones(len(y)), totals]), y)[1]
    coef = _irls(np.column_stack([np.ones(len(y)), x]), y, prior=np.full(len(kinds), common), ridge=ridge)
    factors = np.maximum(coef[1:], MIN_FACTOR)
    if (coef[1:] < MIN_FACTOR).any():  # a clamped factor: the overhead refitted to the factors as they stand
        coef[0] = float(np.median(y - x @ factors))
    return InModelFit({k: round(float(f), 6) for k, f in zip(kinds, factors)}, float(coef[0]))


def overhead_stats(fit: InModelFit, whole: Sequence[TimingStats], ops: Sequence[Mapping[str, Mapping[str, float]]]) -> TimingStats:
    """The overhead row: the fitted p50 overhead, and p10/p90 shifted by the median spread of the references.

    `ops[r][percentile][kind]` is reference r's op sum per kind at that percentile.
    """
    def residual(w: TimingStats, o: Mapping[str, Mapping[str, float]], p: str) -> float:
        return getattr(w, p) - fit.predict(o[p]) + fit.overhead_us

    values = [
        fit.overhead_us + float(np.median([residual(w, o, p) - residual(w, o, "p50_us") for w, o in zip(whole, ops)]))
        for p in PERCENTILES
    ]
    return TimingStats(*values, sum(w.repeats for w in whole))


def op_sums(arch: Arch, op_stats: Callable[[OpCall, int], TimingStats], b: int) -> dict[str, dict[str, float]]:
    """`{percentile: {op kind: sum of the arch's op latencies of that kind}}` at batch size `b`."""
    sums: dict[str, dict[str, float]] = {p: {} for p in PERCENTILES}
    for _, call in arch.ops().named():
        stats = op_stats(call, b)
        for p in PERCENTILES:
            sums[p][call.op] = sums[p].get(call.op, 0.0) + getattr(stats, p)
    return sums


@dataclass(frozen=True)
class InModel:
    """One batch size's fit, its overhead row, and the points it was fitted to."""

    fit: InModelFit
    overhead: TimingStats
    references: list[dict]  # per reference arch: arch, whole_us, ops_us ({op kind: us}), p50


def measure_in_model(
    space,
    op_stats: Callable[[OpCall, int], TimingStats],
    *,
    backend: str,
    device: str,
    threads: int,
    batch_sizes: Sequence[int],
    seed: int = 0,
    status: Callable[[str], None] = lambda _: None,
) -> dict[int, InModel]:
    """Time the reference archs whole (in groups, as `lut validate` times its archs) and fit each batch size.

    `op_stats(call, b)` gives an op's raw measured row; `status` is told which group is being timed.
    """
    def size(arch: Arch) -> float:  # the log of the geometric mean of the arch's op sums over the batch sizes
        return sum(math.log(sum(op_sums(arch, op_stats, b)["p50_us"].values())) for b in batch_sizes)

    archs = reference_archs(space, size, seed)
    kinds = sorted({c.op for c in space.op_calls()})
    whole: list[dict[int, TimingStats]] = []
    for start in range(0, len(archs), GROUP):
        status(f"in-model fit: whole reference models {start + 1}-{min(start + GROUP, len(archs))} of {len(archs)}")
        whole += time_archs(
            archs[start : start + GROUP], backend=backend, device=device, threads=threads, batch_sizes=batch_sizes,
            cardinalities=space.cardinalities, seed=seed,
        )
    fits = {}
    for b in batch_sizes:
        ops = [op_sums(a, op_stats, b) for a in archs]
        timed = [w[b] for w in whole]
        fit = fit_in_model([w.p50_us for w in timed], [o["p50_us"] for o in ops], kinds)
        references = [
            {"arch": a.to_dict(), "whole_us": round(w.p50_us, 3), "ops_us": {k: round(v, 3) for k, v in o["p50_us"].items()}}
            for a, w, o in zip(archs, timed, ops)
        ]
        fits[int(b)] = InModel(fit, overhead_stats(fit, timed, ops), references)
    return fits
