"""Which ids the timed embedding lookups see: spread over each table, or replayed from a data folder's rows.

- `spread`: ids over the whole table without repeats (`dnas_hw.inputs.spread_ids`).
  Every lookup touches a row the calls just before it did not: the worst case
  for the caches, and the only choice without data.
- `data`: the ids (and dense features) of consecutive rows of one split of a
  prepared-data folder, replayed in their stored order from a seeded start,
  wrapping around the split. They carry the data's own frequency skew (a few
  ids carry most rows, and their table rows stay in cache) and its order: a
  large table is priced as this traffic is served, not as the worst case.

A LUT records the source it was profiled with (`LUT.meta.json` field `ids`,
`IdSource.to_meta`); a LUT without the field was profiled with spread ids.
Two data sources are the same when their folders' `meta.json` are (the
`fingerprint`), wherever the folders lie.

    source = id_source("data", "data/criteo")        # or id_source(None, None) -> spread
    dense, sparse = source.window(count, seed)       # float32 [count, D], int64 [count, F]
    source.describe()                                # "data:/abs/data/criteo split train, 36,000 rows"
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dnas_hw.errors import UserError

SPREAD, DATA = "spread", "data"
KINDS = (DATA, SPREAD)
# The split replayed: the rows the model was trained on, the largest.
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class IdSource:
    kind: str = SPREAD
    path: str | None = None  # data: the folder, absolute
    split: str = DEFAULT_SPLIT
    rows: int = 0  # data: rows of that split
    fingerprint: str | None = None  # data: of the folder's meta.json

    def describe(self) -> str:
        if self.kind == SPREAD:
            return "spread (over each table, no repeats: the worst case)"
        return f"data:{self.path} split {self.split}, {self.rows:,} rows"

    def to_meta(self) -> dict:
        """The LUT metadata's `ids` field."""
        if self.kind == SPREAD:
            return {"kind": SPREAD, "description": self.describe()}
        return {"kind": DATA, "path": self.path, "split": self.split, "rows": self.rows,
                "fingerprint": self.fingerprint, "description": self.describe()}

    @classmethod
    def from_meta(cls, meta: object, where: str) -> "IdSource":
        """The source a LUT's `ids` field names; absent (a LUT made before the field): spread."""
        if meta is None:
            return cls()
        if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
            raise UserError(f"{where}: ids must be an object whose kind is {' or '.join(KINDS)}")
        if meta["kind"] == SPREAD:
            return cls()
        fields = (("path", str), ("split", str), ("rows", int), ("fingerprint", str))
        for name, kind in fields:
            if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
                raise UserError(f"{where}: ids.{name} must be a {kind.__name__}")
        return cls(DATA, meta["path"], meta["split"], meta["rows"], meta["fingerprint"])

    def same_as(self, other: "IdSource") -> bool:
        """Whether lookups timed with `other` see the ids this source gives (the folder's path aside)."""
        if self.kind != other.kind:
            return False
        return self.kind == SPREAD or (self.fingerprint, self.split) == (other.fingerprint, other.split)

    def window(self, count: int, seed: int, num_dense: int | None = None, num_sparse: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """`(dense float32 [count, D], sparse int64 [count, F])`: `count` consecutive rows of the split,
        from a start drawn by `seed`, wrapping around. `num_dense`/`num_sparse`, when given, must be the data's."""
        if self.kind != DATA or self.path is None:
            raise ValueError("window() needs a data source")
        dense, sparse = _split_arrays(self.path, self.split)
        for name, want, have in (("dense", num_dense, dense.shape[1]), ("sparse", num_sparse, sparse.shape[1])):
            if want is not None and want != have:
                raise UserError(f"{self.path}: the data has {have} {name} features, the model takes {want}")
        n = len(sparse)
        start = int(np.random.default_rng([seed, 0x1D5]).integers(n))
        rows = (start + np.arange(count)) % n
        return np.asarray(dense[rows], dtype=np.float32), np.asarray(sparse[rows], dtype=np.int64)


def data_fingerprint(meta: dict) -> str:
    """A short hash of a prepared folder's meta.json: its source, options, cardinalities and split sizes."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def data_source(data_dir: str | Path, split: str = DEFAULT_SPLIT) -> IdSource:
    """The `data` source of a prepared folder's `split`; a `UserError` if it has no rows there."""
    from dnas_hw.data.folder import PreparedData

    data = PreparedData.open(data_dir)
    rows = len(data.split(split))
    if rows == 0:
        raise UserError(f"{data_dir}: split {split} has no rows to replay ids from")
    return IdSource(DATA, str(Path(data_dir).resolve()), split, rows, data_fingerprint(data.meta))


def id_source(choice: str | None, data_dir: str | Path | None) -> IdSource:
    """What `--ids CHOICE` with `--data DATA_DIR` means: data ids by default when there is data, else spread."""
    if choice is None:
        choice = DATA if data_dir is not None else SPREAD
    if choice not in KINDS:
        raise UserError(f"--ids {choice!r}: use one of {', '.join(KINDS)}")
    if choice == SPREAD:
        return IdSource()
    if data_dir is None:
        raise UserError("--ids data needs --data (a prepared data folder to replay ids from)")
    return data_source(data_dir)


def mismatch(lut_source: IdSource, measured: IdSource, lut_path: str) -> str | None:
    """None if a LUT profiled with `lut_source` prices lookups as `measured` times them; else what differs."""
    if lut_source.same_as(measured):
        return None
    return f"{lut_path}: profiled with ids {lut_source.describe()}, but these lookups replay {measured.describe()}"


@lru_cache(maxsize=4)
def _split_arrays(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    from dnas_hw.data.folder import PreparedData

    s = PreparedData.open(path).split(split)
    if len(s) == 0:
        raise UserError(f"{path}: split {split} has no rows to replay ids from")
    return s.dense, s.sparse
