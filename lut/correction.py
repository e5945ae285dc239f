"""The whole-arch correction: what a sum of op rows cannot carry, as a factor on the sum.

An op's row is its time inside a model of *some* size; inside a model whose
weights or tables overflow a cache level the same op runs slower, by an amount
that depends on the whole arch, not on the op. So, per batch size, the LUT's
prediction is

    latency(arch) = additive(arch) x (1 + sum_j coef_j x log2(max(1, x_j(arch) / knot_j)))

with `additive` the sum of the arch's op rows plus the `model_overhead` row,
and `x_j` one of the arch's whole-model features (`FEATURES`, each a sum over
its ops, so that a search's expectation of it is linear in the probabilities):

    dense_bytes   parameter bytes of every op but the embedding lookups (fp32)
    table_bytes   parameter bytes of the embedding tables (fp32)
    ops           number of ops

A term is zero below its knot (a cache size in bytes, or the smallest reference's
value) and grows by `coef` per doubling above it. The profiler fits the terms on
its reference archs (`profiler.correction_fit`) and records them in
`LUT.meta.json` as `whole_arch_correction`:

    {batch size: {"method": "corrected" | "additive",
                  "terms": [{"feature": "dense_bytes", "knot": 524288, "coef": 0.031}, ...],
                  "loo_error": {"additive": 0.061, "corrected": 0.042}}}

`method` "additive" (the terms did not predict left-out references better) has
no terms; a LUT without the field, or without the batch size, has no
correction. `multiplier` is written once for floats and tensors: the search
(`search.cost`) evaluates it on expected features with a differentiable hinge.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from dnas_hw.errors import UserError
from dnas_hw.ops import OpCall

FEATURES = ("dense_bytes", "table_bytes", "ops")
METHODS = ("corrected", "additive")
BYTES_PER_VALUE = 4  # the LUT's dtype, float32
EMBEDDING_OP = "embedding"


def op_features(call: OpCall) -> dict[str, float]:
    """One op's share of each feature of `FEATURES`."""
    nbytes = float(call.num_params() * BYTES_PER_VALUE)
    table = call.op == EMBEDDING_OP
    return {"dense_bytes": 0.0 if table else nbytes, "table_bytes": nbytes if table else 0.0, "ops": 1.0}


def arch_features(calls: Iterable[OpCall]) -> dict[str, float]:
    """The sum of `op_features` over an arch's op calls (the overhead pseudo-op excluded by the caller)."""
    total = dict.fromkeys(FEATURES, 0.0)
    for call in calls:
        for k, v in op_features(call).items():
            total[k] += v
    return total


def hinge_log2(ratio: float) -> float:
    """log2(max(1, ratio)): 0 below the knot, +1 per doubling above it."""
    return math.log2(max(1.0, ratio))


@dataclass(frozen=True)
class Term:
    feature: str  # one of FEATURES
    knot: float  # > 0, in the feature's unit
    coef: float  # relative change of latency per doubling of the feature above the knot

    def to_meta(self) -> dict:
        return {"feature": self.feature, "knot": self.knot, "coef": self.coef}


@dataclass(frozen=True)
class Correction:
    """One batch size's correction: `multiplier(features) = 1 + sum_j coef_j hinge_log2(x_j / knot_j)`."""

    terms: tuple[Term, ...]

    def multiplier(self, features: Mapping[str, Any], hinge: Callable[[Any], Any] = hinge_log2) -> Any:
        """The factor on the additive prediction; `features` floats (or 0-d tensors, with a tensor `hinge`)."""
        total = 1.0
        for t in self.terms:
            total = total + t.coef * hinge(features[t.feature] / t.knot)
        return total


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_correction_meta(value: object, where: str) -> dict[str, Correction | None]:
    """`{batch size: Correction or None (method additive)}` from the metadata's `whole_arch_correction`;
    `UserError` naming `where` and what is wrong for anything else."""
    why = (f"{where}: whole_arch_correction must map batch sizes to {{method: corrected|additive, "
           f"terms: [{{feature: {'|'.join(FEATURES)}, knot > 0, coef}}], loo_error}}")
    if not isinstance(value, dict):
        raise UserError(why)
    out: dict[str, Correction | None] = {}
    for b, entry in value.items():
        if not (isinstance(entry, dict) and entry.get("method") in METHODS and isinstance(entry.get("terms", []), list)
                and isinstance(entry.get("loo_error", {}), dict)
                and all(_number(e) for e in entry.get("loo_error", {}).values())):
            raise UserError(f"{why} (batch {b})")
        terms = []
        for t in entry.get("terms", []):
            if not (isinstance(t, dict) and t.get("feature") in FEATURES and _number(t.get("knot"))
                    and t["knot"] > 0 and _number(t.get("coef"))):
                raise UserError(f"{why} (batch {b}, term {json.dumps(t)})")
            terms.append(Term(t["feature"], float(t["knot"]), float(t["coef"])))
        if entry["method"] == "additive" and terms:
            raise UserError(f"{why} (batch {b}: method additive with terms)")
        out[str(b)] = Correction(tuple(terms)) if entry["method"] == "corrected" else None
    return out


def correction_meta(correction: Correction | None, loo_error: Mapping[str, float]) -> dict:
    """One batch size's `whole_arch_correction` entry."""
    return {
        "method": "additive" if correction is None else "corrected",
        "terms": [] if correction is None else [t.to_meta() for t in correction.terms],
        "loo_error": {k: round(float(v), 6) for k, v in loo_error.items()},
    }
