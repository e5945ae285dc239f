"""The validation report's statistics on fixed inputs."""

from __future__ import annotations


import numpy as np
import pytest

from profiler.validate import fidelity


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

