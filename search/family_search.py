"""What the search engine needs from a model family, and how it finds it.

A family makes itself searchable by naming, in `register_family(..., search=
"module:attribute")`, a `FamilySearch`: the module is imported only when a
search starts, so registering a family stays light. The engine
(`search.run`) then works on any family through these three entries and the
family-generic pieces around them:

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

DLRM's is `search.dlrm.SEARCH`; the worked example is `examples.dcn.supernet.SEARCH`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from dnas_hw.errors import UserError
from dnas_hw.family import ModelFamily, family_of


@dataclass(frozen=True)
class FamilySearch:
    supernet: Callable[[Any], nn.Module]  # (space) -> SupernetBase
    cost_table: Callable[..., Any]  # (space, price: OpCall -> float, overhead: float) -> CostTable
    extract: Callable[[nn.Module, dict], nn.Module]  # (supernet, {slot: choice}) -> standalone model


def family_search(space_or_family: Any) -> FamilySearch:
    """The `FamilySearch` of a space's (or a named `ModelFamily`'s) family; UserError if it has none."""
    family = space_or_family if isinstance(space_or_family, ModelFamily) else family_of(space_or_family)
    if family.search is None:
        raise UserError(f"model family {family.name!r} is not searchable: it registers no search hook "
                        f"(register_family(..., search='module:attribute'), docs/extending.md)")
    module, _, attribute = family.search.partition(":")
    try:
        hook = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as e:
        raise UserError(f"model family {family.name!r}: cannot load its search hook {family.search!r} ({e})") from None
    if not isinstance(hook, FamilySearch):
        raise UserError(f"model family {family.name!r}: {family.search!r} is a {type(hook).__name__}, not a FamilySearch")
    return hook
