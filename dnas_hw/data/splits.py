"""Which split (train / val / test) each raw row goes to.

A splitter maps rows, named by (file index, line index in that file), to split
codes, chunk by chunk; the answer never depends on how the input was chunked.

- `DaysSplit` (the DLRM convention). One file (Kaggle `train.txt`): its rows
  form 7 equal contiguous pseudo-days (the first `rows % 7` days one row
  longer); days 1-6 are train, and the last day is halved: its first half
  (rounded up) is test, its second half val. Several files (Criteo 1TB
  `day_0..day_23`, in day order): each file is a day; all but the last are
  train, the last is halved the same way.
- `RandomSplit`: each row independently, from a hash of (seed, file, line):
  test with probability `test_frac`, val with `val_frac`, train otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2

KAGGLE_DAYS = 7


def day_bounds(rows: int, days: int = KAGGLE_DAYS) -> tuple[int, int]:
    """For one file of `rows` rows: `(test_start, val_start)` row indices.

    Rows `[0, test_start)` are train, `[test_start, val_start)` test, the rest val.
    """
    per_day, extra = divmod(rows, days)
    sizes = [per_day + (d < extra) for d in range(days)]
    test_start = sum(sizes[:-1])
    return test_start, test_start + (sizes[-1] + 1) // 2


@dataclass(frozen=True)
class DaysSplit:
    num_files: int
    last_file_rows: int  # rows of the last file, counted before the split

    def bounds(self) -> tuple[int, int]:
        """`(test_start, val_start)` row indices within the last file."""
        if self.num_files == 1:
            return day_bounds(self.last_file_rows)
        return 0, (self.last_file_rows + 1) // 2

    def assign(self, file_index: int, first_line: int, n: int) -> np.ndarray:
        """Split codes int8 [n] of lines `first_line .. first_line + n - 1` (0-based)."""
        if file_index < self.num_files - 1:
            return np.zeros(n, np.int8)
        test_start, val_start = self.bounds()
        line = np.arange(first_line, first_line + n)
        return np.where(line < test_start, TRAIN, np.where(line < val_start, TEST, VAL)).astype(np.int8)

    def describe(self) -> dict:
        return {"kind": "days", "num_files": self.num_files, "last_file_rows": self.last_file_rows}


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters nearby inputs."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform_hash(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """A uniform float64 in [0, 1) for each `index`, fixed by (seed, stream, index)."""
    key = _mix64(_mix64(np.array([seed % (1 << 64)], np.uint64)) + np.uint64(stream))
    x = _mix64(index.astype(np.uint64) + key)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class RandomSplit:
    val_frac: float
    test_frac: float
    seed: int

    def assign(self, file_index: int, first_line: int, n: int) -> np.ndarray:
        u = uniform_hash(self.seed, file_index, np.arange(first_line, first_line + n))
        return np.where(u < self.test_frac, TEST, np.where(u < self.test_frac + self.val_frac, VAL, TRAIN)).astype(
            np.int8
        )

    def describe(self) -> dict:
        return {"kind": "random", "val_frac": self.val_frac, "test_frac": self.test_frac, "seed": self.seed}
