"""DLRM's cost table: every op of a `SearchSpace`, priced by `price(OpCall)`, in the terms of `search.cost`.

D the interaction width:

    bottom MLP   MlpPrices from num_dense (fixed), elastic depth, closing linear to D (relu)
    embeddings   Factor (emb_rows.f, emb_dim.f, interaction_dim), one row per feature f: [F, R_max, E, nD]
    interaction  Factor (interaction, interaction_dim): [1, K, nD]
    top MLP      MlpPrices from the interaction's output width (kind x D), elastic depth,
                 closing linear to 1 logit
"""

from __future__ import annotations

import torch

from dnas_hw.dlrm.space import SearchSpace
from search.cost import DTYPE, CostTable, Factor, Price, mlp_prices


def dlrm_cost_table(space: SearchSpace, price: Price, overhead: float = 0.0) -> CostTable:
    dims, rows_max = space.interaction_dims, max(len(space.rows_choices(f)) for f in range(space.num_sparse))
    emb = torch.zeros(space.num_sparse, rows_max, len(space.emb_dims), len(dims), dtype=DTYPE)
    for f in range(space.num_sparse):
        for r, rows in enumerate(space.rows_choices(f)):
            for e, dim in enumerate(space.emb_dims):
                for k, d in enumerate(dims):
                    emb[f, r, e, k] = price(space.embedding_op(rows, dim, d))
    inter = [[space.interaction_op(kind, d) for d in dims] for kind in space.interactions]
    features = tuple(range(space.num_sparse))
    d_slot = ("interaction_dim", 0)
    return CostTable(
        factors=(
            Factor(("emb_rows", "emb_dim", "interaction_dim"), (features, features, (0,) * len(features)), emb),
            Factor(("interaction", "interaction_dim"), ((0,), (0,)),
                   torch.tensor([[[price(op) for op in row] for row in inter]], dtype=DTYPE)),
        ),
        mlps=(
            mlp_prices([space.num_dense], space.bottom_widths, space.bottom_layers, False, list(dims), "relu", price,
                       group="bottom", out_slot=d_slot, depth_slot=("bottom_depth", 0), depths=space.depths(space.bottom_layers)),
            mlp_prices([[op.output_width() for op in row] for row in inter], space.top_widths, space.top_layers, False, [1],
                       "none", price, group="top", start_slots=(("interaction", 0), d_slot),
                       depth_slot=("top_depth", 0), depths=space.depths(space.top_layers)),
        ),
        overhead=float(overhead),
    )

