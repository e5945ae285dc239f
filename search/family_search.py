"""A space's search hook (`family_search`) and its prices (`latency_table`): where the engine meets a family.

`family_search(space)` is the `FamilySearch` (`search.hooks`: supernet, cost table,
weight extraction) that the space's model family registered with
`search.hooks.register_search`. The built-in DLRM registers its own in
`search/dlrm/__init__.py`, imported below; a plugin family registers its own
when its module is imported (`DNAS_HW_PLUGINS`, `dnas_hw.family`), e.g.
`examples/dcn/__init__.py`.

`latency_table(space, lut, b)` prices every op of the space at the LUT's latency
(`lut.Lut.latency_us`: a missing row raises) through the family's cost table;
`flops_table` and `param_bytes_table` price the same ops by FLOPs and parameter memory.
"""

from __future__ import annotations

from typing import Any

import search.dlrm  # noqa: F401  (registers DLRM's search hook)
from dnas_hw.errors import UserError
from dnas_hw.family import ModelFamily, family_of
from lut.correction import op_features
from lut.table import Lut, overhead_call
from search.cost import CostTable, Price
from search.hooks import SEARCHES, FamilySearch


def family_search(space_or_family: Any) -> FamilySearch:
    """The `FamilySearch` of a space's (or a named `ModelFamily`'s) family; UserError if it has none."""
    family = space_or_family if isinstance(space_or_family, ModelFamily) else family_of(space_or_family)
    try:
        return SEARCHES[family.name]
    except KeyError:
        raise UserError(f"model family {family.name!r} is not searchable: it registers no search hook "
                        f"(search.hooks.register_search, docs/extending.md)") from None


def cost_table(space: Any, price: Price, overhead: float = 0.0) -> CostTable:
    """Price every op of `space` with `price(OpCall) -> float` (its family's `FamilySearch.cost_table`)."""
    return family_search(space).cost_table(space, price, overhead)


def latency_table(space: Any, lut: Lut, batch_size: int, stat: str = "p50_us") -> CostTable:
    """LUT latency (us) at `batch_size`, with the model-overhead row and the LUT's whole-arch correction
    there (`lut.correction`, priced at the expected features: `search.cost`). A miss raises `LutMissError`."""
    overhead = lut.latency_us(overhead_call(space.num_dense, space.num_sparse), batch_size, stat)
    table = cost_table(space, lambda c: lut.latency_us(c, batch_size, stat), overhead)
    correction = lut.correction(batch_size)
    if correction is None:
        return table
    features = {t.feature: feature_table(space, t.feature) for t in correction.terms}
    return table.with_correction(correction, features)


def feature_table(space: Any, feature: str) -> CostTable:
    """The space's ops priced by their share of a whole-arch feature (`lut.correction.op_features`)."""
    return cost_table(space, lambda c: op_features(c)[feature])


def flops_table(space: Any, batch_size: int) -> CostTable:
    return cost_table(space, lambda c: float(c.flops(batch_size)))


def param_bytes_table(space: Any, bytes_per_value: int = 4) -> CostTable:
    """Parameter memory (fp32 by default); dominated by the embedding tables."""
    return cost_table(space, lambda c: float(c.num_params() * bytes_per_value))
