"""The prepared-data folder: the contract between data preparation and training.

Layout of `DIR`:

    meta.json              see `check_meta` (format "dnas-hw-data/1")
    {split}_dense.npy      float32 [N, 13]  log(1 + max(x, 0)), missing -> 0
    {split}_sparse.npy     int32   [N, 26]  ids in [0, cardinalities[f])
    {split}_labels.npy     float32 [N]      0.0 / 1.0
                                            for split in train, val, test

Plain `.npy` files, so every array is memory-mapped and no split is ever read
whole into RAM. `iterate_batches` walks a split in a deterministic, optionally
shuffled and sharded order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from dnas_hw.data.splits import SPLITS
from dnas_hw.errors import UserError
from dnas_hw.files import read_json

if TYPE_CHECKING:
    import torch

FORMAT = "dnas-hw-data/1"
# Ids are stored as int32, so a feature has at most this many distinct ids (0 .. 2**31 - 1).
MAX_CARDINALITY = 2**31
ARRAYS = ("dense", "sparse", "labels")
# Shuffling reads one block of this many contiguous rows at a time: large
# enough for a good mix, small enough (a few MB) to stay in RAM and cache.
SHUFFLE_BLOCK_ROWS = 1 << 15


def array_path(folder: Path, split: str, array: str) -> Path:
    return Path(folder) / f"{split}_{array}.npy"


def check_meta(meta: object, where: str) -> dict:
    """Check the fields every consumer relies on; extra fields are allowed."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"{where}: {what}")

    def is_count(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    need(isinstance(meta, dict), "not a JSON object")
    assert isinstance(meta, dict)
    need(meta.get("format") == FORMAT, f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    for key in ("num_dense", "num_sparse", "skipped_rows"):
        need(is_count(meta.get(key)), f"{key} must be a non-negative integer")
    cards = meta.get("cardinalities")
    need(
        isinstance(cards, list) and len(cards) == meta["num_sparse"]
        and all(is_count(c) and 0 < c <= MAX_CARDINALITY for c in cards),
        f"cardinalities must be {meta['num_sparse']} positive integers of at most {MAX_CARDINALITY:,} (int32 ids)",
    )
    splits = meta.get("splits")
    need(isinstance(splits, dict), "splits must be an object")
    for name in SPLITS:
        s = splits.get(name)
        need(isinstance(s, dict) and is_count(s.get("rows")) and is_count(s.get("positives")),
             f"splits.{name} must hold integer rows and positives")
    source = meta.get("source")
    need(isinstance(source, dict) and source.get("kind") in ("criteo", "synth"), "source.kind must be criteo or synth")
    return meta


@dataclass(frozen=True)
class Split:
    """One split's arrays, memory-mapped: dense [N, D], sparse [N, F], labels [N]."""

    name: str
    dense: np.ndarray
    sparse: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def spaced(self, n: int, first: int = 0, last: int | None = None) -> "Split":
        """Up to `n` rows of [first, last) (default: all), evenly spaced, in memory: a sample as wide as the
        range, for rows already in random order."""
        last = len(self) if last is None else last
        idx = np.linspace(first, last - 1, num=min(n, last - first)).astype(np.int64)
        return Split(f"{self.name}, {len(idx):,} rows", np.asarray(self.dense[idx]), np.asarray(self.sparse[idx]),
                     np.asarray(self.labels[idx]))


def _open_array(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if array.dtype != dtype or array.shape != shape:
        raise UserError(f"{path}: {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}")
    return array


class PreparedData:
    """A read-only view of a prepared-data folder; open it with `PreparedData.open`."""

    def __init__(self, path: Path, meta: dict, splits: dict[str, Split]):
        self.path = path
        self.meta = meta
        self.num_dense: int = meta["num_dense"]
        self.num_sparse: int = meta["num_sparse"]
        self.cardinalities: tuple[int, ...] = tuple(meta["cardinalities"])
        self._splits = splits

    @classmethod
    def open(cls, path: str | Path) -> "PreparedData":
        """Read meta.json and map every array, checking names, dtypes and shapes."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: no such data folder")
        meta = check_meta(read_json(path / "meta.json", "meta.json"), f"{path / 'meta.json'}")
        splits = {}
        for name in SPLITS:
            rows = meta["splits"][name]["rows"]
            shapes = {"dense": (rows, meta["num_dense"]), "sparse": (rows, meta["num_sparse"]), "labels": (rows,)}
            dtypes = {"dense": np.float32, "sparse": np.int32, "labels": np.float32}
            arrays = {a: _open_array(array_path(path, name, a), dtypes[a], shapes[a]) for a in ARRAYS}
            splits[name] = Split(name, **arrays)
        return cls(path, meta, splits)

    def split(self, name: str) -> Split:
        if name not in self._splits:
            raise UserError(f"{self.path}: unknown split {name!r} (choose from {', '.join(SPLITS)})")
        return self._splits[name]


def num_batches(n_rows: int, batch_size: int, drop_last: bool) -> int:
    """How many batches `iterate_batches` yields for `n_rows` rows (per rank too)."""
    return n_rows // batch_size if drop_last else -(-n_rows // batch_size)


def _block_orders(start: int, stop: int, shuffle: bool, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """The global order of rows [start, stop), one block of row indices at a time.

    Shuffled, blocks of `SHUFFLE_BLOCK_ROWS` contiguous rows come in a random
    order and each block's rows in a random order, both fixed by (seed, epoch).
    """
    block_starts = np.arange(start, stop, SHUFFLE_BLOCK_ROWS)
    if not shuffle:
        for b in block_starts:
            yield np.arange(b, min(b + SHUFFLE_BLOCK_ROWS, stop))
        return
    rng = np.random.default_rng([seed, epoch])
    for b in rng.permutation(block_starts):
        yield b + rng.permutation(min(SHUFFLE_BLOCK_ROWS, stop - b))


def _take(array: np.ndarray, rows: np.ndarray, whole_span: bool) -> np.ndarray:
    """`array[rows]` for row indices of (mostly) one block.

    With `whole_span` (one process, so every row of a block is its own) and
    rows that cover most of their span, the span is read as one contiguous
    slice, with the memory map's read-ahead, and the rows are picked in RAM.
    Otherwise the rows are read one by one: a rank reads only its own rows.
    """
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if whole_span and hi - lo <= 2 * len(rows):
        return np.asarray(array[lo:hi])[rows - lo]
    return np.asarray(array[rows])


def shard_rows(batch_rows: int, shard: tuple[int, int]) -> slice:
    """Rank r's part of a global batch of `batch_rows` rows under `shard=(r, w)`: rows [r*b/w, (r+1)*b/w)."""
    rank, world = shard
    return slice(rank * batch_rows // world, (rank + 1) * batch_rows // world)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    rows: tuple[int, int] | None = None,
    shard: tuple[int, int] = (0, 1),
    drop_last: bool = False,
    batches: tuple[int, int] | None = None,
) -> Iterator[tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]]:
    """Yield `(dense float32 [b, D], sparse int64 [b, F], labels float32 [b])`.

    rows:  `(start, stop)`, only this contiguous row range of the split.
    shard: `(rank, world)`. All ranks walk the same global batches of
           `batch_size` rows; rank r yields rows `[r*b/w, (r+1)*b/w)` of each,
           so the ranks together see exactly what one process sees. Each rank
           reads only its own rows.
    A last global batch shorter than `batch_size` is yielded unless
    `drop_last` (sharded as evenly as its size allows).
    batches: `(first, stop)`, only the global batches `first` to `stop - 1`
           of the order, the others not read: where a pass taken in pieces
           goes on (`dnas_hw.train.Pass`).
    """
    import torch  # here, so that opening a folder (e.g. `data show`) does not load torch

    rank, world = shard
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if not (world >= 1 and 0 <= rank < world):
        raise UserError(f"bad shard {shard}: need 0 <= rank < world")
    if batch_size % world:
        raise UserError(f"batch size {batch_size} is not divisible by the number of ranks {world}")
    start, stop = rows if rows is not None else (0, len(split))
    if not 0 <= start <= stop <= len(split):
        raise UserError(f"row range {rows} outside split {split.name!r} of {len(split)} rows")
    first, last = batches if batches is not None else (0, num_batches(stop - start, batch_size, drop_last))
    if not 0 <= first <= last:
        raise UserError(f"bad batch range {batches}: need 0 <= first <= stop")
    passed = 0  # global batches of the order passed so far, yielded or not

    def emit(order_batches: np.ndarray):  # int64 [k, b]: the order's next k global batches, as row indices
        nonlocal passed
        lo = passed
        passed += len(order_batches)
        own = order_batches[max(first - lo, 0):max(last - lo, 0), shard_rows(order_batches.shape[1], shard)]
        idx, m = own.ravel(), own.shape[1]
        if not len(idx):
            return
        one = world == 1
        dense, sparse, labels = (_take(a, idx, one) for a in (split.dense, split.sparse, split.labels))
        sparse = sparse.astype(np.int64)
        for i in range(len(own)):
            s = slice(i * m, (i + 1) * m)
            yield torch.from_numpy(dense[s]), torch.from_numpy(sparse[s]), torch.from_numpy(labels[s])

    pending = np.empty(0, np.int64)  # the global order's rows not yet in a batch
    for order in _block_orders(start, stop, shuffle, seed, epoch):
        if passed >= last:
            return
        if len(pending):  # the batch that straddles two blocks, on its own
            head = batch_size - len(pending)
            if head > len(order):
                pending = np.concatenate([pending, order])
                continue
            yield from emit(np.concatenate([pending, order[:head]])[None, :])
            order = order[head:]
        full = len(order) // batch_size * batch_size
        if full:
            yield from emit(order[:full].reshape(-1, batch_size))
        pending = order[full:]
    if len(pending) and not drop_last:
        yield from emit(pending[None, :])
