"""The validation report's statistics on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lut.validate import fidelity, ranks, spearman


def test_ranks_share_ties():
    assert ranks([10, 30, 20, 30]).tolist() == [1.0, 3.5, 2.0, 3.5]


def test_spearman_on_fixed_inputs():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # One swapped pair among 5: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 120.
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert math.isnan(spearman([1, 2], [5, 5]))


def test_fidelity_statistics_by_hand():
    measured = [100.0, 200.0, 400.0, 800.0]
    predicted = [105.0, 180.0, 400.0, 1000.0]  # errors +5%, -10%, 0%, +25%
    f = fidelity(predicted, measured)
    assert f["samples"] == 4
    assert f["median_abs_error_pct"] == pytest.approx(7.5)
    assert f["within_10pct"] == pytest.approx(0.75)  # exactly 10% counts as within
    assert f["spearman"] == pytest.approx(1.0)
    assert f["mean_error_pct"] == pytest.approx(5.0)
    assert f["max_abs_error_pct"] == pytest.approx(25.0)
    assert fidelity(np.array(measured), np.array(measured))["median_abs_error_pct"] == 0.0


def test_in_model_fit_by_hand():
    from dnas_hw.timing import TimingStats
    from profiler.overhead import fit_in_model, theil_sen_slope

    # whole = 10 + 1.5 * ops, one reference off the line: the median slope ignores it.
    ops = [100.0, 200.0, 400.0, 800.0, 1600.0]
    whole = [10 + 1.5 * x for x in ops]
    whole[2] += 300
    assert theil_sen_slope(ops, whole) == pytest.approx(1.5)
    assert theil_sen_slope([100, 110], [5, 9]) is None  # too close for a slope
    stats = [TimingStats(w - 1, w, w + 1, 10) for w in whole]
    factor, overhead = fit_in_model(stats, [{"p10_us": x, "p50_us": x, "p90_us": x} for x in ops])
    assert factor == pytest.approx(1.5) and overhead.p50_us == pytest.approx(10) and overhead.repeats == 50
    assert overhead.p10_us == pytest.approx(9) and overhead.p90_us == pytest.approx(11)
    factor, _ = fit_in_model(stats, [{"p10_us": x, "p50_us": x, "p90_us": x} for x in [100, 101, 102, 103, 104]])
    assert factor == 1.0
    factor, _ = fit_in_model([TimingStats(1, x / 2, 1, 1) for x in ops], [{"p10_us": x, "p50_us": x, "p90_us": x} for x in ops])
    assert factor == 1.0  # never below 1
