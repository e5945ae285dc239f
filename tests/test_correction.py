"""The whole-arch correction (lut/correction.py): its fit on reference points, its use by predict, the
margin and the search's expected cost, and LUTs without it or with a malformed one."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest
import torch

from cli_checks import one_error_line, run
from dnas_hw.timing import TimingStats
from lut.correction import FEATURES, Correction, Term, arch_features, correction_meta
from lut.margin import budget_margin
from lut.predict import predict
from lut.table import Lut, LutError, meta_path
from profiler.correction_fit import MIN_GAIN, basis, candidate_terms, fit_coefs
from profiler.overhead import fit_in_model, leave_one_out_predictions
from search.cost import expected_cost
from search.family_search import latency_table
from search.layout import Layout
from search_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    assert_one_hot_expected_latency_equals_predict,
    one_thread,
    tiny_space,
    toy_lut,
)

PERCENTILES = ("p10_us", "p50_us", "p90_us")
CACHES = {"L2": 1 << 19, "L3": 1 << 25}
B = 16


def synthetic_references(n: int, seed: int, planted: float, noise: float = 0.0):
    """`n` references (the first the smallest): op sums, features, and whole latencies
    `(20 + 1.3 x op sum) x (1 + planted x log2(max(1, dense_bytes / L2)))`, times `1 + noise x N(0, 1)`."""
    rng = np.random.default_rng(seed)
    ops = [{"linear": 15.0, "embedding": 30.0}] + [
        {"linear": float(rng.uniform(50, 2000)), "embedding": float(rng.uniform(40, 400))} for _ in range(n - 1)]
    features = [{"dense_bytes": 1e5, "table_bytes": 1e5, "ops": 30.0}] + [
        {"dense_bytes": float(2 ** rng.uniform(17, 24)), "table_bytes": float(2 ** rng.uniform(17, 30)),
         "ops": float(rng.integers(30, 36))} for _ in range(n - 1)]
    whole = [(20 + 1.3 * sum(o.values())) * (1 + planted * np.log2(max(1.0, f["dense_bytes"] / CACHES["L2"])))
             * (1 + noise * rng.standard_normal()) for o, f in zip(ops, features)]
    stats = [TimingStats(0.95 * w, w, 1.1 * w, 10) for w in whole]
    return stats, [{p: dict(o) for p in PERCENTILES} for o in ops], features


def test_ridge_least_squares_recovers_a_planted_coefficient_given_the_additive_part():
    _, ops, features = synthetic_references(17, 0, 0.0)
    x = np.array([[f[k] for k in FEATURES] for f in features])
    phi = basis(x, [("dense_bytes", CACHES["L2"])])
    additive = np.array([20 + 1.3 * sum(o["p50_us"].values()) for o in ops])
    whole = additive * (1 + 0.06 * phi[:, 0])
    assert fit_coefs(whole, additive, phi)[0] == pytest.approx(0.06, rel=0.02)  # the ridge shrinks it ~1%


def test_the_fit_finds_a_planted_whole_arch_term_and_predicts_unseen_archs_better():
    whole, ops, features = synthetic_references(17, 0, planted=0.06, noise=0.01)
    fit = fit_in_model(whole, ops, features=features, caches=CACHES)
    assert fit.correction is not None
    assert "dense_bytes" in {t.feature for t in fit.correction.terms}
    assert fit.correction_loo_error["corrected"] < fit.correction_loo_error["additive"]
    # Unseen archs from the same planted law: the corrected prediction is the better one, within 3% in median.
    test_whole, test_ops, test_features = synthetic_references(40, 1, planted=0.06)
    y = np.array([w.p50_us for w in test_whole])
    additive = np.array([fit.overhead.p50_us + sum(fit.factors[k] * v for k, v in o["p50_us"].items())
                         for o in test_ops])
    corrected = additive * np.array([fit.correction.multiplier(f) for f in test_features])
    err_add, err_cor = (np.median(np.abs(p / y - 1)) for p in (additive, corrected))
    assert err_cor < 0.03 and err_cor < err_add / 2


def test_without_a_whole_arch_effect_the_fit_falls_back_to_the_additive_one():
    whole, ops, features = synthetic_references(17, 2, planted=0.0, noise=0.03)
    fit = fit_in_model(whole, ops, features=features, caches=CACHES)
    assert fit.correction is None
    assert set(fit.correction_loo_error) == {"additive", "corrected"}
    # The best candidate fitted noise a little, not by the fifth a kept correction must gain.
    assert fit.correction_loo_error["corrected"] > (1 - MIN_GAIN) * fit.correction_loo_error["additive"]
    # The margin's leave-one-out predictions are then the additive fit's.
    y = np.array([w.p50_us for w in whole])
    x = np.array([[o["p50_us"][k] for k in sorted(ops[0]["p50_us"])] for o in ops])
    np.testing.assert_allclose(fit.loo_predicted_us, leave_one_out_predictions(fit.method, y, x), atol=1e-3)
    assert correction_meta(fit.correction, fit.correction_loo_error)["method"] == "additive"


def test_candidate_terms_use_the_cache_sizes_and_drop_terms_no_reference_reaches():
    x = np.array([[1e5, 1e6, 30], [2e6, 2e6, 32]])
    assert candidate_terms(x, CACHES) == [("dense_bytes", CACHES["L2"]), ("table_bytes", CACHES["L2"]), ("ops", 30.0)]
    # Without cache sizes, the knots are the smallest reference's values.
    assert candidate_terms(x, {}) == [("dense_bytes", 1e5), ("table_bytes", 1e6), ("ops", 30.0)]


# ----------------------------------------------------------------- a LUT with a correction


def corrected_lut(space, batch_size: int, coef: float = 0.2) -> Lut:
    """The toy LUT with a correction whose knots sit at the median of sampled archs' features (active on half)."""
    rng = random.Random(3)
    sampled = [arch_features(c for _, c in space.sample(rng).ops().named()) for _ in range(20)]
    terms = [{"feature": f, "knot": statistics.median(s[f] for s in sampled), "coef": c}
             for f, c in (("dense_bytes", coef), ("ops", -coef / 2))]
    lut = toy_lut(space, batch_size)
    lut.meta["whole_arch_correction"] = {str(batch_size): {"method": "corrected", "terms": terms, "loo_error": {}}}
    return lut


