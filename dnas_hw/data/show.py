"""`data show`: a short text summary of a prepared-data folder."""

from __future__ import annotations

import json
from pathlib import Path

from dnas_hw.data.folder import PreparedData
from dnas_hw.data.splits import SPLITS


def describe(folder: Path) -> str:
    """Rows and positive rate per split, table size per feature, where the data came from."""
    data = PreparedData.open(folder)
    meta = data.meta
    lines = [f"{data.path}: {meta['format']}, {data.num_dense} dense and {data.num_sparse} categorical features"]
    lines.append(f"{'split':6s} {'rows':>13s} {'positives':>13s} {'rate':>7s}")
    for s in SPLITS:
        rows, pos = meta["splits"][s]["rows"], meta["splits"][s]["positives"]
        rate = f"{pos / rows:.2%}" if rows else "-"
        lines.append(f"{s:6s} {rows:13,d} {pos:13,d} {rate:>7s}")
    lines.append(f"skipped bad rows: {meta['skipped_rows']:,}")
    lines.append(f"table sizes (sum {sum(data.cardinalities):,}):")
    cells = [f"C{f + 1:<2d} {c:>11,d}" for f, c in enumerate(data.cardinalities)]
    lines += ["  " + "   ".join(cells[i : i + 4]) for i in range(0, len(cells), 4)]
    source = meta["source"]
    lines.append(f"source: {source['kind']}, seed {source.get('seed')}, files {', '.join(source['files']) or '-'}")
    lines.append(f"options: {json.dumps(source.get('options', {}))}")
    teacher = meta.get("teacher")
    if teacher:
        by_role: dict[str, list[str]] = {}
        for name, role in teacher["roles"].items():
            by_role.setdefault(role, []).append(name)
        lines.append("teacher roles: " + "; ".join(f"{r} {' '.join(n)}" for r, n in by_role.items()))
    return "\n".join(lines)
