"""The cheapest and the dearest arch of a space under a price table, exactly.

A structural "smallest" (skip everything, smallest tables) need not be the
fastest by a measured LUT: a hashed table can time slower than a larger one.
The budget's feasibility is judged against these true extremes.

Works on any family's `CostTable` (`search.cost`). A slot that prices more than
one term (DLRM's interaction: its own op and the top MLP's input; DCN's
embedding dim: every table, the cross layers, the deep MLP's input) is
*shared*: its choices are enumerated jointly (a handful). Given them, every
other slot prices one term only, so each term is optimised on its own: a
factor row by its best entry, an MLP by dynamic programming over its width:

    V_L(u) = out(u);   V_i(u) = opt( opt_w [price_i(u, w) + V_i+1(w)],  V_i+1(u) if skip )
"""

from __future__ import annotations

import itertools
from collections import Counter

import torch

from dnas_hw.space import SKIP, Choice
from search.cost import CostTable, MlpPrices, SlotRef
from search.layout import Group, Layout

MAX_SHARED_COMBINATIONS = 100_000


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


def _walk(prices: MlpPrices, decisions, start_pos: int, group: Group | None) -> dict[str, Choice]:
    out, pos = {}, start_pos
    for i, d in enumerate(decisions):
        j = int(d[pos])
        choice = group.choices[i][j]
        out[group.slots[i]] = choice
        if choice != SKIP:
            pos = int(prices.place[j].argmax())
    return out


def _shared_slots(table: CostTable, layout: Layout) -> list[SlotRef]:
    uses: Counter = Counter()
    for factor in table.factors:
        for r in range(factor.price.shape[0]):
            uses.update(set(factor.slots(r)))
    uses.update(m.start_slot for m in table.mlps if m.start_slot is not None)
    order = {layout.where(s): k for k, s in enumerate(layout.slot_names())}
    return sorted((s for s, n in uses.items() if n > 1), key=order.__getitem__)


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
    programs = [_mlp(m, best) for m in table.mlps]

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
        for prices, (value, decisions) in zip(table.mlps, programs):
            per_start = prices.start @ value  # [S]
            if prices.start_slot is None:
                k = 0
            elif prices.start_slot in index:
                k = index[prices.start_slot]
            else:
                g, row = prices.start_slot
                k = pick(per_start.masked_fill(~valid[g][row, : len(per_start)], bad))
                index[prices.start_slot] = k
            total += float(per_start[k])
            walks.update(_walk(prices, decisions, int(prices.start[k].argmax()), layout.groups.get(prices.group)))
        if best_total is None or (total < best_total if cheapest else total > best_total):
            best_total, best_index, best_walks = total, index, walks
    choices = dict(best_walks)
    for slot in layout.slot_names():
        if slot not in choices:  # a slot no term prices takes its first choice
            g, row = layout.where(slot)
            choices[slot] = layout.groups[g].choices[row][best_index.get((g, row), 0)]
    return best_total, {s: choices[s] for s in layout.slot_names()}
