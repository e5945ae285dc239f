"""CTR metrics on numpy arrays (exact rank AUC, log loss, accuracy, calibration), and rank correlations."""

from __future__ import annotations

from typing import Sequence

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


def ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (the Pearson correlation of the ranks); nan for fewer than 2 points."""
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant pairs) over the pairs untied in each; nan for fewer than 2 points."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied_x, untied_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if not untied_x or not untied_y:
        return float("nan")
    return float(np.sum(dx * dy) / np.sqrt(untied_x * untied_y))