def test_predict_applies_the_correction_as_a_last_breakdown_row():
    space = tiny_space()
    plain, lut = toy_lut(space, B), corrected_lut(space, B)
    rng = random.Random(0)
    changed = 0
    for _ in range(20):
        arch = space.sample(rng)
        p = predict(lut, arch, B)
        multiplier = lut.correction(B).multiplier(arch_features(c for _, c in arch.ops().named()))
        assert p.additive_us == pytest.approx(predict(plain, arch, B).total_us)
        assert p.total_us == pytest.approx(p.additive_us * multiplier)
        assert p.breakdown[-1]["slot"] == "correction" and p.breakdown[-1]["params"]["multiplier"] == pytest.approx(multiplier, abs=1e-6)
        changed += multiplier != 1.0
    assert changed >= 5


def test_one_hot_expected_latency_with_the_correction_equals_predict():
    space = tiny_space()
    assert_one_hot_expected_latency_equals_predict(space, B, corrected_lut(space, B))


def test_the_expected_correction_is_differentiable_and_prices_the_expected_features():
    space = tiny_space()
    lut, layout = corrected_lut(space, B), Layout(space)
    table = latency_table(space, lut, B)
    assert table.correction is not None and table.fingerprint() != latency_table(space, toy_lut(space, B), B).fingerprint()
    probs = {g: torch.softmax(torch.randn(t.shape, generator=torch.Generator().manual_seed(0)).masked_fill(~v, -1e9), -1)
             .to(torch.float64).requires_grad_(True)
             for (g, t), v in zip(layout.one_hot(space.sample_choices(random.Random(0))).items(),
                                  (grp.valid() for grp in layout.groups.values()))}
    value = expected_cost(table, probs)
    value.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in probs.values())
    # The documented approximation: E[sum] x m(E[features]).
    plain = expected_cost(latency_table(space, toy_lut(space, B), B), probs)
    features = {name: expected_cost(t, probs).item() for name, t in table.features}
    assert value.item() == pytest.approx(plain.item() * lut.correction(B).multiplier(features), rel=1e-12)


