"""Derivation by evaluation: the derived arch moves, one slot at a time, to the neighbour the supernet scores best.

The arch logits learn from one-batch estimates of the loss (straight-through
Gumbel samples, 256 rows a step), so a slot whose candidates differ by less
than that noise ends with probabilities near uniform, and its argmax is a coin
toss: on 1M planted rows two seeds at the same budget kept the top MLP
(128-128-128) or dropped it (top depth 0 at 0.55), and retrained 0.024 test
logloss apart. The trained supernet itself compares two neighbouring archs far
more precisely: scored on the same held-out rows, their difference carries
none of the rows' own noise.

`refine` starts from the (projected) argmax and, while a one-slot move lowers
the supernet's loss on the held-out rows by at least `min_gain` and keeps the
arch's LUT latency within [floor, 1] x budget, takes the best such move. Every
move is returned (and stored in summary.json as `refinement`), so the search's
own argmax stays on record.

Cost: a first round scores every one-slot neighbour; later rounds re-score the
`recheck` neighbours that gained most in the round before (one move changes the
others' gains little) and every move of the slot just changed, so a refinement
of a few moves costs about two full rounds.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dnas_hw.data.folder import Split
from dnas_hw.space import Choice, choices_key
from search.cost import CostTable, choices_cost
from search.sandwich import choice_size
from search.supernet import SupernetBase

# Held-out rows the neighbours are scored on: the paired difference of two nearby archs over 50k
# rows is measured to a few 1e-4 of logloss, below the gains the moves are taken for.
HELD_OUT_ROWS = 50_000
# The least drop in held-out logloss a move must bring: above the paired noise of 50k rows.
MIN_GAIN = 5e-4
RECHECK = 24
MAX_MOVES = 12


@dataclass(frozen=True)
class HeldOut:
    """Rows the supernet scores archs on: dense [N, num_dense], sparse [N, F] int64, labels [N].

    `memo` ({(first row, rows) of a batch: dict}) is what `SupernetBase.score` keeps of each batch from one
    arch's scoring to the next; `losses` ({(supernet, choices, weights' versions, batch): logloss}) every
    arch's loss scored so far (`supernet_loss`): a settling scores its refined arch again as the capacity
    pass's start, and the settlings of one search or of a front's points meet some archs twice."""

    dense: torch.Tensor
    sparse: torch.Tensor
    labels: torch.Tensor
    memo: dict = field(default_factory=dict, compare=False, repr=False)
    losses: dict = field(default_factory=dict, compare=False, repr=False)

    def base_rate_logloss(self) -> float:
        """The logloss of predicting these rows' own positive rate for every row (their label entropy)."""
        p = float(self.labels.double().mean().clamp(1e-12, 1 - 1e-12))
        return -(p * np.log(p) + (1 - p) * np.log(1 - p))

    @classmethod
    def take(cls, split: Split, first: int, last: int, rows: int = HELD_OUT_ROWS) -> "HeldOut":
        """Up to `rows` rows of `split`[first:last], evenly spaced (the split is already shuffled)."""
        taken = split.spaced(rows, first, last)
        return cls(torch.from_numpy(np.asarray(taken.dense, dtype=np.float32)),
                   torch.from_numpy(np.asarray(taken.sparse, dtype=np.int64)),
                   torch.from_numpy(np.asarray(taken.labels, dtype=np.float32)))


