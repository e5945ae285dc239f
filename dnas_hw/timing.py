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

    def minus(self, other: "TimingStats") -> "TimingStats":
        """These percentiles less `other`'s (a fixed cost measured apart), floored at zero.

        Differences of percentiles are not percentiles of a difference, so the
        result is kept ordered: p10 <= p50 <= p90.
        """
        p10, p50, p90 = (max(0.0, a - b) for a, b in zip(
            (self.p10_us, self.p50_us, self.p90_us), (other.p10_us, other.p50_us, other.p90_us)))
        return TimingStats(min(p10, p50), p50, max(p90, p50), self.repeats)


def time_callable(
    fn: Callable[[], object],
    *,
    warmup: int = 5,
    min_repeats: int = 20,
    max_repeats: int = 2000,
    max_time_s: float = 1.0,
    min_time_s: float = 0.0,
    rel_tol: float = 0.02,
    cuda: bool = False,
    clock: str = "wall",
) -> TimingStats:
    """Time `fn()`: `warmup` untimed calls, then at least `min_repeats` calls and `min_time_s` seconds.

    Stops once the median of the last half of the samples and the median of all
    agree within `rel_tol`, or at `max_repeats` calls, or after `max_time_s`
    seconds (with at least 5 samples).

    `clock` is "wall" (elapsed time) or "thread" (the calling thread's CPU time:
    the elapsed time less any time the OS gave the core to other processes; the
    same thing on an unshared core, and only meaningful when all the work runs
    on the calling thread, i.e. one intra-op thread). CUDA always uses events.
    """
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; known: {sorted(CLOCKS)}")
    read = CLOCKS[clock]
    sync = _cuda_sync if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    deadline = start + max_time_s
    while len(samples) < max_repeats:
        samples.append(_time_once_cuda(fn) if cuda else _time_once(fn, read))
        n = len(samples)
        now = time.perf_counter()
        if n >= min_repeats and n % 10 == 0 and now - start >= min_time_s:
            whole, recent = np.median(samples), np.median(samples[n // 2 :])
            if abs(recent - whole) <= rel_tol * whole:
                break
        if now > deadline and n >= min(min_repeats, 5):
            break
    return TimingStats.from_samples(samples)


CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}


def _time_once(fn: Callable[[], object], read: Callable[[], int]) -> float:
    t0 = read()
    fn()
    return (read() - t0) / 1e3


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
