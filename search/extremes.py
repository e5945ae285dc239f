"""The cheapest and the dearest arch of a space under a price table, exactly.

A structural "smallest" (skip everything, smallest tables) need not be the
fastest by a measured LUT: a hashed table can time slower than a larger one.
The budget's feasibility is judged against these true extremes.

Works on any family's `CostTable` (`search.cost`). A slot that prices more than
one term (DLRM's interaction width: the tables, the interaction, both MLPs; DCN's
embedding dim: every table, the cross layers, the deep MLP's input) is
*shared*, as is every MLP's start and output slot: their choices are enumerated
jointly (a handful). Given them, every other slot prices one term only, so each
term is optimised on its own: a factor row by its best entry, an MLP by dynamic
programming over its widths, for each depth it may have:

    V_k(u) = out(u);   V_i(u) = opt( opt_w [price_i(u, w) + V_i+1(w)],  V_i+1(u) if skip )

With a whole-arch correction (`search.cost`) the search is over the sum, and the
arch found is priced with the correction: exact for the sum, near for the product.
"""

from __future__ import annotations

import itertools
from collections import Counter

import torch

from dnas_hw.space import SKIP, Choice
from search.cost import CostTable, MlpPrices, SlotRef, one_hot_cost
from search.layout import Layout

MAX_SHARED_COMBINATIONS = 100_000


def _mlp_extreme(prices: MlpPrices, index: dict[SlotRef, int], layout: Layout, best, cheapest: bool) -> tuple[float, dict[str, Choice]]:
    """(the best price, its `{slot: choice}` for the layer and depth slots) of one MLP, its start
    and output slots fixed by `index`, by dynamic programming over the widths for each depth."""
    start = prices.start[tuple(index[s] for s in prices.start_slots)]  # [U] one-hot
    u0 = int(start.argmax())
    out = prices.out[:, index[prices.out_slot] if prices.out_slot else 0]
    n_layers = prices.layers.shape[0]
    depths = list(enumerate(prices.depths)) if prices.depth_slot else [(None, n_layers)]
    found = None
    for j, depth in depths:
        value, decisions = out, []
        for i in reversed(range(depth)):
            cand = prices.layers[i] + (prices.place @ value)[None, :]  # [U, W]
            if prices.skip:
                cand = torch.cat([cand, value[:, None]], dim=1)
            value, choice = best(cand, dim=1)
            decisions.insert(0, choice)
        total = float(value[u0])
        if found is None or (total < found[0] if cheapest else total > found[0]):
            found = (total, j, decisions)
    total, j, decisions = found
    group = layout.groups.get(prices.group)
    walk, pos = {}, u0
    for i, d in enumerate(decisions):
        k = int(d[pos])
        walk[group.slots[i]] = group.choices[i][k]
        if walk[group.slots[i]] != SKIP:
            pos = int(prices.place[k].argmax())
    if prices.depth_slot is not None:
        g, row = prices.depth_slot
        walk[layout.groups[g].slots[row]] = layout.groups[g].choices[row][j]
    return total, walk


def _shared_slots(table: CostTable, layout: Layout) -> list[SlotRef]:
    """Slots enumerated jointly: those priced by more than one term, and every MLP's start and
    output slots (an MLP's program needs them fixed)."""
    uses: Counter = Counter()
    for factor in table.factors:
        for r in range(factor.price.shape[0]):
            uses.update(set(factor.slots(r)))
    shared = {s for s, n in uses.items() if n > 1}
    for m in table.mlps:
        shared |= set(m.start_slots) | ({m.out_slot} if m.out_slot else set())
    order = {layout.where(s): k for k, s in enumerate(layout.slot_names())}
    return sorted(shared, key=order.__getitem__)


def extreme_arch(table: CostTable, layout: Layout, cheapest: bool = True) -> tuple[float, dict[str, Choice]]:
    """(price, `{slot: choice}`) of the cheapest (or dearest) arch of the space."""
    def best(t, dim):
        r = t.min(dim=dim) if cheapest else t.max(dim=dim)
        return r.values, r.indices

    def pick(t: torch.Tensor) -> int:
        return int(t.argmin() if cheapest else t.argmax())

    bad = float("inf") if cheapest else float("-inf")
    valid = {g: grp.valid() for g, grp in layout.groups.items()}
    shared = _shared_slots(table, layout)
    options = [[j for j in range(valid[g].shape[1]) if valid[g][row, j]] for g, row in shared]
    if sum(1 for _ in itertools.islice(itertools.product(*options), MAX_SHARED_COMBINATIONS + 1)) > MAX_SHARED_COMBINATIONS:
        raise ValueError(f"extreme_arch: more than {MAX_SHARED_COMBINATIONS} joint choices of the shared slots {shared}")

    best_total, best_index = None, None
    for combo in itertools.product(*options):
        index: dict[SlotRef, int] = dict(zip(shared, combo))
        walks: dict[str, Choice] = {}
        total = table.overhead
        for factor in table.factors:
            for r in range(factor.price.shape[0]):
                price, free = factor.price[r], []
                for axis, slot in enumerate(factor.slots(r)):
                    shape = [1] * price.dim()
                    shape[axis] = -1
                    price = price.masked_fill(~valid[slot[0]][slot[1]].reshape(shape), bad)
                for axis, slot in reversed(list(enumerate(factor.slots(r)))):
                    if slot in index:
                        price = price.select(axis, index[slot])
                    else:
                        free.insert(0, slot)
                k = pick(price.flatten())
                total += float(price.flatten()[k])
                for slot, j in zip(free, torch.unravel_index(torch.tensor(k), price.shape) if free else ()):
                    index[slot] = int(j)
        for prices in table.mlps:
            price, walk = _mlp_extreme(prices, index, layout, best, cheapest)
            total += price
            walks.update(walk)
        if best_total is None or (total < best_total if cheapest else total > best_total):
            best_total, best_index, best_walks = total, index, walks
    choices = dict(best_walks)
    for slot in layout.slot_names():
        if slot not in choices:  # a slot no term prices takes its first choice
            g, row = layout.where(slot)
            choices[slot] = layout.groups[g].choices[row][best_index.get((g, row), 0)]
    choices = {s: choices[s] for s in layout.slot_names()}
    if table.correction is not None:
        # The walk above minimises the sum; with a whole-arch correction the arch is the sum's extreme,
        # priced with the correction (the correction is a few percent; the sum's extreme stays near the true one).
        best_total = one_hot_cost(table, layout.one_hot(choices))
    return best_total, choices
