"""How much slower or faster the host runs than when its LUT was profiled: the profile's reference models timed again.

A LUT holds what its host measured at one time, and a shared host drifts: a few
percent slower or faster between the profile and a validation moves a batch
size's share of archs within 10% by tens of points, and a LUT's error can then
not be told from the host's (benchmarks/RESULTS.md, `lut_fidelity.py`). The profiler times its
reference models whole (`profiler.overhead`) and records each one's latency in
the LUT's metadata (`model_overhead`). Timing the same models again, with the
same runner, seed and ids, gives the host's drift since the profile: per batch
size, the median over the references of now / then. `lut validate` reports it
beside the LUT's error, with the errors net of it (the predictions scaled by the
drift), so a user can tell a LUT the host has drifted from (re-profile) from a
LUT that does not carry the archs' costs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dnas_hw.data.ids import IdSource
from dnas_hw.progress import progress
from lut.correction import arch_features
from lut.table import Lut
from profiler.overhead import reference_archs
from profiler.runners import GROUP, time_archs


def recorded_references(lut: Lut, archs: Sequence, batch_size: int) -> list[dict] | None:
    """The LUT's records of its reference models at `batch_size` when they are `archs` (same number, each
    with the same weight bytes, table bytes and op count), else None: a LUT merged from several profiles,
    or profiled on another binding of the space."""
    records = lut.meta.get("model_overhead", {}).get(str(batch_size))
    if not isinstance(records, list) or len(records) != len(archs):
        return None
    for record, arch in zip(records, archs):
        features = arch_features(c for _, c in arch.ops().named())
        if not isinstance(record, dict) or record.get("features") != features or not record.get("whole_us"):
            return None
    return records


def host_drift(lut: Lut, space, batch_sizes: Sequence[int], ids: IdSource | None = None) -> dict[int, dict]:
    """{batch size: {"references", "ratio" (median of now / then), "pct" ((ratio - 1) x 100)}} for each of
    `batch_sizes` at which the LUT records this space's reference models; {} where it records none.
    Positive: the host runs slower now than when profiled."""
    seed = int(lut.meta.get("seed", 0))
    archs = reference_archs(space, seed)
    recorded = {int(b): recorded_references(lut, archs, int(b)) for b in batch_sizes}
    sizes = [b for b, r in recorded.items() if r is not None]
    if not sizes:
        return {}
    target = dict(backend=lut.meta["backend"], device=lut.meta["device"], threads=int(lut.meta["threads"]))
    timed: list[dict] = []
    with progress(len(archs), "host drift: the LUT's reference models", "archs") as bar:
        for start in range(0, len(archs), GROUP):
            group = archs[start : start + GROUP]
            timed += time_archs(group, batch_sizes=sizes, cardinalities=space.cardinalities, seed=seed, ids=ids, **target)
            bar.update(len(group))
    drift = {}
    for b in sizes:
        ratio = float(np.median([t[b].p50_us / r["whole_us"] for t, r in zip(timed, recorded[b])]))
        drift[b] = {"references": len(archs), "ratio": ratio, "pct": (ratio - 1.0) * 100.0}
    return drift
