"""Timer and runner rules: clocks, untimed preparation, best-of-rounds, null subtraction, input pools."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dnas_hw.inputs import dlrm_input_pool, pool_sets, spread_ids
from dnas_hw.timing import TimingStats, time_callable
from profiler.runners import best_of, default_clock, time_onnx, time_torch
from profiler.timers import null_graph


def test_the_thread_clock_leaves_out_sleeping():
    slept = time_callable(lambda: time.sleep(0.002), warmup=0, min_repeats=5, max_repeats=5, clock="thread")
    assert slept.p50_us < 1000  # 2 ms of sleep, not CPU time
    walled = time_callable(lambda: time.sleep(0.002), warmup=0, min_repeats=5, max_repeats=5, clock="wall")
    assert walled.p50_us >= 2000
    calls = []
    time_callable(lambda: calls.append(1), warmup=2, min_repeats=5, max_repeats=5)
    assert len(calls) == 7
    with pytest.raises(ValueError, match="unknown clock"):
        time_callable(lambda: None, clock="sundial")


def test_default_clock_is_the_thread_clock_only_on_one_cpu_thread():
    assert default_clock("cpu", 1) == "thread"
    assert default_clock("cpu", 4) == "wall" and default_clock("cuda", 1) == "wall"


def test_best_of_keeps_the_lowest_median_round_and_counts_all_repeats():
    rounds = [TimingStats(9, 12, 20, 10), TimingStats(8, 10, 30, 20), TimingStats(7, 11, 15, 30)]
    assert best_of(rounds) == TimingStats(8, 10, 30, 60)
    assert TimingStats(5, 10, 20, 7).minus(TimingStats(1, 2, 30, 9)) == TimingStats(4, 8, 8, 7)  # kept ordered
    assert TimingStats(5, 10, 20, 7).minus(TimingStats(4, 2, 1, 9)) == TimingStats(1, 8, 19, 7)


def test_pools_are_realistic_and_large_enough():
    assert pool_sets(1) == 4096 and pool_sets(512) == 64 and pool_sets(100_000) == 16
    cards = [3, 1000, 10**6]
    pool = dlrm_input_pool(13, cards, 8, seed=0)
    assert len(pool) == pool_sets(8)
    dense = torch.stack([d for d, _ in pool])
    sparse = torch.stack([s for _, s in pool])
    assert dense.dtype == torch.float32 and dense.shape == (len(pool), 8, 13)
    assert (dense >= 0).all() and (dense > 0).float().mean() > 0.5 and dense.max() > 5  # log1p of heavy tails
    assert sparse.dtype == torch.int64 and sparse.shape == (len(pool), 8, 3)
    for f, card in enumerate(cards):
        ids = sparse[:, :, f].flatten()
        assert ids.min() >= 0 and ids.max() < card
        assert len(set(ids.tolist())) == min(card, ids.numel())  # no repeat while the range allows
    again = dlrm_input_pool(13, cards, 8, seed=0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(pool, again))
    ids = spread_ids(5, 12, np.random.default_rng(0))
    assert sorted(ids[:5].tolist()) == [0, 1, 2, 3, 4] and sorted(ids[5:10].tolist()) == [0, 1, 2, 3, 4]


def test_runners_time_torch_and_onnx_models():
    torch.set_num_threads(1)
    module = torch.nn.Linear(13, 4)
    pool = [(torch.randn(2, 13),) for _ in range(4)]
    stats = time_torch(module, pool, threads=1, min_time_s=0.0, max_repeats=50)
    assert stats.repeats >= 3 * 20 and 0 < stats.p10_us <= stats.p50_us <= stats.p90_us
    graph = null_graph({"x0": pool[0][0].numpy()})
    stats = time_onnx(graph, pool, threads=1, min_time_s=0.0, max_repeats=50)
    assert stats.repeats >= 60 and stats.p50_us > 0
