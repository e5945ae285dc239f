"""What the sum of ops timed one by one misses: measured on whole reference models.

Inside a served model an op costs more than timed back to back, because the
rest of the model (and, on a shared host, other processes) runs between two
of its calls and ages its weights and tables out of the nearest caches; and a
whole-model call pays once what no op pays: the call itself, the split of
`sparse` into its columns, the final squeeze and sigmoid. Measured on whole
models, the first is proportional to the ops' time and the second is
constant. So, per batch size:

    latency(arch) = overhead + sum over op kinds k of factor_k * (sum of the arch's k-op latencies)

with one of two sets of factors, whichever predicts the references better
when each is left out in turn (leave-one-out, the median relative error,
the unit of the fidelity target):

- `common`: one factor for every kind, the Theil-Sen slope of whole-model
  latency against the op sum (the median of pairwise slopes, robust to one
  noisy model); at least 1 (ops do not run faster inside a model than back to
  back; a slope below is noise), and 1 where the op sums are too close for a
  slope.
- `per-kind`: a factor per op kind (`linear`, `embedding`,
  `interaction_dot`, ...) by relative least squares, with a ridge that pulls
  each kind's factor towards the common one in proportion to the kind's share
  of the references' latency (a kind whose time hardly varies between the
  references gets the common factor instead of one made of noise). It wins
  where one kind's rows were measured off the others' scale (in one measured
  run at onnxruntime batch 1, embedding rows ran 0.56x inside models, the
  rest 1.2-1.3x).

In both, `overhead` is the median of `latency - sum_k factor_k * op sum_k`
over the references, per percentile, kept ordered (p10 <= p50 <= p90). The profiler folds each kind's factor
into its op rows (`in_model_factor` in the LUT's metadata, `{op kind:
factor}` per batch size), so the LUT stays a plain sum, `overhead + sum of
rows`, and the search's cost a sum of probability x row.

On the same references a whole-arch correction may be fitted on top (a
factor on the sum that grows with the arch's weight and table bytes above the
caches, `profiler.correction_fit`, `lut.correction`); where it is kept, the
factors and the overhead are fitted jointly with it.

The reference archs are the space's smallest (it anchors the overhead: a fit
without it under-predicted small models by up to 47%) and `REFERENCE_SAMPLES`
archs drawn from a seed stream of their own (never the validation's). Offline,
on the 600 measured archs of two `lut_fidelity.py` runs, the number of references
decided most (16 drawn: 94.7% / 87.4% of archs within 10% on average over the
configurations of the two runs, against 90.5% / 75.3% with 4), and picking
them at quantiles of size, the largest included, was no better with this fit,
worse with the common factor alone (at batch 1 the largest MLPs fall out of
L3 and run off the line) and dearer to time (docs/profiling.md).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from dnas_hw.arch import ArchMethods
from dnas_hw.data.ids import IdSource
from dnas_hw.ops import OpCall
from dnas_hw.timing import TimingStats
from lut.correction import FEATURES, Correction, arch_features
from profiler.correction_fit import MIN_GAIN, choose_correction
from profiler.environment import cache_sizes
from profiler.runners import GROUP, time_archs

REFERENCE_SAMPLES = 16
PERCENTILES = ("p10_us", "p50_us", "p90_us")
# A pair of reference archs gives a slope only if their op sums differ by this fraction of the larger one;
# closer pairs would give a slope made of timing noise.
MIN_SPAN = 0.25
# Weight of the ridge (factor_k - common factor)^2 x share_k^2 against the sum of squared relative errors.
RIDGE = 0.1
# No kind of op runs more than twice as fast inside a model as alone: a per-kind fit below is degenerate.
MIN_FACTOR = 0.5
# Leave-one-out needs this many references; with fewer the common factor is used.
MIN_REFERENCES_TO_CHOOSE = 4
METHODS = ("common", "per-kind")


def reference_archs(space, seed: int = 0, samples: int = REFERENCE_SAMPLES) -> list[ArchMethods]:
    """The space's smallest arch (first) and `samples` random ones, from a stream of their own."""
    rng = random.Random(f"model-overhead:{seed}")
    return [space.smallest()] + [space.sample(rng) for _ in range(samples)]


