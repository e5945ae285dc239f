"""The in-model fit (profiler/overhead.py) on synthetic reference points, and how run.py folds it into rows."""

from __future__ import annotations

import numpy as np
import pytest

from dnas_hw.space import get_space
from dnas_hw.timing import TimingStats
from profiler.overhead import (
    MIN_FACTOR,
    REFERENCE_SAMPLES,
    choose_method,
    common_factor,
    fit_in_model,
    leave_one_out_error,
    per_kind_factors,
    reference_archs,
    theil_sen_slope,
)
from profiler.run import op_factor, scaled
from profiler.validate import sample_archs

PERCENTILES = ("p10_us", "p50_us", "p90_us")
KINDS = ("linear", "embedding", "interaction_dot")


def synthetic_ops(n: int = 17, seed: int = 0) -> list[dict[str, float]]:
    """Op sums per kind (us) that vary independently, like random archs of a space; the first is the smallest."""
    rng = np.random.default_rng(seed)
    ops = [{"linear": 20.0, "embedding": 40.0, "interaction_dot": 5.0}]
    ops += [
        {"linear": float(rng.uniform(50, 3000)), "embedding": float(rng.uniform(60, 400)),
         "interaction_dot": float(rng.uniform(10, 300))}
        for _ in range(n - 1)
    ]
    return ops


def references(whole_us, ops, spread=(0.0, 0.0)):
    """TimingStats with p10/p90 at fixed offsets from p50, and op sums alike at every percentile."""
    lo, hi = spread
    return [TimingStats(w + lo, w, w + hi, 10) for w in whole_us], [{p: dict(o) for p in PERCENTILES} for o in ops]


def predict(fit, ops: dict[str, float]) -> float:
    return fit.overhead.p50_us + sum(fit.factors[k] * us for k, us in ops.items())


def test_theil_sen_ignores_one_reference_off_the_line_and_needs_a_span():
    ops = [100.0, 200.0, 400.0, 800.0, 1600.0]
    whole = [10 + 1.5 * x for x in ops]
    whole[2] += 300
    assert theil_sen_slope(ops, whole) == pytest.approx(1.5)
    assert theil_sen_slope([100, 110], [5, 9]) is None  # too close for a slope


def test_a_planted_common_factor_and_overhead_are_recovered_with_every_percentile():
    ops = synthetic_ops()
    whole, per_p = references([30.0 + 1.4 * sum(o.values()) for o in ops], ops, spread=(-2.0, 7.0))
    whole[5] = TimingStats(whole[5].p10_us * 1.5, whole[5].p50_us * 1.5, whole[5].p90_us * 1.5, 10)  # a burst of load
    fit = fit_in_model(whole, per_p, KINDS)
    assert fit.method == "common"  # per-kind cannot predict left-out references better than the true model
    assert fit.factors == pytest.approx(dict.fromkeys(KINDS, 1.4))
    assert (fit.overhead.p10_us, fit.overhead.p50_us, fit.overhead.p90_us) == pytest.approx((28.0, 30.0, 37.0))
    assert fit.overhead.repeats == 10 * len(ops)


def test_planted_per_kind_factors_are_found_and_chosen_over_the_common_factor():
    true = {"linear": 1.3, "embedding": 0.7, "interaction_dot": 1.8}
    ops = synthetic_ops()
    whole, per_p = references([25.0 + sum(true[k] * us for k, us in o.items()) for o in ops], ops)
    fit = fit_in_model(whole, per_p, KINDS)
    assert fit.method == "per-kind" and fit.loo_error["per-kind"] < fit.loo_error["common"]
    # the ridge pulls each factor towards the common one, a little: within 10% of the truth, models within 2%
    arr = np.array([[o[k] for k in KINDS] for o in ops])
    common = common_factor(np.array([w.p50_us for w in whole]), arr)
    for kind in ("embedding", "interaction_dot"):  # the kinds far from it (linear, 1.3, sits near it)
        assert abs(fit.factors[kind] - common) < abs(true[kind] - common), kind
    assert fit.factors == pytest.approx(true, rel=0.1)
    assert max(abs(predict(fit, o) / w.p50_us - 1) for o, w in zip(ops, whole)) < 0.02


