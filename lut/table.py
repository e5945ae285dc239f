"""A latency lookup table: one CSV row per (op, params, batch_size), plus a metadata sidecar.

`LUT.csv` columns: `op`, `params` (canonical JSON, see `dnas_hw.ops.canonical_json`),
`batch_size`, `p10_us`, `p50_us`, `p90_us`, `repeats`. `LUT.meta.json` says where
and how it was measured (backend and version, device, CPU model, threads, dtype,
torch version, date, space name and hash, and `ids`: the ids the embedding
lookups were timed with, `dnas_hw.data.ids`; absent: spread; and
`whole_arch_correction`, the factor on the sum that depends on the whole arch,
`lut.correction`; absent: none). A lookup that misses raises: a LUT never
invents a value.

Besides registered ops, a LUT holds one `model_overhead` row per batch size:
what a whole-model call costs beyond the sum of its ops (call overhead, input
handling, the final sigmoid), measured by the profiler. It is the one row that
may be negative: where a runtime fuses across ops, a whole model can cost less
than its ops timed one by one.

Every value is checked when a LUT is loaded or built (`check_rows`): latencies
finite and ordered, `p10_us <= p50_us <= p90_us`; an op's latencies
non-negative with a positive median (a zero would make the op free to the
search); `repeats` and `batch_size` at least 1.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from dnas_hw.data.ids import SPREAD, IdSource, mismatch
from dnas_hw.errors import UserError
from dnas_hw.files import atomic_path, first_line, read_json, write_json_atomic
from dnas_hw.ops import OpCall
from lut.correction import Correction, check_correction_meta

COLUMNS = ["op", "params", "batch_size", "p10_us", "p50_us", "p90_us", "repeats"]
OVERHEAD_OP = "model_overhead"
# The meta fields that must agree for a LUT to describe the target the user asks about.
TARGET_FIELDS = ("backend", "device", "threads")


class LutError(UserError):
    """A LUT that cannot be used: unreadable, malformed, or for another target."""


class LutMissError(LutError):
    """Keys the LUT has no row for; the message names them."""

    def __init__(self, path: str, missing: list[tuple[str, str, int]]):
        self.missing = missing
        shown = ", ".join(f"{op}{params}@b{b}" for op, params, b in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"{path}: no row for {len(missing)} key(s): {shown}{more} (profile them first)")


LATENCIES = ["p10_us", "p50_us", "p90_us"]


def check_rows(rows: pd.DataFrame, path: str) -> None:
    """Refuse (`LutError`, naming the first offending row by its CSV line) any value a LUT must not hold."""
    values = rows[LATENCIES].to_numpy(dtype=float)
    is_op = (rows["op"] != OVERHEAD_OP).to_numpy()
    problems = [
        (~np.isfinite(values).all(axis=1), "latencies must be finite numbers"),
        (is_op & (values < 0).any(axis=1), "an op's latencies must not be negative"),
        (is_op & (values[:, 1] <= 0), "an op's median latency must be positive"),
        (values[:, 0] > values[:, 1], "p10_us is above p50_us (percentiles must be ordered)"),
        (values[:, 1] > values[:, 2], "p50_us is above p90_us (percentiles must be ordered)"),
        ((rows["repeats"] < 1).to_numpy(), "repeats must be at least 1"),
        ((rows["batch_size"] < 1).to_numpy(), "batch_size must be at least 1"),
        (rows[["op", "params"]].isna().any(axis=1).to_numpy(), "op and params must not be empty"),
    ]
    for bad, why in problems:
        if bad.any():
            i = int(np.argmax(bad))
            r = rows.iloc[i]
            shown = ", ".join(f"{c} {r[c]}" for c in LATENCIES)
            hint = "; profile it again" if r["op"] == OVERHEAD_OP and "ordered" in why else ""
            raise LutError(f"{path}: line {i + 2} ({r['op']} at batch {r['batch_size']}: {shown}): {why}{hint}")
    if rows.duplicated(["op", "params", "batch_size"]).any():
        raise LutError(f"{path}: duplicate (op, params, batch_size) rows")


def check_meta(meta: object, path: str) -> dict:
    """The metadata fields readers rely on must have their types; other fields are free."""
    if not isinstance(meta, dict):
        raise LutError(f"{path}: LUT metadata must be a JSON object")
    for field in TARGET_FIELDS:
        if field in meta and not isinstance(meta[field], (str, int)):
            raise LutError(f"{path}: {field} must be a string or an integer")

    def numbers(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    factors = meta.get("in_model_factor", {})
    if not isinstance(factors, dict) or not all(
        numbers(v) or (isinstance(v, dict) and all(numbers(f) for f in v.values())) for v in factors.values()
    ):
        raise LutError(f"{path}: in_model_factor must map batch sizes to a factor or to {{op kind: factor}}")
    fits = meta.get("in_model_fit", {})
    if not isinstance(fits, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("method"), str) and isinstance(v.get("loo_error", {}), dict)
        and all(numbers(e) for e in v.get("loo_error", {}).values())
        for v in fits.values()
    ):
        raise LutError(f"{path}: in_model_fit must map batch sizes to {{method, loo_error}}")
    if not isinstance(meta.get("model_overhead", {}), dict):
        raise LutError(f"{path}: model_overhead must map batch sizes to reference points")
    try:
        IdSource.from_meta(meta.get("ids"), path)
        check_correction_meta(meta.get("whole_arch_correction", {}), path)
    except UserError as e:
        raise LutError(str(e)) from None
    return meta


def overhead_call(num_dense: int, num_sparse: int) -> OpCall:
    """The pseudo-op whose row holds a whole model call's fixed overhead."""
    params = json.dumps({"num_dense": num_dense, "num_sparse": num_sparse}, sort_keys=True, separators=(",", ":"))
    return OpCall(OVERHEAD_OP, params)


