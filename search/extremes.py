"""The cheapest and the dearest arch of a space under a price table, exactly (dynamic programming).

A structural "smallest" (skip everything, smallest tables) need not be the
fastest by a measured LUT: a hashed table can time slower than a larger one.
The budget's feasibility is judged against these true extremes. The price is
separable except along each MLP, where the state is the current width:

    V_L(u) = out(u);   V_i(u) = opt( opt_w [price_i(u, w) + V_i+1(w)],  V_i+1(u) if skip )
"""

from __future__ import annotations

import torch

from dnas_hw.space import SKIP, Choice
from search.cost import CostTable, MlpPrices
from search.layout import Layout


def _mlp(prices: MlpPrices, best) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(value-to-go from each width at layer 0 [U], per layer the decision per width: choice index, W = skip)."""
    value = prices.out
    decisions = []
    for i in reversed(range(prices.layers.shape[0])):
        cand = prices.layers[i] + (prices.place @ value)[None, :]  # [U, W]
        if prices.skip:
            cand = torch.cat([cand, value[:, None]], dim=1)
        value, choice = best(cand, dim=1)
        decisions.insert(0, choice)
    return value, decisions


def _walk(prices: MlpPrices, decisions, start_pos: int, slot_prefix: str, layout: Layout) -> dict[str, Choice]:
    out, pos = {}, start_pos
    group = layout.groups.get(slot_prefix)
    for i, d in enumerate(decisions):
        j = int(d[pos])
        choice = group.choices[i][j]
        out[f"{slot_prefix}.{i}"] = choice
        if choice != SKIP:
            pos = int(prices.place[j].argmax())
    return out


def extreme_arch(table: CostTable, layout: Layout, cheapest: bool = True) -> tuple[float, dict[str, Choice]]:
    """(price, `{slot: choice}`) of the cheapest (or dearest) arch of the space."""
    def best(t, dim):
        r = t.min(dim=dim) if cheapest else t.max(dim=dim)
        return r.values, r.indices

    bad = float("inf") if cheapest else float("-inf")
    choices: dict[str, Choice] = {}
    total = table.overhead
    # Embeddings: each feature on its own; padded table sizes are not choices.
    rows_group, dims_group = layout.groups["emb_rows"], layout.groups["emb_dim"]
    emb = table.embeddings.masked_fill(~rows_group.valid()[:, :, None], bad)
    for f in range(emb.shape[0]):
        flat = emb[f].flatten()
        k = int(flat.argmin() if cheapest else flat.argmax())
        r, e = divmod(k, emb.shape[2])
        total += float(flat[k])
        choices[rows_group.slots[f]] = rows_group.choices[f][r]
        choices[dims_group.slots[f]] = dims_group.choices[f][e]
    # Bottom MLP from the dense width.
    value, decisions = _mlp(table.bottom, best)
    start = int(table.bottom.start[0].argmax())
    total += float(value[start])
    choices.update(_walk(table.bottom, decisions, start, "bottom", layout))
    # Interaction and the top MLP from its output width.
    value, decisions = _mlp(table.top, best)
    per_kind = table.interaction + table.top.start @ value
    k = int(per_kind.argmin() if cheapest else per_kind.argmax())
    total += float(per_kind[k])
    choices["interaction"] = layout.groups["interaction"].choices[0][k]
    choices.update(_walk(table.top, decisions, int(table.top.start[k].argmax()), "top", layout))
    return total, {s: choices[s] for s in layout.slot_names()}
