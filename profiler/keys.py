"""The keys a profile measures: every op of the space at every batch size, plus the model overhead."""

from __future__ import annotations

from typing import Sequence

from dnas_hw.ops import OpCall
from lut.table import overhead_call


def space_calls(space) -> list[OpCall]:
    """Every op (with its shape) the space's archs are built from, in a stable order (from the op registry)."""
    return sorted(space.op_calls(), key=lambda c: (c.op, c.params_json))


def all_keys(space, batch_sizes: Sequence[int]) -> list[tuple[str, str, int]]:
    """Every LUT key a complete profile of `space` at `batch_sizes` holds (ops, then the overhead rows)."""
    calls = space_calls(space) + [overhead_call(space.num_dense, space.num_sparse)]
    return [c.key(b) for c in calls for b in batch_sizes]


def table_features(space) -> dict[int, int]:
    """For each embedding table size of `space`: the feature whose ids a profile replays into it (data ids).

    A LUT key names a table by its size, not by the feature it serves, so where
    several features offer a table of the same size, the one of the largest
    cardinality (the first of those) stands for all: its ids spread the most.
    """
    by_rows: dict[int, int] = {}
    cards = space.cardinalities
    for f in sorted(range(len(cards)), key=lambda f: (-cards[f], f)):
        for rows in space.rows_choices(f):
            by_rows.setdefault(int(rows), f)
    return by_rows
