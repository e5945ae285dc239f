"""Does the LUT predict real latency? Sample archs, time each whole model, compare with the prediction.

`validate_lut` samples `samples` archs from the space (seeded), builds each as
served (`profiler.runners`: the torch module, or the exported model in one
onnxruntime session, on the LUT's backend, device and threads), times it with
the same timer rules the profiler used, and reports how far the predictions
are off: `median_abs_error_pct`, `within_10pct` (fraction), `spearman` (rank
correlation of predicted and measured), and the worst cases with their
per-op breakdown.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from dnas_hw.data.ids import IdSource
from dnas_hw.metrics import spearman
from dnas_hw.progress import progress
from lut.predict import predict
from lut.table import Lut, overhead_call
from profiler.drift import host_drift
from profiler.runners import GROUP, time_archs

WORST = 5


def fidelity(predicted_us: Sequence[float], measured_us: Sequence[float]) -> dict:
    """Summary statistics of predicted vs measured latencies (errors relative to the measurement)."""
    p, m = np.asarray(predicted_us, dtype=np.float64), np.asarray(measured_us, dtype=np.float64)
    err = (p - m) / m * 100.0
    return {
        "samples": int(len(m)),
        "median_abs_error_pct": float(np.median(np.abs(err))),
        "within_10pct": float(np.mean(np.abs(err) <= 10.0)),
        "spearman": spearman(p, m),
        "mean_error_pct": float(np.mean(err)),
        "max_abs_error_pct": float(np.max(np.abs(err))),
    }


def sample_archs(space, samples: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(samples)]


def validate_many(
    lut: Lut, space, *, samples: int, batch_sizes: Sequence[int], seed: int = 0, ids: IdSource | None = None,
) -> dict[int, dict]:
    """`validate_lut` at several batch sizes, each model built (and exported) once: `{batch_size: report}`.

    After the sampled archs, the LUT's reference models are timed again (`profiler.drift`; a third of
    50 archs' time) for each report's `host_drift`, where the LUT records them.

    `ids`: the ids the models see (`dnas_hw.data.ids`; None: spread); the caller
    checks that they are the LUT's (`Lut.check_ids`)."""
    ids = ids or IdSource()
    sizes = [int(b) for b in batch_sizes]
    archs = sample_archs(space, samples, seed)
    # Every row the predictions need, checked before any timing starts.
    needed = set().union(*(set(c for _, c in a.ops().named()) for a in archs)) | {overhead_call(space.num_dense, space.num_sparse)}
    for b in sizes:
        lut.require(needed, b)
    target = dict(backend=lut.meta["backend"], device=lut.meta["device"], threads=int(lut.meta["threads"]))
    measured: list[dict] = []
    with progress(len(archs), f"validate {target['backend']}", "archs") as bar:
        for start in range(0, len(archs), GROUP):
            group = archs[start : start + GROUP]
            measured += time_archs(group, batch_sizes=sizes, cardinalities=space.cardinalities, seed=seed, ids=ids, **target)
            bar.update(len(group))
    drift = host_drift(lut, space, sizes, ids)
    sources = {"ids": ids.describe(), "lut_ids": lut.id_source.describe()}
    return {b: {**_report(lut, space, archs, [m[b] for m in measured], b, target, drift.get(b)), **sources} for b in sizes}


def validate_lut(lut: Lut, space, *, samples: int, batch_size: int, seed: int = 0, ids: IdSource | None = None) -> dict:
    """Predicted vs measured whole-model latency of `samples` seeded random archs at `batch_size`.

    The report: `samples`, `median_abs_error_pct`, `within_10pct`, `spearman`,
    `mean_error_pct`, `max_abs_error_pct`, `whole_arch_correction` (whether the
    LUT corrects the sum at this batch size; then `additive`: the same
    statistics of the plain sum), `archs` (each arch's predicted, with a
    correction also `additive_ms`, and measured ms), `worst` (the largest
    errors, with arch and breakdown), `ids` and `lut_ids` (the ids the models
    saw, and those the LUT was profiled with), and where the LUT records its
    reference models `host_drift` (`profiler.drift`: `references`, `ratio`,
    `pct`, and `net`: the statistics with the predictions scaled by the ratio).
    """
    return validate_many(lut, space, samples=samples, batch_sizes=[batch_size], seed=seed, ids=ids)[int(batch_size)]


def _report(lut: Lut, space, archs: list, measured: list, batch_size: int, target: dict, drift: dict | None = None) -> dict:
    predictions = [predict(lut, a, batch_size) for a in archs]
    pred_us = [p.total_us for p in predictions]
    meas_us = [m.p50_us for m in measured]
    corrected = lut.correction(batch_size) is not None
    rows = [
        {
            "index": i,
            "predicted_ms": round(p / 1000, 6),
            **({"additive_ms": round(pr.additive_us / 1000, 6)} if corrected else {}),
            "measured_ms": round(m.p50_us / 1000, 6),
            "measured_p10_ms": round(m.p10_us / 1000, 6),
            "measured_p90_ms": round(m.p90_us / 1000, 6),
            "error_pct": round((p - m.p50_us) / m.p50_us * 100, 3),
        }
        for i, (p, pr, m) in enumerate(zip(pred_us, predictions, measured))
    ]
    # The same measurements against the plain sum, where the LUT corrects it: what the correction changed.
    additive = {"additive": fidelity([p.additive_us for p in predictions], meas_us)} if corrected else {}
    # The LUT's error at the host's speed of today: what is left once the host's drift since the profile is out.
    drifted = {"host_drift": {**drift, "net": fidelity([p * drift["ratio"] for p in pred_us], meas_us)}} if drift else {}
    worst = sorted(rows, key=lambda r: -abs(r["error_pct"]))[:WORST]
    return {
        "lut": lut.path,
        "space": space.name,
        **target,
        "batch_size": int(batch_size),
        **fidelity(pred_us, meas_us),
        "whole_arch_correction": corrected,
        **additive,
        **drifted,
        "archs": rows,
        "worst": [
            {**r, "arch": archs[r["index"]].to_dict(), "breakdown": _by_part(predictions[r["index"]].breakdown)}
            for r in worst
        ],
    }


def _by_part(breakdown: list[dict]) -> dict:
    """A prediction's breakdown summed per model part (`bottom`, `emb`, `interaction`, `top`, `overhead`), in us,
    plus the per-op rows."""
    parts: dict[str, float] = {}
    for b in breakdown:
        part = b["slot"].split(".")[0]
        parts[part] = round(parts.get(part, 0.0) + b["us"], 3)
    return {"parts_us": parts, "ops": breakdown}
