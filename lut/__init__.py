"""The latency lookup table: schema, CSV + metadata I/O, lookup (a miss is an error), prediction."""

from lut.table import Lut, LutError, LutMissError, OVERHEAD_OP

__all__ = ["Lut", "LutError", "LutMissError", "OVERHEAD_OP"]