def meta_path(csv_path: str | os.PathLike) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name[: -len(".csv")] + ".meta.json" if p.name.endswith(".csv") else p.name + ".meta.json")


@dataclass
class Lut:
    rows: pd.DataFrame  # COLUMNS, unique on (op, params, batch_size)
    meta: dict
    path: str = "<memory>"

    def __post_init__(self) -> None:
        self._index = {
            (op, params, int(b)): i
            for i, (op, params, b) in enumerate(zip(self.rows["op"], self.rows["params"], self.rows["batch_size"]))
        }

    # ------------------------------------------------------------------ I/O

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lut":
        path = Path(path)
        if not path.is_file():
            raise LutError(f"{path}: LUT not found")
        meta = check_meta(read_json(meta_path(path), "LUT metadata"), str(meta_path(path)))
        try:
            rows = pd.read_csv(path, dtype={"op": str, "params": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise LutError(f"{path}: not a readable LUT CSV ({e})") from None
        missing = [c for c in COLUMNS if c not in rows.columns]
        if missing:
            raise LutError(f"{path}: missing column(s) {missing}; expected {COLUMNS}")
        rows = rows[COLUMNS]
        try:
            rows = rows.astype({"batch_size": int, "repeats": int, "p10_us": float, "p50_us": float, "p90_us": float})
        except (ValueError, TypeError, OverflowError) as e:
            raise LutError(f"{path}: malformed value in a numeric column ({first_line(e)})") from None
        check_rows(rows, str(path))
        return cls(rows.reset_index(drop=True), meta, str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write the CSV and its sidecar, each atomically."""
        with atomic_path(path) as tmp:
            self.rows[COLUMNS].to_csv(tmp, index=False)
        write_json_atomic(meta_path(path), self.meta)

    @classmethod
    def from_records(cls, records: Sequence[dict], meta: dict, path: str = "<memory>") -> "Lut":
        """A LUT from row dicts with the `COLUMNS` keys."""
        rows = pd.DataFrame(list(records), columns=COLUMNS)
        rows = rows.astype({"batch_size": int, "repeats": int, "p10_us": float, "p50_us": float, "p90_us": float})
        check_rows(rows, path)
        return cls(rows.reset_index(drop=True), dict(meta), path)

    def keys(self) -> set[tuple[str, str, int]]:
        return set(self._index)

    # ------------------------------------------------------------------ lookup

    def has(self, call: OpCall, batch_size: int) -> bool:
        return call.key(batch_size) in self._index

    def missing(self, calls: Iterable[OpCall], batch_size: int) -> list[tuple[str, str, int]]:
        return sorted({c.key(batch_size) for c in calls if not self.has(c, batch_size)})

    def require(self, calls: Iterable[OpCall], batch_size: int) -> None:
        """Raise `LutMissError` naming every key of `calls` the LUT lacks at `batch_size`."""
        missing = self.missing(calls, batch_size)
        if missing:
            raise LutMissError(self.path, missing)

    def latency_us(self, call: OpCall, batch_size: int, stat: str = "p50_us") -> float:
        try:
            return float(self.rows.at[self._index[call.key(batch_size)], stat])
        except KeyError:
            raise LutMissError(self.path, [call.key(batch_size)]) from None

    def correction(self, batch_size: int) -> Correction | None:
        """The whole-arch correction at `batch_size` (`lut.correction`); None: the prediction is the plain sum."""
        try:
            return check_correction_meta(self.meta.get("whole_arch_correction", {}), self.path).get(str(int(batch_size)))
        except UserError as e:
            raise LutError(str(e)) from None

    def batch_sizes(self) -> list[int]:
        return sorted(int(b) for b in self.rows["batch_size"].unique())

    # ------------------------------------------------------------------ target

    @property
    def id_source(self) -> IdSource:
        """The ids its embedding rows were timed with (spread for a LUT made before the field)."""
        return IdSource.from_meta(self.meta.get("ids"), self.path)

    def check_ids(self, measured: IdSource, force: bool = False) -> str | None:
        """Refuse (`LutError`) to compare this LUT with lookups timed with other ids than it was profiled with,
        unless `force`; then return the difference (None when they agree), for the caller to state."""
        differ = mismatch(self.id_source, measured, self.path)
        if differ and not force:
            hint = "--ids spread" if self.id_source.kind == SPREAD else f"--data {self.id_source.path}"
            raise LutError(f"{differ}: the comparison would measure the ids, not the LUT (use {hint}, or --force)")
        return differ

    def check_target(self, force: bool = False, **asked) -> None:
        """Refuse a LUT measured on another backend/device/thread count than `asked`, unless `force`."""
        for field, want in asked.items():
            if want is None or force:
                continue
            have = self.meta.get(field)
            if str(have) != str(want):
                raise LutError(
                    f"{self.path}: measured with {field}={have}, but {field}={want} was asked (use --force to use it anyway)"
                )


def merge(luts: Sequence[Lut]) -> Lut:
    """One LUT holding the rows of all `luts`, which must share backend, device, threads and id source.

    A key present in two of them is an error naming it: a merge never picks
    one measurement over another silently. The metadata is the first LUT's,
    with `merged_from` listing the sources.
    """
    if not luts:
        raise LutError("nothing to merge")
    first = luts[0]
    for other in luts[1:]:
        for field in TARGET_FIELDS:
            if str(other.meta.get(field)) != str(first.meta.get(field)):
                raise LutError(
                    f"cannot merge {other.path} ({field}={other.meta.get(field)}) "
                    f"with {first.path} ({field}={first.meta.get(field)})"
                )
        if not other.id_source.same_as(first.id_source):
            raise LutError(f"cannot merge {other.path} (ids {other.id_source.describe()}) "
                           f"with {first.path} (ids {first.id_source.describe()})")
    seen: dict[tuple[str, str, int], str] = {}
    for lut in luts:
        for key in lut.keys():
            if key in seen:
                op, params, b = key
                raise LutError(f"{op}{params}@b{b} is in both {seen[key]} and {lut.path}")
            seen[key] = lut.path
    rows = pd.concat([lut.rows[COLUMNS] for lut in luts], ignore_index=True)
    meta = {**first.meta, "merged_from": [lut.path for lut in luts]}
    return Lut(rows, meta, "<merged>")
