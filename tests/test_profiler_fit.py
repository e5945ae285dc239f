"""The in-model fit (profiler/overhead.py) on synthetic reference points, and how run.py folds it into rows."""

from __future__ import annotations

import numpy as np
import pytest

from dnas_hw.space import get_space
from dnas_hw.timing import TimingStats
from profiler.overhead import MIN_FACTOR, InModelFit, fit_in_model, overhead_stats, reference_archs
from profiler.run import op_factor, scaled

TRUE = {"linear": 1.3, "embedding": 0.9, "interaction_dot": 1.8}
OVERHEAD = 25.0


def synthetic_references(n: int = 12, seed: int = 0) -> list[dict[str, float]]:
    """Op sums per kind that vary independently, like random archs of a space (us)."""
    rng = np.random.default_rng(seed)
    return [
        {"linear": float(rng.uniform(50, 3000)), "embedding": float(rng.uniform(60, 120)),
         "interaction_dot": float(rng.uniform(10, 300))}
        for _ in range(n)
    ]


def truth(ops: dict[str, float]) -> float:
    return OVERHEAD + sum(TRUE[k] * us for k, us in ops.items())


def test_fit_without_ridge_recovers_known_factors_and_overhead():
    ops = synthetic_references()
    fit = fit_in_model([truth(o) for o in ops], ops, ridge=0.0)
    assert fit.factors == pytest.approx(TRUE, rel=1e-5)
    assert fit.overhead_us == pytest.approx(OVERHEAD, rel=1e-3)


def test_the_ridge_pulls_each_factor_towards_the_common_one_and_still_fits():
    ops = synthetic_references()
    whole = [truth(o) for o in ops]
    common = fit_in_model(whole, [{"all": sum(o.values())} for o in ops]).factors["all"]
    fit = fit_in_model(whole, ops)
    for kind, true in TRUE.items():
        assert abs(fit.factors[kind] - common) <= abs(true - common) + 0.01, kind
    assert fit.factors["linear"] == pytest.approx(1.3, rel=0.01)  # the kind whose sum varies most moves least
    assert max(abs(fit.predict(o) / truth(o) - 1) for o in ops) < 0.02


def test_one_disturbed_reference_hardly_moves_the_fit():
    ops = synthetic_references()
    whole = [truth(o) for o in ops]
    whole[3] *= 1.4  # a burst of load during one reference
    fit = fit_in_model(whole, ops, ridge=0.0)
    # Least squares would miss the others by up to 6.6% here (linear factor 1.39); Huber weights keep them within 2%.
    assert fit.factors["linear"] == pytest.approx(1.3, rel=0.02)
    others = [i for i in range(len(ops)) if i != 3]
    assert max(abs(fit.predict(ops[i]) / truth(ops[i]) - 1) for i in others) < 0.02


def test_a_kind_no_reference_runs_gets_the_common_factor():
    ops = synthetic_references()
    fit = fit_in_model([1.2 * sum(o.values()) for o in ops], ops, kinds=["interaction_cat"])
    assert fit.factors["interaction_cat"] == pytest.approx(1.2, rel=0.01)
    assert fit.factors["linear"] == pytest.approx(1.2, rel=0.01)


def test_references_too_close_for_a_slope_give_factor_one():
    ops = [{"linear": 100.0 + i, "embedding": 50.0} for i in range(5)]
    fit = fit_in_model([10 + 1.5 * sum(o.values()) for o in ops], ops)
    assert fit.factors == {"embedding": 1.0, "linear": 1.0}
    assert fit.overhead_us == pytest.approx(float(np.median([10 + 0.5 * sum(o.values()) for o in ops])))


def test_a_factor_below_the_floor_is_clamped_and_the_overhead_refitted():
    ops = synthetic_references()
    whole = [100 + 1.0 * o["linear"] + 1.0 * o["interaction_dot"] - 2.0 * o["embedding"] for o in ops]
    fit = fit_in_model(whole, ops, ridge=0.0)
    assert fit.factors["embedding"] == MIN_FACTOR
    residuals = [w - fit.predict(o) for w, o in zip(whole, ops)]
    assert float(np.median(residuals)) == pytest.approx(0.0, abs=1e-6)


def test_overhead_row_percentiles_follow_the_references_spread():
    ops = synthetic_references(6)
    fit = InModelFit(dict(TRUE), OVERHEAD)
    whole = [TimingStats(truth(o) - 4, truth(o), truth(o) + 9, 10) for o in ops]
    per_p = [{p: dict(o) for p in ("p10_us", "p50_us", "p90_us")} for o in ops]
    row = overhead_stats(fit, whole, per_p)
    assert (row.p10_us, row.p50_us, row.p90_us, row.repeats) == pytest.approx((OVERHEAD - 4, OVERHEAD, OVERHEAD + 9, 60))


def test_reference_archs_are_distinct_and_spread_over_sizes():
    space = get_space("dlrm-kaggle")

    def size(arch):
        return sum(c.num_params() for _, c in arch.ops().named() if c.op == "linear")

    archs = reference_archs(space, size, seed=0, samples=8, candidates=40)
    sizes = [size(a) for a in archs]
    assert len({str(a.to_dict()) for a in archs}) == 8 and sizes == sorted(sizes)
    pool = sorted(size(a) for a in reference_archs(space, size, seed=0, samples=40, candidates=40))
    assert sizes[0] <= pool[len(pool) // 8] and sizes[-1] >= pool[-len(pool) // 8 - 1]
    assert [a.to_dict() for a in reference_archs(space, size, seed=0, samples=8, candidates=40)] == [a.to_dict() for a in archs]


def test_rows_are_scaled_by_their_kinds_factor_and_old_single_factors_still_apply():
    raw = {"op": "linear", "params": "{}", "batch_size": 64, "p10_us": 10.0, "p50_us": 20.0, "p90_us": 30.0, "repeats": 5}
    per_kind = {"64": {"linear": 1.5, "embedding": 0.8}}
    assert scaled(raw, per_kind)["p50_us"] == pytest.approx(30.0)
    assert scaled({**raw, "op": "embedding"}, per_kind)["p90_us"] == pytest.approx(24.0)
    assert op_factor({"64": 1.25}, "linear", 64) == 1.25  # a LUT written before per-kind factors
