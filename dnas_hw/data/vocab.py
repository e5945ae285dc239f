"""Categorical hash -> embedding row id, the two ways `data prepare` offers.

Both reserve id 0 for a missing value.

- `HashIds(size)` (`--hash-size`, DLRM's modulo): a value `h` gets
  `1 + h % (size - 1)`, so every table has exactly `size` rows; no pass over
  the data is needed and memory does not grow with the input.
- `Vocabulary` (`--min-count`, as FuxiCTR does): built from the train rows by
  `VocabCounter`. Values seen at least `min_count` times get ids 2, 3, ... in
  increasing hash order; all others (rare in train, or unseen) share id 1, the
  feature's out-of-vocabulary id. A table has `kept + 2` rows. `data prepare`
  saves it as `vocab.npz` in the folder (`Vocabulary.save` / `load`), so later
  raw data (a new day, serving logs) maps to the same ids with `--vocab DIR`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnas_hw.errors import UserError

MISSING_ID = 0
OOV_ID = 1
VOCAB_FILE = "vocab.npz"


@dataclass(frozen=True)
class HashIds:
    size: int
    num_sparse: int = 26

    def cardinalities(self) -> list[int]:
        return [self.size] * self.num_sparse

    def ids(self, hashes: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """hashes uint32 [n, F], missing bool [n, F] -> ids int32 [n, F]."""
        ids = (hashes % np.uint32(self.size - 1)).astype(np.int32) + 1
        ids[missing] = MISSING_ID
        return ids

    def describe(self) -> dict:
        return {"kind": "hash", "hash_size": self.size}


class SortedLookup:
    """Find uint32 queries in a sorted array of distinct uint32 keys, fast.

    numpy's binary search pays a mispredicted branch (and, for large arrays, a
    cache miss) at each of its log2(n) steps. Hash values are spread evenly,
    so a directory indexed by a query's top bits narrows it to a bucket of
    about 4 keys, and a branch-free binary search over all queries at once
    settles every bucket in `rounds` whole-array steps. Small key arrays use
    numpy's search, which is quicker for them.
    """

    SMALL = 64

    def __init__(self, keys: np.ndarray):
        self.keys = np.append(keys, np.uint32(0))  # a pad, so the search may read keys[len(keys)]
        self.n = len(keys)
        bits = min(24, max(0, int(np.ceil(np.log2(max(self.n, 1) / 4)))))
        self.shift = np.uint64(32 - bits)
        starts = np.arange(2**bits + 1, dtype=np.uint64) << self.shift
        self.directory = np.searchsorted(keys.astype(np.uint64), starts)  # [2**bits + 1]
        largest = int(np.diff(self.directory).max(initial=0))
        self.rounds = int(np.ceil(np.log2(largest + 1)))

    def find(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """queries uint32 [n] -> (index of each in keys (where found), found bool [n])."""
        if self.n <= self.SMALL:
            lo = np.searchsorted(self.keys[: self.n], queries)
            return lo, (lo < self.n) & (self.keys[lo] == queries)
        bucket = (queries.astype(np.uint64) >> self.shift).astype(np.int64)
        lo, hi = self.directory[bucket], self.directory[bucket + 1]
        for _ in range(self.rounds):
            mid = (lo + hi) >> 1
            right = (self.keys[mid] < queries) & (lo < hi)
            lo = np.where(right, mid + 1, lo)
            hi = np.where(right, hi, mid)
        return lo, (lo < self.n) & (self.keys[lo] == queries)


@dataclass(frozen=True)
class Vocabulary:
    min_count: int
    kept: tuple[np.ndarray, ...]  # per feature: sorted uint32 values that get their own id

    def __post_init__(self):
        object.__setattr__(self, "_lookups", tuple(SortedLookup(k) for k in self.kept))

    def cardinalities(self) -> list[int]:
        return [len(k) + 2 for k in self.kept]

    def ids(self, hashes: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """hashes uint32 [n, F], missing bool [n, F] -> ids int32 [n, F]."""
        by_feature = np.ascontiguousarray(hashes.T)  # [F, n]: each feature's values contiguous
        ids = np.empty(by_feature.shape, np.int32)
        for f, lookup in enumerate(self._lookups):
            pos, found = lookup.find(by_feature[f])
            np.add(pos, 2, out=ids[f], where=found, casting="unsafe")
            ids[f, ~found] = OOV_ID
        ids = ids.T
        ids[missing] = MISSING_ID
        return ids

    def describe(self) -> dict:
        return {"kind": "vocabulary", "min_count": self.min_count, "file": VOCAB_FILE}

    def save(self, path: Path) -> None:
        """`path` (.npz, no pickle): `min_count`, and per feature `C1`.. its kept values (uint32, sorted)."""
        with open(path, "wb") as f:
            np.savez(f, min_count=np.int64(self.min_count), **{f"C{i + 1}": k for i, k in enumerate(self.kept)})

    @classmethod
    def load(cls, path: Path, num_sparse: int) -> "Vocabulary":
        """A vocabulary saved by `save`; a missing or malformed file is a `UserError`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: vocabulary not found (prepare a folder with --min-count to make one)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: not a readable vocabulary ({type(e).__name__})") from None
        names = ["min_count"] + [f"C{i + 1}" for i in range(num_sparse)]
        if sorted(arrays) != sorted(names):
            raise UserError(f"{path}: a vocabulary holds exactly {names[0]}, C1..C{num_sparse}; found {sorted(arrays)}")
        kept = tuple(arrays[f"C{i + 1}"] for i in range(num_sparse))
        for i, k in enumerate(kept):
            if k.dtype != np.uint32 or k.ndim != 1 or (len(k) > 1 and not (k[1:] > k[:-1]).all()):
                raise UserError(f"{path}: C{i + 1} must be strictly increasing uint32 values")
        return cls(int(arrays["min_count"]), kept)


