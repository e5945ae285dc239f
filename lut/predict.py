"""An architecture's latency from a LUT: the sum of its ops plus the fixed model overhead."""

from __future__ import annotations

from dataclasses import dataclass

from dnas_hw.arch import ArchMethods
from lut.table import Lut, overhead_call


@dataclass(frozen=True)
class Prediction:
    total_us: float
    batch_size: int
    breakdown: list[dict]  # [{"slot", "op", "params", "us"}], the overhead last

    @property
    def total_ms(self) -> float:
        return self.total_us / 1000.0

    def to_dict(self) -> dict:
        return {"predicted_ms": self.total_ms, "batch_size": self.batch_size, "breakdown": self.breakdown}


def predict(lut: Lut, arch: ArchMethods, batch_size: int, stat: str = "p50_us") -> Prediction:
    """Predicted latency of `arch` at `batch_size`; a missing row raises `LutMissError` naming all of them."""
    named = arch.ops().named() + [("overhead", overhead_call(arch.num_dense, arch.num_sparse))]
    lut.require([c for _, c in named], batch_size)
    breakdown = [
        {"slot": slot, "op": c.op, "params": c.params, "us": lut.latency_us(c, batch_size, stat)} for slot, c in named
    ]
    return Prediction(sum(b["us"] for b in breakdown), batch_size, breakdown)
