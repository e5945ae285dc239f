"""Timing a model as it is served: realistic input pools, torch and onnxruntime runners.

Shared by the profiler (one-op graphs), `lut validate` (whole models) and
`dnas-hw bench`, so all three measure the same way.

- Inputs: every timed call consumes the next set of an input pool
  (`dnas_hw.inputs`: drawn like real traffic, new ids each call), cycling.
- Allocator: every runner first sets the process's allocator as a serving
  process does (`profiler.allocator`: no trimming, no per-call mmap), or a torch
  model pays page faults for its activations on every call, sometimes.
- Clock: on CPU with one thread, the calling thread's CPU clock (`default_clock`):
  all the work runs on that thread, and time slices the OS gives to other
  processes on a shared machine are left out. Otherwise wall time.
- Rounds: a latency is timed in `ROUNDS` rounds and the round with the lowest
  median counts (`best_of`): a burst of load from other processes slows a
  round, never speeds one up. On a shared host a slow spell lasts seconds, so
  the rounds are spread in time: `time_archs` visits every arch of a group and
  every batch size between two rounds of one. Two passes over the same 24
  models (torch, batch 64, three measurements) agreed within 10% for 50-79%
  of them with the best of 3 rounds and 71-96% with the best of 7
  (`benchmarks/timing_repeatability.py`, docs/profiling.md).

API::

    pool = dlrm_input_pool(num_dense, cardinalities, batch_size)   # [(dense [B, Fd] f32, sparse [B, F] i64)]
    stats = time_torch(module, pool, threads=1, device="cpu")      # TimingStats, microseconds per call
    stats = time_onnx(model_proto_or_bytes_or_path, pool, threads=1, device="cpu")
    runner = arch_runner(arch, backend="onnxruntime", device="cpu", threads=1)   # build/export once
    stats = runner.time(pool)                                      # best of ROUNDS rounds (rounds=1: one)
    by_batch = time_arch(arch, backend=..., device=..., threads=1, batch_sizes=[1, 64, 512],
                         cardinalities=space.cardinalities)        # {batch_size: best of ROUNDS rounds}
    by_arch = time_archs(archs, ...)                               # the same, rounds interleaved over archs
    rounds = time_archs_by_round(archs, ...)                       # [{batch_size: [every round]}]
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dnas_hw.data.ids import IdSource
from dnas_hw.family import build_model
from dnas_hw.inputs import dlrm_input_pool
from dnas_hw.model import Probability
from dnas_hw.onnx_io import export_module, ort_session
from dnas_hw.timing import TimingStats, time_callable
from profiler.allocator import serving_allocator

InputSet = tuple[torch.Tensor, ...]

BACKENDS = ("torch", "onnxruntime")
DEVICES = ("cpu", "cuda")

# Rounds per latency; the best round's statistics are kept.
ROUNDS = 7
# Whole models timed together (`time_archs`), by `lut validate` and the profiler's references: their
# rounds interleave (so a burst of load spoils one round of each, not all rounds of one), and their
# models are in memory at once.
GROUP = 4
# One round of a whole-model timing: short, so that the rounds can be many and spread.
MODEL_TIMER = dict(warmup=10, min_repeats=20, max_repeats=5000, min_time_s=0.05, max_time_s=0.5, rel_tol=0.02)


# --------------------------------------------------------------------------- input pools


def cycling(pool: Sequence) -> Callable[[], object]:
    """A function returning the pool's next item each call, round and round."""
    return itertools.cycle(list(pool)).__next__


def to_device(pool: Sequence[InputSet], device: str) -> list[InputSet]:
    return [tuple(t.to(device) for t in inputs) for inputs in pool]


# --------------------------------------------------------------------------- timing rules


def default_clock(device: str, threads: int) -> str:
    """"thread" (the caller's CPU time) on CPU with one thread, where all work runs on the caller; else "wall"."""
    return "thread" if device == "cpu" and threads == 1 else "wall"


def best_of(rounds: Sequence[TimingStats]) -> TimingStats:
    """The round with the lowest median, its repeats the total over all rounds."""
    best = min(rounds, key=lambda s: s.p50_us)
    return TimingStats(best.p10_us, best.p50_us, best.p90_us, sum(s.repeats for s in rounds))


# --------------------------------------------------------------------------- runners


class TorchRunner:
    """A torch module timed as served: eval mode, inference mode, `threads` intra-op threads, on `device`."""

    def __init__(self, module: torch.nn.Module, threads: int, device: str = "cpu"):
        if threads <= 0:
            raise ValueError(f"threads must be positive, got {threads}")
        serving_allocator()
        self.module = module.eval().to(device)
        self.threads = threads
        self.device = device

    def caller(self, input_pool: Sequence[InputSet]) -> Callable[[], object]:
        """A function running the model once on the pool's next input set (untimed work, e.g. a context)."""
        next_inputs = cycling(to_device(input_pool, self.device))
        module = self.module

        def call():
            with torch.inference_mode():
                return module(*next_inputs())

        return call

    def time(self, input_pool: Sequence[InputSet], rounds: int = ROUNDS, **timer) -> TimingStats:
        """Per-call latency of `module(*inputs)`, each call on the pool's next input set; best of `rounds`."""
        torch.set_num_threads(self.threads)
        next_inputs = cycling(to_device(input_pool, self.device))
        module = self.module
        options = {**MODEL_TIMER, "clock": default_clock(self.device, self.threads), **timer}
        with torch.inference_mode():
            fn = lambda: module(*next_inputs())  # noqa: E731
            return best_of([time_callable(fn, cuda=self.device == "cuda", **options) for _ in range(rounds)])


