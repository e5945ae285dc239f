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
    A space without `rows_choices(feature)` offers each table to every feature
    with at least as many values.
    """
    cards = space.cardinalities
    order = sorted(range(len(cards)), key=lambda f: (-cards[f], f))
    sizes = {c.params["num_embeddings"] for c in space.op_calls() if c.op == "embedding"}
    offers = getattr(space, "rows_choices", None)
    by_rows: dict[int, int] = {}
    for rows in sizes:
        serving = [f for f in order if (rows in offers(f) if offers else cards[f] >= rows)]
        by_rows[int(rows)] = serving[0] if serving else order[0]
    return by_rows
