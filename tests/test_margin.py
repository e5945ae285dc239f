"""Budgets that hold as measured: the margin a LUT's own error leaves (lut.margin), and the search against it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_checks import one_error_line, run
from dnas_hw.data.ids import data_source
from lut.margin import LEVEL, budget_margin
from lut.table import Lut, LutError
from profiler.overhead import fit_in_model, leave_one_out_error
from dnas_hw.timing import TimingStats
from search_fixtures import synth_data, tiny_space, toy_lut

B = 16


def refs(measured, predicted, p90=None) -> list[dict]:
    """Reference points as the profiler records them (ops_us: one kind, so an in-sample fit can be rebuilt)."""
    p90 = p90 or [1.2 * m for m in measured]
    return [{"whole_us": m, "whole_p90_us": q, "ops_us": {"linear": m - 5.0}, "loo_predicted_us": p}
            for m, q, p in zip(measured, p90, predicted)]


def lut_with(references, batch_size: int = B, **meta) -> Lut:
    lut = toy_lut(tiny_space(), batch_size)
    return Lut(lut.rows, {**lut.meta, "model_overhead": {str(batch_size): references}, **meta}, "toy.csv")


def test_the_margin_is_the_90th_percentile_of_measured_over_predicted_by_hand():
    predicted = [100.0] * 10
    measured = [95.0, 100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 112.0, 130.0]
    m = budget_margin(lut_with(refs(measured, predicted)), B)
    # np.quantile(..., 0.9, method="higher") of 10 ratios: position 8.1 -> the 10th smallest, 1.30
    assert LEVEL == 0.9 and (m.quantile, m.source, m.references) == ("p50", "leave-one-out", 10)
    assert m.margin == pytest.approx(0.30)
    assert m.effective_budget_us(1300.0) == pytest.approx(1000.0)
    nine = budget_margin(lut_with(refs(measured[:9], predicted[:9])), B)  # position 7.2 -> the 9th, 1.12
    assert nine.margin == pytest.approx(0.12)
    d = m.to_dict(1300.0)
    assert d["requested_budget_ms"] == 1.3 and d["effective_budget_ms"] == pytest.approx(1.0) and d["margin"] == 0.3


def test_holding_the_p90_adds_each_models_own_spread():
    measured, predicted = [100.0] * 10, [100.0] * 10
    p90 = [110.0] * 8 + [125.0, 140.0]
    m = budget_margin(lut_with(refs(measured, predicted, p90)), B, "p90")
    assert m.quantile == "p90" and m.margin == pytest.approx(0.40)
    assert budget_margin(lut_with(refs(measured, predicted, p90)), B, "p50").margin == 0.0


def test_a_lut_that_over_predicts_leaves_no_margin_and_one_without_references_says_so():
    assert budget_margin(lut_with(refs([90.0] * 5, [100.0] * 5)), B).margin == 0.0
    none = budget_margin(toy_lut(tiny_space(), B), B)
    assert (none.margin, none.source, none.references) == (0.0, "none", 0)
    assert "no reference measurements at batch 16" in none.describe()


def test_an_older_lut_gives_an_in_sample_margin_and_cannot_hold_the_p90():
    measured = [100.0, 120.0, 150.0, 200.0]
    old = [{"whole_us": m, "ops_us": {"linear": m / 2}} for m in measured]  # no p90, no leave-one-out prediction
    lut = lut_with(old, in_model_factor={str(B): {"linear": 1.5}})
    overhead = float(lut.rows[lut.rows["op"] == "model_overhead"]["p50_us"].iloc[0])
    predicted = np.array([overhead + 1.5 * m / 2 for m in measured])
    m = budget_margin(lut, B)
    assert m.source == "in-sample"
    assert m.margin == pytest.approx(max(0.0, np.quantile(np.array(measured) / predicted, 0.9, method="higher") - 1))
    with pytest.raises(LutError, match="profiled before whole-model p90s were recorded"):
        budget_margin(lut, B, "p90")
    with pytest.raises(LutError, match="budget quantile 'p99'"):
        budget_margin(lut, B, "p99")


def test_the_fit_records_each_references_leave_one_out_prediction():
    whole = [TimingStats(0.9 * w, w, 1.1 * w, 10) for w in (50.0, 80.0, 120.0, 160.0, 230.0)]
    ops = [{p: {"linear": s, "embedding": e} for p in ("p10_us", "p50_us", "p90_us")}
           for s, e in ((20.0, 10.0), (40.0, 15.0), (60.0, 30.0), (90.0, 30.0), (130.0, 50.0))]
    fit = fit_in_model(whole, ops)
    y = np.array([w.p50_us for w in whole])
    loo = np.array(fit.loo_predicted_us)
    assert len(loo) == 5 and not np.allclose(loo, y)
    x = np.array([[o["p50_us"]["embedding"], o["p50_us"]["linear"]] for o in ops])
    assert np.median(np.abs(loo / y - 1)) == pytest.approx(leave_one_out_error(fit.method, y, x), abs=1e-4)


# ----------------------------------------------------------------- the search against the effective budget


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth_data(tmp_path_factory.mktemp("margin") / "data")


@pytest.fixture(scope="module")
def space(data):
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.space import get_space

    return get_space("dlrm-tiny", PreparedData.open(data).cardinalities)


def _budget_us(lut: Lut, space) -> float:
    """Halfway between the space's smallest and largest arch by the LUT."""
    from lut.predict import predict

    lo, hi = (predict(lut, a, B).total_us for a in (space.smallest(), space.largest()))
    return round(lo + 0.5 * (hi - lo), 1)