def theil_sen_slope(x: Sequence[float], y: Sequence[float], min_span: float = MIN_SPAN) -> float | None:
    """The median slope over pairs of points whose x differ by at least `min_span` of the larger; None if none do."""
    slopes = [
        (y[j] - y[i]) / (x[j] - x[i])
        for i, j in itertools.combinations(range(len(x)), 2)
        if abs(x[j] - x[i]) >= min_span * max(abs(x[i]), abs(x[j]))
    ]
    return float(np.median(slopes)) if slopes else None


def common_factor(whole_us: np.ndarray, ops_us: np.ndarray) -> float:
    """Theil-Sen slope of whole-model latency `[R]` against the op sums (`ops_us` `[R, K]`, summed), at least 1."""
    slope = theil_sen_slope(ops_us.sum(axis=1).tolist(), whole_us.tolist())
    return 1.0 if slope is None else max(1.0, slope)


def per_kind_factors(whole_us: np.ndarray, ops_us: np.ndarray, prior: float, ridge: float = RIDGE) -> np.ndarray:
    """Factors `[K]` minimising sum_r ((o + ops_us[r] . f) / whole_us[r] - 1)^2 + ridge sum_k share_k^2 (f_k - prior)^2.

    `share_k` is kind k's mean fraction of the references' latency (at least
    1e-3, so a kind no reference runs gets `prior`). The intercept `o` is
    fitted with the factors and then dropped: the overhead row is the median
    residual (`overhead_us`), the same for both methods.
    """
    r, k = ops_us.shape
    relative = ops_us / whole_us[:, None]
    share = np.maximum(relative.mean(axis=0), 1e-3)
    a = np.vstack([
        np.column_stack([1.0 / whole_us, relative]),
        np.column_stack([np.zeros(k), np.diag(np.sqrt(ridge) * share)]),
    ])
    b = np.concatenate([np.ones(r), np.sqrt(ridge) * share * prior])
    return np.maximum(np.linalg.lstsq(a, b, rcond=None)[0][1:], MIN_FACTOR)


def factors_by(method: str, whole_us: np.ndarray, ops_us: np.ndarray) -> np.ndarray:
    """The factors `[K]` of `method` ("common" or "per-kind") on references `whole_us` `[R]`, `ops_us` `[R, K]`."""
    common = common_factor(whole_us, ops_us)
    if method == "common":
        return np.full(ops_us.shape[1], common)
    return per_kind_factors(whole_us, ops_us, common)


def overhead_us(whole_us: np.ndarray, ops_us: np.ndarray, factors: np.ndarray) -> float:
    """The median over references of `whole - ops . factors`."""
    return float(np.median(whole_us - ops_us @ factors))


def additive_fit(method: str, ops_us: np.ndarray):
    """`(train mask [R], latencies [R]) -> [R]`: every reference as `method` fitted to the latencies of the
    references in the mask predicts it (`profiler.correction_fit.AdditiveFit`)."""
    def fitted(train: np.ndarray, whole_us: np.ndarray) -> np.ndarray:
        f = factors_by(method, whole_us[train], ops_us[train])
        return overhead_us(whole_us[train], ops_us[train], f) + ops_us @ f
    return fitted


def leave_one_out_predictions(method: str, whole_us: np.ndarray, ops_us: np.ndarray) -> np.ndarray:
    """`[R]`: each reference's latency as `method` fitted on the other references predicts it."""
    predicted = []
    for i in range(len(whole_us)):
        rest = np.arange(len(whole_us)) != i
        f = factors_by(method, whole_us[rest], ops_us[rest])
        predicted.append(overhead_us(whole_us[rest], ops_us[rest], f) + ops_us[i] @ f)
    return np.array(predicted, dtype=np.float64)


