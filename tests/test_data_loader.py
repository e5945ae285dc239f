"""The prepared-data folder contract: opening, checking and batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dnas_hw.data import folder
from dnas_hw.data.folder import PreparedData, Split, iterate_batches, num_batches
from dnas_hw.data.writer import FolderWriter
from dnas_hw.errors import UserError

ROWS = {"train": 1000, "val": 37, "test": 0}


@pytest.fixture
def data_dir(tmp_path):
    """A folder whose dense[:, 0] is each row's index, so batches reveal their rows."""
    (tmp_path / "d").mkdir()
    writer = FolderWriter(tmp_path / "d", num_dense=13, num_sparse=26)
    for code, (name, n) in enumerate(ROWS.items()):
        dense = np.zeros((n, 13), np.float32)
        dense[:, 0] = np.arange(n)
        sparse = (np.arange(n)[:, None] + np.arange(26)) % 50
        writer.append(np.full(n, code, np.int8), dense, sparse, (np.arange(n) % 3 == 0).astype(np.float32))
    writer.finish([50] * 26, 0, {"kind": "synth", "files": [], "options": {}, "seed": 0})
    return tmp_path / "d"


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(folder, "SHUFFLE_BLOCK_ROWS", 64)


def row_ids(batches) -> list[np.ndarray]:
    return [d[:, 0].numpy().astype(int) for d, _, _ in batches]


def test_open_and_types(data_dir):
    data = PreparedData.open(data_dir)
    assert data.num_dense == 13 and data.num_sparse == 26 and data.cardinalities == (50,) * 26
    assert data.meta["splits"]["train"] == {"rows": 1000, "positives": 334}
    assert [len(data.split(s)) for s in ROWS] == list(ROWS.values())
    assert isinstance(data.split("train").dense, np.memmap)
    dense, sparse, labels = next(iterate_batches(data.split("train"), 64, shuffle=True))
    assert (dense.dtype, sparse.dtype, labels.dtype) == (torch.float32, torch.int64, torch.float32)
    assert dense.shape == (64, 13) and sparse.shape == (64, 26) and labels.shape == (64,)
    assert list(iterate_batches(data.split("test"), 8, shuffle=True)) == []
    with pytest.raises(UserError, match="unknown split 'dev'"):
        data.split("dev")


def test_unshuffled_walks_rows_in_order(data_dir):
    split = PreparedData.open(data_dir).split("train")
    ids = row_ids(iterate_batches(split, 300, shuffle=False))
    assert [len(b) for b in ids] == [300, 300, 300, 100]
    assert np.concatenate(ids).tolist() == list(range(1000))
    assert [len(b) for b in row_ids(iterate_batches(split, 300, shuffle=False, drop_last=True))] == [300] * 3
    assert num_batches(1000, 300, False) == 4 and num_batches(1000, 300, True) == 3


def test_shuffle_is_deterministic_and_complete(data_dir, small_blocks):
    split = PreparedData.open(data_dir).split("train")

    def order(**kw):
        return np.concatenate(row_ids(iterate_batches(split, 100, shuffle=True, **kw)))

    first = order(seed=1, epoch=0)
    assert sorted(first.tolist()) == list(range(1000))  # every row once
    assert np.array_equal(first, order(seed=1, epoch=0))
    assert not np.array_equal(first, order(seed=1, epoch=1))
    assert not np.array_equal(first, order(seed=2, epoch=0))
    assert not np.array_equal(first, np.arange(1000))


