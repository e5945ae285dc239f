"""Categorical value -> id: the lookup, the counter and both id schemes."""

from __future__ import annotations

import numpy as np
import pytest

from dnas_hw.data.vocab import HashIds, SortedLookup, VocabCounter


@pytest.mark.parametrize("n_keys", [0, 1, 3, 64, 65, 1000, 300_000])
def test_sorted_lookup_matches_binary_search(n_keys):
    rng = np.random.default_rng(n_keys)
    keys = np.unique(rng.integers(0, 2**32, n_keys, dtype=np.uint64).astype(np.uint32))
    present = keys[rng.integers(0, len(keys), 3000)] if len(keys) else np.zeros(0, np.uint32)
    queries = np.concatenate([present, rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32),
                              np.array([0, 2**32 - 1], np.uint32)])
    pos, found = SortedLookup(keys).find(queries)
    expected_pos = np.searchsorted(keys, queries)
    expected = np.isin(queries, keys)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(pos[found], expected_pos[expected])


def test_counter_across_flushes_and_min_count():
    rng = np.random.default_rng(0)
    hashes = rng.zipf(1.3, (5000, 3)).astype(np.uint32)
    missing = rng.random((5000, 3)) < 0.2
    counter = VocabCounter(num_sparse=3, flush_values=1000)  # many partial merges
    for start in range(0, 5000, 700):
        counter.add(hashes[start : start + 700], missing[start : start + 700])
    vocab = counter.build(min_count=3)
    for f in range(3):
        values, counts = np.unique(hashes[~missing[:, f], f], return_counts=True)
        np.testing.assert_array_equal(vocab.kept[f], values[counts >= 3])
    ids = vocab.ids(hashes, missing)
    assert (ids[missing] == 0).all()
    kept0 = np.isin(hashes[:, 0], vocab.kept[0]) & ~missing[:, 0]
    assert (ids[~kept0 & ~missing[:, 0], 0] == 1).all()  # rare values share the OOV id
    np.testing.assert_array_equal(ids[kept0, 0], np.searchsorted(vocab.kept[0], hashes[kept0, 0]) + 2)
    assert vocab.cardinalities() == [len(k) + 2 for k in vocab.kept]
    assert ids.max(axis=0).tolist() < vocab.cardinalities()


def test_hash_ids():
    hashes = np.array([[0, 2**32 - 1, 12345]], np.uint32)
    missing = np.array([[False, False, True]])
    assert HashIds(100, num_sparse=3).ids(hashes, missing).tolist() == [[1, 1 + (2**32 - 1) % 99, 0]]
    assert HashIds(100, num_sparse=3).cardinalities() == [100, 100, 100]
