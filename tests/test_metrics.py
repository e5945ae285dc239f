"""CTR metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dnas_hw.metrics import auc, ctr_metrics, kendall_tau, logloss, ranks, spearman


def pairwise_auc(labels, scores) -> float:
    """The definition: P(score of a positive > score of a negative), ties counting one half."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_with_ties_by_hand():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.4, 0.8, 0.8, 0.9]
    # Positives 0.4, 0.8, 0.9 against negatives 0.1, 0.4, 0.8:
    # 0.4 -> 1 + 1/2 + 0; 0.8 -> 1 + 1 + 1/2; 0.9 -> 3. Total 7 of 9 pairs.
    assert auc(np.array(labels), np.array(scores)) == pytest.approx(7 / 9, abs=1e-12)


def test_auc_extremes():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert auc(np.array([1, 0, 1, 0]), np.full(4, 0.5)) == 0.5
    assert math.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_auc_matches_the_pairwise_definition_on_heavy_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 7, 300) / 7.0  # only 7 distinct scores
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_logloss_accuracy_calibration_by_hand():
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.8, 0.4, 0.6, 0.2])
    m = ctr_metrics(labels, probs)
    assert m["logloss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.6) + math.log(0.8)) / 4)
    assert m["accuracy"] == 1.0
    assert m["calibration"] == pytest.approx(0.5 / 0.5)
    assert m["auc"] == 1.0 and m["rows"] == 4
    assert set(m) == {"logloss", "auc", "accuracy", "calibration", "rows"}


def test_logloss_is_finite_at_certain_mistakes():
    assert math.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_calibration_over_and_under():
    labels = np.array([1, 0, 0, 0])
    assert ctr_metrics(labels, np.full(4, 0.5))["calibration"] == pytest.approx(2.0)
    assert math.isnan(ctr_metrics(np.zeros(4), np.full(4, 0.5))["calibration"])


def test_ranks_share_ties():
    assert ranks([10, 30, 20, 30]).tolist() == [1.0, 3.5, 2.0, 3.5]


def test_spearman_on_fixed_inputs():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # One swapped pair among 5: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 120.
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert math.isnan(spearman([1, 2], [5, 5]))


def test_kendall_tau_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # One swapped pair among 4: 5 concordant, 1 discordant of 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with a tie in b: (concordant - discordant) / sqrt(6 * 5).
    assert kendall_tau([1, 2, 3, 4], [1, 2, 2, 4]) == pytest.approx(5 / 30**0.5)
    assert math.isnan(kendall_tau([1], [2])) and math.isnan(kendall_tau([1, 2], [3, 3]))
