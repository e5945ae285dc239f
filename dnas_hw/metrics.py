"""CTR metrics on numpy arrays: exact rank AUC, log loss, accuracy, calibration."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC by ranks (Mann-Whitney U); tied scores share their average rank.

    labels [N] in {0, 1}, scores [N]. NaN when only one class is present.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Average rank (1-based) per run of tied scores.
    run_start = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    run_id = np.cumsum(run_start) - 1
    starts = np.flatnonzero(run_start)
    ends = np.r_[starts[1:], sorted_scores.size]
    avg_rank = (starts + ends + 1) / 2.0
    ranks = np.empty_like(scores)
    ranks[order] = avg_rank[run_id]
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ctr_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """`logloss`, `auc`, `accuracy` (threshold 0.5), `calibration` (mean prediction / positive rate), `rows`."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    positive_rate = labels.mean() if labels.size else float("nan")
    return {
        "logloss": logloss(labels, probs),
        "auc": auc(labels, probs),
        "accuracy": float(np.mean((probs >= 0.5) == (labels >= 0.5))),
        "calibration": float(probs.mean() / positive_rate) if positive_rate > 0 else float("nan"),
        "rows": int(labels.size),
    }