class OnnxRunner:
    """One onnxruntime session (`dnas_hw.onnx_io.ort_session`), timed over input pools.

    Inputs are fed in the graph's input order as numpy arrays and every output
    is fetched, as a serving call does.
    """

    def __init__(self, model, threads: int, device: str = "cpu"):
        serving_allocator()
        self.session = ort_session(str(model) if isinstance(model, Path) else model, threads, device)
        self.threads = threads
        self.device = device
        self.input_names = [i.name for i in self.session.get_inputs()]

    @staticmethod
    def as_feeds(names: Sequence[str], input_pool: Sequence[InputSet]) -> list[dict[str, np.ndarray]]:
        """Input sets as feed dicts of contiguous numpy arrays."""
        feeds = []
        for inputs in input_pool:
            if len(inputs) != len(names):
                raise ValueError(f"graph takes {len(names)} inputs, an input set has {len(inputs)}")
            feeds.append({n: np.ascontiguousarray(t.detach().cpu().numpy()) for n, t in zip(names, inputs)})
        return feeds

    def caller(self, input_pool: Sequence[InputSet]) -> Callable[[], object]:
        """A function running the model once on the pool's next input set (untimed work, e.g. a context)."""
        next_feed = cycling(self.as_feeds(self.input_names, input_pool))
        run = self.session.run
        return lambda: run(None, next_feed())

    def time(self, input_pool: Sequence[InputSet], rounds: int = ROUNDS, **timer) -> TimingStats:
        """Per-call latency of `session.run`, each call on the pool's next input set; best of `rounds`."""
        next_feed = cycling(self.as_feeds(self.input_names, input_pool))
        run = self.session.run
        options = {**MODEL_TIMER, "clock": default_clock(self.device, self.threads), **timer}
        fn = lambda: run(None, next_feed())  # noqa: E731
        return best_of([time_callable(fn, **options) for _ in range(rounds)])


def time_torch(module: torch.nn.Module, input_pool: Sequence[InputSet], threads: int, device: str = "cpu", **timer) -> TimingStats:
    """Latency of `module(*inputs)`, best of `ROUNDS` rounds (`timer` overrides `MODEL_TIMER`)."""
    return TorchRunner(module, threads, device).time(input_pool, **timer)


def time_onnx(model, input_pool: Sequence[InputSet], threads: int, device: str = "cpu", **timer) -> TimingStats:
    """Latency of `session.run` on an ONNX model (proto, serialized bytes or path), best of `ROUNDS` rounds."""
    return OnnxRunner(model, threads, device).time(input_pool, **timer)


# --------------------------------------------------------------------------- whole models


def deployed_model(arch, seed: int = 0) -> torch.nn.Module:
    """The model as served: `Probability(model of arch)`, dense [B, Fd], sparse [B, F] -> prob [B], eval mode.

    The model comes from the arch's family (`dnas_hw.family.build_model`; DLRM by default).
    """
    return Probability(build_model(arch, seed=seed)).eval()


def export_deployed(model: torch.nn.Module, num_dense: int, num_sparse: int):
    """The served model as ONNX (inputs `dense`, `sparse`; output `prob`; dynamic batch)."""
    example = (torch.ones(2, num_dense), torch.zeros(2, num_sparse, dtype=torch.int64))
    return export_module(model, example, ["dense", "sparse"], ["prob"])


def arch_runner(arch, *, backend: str, device: str, threads: int, seed: int = 0) -> TorchRunner | OnnxRunner:
    """The served model of `arch`, ready to time: a torch module, or the exported model in one session."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {BACKENDS}")
    model = deployed_model(arch, seed)
    if backend == "torch":
        return TorchRunner(model, threads, device)
    graph = export_deployed(model, arch.num_dense, arch.num_sparse).SerializeToString()
    del model  # the session holds its own copy of the weights
    return OnnxRunner(graph, threads, device)


def time_arch(arch, **options) -> dict[int, TimingStats]:
    """Whole-model latency of `arch` as served: `{batch_size: best of rounds}` (`options`: those of
    `time_archs_by_round`: backend, device, threads, batch_sizes, cardinalities, seed, rounds).

    Rounds alternate over the batch sizes, so they are spread in time. Ids are
    drawn over `cardinalities` (the model hashes them into its tables).
    """
    return time_archs([arch], **options)[0]


def time_archs(archs: Sequence, **options) -> list[dict[int, TimingStats]]:
    """`time_arch` for several archs at once (`options`: those of `time_archs_by_round`): each round visits
    every arch and batch size in turn, so an arch's rounds lie seconds apart and one burst of load cannot
    spoil all of them. Per arch, `{batch_size: best of rounds}`."""
    return [{b: best_of(r) for b, r in per_batch.items()} for per_batch in time_archs_by_round(archs, **options)]


def time_archs_by_round(
    archs: Sequence,
    *,
    backend: str,
    device: str,
    threads: int,
    batch_sizes: Sequence[int],
    cardinalities: Sequence[int],
    seed: int = 0,
    rounds: int = ROUNDS,
    ids: IdSource | None = None,
) -> list[dict[int, list[TimingStats]]]:
    """Every round of `time_archs`, in order: per arch, `{batch_size: [round 1, ..., round n]}`.
    `ids`: where the ids come from (`dlrm_input_pool`; None: spread)."""
    runners = [arch_runner(a, backend=backend, device=device, threads=threads, seed=seed) for a in archs]
    pools = {
        int(b): dlrm_input_pool(archs[0].num_dense, cardinalities, int(b), seed=seed + int(b), ids=ids)
        for b in batch_sizes
    } if archs else {}
    timed: list[dict[int, list[TimingStats]]] = [{b: [] for b in pools} for _ in archs]
    for _ in range(rounds):
        for runner, per_batch in zip(runners, timed):
            for b, pool in pools.items():
                per_batch[b].append(runner.time(pool, rounds=1))
    return timed
