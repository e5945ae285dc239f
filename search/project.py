"""The final projection: move the argmax arch into [floor, 1] x budget, one slot at a time.

The search usually ends inside the band; when the argmax is over budget (or
below the floor), this greedy step changes the slot whose switch costs the
least log-probability per microsecond gained: down while over budget (the least
log-probability outright when a switch lands in the band), then up while below the
floor without crossing the budget. Every move is logged, so a
projected arch is never mistaken for the search's own argmax.
"""

from __future__ import annotations

import math

import torch

from dnas_hw.space import Choice
from search.cost import CostTable, choices_cost
from search.layout import Layout


def _best_move(layout, table, choices, probs, current_us, accept, per_us: bool = True,
               held: tuple[str, ...] = ()) -> tuple[str, Choice, float] | None:
    """The single-slot change outside the `held` groups with the lowest log-prob loss per us moved (with
    `per_us` False: the lowest log-prob loss), among those `accept(new_us)` allows."""
    best, best_score = None, math.inf
    for g, grp in layout.groups.items():
        if g in held:
            continue
        for i, slot in enumerate(grp.slots):
            logp_now = math.log(max(float(probs[g][i, grp.choices[i].index(choices[slot])]), 1e-30))
            for j, alt in enumerate(grp.choices[i]):
                if alt == choices[slot]:
                    continue
                new_us = choices_cost(table, layout, {**choices, slot: alt})
                if not accept(new_us):
                    continue
                loss = logp_now - math.log(max(float(probs[g][i, j]), 1e-30))
                score = loss / abs(new_us - current_us) if per_us else loss
                if score < best_score:
                    best, best_score = (slot, alt, new_us), score
    return best


def project(
    layout: Layout,
    table: CostTable,
    choices: dict[str, Choice],
    probs: dict[str, torch.Tensor],
    budget_us: float,
    floor: float,
    held: tuple[str, ...] = (),
) -> tuple[dict[str, Choice], list[dict]]:
    """(projected choices, moves [{slot, from, to, latency_us}]); the groups in `held` keep their choices.
    Stops when no move helps."""
    choices, moves = dict(choices), []
    current = choices_cost(table, layout, choices)

    def apply(move) -> None:
        nonlocal current
        slot, alt, new_us = move
        moves.append({"slot": slot, "from": choices[slot], "to": alt, "latency_us": new_us})
        choices[slot], current = alt, new_us

    while current > budget_us:
        # A move that lands in the band ends it; the cheapest per us could overshoot below the floor into
        # a region the coarse slots cannot climb back from without crossing the budget.
        move = (_best_move(layout, table, choices, probs, current, lambda us: floor * budget_us <= us <= budget_us, per_us=False,
                           held=held)
                or _best_move(layout, table, choices, probs, current, lambda us: us < current, held=held))
        if move is None:
            break
        apply(move)
    while current < floor * budget_us:
        move = _best_move(layout, table, choices, probs, current, lambda us: current < us <= budget_us, held=held)
        if move is None:
            break
        apply(move)
    return choices, moves