def leave_one_out_error(method: str, whole_us: np.ndarray, ops_us: np.ndarray) -> float:
    """Median over references of |predicted / measured - 1|, each predicted by `method` fitted on the others."""
    return float(np.median(np.abs(leave_one_out_predictions(method, whole_us, ops_us) / whole_us - 1.0)))


@dataclass(frozen=True)
class InModelFit:
    """One batch size's fit: `latency = overhead + sum_k factors[k] * op sum of kind k`."""

    method: str  # "common" or "per-kind"
    factors: dict[str, float]  # op kind -> factor
    overhead: TimingStats
    loo_error: dict[str, float]  # method -> leave-one-out median relative error on the references
    # Each reference's p50 as the chosen method (and correction) fitted on the others predicts it (empty with one
    # reference): the LUT's own out-of-sample error, from which a search derives its budget margin (`lut.margin`).
    loo_predicted_us: tuple[float, ...] = ()
    # The whole-arch correction on top (`lut.correction`; None: the plain sum) and the leave-one-out errors
    # that chose it ({"additive", "corrected"}; empty where it was not fitted).
    correction: Correction | None = None
    correction_loo_error: dict[str, float] = field(default_factory=dict)


def choose_method(whole_us: np.ndarray, ops_us: np.ndarray) -> tuple[str, dict[str, float]]:
    """`(method, {method: leave-one-out error})`: per-kind only where it predicts left-out references better.

    With fewer than `MIN_REFERENCES_TO_CHOOSE` references, or op sums too close
    for a slope, it is `common` (with no errors to report).
    """
    if len(whole_us) < MIN_REFERENCES_TO_CHOOSE or theil_sen_slope(ops_us.sum(axis=1).tolist(), whole_us.tolist()) is None:
        return "common", {}
    errors = {m: leave_one_out_error(m, whole_us, ops_us) for m in METHODS}
    return ("per-kind" if errors["per-kind"] < errors["common"] else "common"), errors


def fit_in_model(
    whole: Sequence[TimingStats], ops: Sequence[Mapping[str, Mapping[str, float]]], kinds: Sequence[str] = (),
    features: Sequence[Mapping[str, float]] | None = None, caches: Mapping[str, int] | None = None,
    min_gain: float = MIN_GAIN,
) -> InModelFit:
    """The fit from the references' whole-model stats and their op sums, `ops[r][percentile][kind]` in us.

    Every kind in `kinds` or in `ops` gets a factor (a kind no reference runs:
    the common factor). The factors come from the p50s; the overhead row's
    p10/p50/p90 are the median residuals at each percentile. With the
    references' whole-arch `features` (`lut.correction.arch_features`) and at
    least `MIN_REFERENCES_TO_CHOOSE` references, a whole-arch correction is
    fitted on top and kept where it predicts left-out references better
    (`profiler.correction_fit`; `caches`: the machine's cache sizes in bytes; `min_gain`: the share of the
    leave-one-out error it must cut).
    """
    kinds = sorted(set(kinds) | {k for o in ops for k in o["p50_us"]})

    def matrix(p: str) -> np.ndarray:
        return np.array([[o[p].get(k, 0.0) for k in kinds] for o in ops], dtype=np.float64).reshape(len(ops), len(kinds))

    y = np.array([w.p50_us for w in whole], dtype=np.float64)
    method, errors = choose_method(y, matrix("p50_us"))
    loo = leave_one_out_predictions(method, y, matrix("p50_us")) if len(y) >= 2 else np.zeros(0)
    correction, correction_errors, multipliers = None, {}, np.ones(len(y))
    if features is not None and len(y) >= MIN_REFERENCES_TO_CHOOSE:
        x = np.array([[r[k] for k in FEATURES] for r in features], dtype=np.float64)
        chosen = choose_correction(y, x, additive_fit(method, matrix("p50_us")), caches, min_gain)
        correction, correction_errors, loo = chosen.correction, chosen.loo_error, chosen.loo_predicted_us
        multipliers = chosen.multipliers
    # With a correction, the factors and the overhead are the additive fit to the latencies it divides out.
    f = factors_by(method, y / multipliers, matrix("p50_us"))
    p10, p50, p90 = (
        overhead_us(np.array([getattr(w, p) for w in whole], dtype=np.float64) / multipliers, matrix(p), f)
        for p in PERCENTILES
    )
    # Residuals at p10 and p90 are not percentiles of one distribution (a sum of op p90s exceeds the p90 of
    # their sum), so they can land on the wrong side of the median: the row keeps p10 <= p50 <= p90.
    overhead = TimingStats(min(p10, p50), p50, max(p90, p50), sum(w.repeats for w in whole))
    return InModelFit(
        method, {k: round(float(v), 6) for k, v in zip(kinds, f)}, overhead,
        {m: round(e, 6) for m, e in errors.items()}, tuple(round(float(v), 3) for v in loo),
        correction, {m: round(e, 6) for m, e in correction_errors.items()},
    )


