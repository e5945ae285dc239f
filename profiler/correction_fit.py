"""Fitting the whole-arch correction (`lut.correction`) on the reference archs.

The additive fit (`profiler.overhead`) predicts each reference as
`A_r = overhead + sum_k factor_k ops_k(r)`. On top of it, per batch size,

    latency(r) = A_r x (1 + sum_j coef_j phi_j(r)),   phi_j(r) = log2(max(1, x_j(r) / knot_j))

fitted jointly with the additive fit by backfitting: the additive fit is made on
the latencies divided by the current multiplier `1 + c . phi_r` (so that its
factors do not absorb the whole-arch effect: fitted on the raw latencies, a
common factor of 1.58 and a negative overhead took in a planted 6% per doubling),
then the coefficients by ridge-regularised relative least squares,

    min_c  sum_r (A_r (1 + c . phi_r) / y_r - 1)^2 + RIDGE ||c||^2      (linear in c)

`BACKFIT_ROUNDS` times. Where a correction is kept, the LUT's factors and
overhead row are the additive fit to the divided latencies.

The candidate terms (`candidate_terms`): `dense_bytes` and `table_bytes`
above each cache level this machine reports (`profiler.environment.cache_sizes`:
L2, L3), or above the smallest reference's value where it reports none; `ops`
above the smallest reference's count. A term that is zero on every reference
(a knot above them all) is dropped. Few references (17), so the choice is by
leave-one-out, as for the per-kind factors: each reference predicted by the
additive fit *and* the correction refitted without it. The candidates are every
single term and all terms together; the best is kept only where its
leave-one-out median relative error is below the additive fit's by `MIN_GAIN`, and where its
multiplier stays within `MULTIPLIER_RANGE` on every reference (a correction
that doubles or halves a model is extrapolating, not correcting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from lut.correction import FEATURES, Correction, Term

# Weight of ||coef||^2 against the sum of squared relative errors: with phi in doublings (0-5) and 17
# references a planted coefficient is shrunk by about 1%, a term made of noise towards 0.
RIDGE = 0.5
MULTIPLIER_RANGE = (0.5, 2.0)
# A correction is kept only where it cuts the additive fit's leave-one-out error by this fraction: the median
# over 17 references is a noisy statistic, and the best of several candidates fitted to noise alone cuts it
# by up to a half (20 synthetic sets of references without a whole-arch effect, 3% noise: by over a fifth in 5,
# mostly with coefficients under 0.01 per doubling; with 6% per doubling planted, 19 of 20 kept it).
MIN_GAIN = 0.2
# Alternations of the additive fit and the coefficients; on synthetic references the coefficients settle in 3-5.
BACKFIT_ROUNDS = 8
BYTE_FEATURES = ("dense_bytes", "table_bytes")
CACHE_LEVELS = ("L2", "L3")


def candidate_terms(features: np.ndarray, caches: Mapping[str, int] | None) -> list[tuple[str, float]]:
    """`[(feature, knot)]` for references' features `[R, len(FEATURES)]`; terms zero on every reference left out."""
    smallest = features.min(axis=0)
    col = {f: i for i, f in enumerate(FEATURES)}
    knots: list[tuple[str, float]] = []
    for f in BYTE_FEATURES:
        levels = [float(caches[c]) for c in CACHE_LEVELS if caches and caches.get(c)]
        knots += [(f, k) for k in (levels or [max(float(smallest[col[f]]), 1.0)])]
    knots.append(("ops", max(float(smallest[col["ops"]]), 1.0)))
    return [(f, k) for f, k in knots if (features[:, col[f]] > k).any()]


def basis(features: np.ndarray, terms: Sequence[tuple[str, float]]) -> np.ndarray:
    """`[R, T]`: phi_j(r) = log2(max(1, x_j(r) / knot_j))."""
    col = {f: i for i, f in enumerate(FEATURES)}
    if not terms:
        return np.zeros((len(features), 0))
    return np.column_stack([np.log2(np.maximum(1.0, features[:, col[f]] / k)) for f, k in terms])