def test_rows_range(data_dir, small_blocks):
    split = PreparedData.open(data_dir).split("train")
    ids = np.concatenate(row_ids(iterate_batches(split, 64, shuffle=True, rows=(800, 1000))))
    assert sorted(ids.tolist()) == list(range(800, 1000))
    with pytest.raises(UserError, match="outside split"):
        next(iterate_batches(split, 64, shuffle=True, rows=(900, 1001)))


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_together_see_one_process(data_dir, small_blocks, world, drop_last):
    split = PreparedData.open(data_dir).split("train")
    kw = dict(shuffle=True, seed=5, epoch=3, rows=(10, 990), drop_last=drop_last)
    single = row_ids(iterate_batches(split, 96, **kw))
    shards = [row_ids(iterate_batches(split, 96, shard=(r, world), **kw)) for r in range(world)]
    assert all(len(s) == len(single) for s in shards)
    for i, batch in enumerate(single):
        parts = [s[i] for s in shards]
        if len(batch) == 96:
            assert all(len(p) == 96 // world for p in parts)
        assert np.concatenate(parts).tolist() == batch.tolist()
    every = np.concatenate([np.concatenate(s) for s in shards])
    assert len(every) == len(set(every.tolist()))  # no row twice


def test_bad_batching_arguments(data_dir):
    split = PreparedData.open(data_dir).split("train")
    with pytest.raises(UserError, match="not divisible"):
        next(iterate_batches(split, 10, shuffle=False, shard=(0, 3)))
    with pytest.raises(UserError, match="bad shard"):
        next(iterate_batches(split, 10, shuffle=False, shard=(2, 2)))


def _break(path, what):
    if what == "meta missing":
        (path / "meta.json").unlink()
    elif what == "meta not json":
        (path / "meta.json").write_text("{")
    elif what == "meta wrong format":
        meta = json.loads((path / "meta.json").read_text())
        meta["format"] = "other/9"
        (path / "meta.json").write_text(json.dumps(meta))
    elif what == "cardinalities":
        meta = json.loads((path / "meta.json").read_text())
        meta["cardinalities"] = [50] * 25
        (path / "meta.json").write_text(json.dumps(meta))
    elif what == "array missing":
        (path / "val_sparse.npy").unlink()
    elif what == "array shape":
        np.save(path / "train_dense.npy", np.zeros((1000, 12), np.float32))
    elif what == "array garbage":
        (path / "train_labels.npy").write_bytes(b"not numpy")


@pytest.mark.parametrize("what", ["meta missing", "meta not json", "meta wrong format", "cardinalities",
                                  "array missing", "array shape", "array garbage"])
def test_open_rejects_broken_folders(data_dir, what):
    _break(data_dir, what)
    with pytest.raises(UserError) as e:
        PreparedData.open(data_dir)
    assert "\n" not in str(e.value) and str(data_dir) in str(e.value)


def test_open_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no such data folder"):
        PreparedData.open(tmp_path / "nope")


class _Recorder:
    """An array stand-in that records which rows were read."""

    def __init__(self, array: np.ndarray):
        self.array, self.read = array, set()

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key):
        rows = np.arange(len(self.array))[key]
        self.read.update(np.atleast_1d(rows).tolist())
        return self.array[key]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_rank_reads_only_its_rows(data_dir, small_blocks, world):
    split = PreparedData.open(data_dir).split("train")
    for rank in range(world):
        recorded = folder.Split("train", *(_Recorder(np.asarray(a)) for a in (split.dense, split.sparse, split.labels)))
        own = np.concatenate(row_ids(iterate_batches(recorded, 96, shuffle=True, seed=1, shard=(rank, world))))
        for r in (recorded.dense, recorded.sparse, recorded.labels):
            assert r.read == set(own.tolist())


def test_spaced_rows_sample_the_range_evenly_in_memory():
    """`Split.spaced`: up to n rows of [first, last), evenly spaced, ends included, as plain arrays."""
    split = Split("train", np.arange(20, dtype=np.float32)[:, None], np.arange(20)[:, None], np.arange(20, dtype=np.float32))
    taken = split.spaced(5, 4, 14)
    assert taken.labels.tolist() == [4.0, 6.0, 8.0, 10.0, 13.0] and taken.sparse[:, 0].tolist() == [4, 6, 8, 10, 13]
    assert len(split.spaced(100)) == 20 and not isinstance(split.spaced(3).dense, np.memmap)


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_batch_window_yields_those_batches_of_the_order(data_dir, small_blocks, drop_last):
    """`batches=(first, stop)` yields batches first..stop-1 of the whole order (96 rows a batch straddle
    the 64-row blocks), so a pass taken in pieces trains what one unbroken pass does."""
    split = PreparedData.open(data_dir).split("train")
    kw = dict(shuffle=True, seed=3, epoch=1, rows=(10, 990), drop_last=drop_last)
    whole = row_ids(iterate_batches(split, 96, **kw))
    n = len(whole)
    for first, stop in ((0, 3), (3, 7), (7, n), (5, 5), (0, n), (n, n)):
        window = row_ids(iterate_batches(split, 96, batches=(first, stop), **kw))
        assert [b.tolist() for b in window] == [b.tolist() for b in whole[first:stop]]
    halves = [row_ids(iterate_batches(split, 96, shard=(r, 2), batches=(4, 8), **kw)) for r in range(2)]
    assert [np.concatenate(p).tolist() for p in zip(*halves)] == [b.tolist() for b in whole[4:8]]
    with pytest.raises(UserError, match="batch range"):
        next(iterate_batches(split, 96, batches=(3, 2), **kw))