def op_sums(arch: ArchMethods, op_stats: Callable[[OpCall, int], TimingStats], b: int) -> dict[str, dict[str, float]]:
    """`{percentile: {op kind: sum of the arch's op latencies of that kind}}` at batch size `b`."""
    sums: dict[str, dict[str, float]] = {p: {} for p in PERCENTILES}
    for _, call in arch.ops().named():
        stats = op_stats(call, b)
        for p in PERCENTILES:
            sums[p][call.op] = sums[p].get(call.op, 0.0) + getattr(stats, p)
    return sums


@dataclass(frozen=True)
class InModel:
    """One batch size's fit and the points it was fitted to."""

    fit: InModelFit
    # Per reference arch: whole_us and whole_p90_us (measured), ops_us ({op kind: raw p50 sum}),
    # features (`lut.correction.FEATURES`), loo_predicted_us (the fit's out-of-sample prediction of whole_us,
    # the correction included where one is kept, where there is one).
    references: list[dict]


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
    ids: IdSource | None = None,
) -> dict[int, InModel]:
    """Time the reference archs whole (in groups, as `lut validate` times its archs) and fit each batch size.

    `op_stats(call, b)` gives an op's raw measured row; `status` is told which group is being timed;
    `ids`: the ids the models see (the ops' own: `dnas_hw.data.ids`; None: spread).
    """
    archs = reference_archs(space, seed)
    kinds = sorted({c.op for c in space.op_calls()})
    whole: list[dict[int, TimingStats]] = []
    for start in range(0, len(archs), GROUP):
        status(f"in-model fit: whole reference models {start + 1}-{min(start + GROUP, len(archs))} of {len(archs)}")
        whole += time_archs(
            archs[start : start + GROUP], backend=backend, device=device, threads=threads, batch_sizes=batch_sizes,
            cardinalities=space.cardinalities, seed=seed, ids=ids,
        )
    features = [arch_features(c for _, c in a.ops().named()) for a in archs]
    fits = {}
    for b in batch_sizes:
        ops = [op_sums(a, op_stats, b) for a in archs]
        timed = [w[b] for w in whole]
        fit = fit_in_model(timed, ops, kinds, features, cache_sizes())
        references = [
            {"whole_us": round(w.p50_us, 3), "whole_p90_us": round(w.p90_us, 3),
             "ops_us": {k: round(v, 3) for k, v in o["p50_us"].items()}, "features": x}
            for w, o, x in zip(timed, ops, features)
        ]
        for r, predicted in zip(references, fit.loo_predicted_us):
            r["loo_predicted_us"] = predicted
        fits[int(b)] = InModel(fit, references)
    return fits