def fit_coefs(whole_us: np.ndarray, additive_us: np.ndarray, phi: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """`[T]`: argmin_c sum_r (additive_r (1 + c . phi_r) / whole_r - 1)^2 + ridge ||c||^2."""
    a = additive_us[:, None] * phi / whole_us[:, None]
    t = 1.0 - additive_us / whole_us
    return np.linalg.solve(a.T @ a + ridge * np.eye(phi.shape[1]), a.T @ t)


# additive(train mask [R], latencies [R]) -> the additive fit made on the references in the mask to those
# latencies, predicting every reference `[R]`
AdditiveFit = Callable[[np.ndarray, np.ndarray], np.ndarray]


def backfit(whole_us: np.ndarray, additive: AdditiveFit, phi: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(additive predictions [R], coefs [T])` fitted jointly on the references in `train` (module docstring)."""
    multiplier = np.ones(len(whole_us))
    coefs = np.zeros(phi.shape[1])
    for _ in range(BACKFIT_ROUNDS if phi.shape[1] else 1):
        a = additive(train, whole_us / multiplier)
        if not phi.shape[1]:
            break
        coefs = fit_coefs(whole_us[train], a[train], phi[train])
        multiplier = 1.0 + phi @ coefs
    return a, coefs


def loo_predictions(whole_us: np.ndarray, additive: AdditiveFit, phi: np.ndarray) -> np.ndarray:
    """`[R]`: each reference as the additive fit and the correction, both made without it, predict it."""
    out = []
    for i in range(len(whole_us)):
        a, c = backfit(whole_us, additive, phi, np.arange(len(whole_us)) != i)
        out.append(a[i] * (1.0 + phi[i] @ c))
    return np.array(out, dtype=np.float64)


def median_rel_error(predicted: np.ndarray, whole_us: np.ndarray) -> float:
    return float(np.median(np.abs(predicted / whole_us - 1.0)))


@dataclass(frozen=True)
class CorrectionFit:
    correction: Correction | None  # None: the additive fit predicts left-out references as well or better
    loo_error: dict[str, float]  # "additive", "corrected" (the best candidate's): leave-one-out median rel. error
    loo_predicted_us: np.ndarray  # [R]: the chosen model's leave-one-out predictions
    multipliers: np.ndarray  # [R]: the correction's multiplier on each reference (ones without one)


def choose_correction(
    whole_us: np.ndarray, features: np.ndarray, additive: AdditiveFit, caches: Mapping[str, int] | None,
    min_gain: float = MIN_GAIN,
) -> CorrectionFit:
    """The correction to keep at one batch size (or none), from references' p50s `whole_us` `[R]`, their
    features `[R, len(FEATURES)]` and the additive fit `additive` (`min_gain` 0: the best candidate whenever
    it predicts left-out references better at all, for offline comparisons)."""
    n = len(whole_us)
    base = loo_predictions(whole_us, additive, np.zeros((n, 0)))
    errors = {"additive": median_rel_error(base, whole_us)}
    terms = candidate_terms(features, caches)
    candidates = [[t] for t in terms] + ([terms] if len(terms) > 1 else [])
    best = None
    for cand in candidates:
        loo = loo_predictions(whole_us, additive, basis(features, cand))
        err = median_rel_error(loo, whole_us)
        if best is None or err < best[0]:
            best = (err, cand, loo)
    none = CorrectionFit(None, errors, base, np.ones(n))
    if best is None:
        return none
    err, cand, loo = best
    errors["corrected"] = err
    phi = basis(features, cand)
    _, coefs = backfit(whole_us, additive, phi, np.ones(n, dtype=bool))
    multipliers = 1.0 + phi @ coefs
    if err > (1.0 - min_gain) * errors["additive"] or not (
        MULTIPLIER_RANGE[0] <= multipliers.min() and multipliers.max() <= MULTIPLIER_RANGE[1]
    ):
        return none
    correction = Correction(tuple(Term(f, float(k), round(float(c), 6)) for (f, k), c in zip(cand, coefs)))
    return CorrectionFit(correction, errors, loo, 1.0 + phi @ np.round(coefs, 6))
