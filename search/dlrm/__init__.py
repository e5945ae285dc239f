"""DLRM's search hook, registered for the family `dlrm` (its core modules: `dnas_hw/dlrm/`).

    supernet.py   `Supernet` (every arch of a `SearchSpace` in one module, weights shared by
                  masking), its `MixedInteraction`, and `extract_model` (the derived DLRM
                  holding the supernet's weights)
    cost.py       `dlrm_cost_table`: every op of the space priced, for the expected latency

`search.family_search` imports this package, so `family_search(space)` of a DLRM space
is the `SEARCH` registered here.
"""

from __future__ import annotations

from dnas_hw.arch import DEFAULT_FAMILY
from search.dlrm.cost import dlrm_cost_table
from search.dlrm.supernet import Supernet, extract_model
from search.hooks import register_search

SEARCH = register_search(DEFAULT_FAMILY, supernet=Supernet, cost_table=dlrm_cost_table, extract=extract_model)
