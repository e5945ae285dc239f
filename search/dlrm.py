"""DLRM's search hook (`FamilySearch`): its supernet, its cost table, its weight extraction.

Registered for the family `dlrm` as `search="search.dlrm:SEARCH"` (dnas_hw/family.py).
The cost table's terms (see `search.cost`):

    bottom MLP   MlpPrices from num_dense (fixed), closing linear to D (relu)
    embeddings   Factor (emb_rows.f, emb_dim.f), one row per feature f: [F, R_max, E]
    interaction  Factor (interaction): [1, K]
    top MLP      MlpPrices from the interaction's output width, closing linear to 1 logit
"""

from __future__ import annotations

import torch

from dnas_hw.ops import OpCall
from dnas_hw.space import SearchSpace
from search.cost import DTYPE, CostTable, Factor, Price, mlp_prices
from search.extract import extract_model
from search.family_search import FamilySearch
from search.supernet import Supernet


def dlrm_cost_table(space: SearchSpace, price: Price, overhead: float = 0.0) -> CostTable:
    d = space.interaction_dim
    inter_ops = [space.interaction_op(k) for k in space.interactions]
    rows_max = max(len(space.rows_choices(f)) for f in range(space.num_sparse))
    emb = torch.zeros(space.num_sparse, rows_max, len(space.emb_dims), dtype=DTYPE)
    for f in range(space.num_sparse):
        for r, rows in enumerate(space.rows_choices(f)):
            for e, dim in enumerate(space.emb_dims):
                emb[f, r, e] = price(OpCall.make("embedding", num_embeddings=rows, embedding_dim=dim, pad_to=d))
    features = tuple(range(space.num_sparse))
    return CostTable(
        factors=(
            Factor(("emb_rows", "emb_dim"), (features, features), emb),
            Factor(("interaction",), ((0,),), torch.tensor([[price(op) for op in inter_ops]], dtype=DTYPE)),
        ),
        mlps=(
            mlp_prices([space.num_dense], space.bottom_widths, space.bottom_layers, space.skip, d, "relu", price, group="bottom"),
            mlp_prices([op.output_width() for op in inter_ops], space.top_widths, space.top_layers, space.skip, 1, "none", price,
                       group="top", start_slot=("interaction", 0)),
        ),
        overhead=float(overhead),
    )


SEARCH = FamilySearch(supernet=Supernet, cost_table=dlrm_cost_table, extract=extract_model)