def test_the_margin_of_an_in_sample_lut_applies_the_correction_to_its_references():
    correction = Correction((Term("dense_bytes", 100.0, 0.5),))
    refs = [{"whole_us": 300.0, "ops_us": {"linear": 100.0}, "features": {"dense_bytes": 400.0, "table_bytes": 0, "ops": 3}},
            {"whole_us": 100.0, "ops_us": {"linear": 50.0}, "features": {"dense_bytes": 50.0, "table_bytes": 0, "ops": 3}}]
    lut = toy_lut(tiny_space(), B, overhead_us=50.0)
    lut.meta.update(model_overhead={str(B): refs}, in_model_factor={str(B): {"linear": 1.0}},
                    whole_arch_correction={str(B): correction_meta(correction, {})})
    # Predicted in sample: (50 + 100) x (1 + 0.5 x 2) = 300 and (50 + 50) x 1 = 100: no margin needed.
    m = budget_margin(lut, B)
    assert m.source == "in-sample" and m.margin == pytest.approx(0.0)


# ----------------------------------------------------------------- old and malformed LUTs


def test_a_lut_without_the_field_or_with_the_additive_method_has_no_correction(tmp_path):
    space = tiny_space()
    lut = toy_lut(space, B)
    assert lut.correction(B) is None
    lut.meta["whole_arch_correction"] = {str(B): correction_meta(None, {"additive": 0.04, "corrected": 0.05})}
    lut.save(tmp_path / "a.csv")
    loaded = Lut.load(tmp_path / "a.csv")
    assert loaded.correction(B) is None and latency_table(space, loaded, B).correction is None
    arch = space.sample(random.Random(0))
    assert [b["slot"] for b in predict(loaded, arch, B).breakdown][-1] == "overhead"


@pytest.mark.parametrize("value, needle", [
    ([], "whole_arch_correction must map"),
    ({str(B): {"method": "corrected", "terms": [{"feature": "flops", "knot": 1, "coef": 0.1}]}}, "flops"),
    ({str(B): {"method": "corrected", "terms": [{"feature": "ops", "knot": 0, "coef": 0.1}]}}, "whole_arch_correction"),
    ({str(B): {"method": "additive", "terms": [{"feature": "ops", "knot": 1, "coef": 0.1}]}}, "additive with terms"),
    ({str(B): {"method": "magic"}}, "whole_arch_correction"),
])
def test_a_malformed_correction_is_one_clear_error(tmp_path, value, needle):
    lut = toy_lut(tiny_space(), B)
    lut.meta["whole_arch_correction"] = value
    lut.save(tmp_path / "bad.csv")
    with pytest.raises(LutError, match=needle):
        Lut.load(tmp_path / "bad.csv")
    one_error_line(*run("lut", "show", tmp_path / "bad.csv"), "whole_arch_correction")
    assert meta_path(tmp_path / "bad.csv").exists()


def test_show_names_the_correction(tmp_path):
    lut = corrected_lut(tiny_space(), B)
    lut.meta["whole_arch_correction"][str(B)]["loo_error"] = {"additive": 0.08, "corrected": 0.04}
    lut.save(tmp_path / "c.csv")
    code, out = run("lut", "show", tmp_path / "c.csv")
    assert code == 0, out
    assert "whole-arch correction x (1 +0.200 log2(dense_bytes" in out
    assert "leave-one-out error additive 8.0%, corrected 4.0%" in out


def test_the_extreme_archs_are_priced_with_the_correction():
    from search.cost import one_hot_cost
    from search.extremes import extreme_arch

    space = tiny_space()
    lut, layout = corrected_lut(space, B), Layout(space)
    table = latency_table(space, lut, B)
    for cheapest in (True, False):
        price, choices = extreme_arch(table, layout, cheapest=cheapest)
        assert price == pytest.approx(one_hot_cost(table, layout.one_hot(choices)), rel=1e-12)
        assert price == pytest.approx(predict(lut, space.arch(choices), B).total_us, rel=1e-12)