@contextmanager
def evaluating(net: SupernetBase):
    """`net` in eval mode for the block, its training mode restored after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


@torch.no_grad()
def supernet_loss(net: SupernetBase, choices: dict[str, Choice], rows: HeldOut, batch_size: int = 8192) -> float:
    """Mean logloss of the supernet at `choices` (one-hot, single path) on `rows`; an arch scored before
    on `rows` by the same supernet with the same weights (their in-place versions) is not scored again."""
    key = (id(net), net.training, choices_key(choices), tuple(p._version for p in net.weight_parameters()),
           batch_size)
    if key in rows.losses:
        return rows.losses[key]
    probs = {g: t.float() for g, t in net.layout.one_hot(choices).items()}
    total = 0.0
    for i in range(0, len(rows.labels), batch_size):
        logits = net.score(rows.dense[i : i + batch_size], rows.sparse[i : i + batch_size], probs,
                           rows.memo.setdefault((i, batch_size), {}))
        total += float(nn.functional.binary_cross_entropy_with_logits(logits, rows.labels[i : i + batch_size], reduction="sum"))
    rows.losses[key] = total / len(rows.labels)
    return rows.losses[key]


def refine(
    net: SupernetBase,
    table: CostTable,
    choices: dict[str, Choice],
    rows: HeldOut,
    budget_us: float,
    floor: float,
    min_gain: float = MIN_GAIN,
    max_moves: int = MAX_MOVES,
    recheck: int = RECHECK,
    groups: tuple[str, ...] | None = None,
    avoid: tuple[tuple[str, Choice], ...] = (),
) -> tuple[dict[str, Choice], list[dict]]:
    """(refined choices, moves [{slot, from, to, latency_us, loss}]); `loss` is the held-out logloss
    after the move. Only archs whose latency under `table` lies in [floor, 1] x budget_us are
    moved to, and no (slot, choice) of `avoid` (`SupernetBase.refine_avoids`); a start outside the
    band is left as it is (the projection's business)."""
    layout = net.layout
    choices, moves = dict(choices), []

    def latency(c: dict[str, Choice]) -> float:
        return choices_cost(table, layout, c)

    def in_band(us: float) -> bool:
        return floor * budget_us <= us <= budget_us

    with evaluating(net):
        if not in_band(latency(choices)):
            return choices, moves
        current = supernet_loss(net, choices, rows)
        slots = [(slot, grp.choices[i]) for g, grp in layout.groups.items() if groups is None or g in groups
                 for i, slot in enumerate(grp.slots)]
        gains: dict[tuple[str, Choice], float] = {}  # the last measured gain of each move
        to_score = [(s, alt) for s, alts in slots for alt in alts if (s, alt) not in avoid]
        for _ in range(max_moves):
            best = None
            for slot, alt in to_score:
                if alt == choices[slot]:
                    continue
                moved = {**choices, slot: alt}
                us = latency(moved)
                if not in_band(us):
                    gains.pop((slot, alt), None)
                    continue
                loss = supernet_loss(net, moved, rows)
                gains[(slot, alt)] = current - loss
                if best is None or loss < best[3]:
                    best = (slot, alt, us, loss)
            if best is None or current - best[3] < min_gain:
                break
            slot, alt, us, loss = best
            moves.append({"slot": slot, "from": choices[slot], "to": alt, "latency_us": us, "loss": loss})
            choices[slot], current = alt, loss
            gains.pop((slot, alt), None)
            ranked = sorted(gains, key=gains.get, reverse=True)[:recheck]
            to_score = ranked + [(slot, a) for s, alts in slots if s == slot for a in alts
                                 if (slot, a) not in ranked and (slot, a) not in avoid]
        return choices, moves


def keep_capacity(
    net: SupernetBase,
    table: CostTable,
    choices: dict[str, Choice],
    rows: HeldOut,
    budget_us: float,
    floor: float,
    groups: tuple[str, ...],
    tolerance: float = MIN_GAIN,
) -> tuple[dict[str, Choice], list[dict]]:
    """(choices, moves): each slot of `groups` moves to its largest choice where that keeps the LUT latency
    in [floor, 1] x budget_us and the supernet scores the arch no worse than `tolerance` above where the pass
    started; moves as in `refine`.

    For capacity that only compresses (an embedding table hashed, a vector truncated): a smaller choice can
    only lose information the larger one holds, so it is worth taking for the latency it saves or for a
    gain the supernet measures, not by default. The logits of such slots learn from the task loss, whose
    signal per table is faint, and from a supernet that trains many archs at once, in which what learns
    fastest looks best (a hashed table averages its rows' noise away). On the planted demo data, where a
    table's size costs next to nothing in latency, the search hashed tables of features that carry signal
    (docs/search.md). The slots are tried in the order the supernet scores their moves (best first),
    each against the arch the earlier moves left; the total loss never exceeds the start's by more than
    `tolerance`, the supernet's resolution on the held-out rows.
    """
    layout = net.layout
    choices, moves = dict(choices), []
    with evaluating(net):
        start = supernet_loss(net, choices, rows)
        largest = {slot: max(grp.choices[i], key=choice_size) for g, grp in layout.groups.items() if g in groups
                   for i, slot in enumerate(grp.slots)}
        scored = []
        for slot, top in largest.items():
            if choices[slot] != top and choices_cost(table, layout, {**choices, slot: top}) <= budget_us:
                scored.append((supernet_loss(net, {**choices, slot: top}, rows), slot, top))
        # A move the supernet scores worse than the tolerance on its own is not tried again with others.
        for _, slot, top in sorted(t for t in scored if t[0] <= start + tolerance):
            moved = {**choices, slot: top}
            us = choices_cost(table, layout, moved)
            if not floor * budget_us <= us <= budget_us:
                continue
            loss = supernet_loss(net, moved, rows)
            if loss <= start + tolerance:
                moves.append({"slot": slot, "from": choices[slot], "to": top, "latency_us": us, "loss": loss})
                choices = moved
        return choices, moves
