"""An architecture's latency from a LUT: the sum of its ops plus the fixed model overhead, times the
LUT's whole-arch correction at that batch size where it has one (`lut.correction`)."""

from __future__ import annotations

from dataclasses import dataclass

from dnas_hw.arch import ArchMethods
from lut.correction import arch_features
from lut.table import Lut, overhead_call

CORRECTION_SLOT = "correction"


@dataclass(frozen=True)
class Prediction:
    total_us: float
    batch_size: int
    # [{"slot", "op", "params", "us"}], the overhead, then the correction (params: the arch's features and the
    # multiplier; us: what it adds to the sum before it) where the LUT has one
    breakdown: list[dict]

    @property
    def total_ms(self) -> float:
        return self.total_us / 1000.0

    @property
    def additive_us(self) -> float:
        """The sum of the op rows and the overhead, without the whole-arch correction."""
        return sum(b["us"] for b in self.breakdown if b["slot"] != CORRECTION_SLOT)

    def to_dict(self) -> dict:
        return {"predicted_ms": self.total_ms, "batch_size": self.batch_size, "breakdown": self.breakdown}


def predict(lut: Lut, arch: ArchMethods, batch_size: int, stat: str = "p50_us") -> Prediction:
    """Predicted latency of `arch` at `batch_size`; a missing row raises `LutMissError` naming all of them."""
    ops = arch.ops().named()
    named = ops + [("overhead", overhead_call(arch.num_dense, arch.num_sparse))]
    lut.require([c for _, c in named], batch_size)
    breakdown = [
        {"slot": slot, "op": c.op, "params": c.params, "us": lut.latency_us(c, batch_size, stat)} for slot, c in named
    ]
    additive = sum(b["us"] for b in breakdown)
    correction = lut.correction(batch_size)
    if correction is not None:
        features = arch_features(c for _, c in ops)
        multiplier = float(correction.multiplier(features))
        params = {**features, "multiplier": round(multiplier, 6)}
        breakdown.append({"slot": CORRECTION_SLOT, "op": "whole_arch_correction", "params": params,
                          "us": additive * (multiplier - 1.0)})
    return Prediction(sum(b["us"] for b in breakdown), batch_size, breakdown)
