"""A budget margin from the LUT's own error, so that a searched model holds its budget as measured.

When it profiles, the profiler times reference archs whole at each batch size
(`profiler.overhead`) and records for each its measured p50 and p90 and the
in-model fit's prediction of it made *without* that reference (leave-one-out;
the whole-arch correction, `lut.correction`, refitted without it too where the
LUT keeps one):
the LUT's error on models it was not fitted to, as a search meets them. For
the statistic the budget must hold (`quantile`: the measured p50 or p90), the
margin at batch size b is

    margin = max(0, the LEVEL quantile over the references of measured_q / predicted - 1)

and the search aims at `budget / (1 + margin)`: a derived arch priced within
that budget measures within the real one unless it is under-predicted more than
all but a tenth of the references were. Holding p90 adds the spread of a
model's own latency (its p90 over its p50) to the LUT's error.

The margin is only as good as the references: it covers the LUT's model error
at profile time, not a machine loaded differently when the model is served.

LUTs profiled before the leave-one-out predictions were recorded give an
in-sample margin (the fit's residuals on its own references, an under-estimate),
and cannot hold p90 (no whole-model p90s); a LUT with no references at a batch
size (hand-made, or merged from partial tables) gives no margin, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lut.table import OVERHEAD_OP, Lut, LutError

QUANTILES = ("p50", "p90")
# The default holds the measured median: the statistic of the LUT's rows, of `dnas-hw bench`'s headline and of
# the pipeline's verdict. p90 holds the tail too, at the cost of the spread between a model's p90 and p50.
DEFAULT_QUANTILE = "p50"
# Which quantile of the references' measured/predicted ratios the margin covers (method "higher": an observed
# ratio, never an interpolation below it): with the profiler's 17 references, the second largest.
LEVEL = 0.9
SOURCES = ("leave-one-out", "in-sample", "none")


@dataclass(frozen=True)
class Margin:
    quantile: str  # the measured statistic the budget holds: "p50" or "p90"
    margin: float  # the search's budget is budget / (1 + margin)
    batch_size: int
    references: int  # reference archs it was derived from
    source: str  # one of SOURCES

    def effective_budget_us(self, budget_us: float) -> float:
        return budget_us / (1.0 + self.margin)

    def describe(self) -> str:
        if self.source == "none":
            return f"no margin: the LUT holds no reference measurements at batch {self.batch_size}"
        return (f"margin {self.margin:.1%} to hold the measured {self.quantile} ({self.source} error of "
                f"{self.references} reference archs at batch {self.batch_size}, {LEVEL:.0%} quantile)")

    def to_dict(self, budget_us: float) -> dict:
        """summary.json's `budget_margin`: the budget asked, the margin, the budget searched against."""
        return {
            "quantile": self.quantile,
            "requested_budget_ms": budget_us / 1000,
            "margin": round(self.margin, 6),
            "effective_budget_ms": self.effective_budget_us(budget_us) / 1000,
            "batch_size": self.batch_size,
            "references": self.references,
            "source": self.source,
            "level": LEVEL,
        }


def budget_margin(lut: Lut, batch_size: int, quantile: str = DEFAULT_QUANTILE) -> Margin:
    """The margin `lut` leaves at `batch_size` for the measured `quantile` to stay within a budget."""
    if quantile not in QUANTILES:
        raise LutError(f"budget quantile {quantile!r}: use one of {', '.join(QUANTILES)}")
    refs = lut.meta.get("model_overhead", {}).get(str(batch_size)) or []
    if not isinstance(refs, list) or not all(isinstance(r, dict) and _number(r.get("whole_us")) for r in refs):
        raise LutError(f"{lut.path}: model_overhead at batch {batch_size} must be a list of reference points")
    if not refs:
        return Margin(quantile, 0.0, int(batch_size), 0, "none")
    key = "whole_us" if quantile == "p50" else "whole_p90_us"
    if not all(_number(r.get(key)) for r in refs):
        raise LutError(f"{lut.path}: profiled before whole-model p90s were recorded; profile it again to hold "
                       f"the p90 (the p50 can be held with it)")
    measured = np.array([r[key] for r in refs], dtype=np.float64)
    if all(_number(r.get("loo_predicted_us")) for r in refs):
        predicted, source = np.array([r["loo_predicted_us"] for r in refs], dtype=np.float64), "leave-one-out"
    else:
        predicted, source = _in_sample(lut, refs, batch_size), "in-sample"
    if (predicted <= 0).any() or (measured <= 0).any():
        raise LutError(f"{lut.path}: a reference arch at batch {batch_size} has a non-positive latency")
    ratio = float(np.quantile(measured / predicted, LEVEL, method="higher"))
    return Margin(quantile, max(0.0, ratio - 1.0), int(batch_size), len(refs), source)


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _in_sample(lut: Lut, refs: list[dict], batch_size: int) -> np.ndarray:
    """The fit's own predictions of its references: overhead + sum over kinds of factor x raw op sum."""
    rows = lut.rows[(lut.rows["op"] == OVERHEAD_OP) & (lut.rows["batch_size"] == batch_size)]
    factors = lut.meta.get("in_model_factor", {}).get(str(batch_size))
    if rows.empty or factors is None:
        raise LutError(f"{lut.path}: reference points at batch {batch_size} without the fit they belong to")
    overhead = float(rows["p50_us"].iloc[0])

    def factor(kind: str) -> float:
        return float(factors) if isinstance(factors, (int, float)) else float(factors.get(kind, 1.0))

    correction = lut.correction(batch_size)

    def multiplier(r: dict) -> float:  # references recorded with a correction carry their features
        return float(correction.multiplier(r["features"])) if correction and isinstance(r.get("features"), dict) else 1.0

    return np.array([(overhead + sum(factor(k) * float(v) for k, v in r.get("ops_us", {}).items())) * multiplier(r)
                     for r in refs])
