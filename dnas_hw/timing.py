"""Timing a callable: warm-up, then repeats until the median is stable or a time cap is hit.

The statistics are percentiles of per-call wall time in microseconds. CUDA
callables are timed with events after a synchronisation, so the GPU's work is
what gets measured, not the launch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    p10_us: float
    p50_us: float
    p90_us: float
    repeats: int

    @classmethod
    def from_samples(cls, samples_us: list[float] | np.ndarray) -> "TimingStats":
        s = np.asarray(samples_us, dtype=np.float64)
        p10, p50, p90 = np.percentile(s, [10, 50, 90])
        return cls(float(p10), float(p50), float(p90), int(s.size))


def time_callable(
    fn: Callable[[], object],
    *,
    warmup: int = 5,
    min_repeats: int = 20,
    max_repeats: int = 2000,
    max_time_s: float = 1.0,
    rel_tol: float = 0.02,
    cuda: bool = False,
) -> TimingStats:
    """Time `fn()`; stops when the median of the last half and of all samples agree within `rel_tol`."""
    sync = _cuda_sync if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    deadline = time.perf_counter() + max_time_s
    while len(samples) < max_repeats:
        samples.append(_time_once_cuda(fn) if cuda else _time_once(fn))
        n = len(samples)
        if n >= min_repeats and n % 10 == 0:
            whole, recent = np.median(samples), np.median(samples[n // 2 :])
            if abs(recent - whole) <= rel_tol * whole:
                break
        if time.perf_counter() > deadline and n >= min(min_repeats, 5):
            break
    return TimingStats.from_samples(samples)


def _time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e3


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def _time_once_cuda(fn: Callable[[], object]) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3