def test_without_the_ridge_per_kind_least_squares_is_exact():
    true = np.array([1.3, 0.7, 1.8])
    ops = np.array([[o[k] for k in KINDS] for o in synthetic_ops()])
    whole = 25.0 + ops @ true
    assert per_kind_factors(whole, ops, prior=1.0, ridge=0.0) == pytest.approx(true, rel=1e-6)
    # a strong ridge gives every kind the prior
    assert per_kind_factors(whole, ops, prior=1.2, ridge=1e6) == pytest.approx(np.full(3, 1.2), rel=1e-3)


def test_a_kind_no_reference_runs_gets_the_common_factor_and_factors_have_a_floor():
    ops = synthetic_ops()
    whole, per_p = references([1.2 * sum(o.values()) for o in ops], ops)
    fit = fit_in_model(whole, per_p, (*KINDS, "interaction_cat"))
    assert fit.factors["interaction_cat"] == pytest.approx(1.2, rel=0.01)
    arr = np.array([[o[k] for k in KINDS] for o in ops])
    degenerate = 100 + arr @ np.array([1.0, -2.0, 1.0])
    assert per_kind_factors(degenerate, arr, prior=1.0, ridge=0.0)[1] == MIN_FACTOR


def test_common_factor_is_one_without_a_span_and_never_below_one():
    ops = [{"linear": 100.0 + i, "embedding": 50.0} for i in range(6)]
    whole, per_p = references([10 + 1.5 * sum(o.values()) for o in ops], ops)
    fit = fit_in_model(whole, per_p)
    assert fit.method == "common" and fit.loo_error == {} and set(fit.factors.values()) == {1.0}
    assert fit.overhead.p50_us == pytest.approx(float(np.median([10 + 0.5 * sum(o.values()) for o in ops])))
    ops = np.array([[o[k] for k in KINDS] for o in synthetic_ops()])
    assert common_factor(0.5 * ops.sum(axis=1), ops) == 1.0  # ops do not run faster inside a model
    # with three references there is nothing to leave out and still choose by: common
    assert choose_method(10 + ops[:3] @ np.array([2.0, 0.5, 3.0]), ops[:3]) == ("common", {})


def test_leave_one_out_error_is_zero_on_exact_data_and_sees_a_bad_point():
    ops = np.array([[o[k] for k in KINDS] for o in synthetic_ops()])
    whole = 30 + 1.4 * ops.sum(axis=1)
    assert leave_one_out_error("common", whole, ops) == pytest.approx(0.0, abs=1e-9)
    noisy = whole * np.where(np.arange(len(whole)) % 2 == 0, 1.1, 0.9)
    assert leave_one_out_error("common", noisy, ops) > 0.05


def test_the_smallest_arch_is_always_the_first_reference_and_the_draws_are_not_the_validations():
    space = get_space("dlrm-kaggle")
    archs = reference_archs(space, seed=0)
    assert len(archs) == REFERENCE_SAMPLES + 1
    assert archs[0].to_dict() == space.smallest().to_dict()
    assert [a.to_dict() for a in reference_archs(space, seed=0)] == [a.to_dict() for a in archs]  # reproducible
    assert reference_archs(space, seed=1)[1].to_dict() != archs[1].to_dict()
    validation = {str(a.to_dict()) for a in sample_archs(space, 50, 1)}
    assert not validation & {str(a.to_dict()) for a in archs[1:]}
    # drawn, so they cover the sizes random archs have (not only the middle)
    sizes = sorted(sum(c.num_params() for _, c in a.ops().named() if c.op == "linear") for a in archs[1:])
    pool = sorted(sum(c.num_params() for _, c in a.ops().named() if c.op == "linear") for a in sample_archs(space, 200, 7))
    assert sizes[0] <= pool[len(pool) // 4] and sizes[-1] >= pool[3 * len(pool) // 4]


def test_rows_are_scaled_by_their_kinds_factor_and_old_single_factors_still_apply():
    raw = {"op": "linear", "params": "{}", "batch_size": 64, "p10_us": 10.0, "p50_us": 20.0, "p90_us": 30.0, "repeats": 5}
    per_kind = {"64": {"linear": 1.5, "embedding": 0.8}}
    assert scaled(raw, per_kind)["p50_us"] == pytest.approx(30.0)
    assert scaled({**raw, "op": "embedding"}, per_kind)["p90_us"] == pytest.approx(24.0)
    assert op_factor({"64": 1.25}, "linear", 64) == 1.25  # a LUT written before per-kind factors