class VocabCounter:
    """Counts categorical values per feature over chunks, with sorted merges.

    Chunks are buffered and folded into per-feature sorted (value, count)
    arrays every `flush_values` buffered values, so the cost is a few sorts
    per million values and memory is about 12 bytes per distinct value.
    """

    def __init__(self, num_sparse: int = 26, flush_values: int = 1 << 23):
        self.num_sparse = num_sparse
        self.flush_values = flush_values
        self._values = [np.empty(0, np.uint32) for _ in range(num_sparse)]
        self._counts = [np.empty(0, np.int64) for _ in range(num_sparse)]
        self._buffer: list[list[np.ndarray]] = [[] for _ in range(num_sparse)]
        self._buffered = 0

    def add(self, hashes: np.ndarray, missing: np.ndarray) -> None:
        """hashes uint32 [n, F], missing bool [n, F]; missing values are not counted."""
        by_feature, present = np.ascontiguousarray(hashes.T), ~missing.T  # [F, n]: rows contiguous
        for f in range(self.num_sparse):
            self._buffer[f].append(by_feature[f][present[f]])
        self._buffered += hashes.size
        if self._buffered >= self.flush_values:
            self._flush()

    def _flush(self) -> None:
        for f in range(self.num_sparse):
            buffered = np.concatenate(self._buffer[f]) if self._buffer[f] else np.empty(0, np.uint32)
            new_values, new_counts = np.unique(buffered, return_counts=True)
            values = np.concatenate([self._values[f], new_values])
            counts = np.concatenate([self._counts[f], new_counts])
            order = np.argsort(values, kind="stable")  # two sorted runs: a linear merge
            values, counts = values[order], counts[order]
            if len(values):
                first = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
                values, counts = values[first], np.add.reduceat(counts, first)
            self._values[f], self._counts[f] = values, counts
            self._buffer[f] = []
        self._buffered = 0

    def build(self, min_count: int) -> Vocabulary:
        self._flush()
        return Vocabulary(min_count, tuple(v[c >= min_count] for v, c in zip(self._values, self._counts)))