@pytest.mark.slow
def test_search_aims_at_the_budget_less_the_margin_and_says_so(data, space, tmp_path):
    base = toy_lut(space, B)
    lut = Lut(base.rows, {**base.meta, "ids": data_source(data).to_meta(),
                          "model_overhead": {str(B): refs([100.0] * 9 + [125.0], [100.0] * 10)}}, "toy.csv")
    lut.save(tmp_path / "lut.csv")
    budget = _budget_us(lut, space)
    out = tmp_path / "run"
    args = ["search", "--data", data, "--space", "dlrm-tiny", "--lut", tmp_path / "lut.csv", "--latency-budget",
            f"{budget}us", "--batch-size", B, "--out", out, "--epochs", 2, "--train-batch-size", 256]
    code, output = run(*args)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    margin = summary["budget_margin"]
    assert margin["quantile"] == "p50" and margin["margin"] == pytest.approx(0.25)
    assert margin["requested_budget_ms"] == pytest.approx(budget / 1000)
    assert summary["latency_budget_ms"] == pytest.approx(margin["effective_budget_ms"]) == pytest.approx(budget / 1.25 / 1000)
    assert summary["predicted_latency_ms"] <= margin["effective_budget_ms"]
    assert summary["lut_ids"] == data_source(data).describe() and "note:" not in output
    assert "margin 25.0% to hold the measured p50" in output and f"searched against {budget / 1.25 / 1000:.3f}ms" in output
    # A resumed finished run gives the same summary; another quantile is another search.
    code, again = run(*args, "--resume")
    assert code == 0 and json.loads((out / "summary.json").read_text()) == summary, again
    one_error_line(*run(*args, "--resume", "--budget-quantile", "p90"), "latency budget")


@pytest.mark.slow
def test_search_flags_a_lut_of_other_ids_and_refuses_a_quantile_it_cannot_hold(data, space, tmp_path):
    base = toy_lut(space, B)  # no ids recorded: spread; references without p90s or leave-one-out predictions
    old = Lut(base.rows, {**base.meta, "model_overhead": {str(B): [{"whole_us": 50.0, "ops_us": {"linear": 45.0}}]},
                          "in_model_factor": {str(B): 1.0}}, "toy.csv")
    old.save(tmp_path / "lut.csv")
    args = ["search", "--data", data, "--space", "dlrm-tiny", "--lut", tmp_path / "lut.csv", "--latency-budget",
            f"{_budget_us(old, space)}us", "--batch-size", B, "--epochs", 2, "--train-batch-size", 256]
    one_error_line(*run(*args, "--out", tmp_path / "a", "--budget-quantile", "p90"), "whole-model p90s")
    assert not (tmp_path / "a").exists()
    code, output = run(*args, "--out", tmp_path / "b")
    assert code == 0, output
    assert "note: " in output and "profiled with ids spread" in output and f"profile with --data {data}" in output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["lut_ids"].startswith("spread") and summary["budget_margin"]["source"] == "in-sample"
