"""What the search engine needs from a model family (`FamilySearch`), and the registry of them.

A family makes itself searchable by calling `register_search(name, supernet=...,
cost_table=..., extract=...)` where its hook is defined: DLRM's in
`search/dlrm/__init__.py`, DCN's in `examples/dcn/__init__.py`. The engine
(`search.run`) then works on any family through these three entries and the
family-generic pieces around them, found by `search.family_search.family_search(space)`:

- `supernet(space) -> SupernetBase` (`search.supernet`): every arch of the
  space in one module, `forward(dense [B, Fd], sparse [B, F], probs) -> logits [B]`,
  with its logits laid out by `search.layout.Layout(space)` (one tensor per
  slot-name prefix);
- `cost_table(space, price, overhead) -> CostTable` (`search.cost`): the
  space's ops priced as `Factor`s and `MlpPrices`; `expected_cost`,
  `search.extremes` (the exact fastest / slowest arch) and `search.project`
  (the budget projection) work on any such table;
- `extract(supernet, choices) -> nn.Module`: the family's standalone model of
  `space.arch(choices)`, holding the supernet's weights, and computing exactly
  what the supernet computes at those one-hot probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class FamilySearch:
    supernet: Callable[[Any], nn.Module]  # (space) -> SupernetBase
    cost_table: Callable[..., Any]  # (space, price: OpCall -> float, overhead: float) -> CostTable
    extract: Callable[[nn.Module, dict], nn.Module]  # (supernet, {slot: choice}) -> standalone model


SEARCHES: dict[str, FamilySearch] = {}  # family name -> its hook


def register_search(
    family: str,
    *,
    supernet: Callable[[Any], nn.Module],
    cost_table: Callable[..., Any],
    extract: Callable[[nn.Module, dict], nn.Module],
) -> FamilySearch:
    """Register the search hook of the model family named `family`; a second one for the same family raises."""
    if family in SEARCHES:
        raise ValueError(f"model family {family!r} already has a search hook")
    SEARCHES[family] = FamilySearch(supernet=supernet, cost_table=cost_table, extract=extract)
    return SEARCHES[family]
