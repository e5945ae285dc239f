"""Timing one registered op the way it costs inside a whole model.

A whole model pays for each of its ops, and once for the call itself. Timing an
op alone adds what the model pays once per call, not once per op; that part is
measured and taken out (docs/profiling.md has the experiments behind each rule):

- **Per-call fixed cost.** An onnxruntime `session.run` of a one-op graph pays
  dispatch, input binding and output hand-back, which a whole model pays once;
  a torch call through the timer pays a closure and two clock reads. A *null*
  call on the same inputs (torch: a function that does nothing; onnxruntime: a
  graph with the same inputs whose only node is a `Shape`) is timed beside the
  op, in the same rounds, per input signature and batch size (its best round
  over the whole profile so far), and its percentiles are subtracted from the
  op's.
- **Inputs as the model hands them.** Activations are few and hot (just written
  by the previous op): `HOT_SETS` sets are cycled. Ids are spread over the
  table without repeats (`dnas_hw.inputs.spread_ids`), or, with a data source
  (`dnas_hw.data.ids`), replayed from the data's rows: the column of the
  feature the table serves (`table_features`). A new set each call, and
  torch gets them as the model does: a strided column of a `[B, num_sparse]`
  id matrix.
- **What a model adds.** Inside a model an op runs slower than back to back
  (its data has aged out of cache by its next call) and the call's own fixed
  costs come once: both are measured on whole models and folded in by
  `profiler.overhead`, not here.
- **Contention.** Each op and each null are timed in `ROUNDS` rounds and the
  round with the lowest median counts (`profiler.runners.best_of`), as for whole
  models. The rounds are spread in time (`OpTimer.measure_block`): on a shared
  host a slow spell lasts seconds or longer and slows a fixed op by 10-30%
  (docs/profiling.md), so rounds back to back would all fall in the same spell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from onnx import TensorProto, helper

from dnas_hw.data.ids import DATA, IdSource
from dnas_hw.inputs import pool_sets, spread_ids
from dnas_hw.onnx_io import DEFAULT_OPSET, export_module
from dnas_hw.ops import OpCall
from dnas_hw.timing import TimingStats, time_callable
from profiler.allocator import serving_allocator
from profiler.runners import ROUNDS, InputSet, OnnxRunner, best_of, cycling, default_clock, to_device

# Activation input sets cycled (hot in cache, as the previous op just wrote them).
HOT_SETS = 2
# The batch size the one-op ONNX graphs are exported at (the batch axis is dynamic).
EXPORT_BATCH = 2
# One round: a stable median over at least min_time_s, at most max_time_s.
ROUND_TIMER = dict(warmup=3, min_repeats=10, max_repeats=4000, min_time_s=0.005, max_time_s=0.05, rel_tol=0.02)

def op_input_pool(
    call: OpCall, batch_size: int, num_sparse: int, seed: int = 0, ids: IdSource | None = None, feature: int | None = None,
) -> list[InputSet]:
    """Input sets for timing `call` at `batch_size`.

    Embedding lookups: `pool_sets(batch_size)` sets of ids, each a column view of
    a `[B, num_sparse]` matrix, as the model passes them: spread over the table
    (`ids` None or spread), or feature `feature`'s ids in consecutive rows of the
    data (`ids` a data source; the lookup hashes them into the table as the model does).
    Other ops: `HOT_SETS` sets from the registry's `example_inputs`.
    """
    if call.op == "embedding":  # the one registered op that takes ids
        n = pool_sets(batch_size)
        if ids is not None and ids.kind == DATA:
            if feature is None:
                raise ValueError(f"{call}: replaying data ids needs the feature the table serves")
            ids = ids.window(n * batch_size, seed)[1][:, feature].reshape(n, batch_size)
        else:
            ids = spread_ids(call.params["num_embeddings"], n * batch_size, np.random.default_rng(seed)).reshape(n, batch_size)
        wide = torch.zeros(n, batch_size, max(1, num_sparse), dtype=torch.int64)
        wide[:, :, 0] = torch.from_numpy(ids)
        return [(wide[i][:, 0],) for i in range(n)]
    g = torch.Generator().manual_seed(seed)
    return [call.example_inputs(batch_size, g) for _ in range(HOT_SETS)]


def _noop(*inputs):
    return None


def signature(inputs: InputSet) -> tuple:
    """What a null call's cost depends on: the number of inputs and each one's dtype and rank."""
    return tuple((str(t.dtype), t.dim()) for t in inputs)


@dataclass
class _Timed:
    """One op at one batch size, ready to time: `fn(*inputs)` less `null(*inputs)` over `pool`."""

    fn: Callable
    null: Callable
    pool: Sequence
    null_key: tuple  # (input signature, batch size): what the null's cost depends on
    rounds: list[TimingStats] = field(default_factory=list)


class OpTimer:
    """Base: `measure_block(calls, num_sparse, seed) -> [{batch_size: TimingStats}]`, null subtracted.

    Rounds are spread in time: a block of ops is timed in `rounds` sweeps, each
    sweep one round of every op of the block at every batch size (and one of
    each null the block needs), so an op's rounds lie a sweep apart (seconds),
    not back to back, and a slow spell of the shared machine spoils one round
    of each, not every round of one. Subclasses say how an op is made ready
    (`_prepare`).
    """

    backend = ""

    def __init__(self, device: str, threads: int, rounds: int = ROUNDS, ids: IdSource | None = None,
                 table_features: Mapping[int, int] | None = None):
        serving_allocator()  # as the whole models are timed (profiler.allocator)
        self.device = device
        self.threads = threads
        self.rounds = rounds
        # Where embedding ids come from, and for data ids which feature a table of n rows serves.
        self.ids = ids
        self.table_features = dict(table_features or {})
        self.clock = default_clock(device, threads)
        # Per null key: the null and the inputs it was first seen with (an onnxruntime null graph is made for
        # those shapes), and every round of it so far (its cost is a constant of the process: all rounds count).
        self._null_callers: dict[tuple, tuple[Callable, Sequence]] = {}
        self._nulls: dict[tuple, list[TimingStats]] = {}

    def measure(self, call: OpCall, batch_sizes: Sequence[int], num_sparse: int, seed: int = 0) -> dict[int, TimingStats]:
        """One op at `batch_sizes`: `{batch_size: TimingStats}`."""
        return self.measure_block([(call, batch_sizes)], num_sparse, seed)[0]

    def measure_block(
        self, calls: Sequence[tuple[OpCall, Sequence[int]]], num_sparse: int, seed: int = 0,
    ) -> list[dict[int, TimingStats]]:
        """Each `(call, batch_sizes)` of the block: `{batch_size: best round of the op less best round of its null}`."""
        ready = [self._prepare(call, bs, num_sparse, seed) for call, bs in calls]
        keys = {t.null_key for per_call in ready for t in per_call.values()}
        for per_call in ready:
            for t in per_call.values():
                self._null_callers.setdefault(t.null_key, (t.null, t.pool))
        for _ in range(self.rounds):
            for per_call in ready:
                for t in per_call.values():
                    t.rounds.append(self._time(t.fn, t.pool))
            for key in keys:
                self._nulls.setdefault(key, []).append(self._time(*self._null_callers[key]))
        return [
            {b: best_of(t.rounds).minus(best_of(self._nulls[t.null_key])) for b, t in per_call.items()}
            for per_call in ready
        ]

    def _time(self, fn: Callable, pool: Sequence) -> TimingStats:
        next_inputs = cycling(pool)
        return time_callable(lambda: fn(*next_inputs()), cuda=self.device == "cuda", clock=self.clock, **ROUND_TIMER)

    def _prepare(self, call: OpCall, batch_sizes: Sequence[int], num_sparse: int, seed: int) -> dict[int, _Timed]:
        raise NotImplementedError

    def _pool(self, call: OpCall, batch_size: int, num_sparse: int, seed: int) -> list[InputSet]:
        feature = self.table_features.get(call.params["num_embeddings"]) if call.op == "embedding" else None
        return op_input_pool(call, batch_size, num_sparse, seed, self.ids, feature)


class TorchOpTimer(OpTimer):
    """torch eager: the op's module in eval mode under inference mode, `threads` intra-op threads."""

    backend = "torch"

    def measure_block(self, calls, num_sparse, seed=0):
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return super().measure_block(calls, num_sparse, seed)

    def _prepare(self, call, batch_sizes, num_sparse, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = call.build().eval().to(self.device)
        ready = {}
        for b in batch_sizes:
            pool = to_device(self._pool(call, b, num_sparse, seed + b), self.device)
            ready[int(b)] = _Timed(module, _noop, pool, (signature(pool[0]), int(b)))
        return ready


class OnnxOpTimer(OpTimer):
    """onnxruntime: the op exported alone (`dnas_hw.onnx_io`), run in an `ort_session` as deployed."""

    backend = "onnxruntime"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._null_sessions: dict[tuple, Callable] = {}

    def _prepare(self, call, batch_sizes, num_sparse, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = call.build().eval()
        example = tuple(t.contiguous() for t in op_input_pool(call, EXPORT_BATCH, num_sparse, seed)[0])  # spread: any ids export
        names = [f"x{i}" for i in range(len(example))]
        graph = export_module(module, example, names, ["y"]).SerializeToString()
        del module  # the session holds its own copy of the weights
        run = OnnxRunner(graph, self.threads, self.device).session.run
        ready = {}
        for b in batch_sizes:
            inputs = self._pool(call, b, num_sparse, seed + b)
            feeds = [(f,) for f in OnnxRunner.as_feeds(names, inputs)]
            null = self._null_session(feeds[0][0])
            ready[int(b)] = _Timed(
                lambda f, run=run: run(None, f), lambda f, null=null: null(None, f), feeds,
                (signature(inputs[0]), int(b)),
            )
        return ready

    def _null_session(self, feed: dict[str, np.ndarray]):
        """`run` of a session on `null_graph(feed)`: the per-run fixed cost (sessions reused per signature)."""
        key = tuple((n, a.dtype.str, a.ndim) for n, a in feed.items())
        if key not in self._null_sessions:
            self._null_sessions[key] = OnnxRunner(null_graph(feed).SerializeToString(), self.threads, self.device).session.run
        return self._null_sessions[key]


def null_graph(feed: dict[str, np.ndarray]):
    """An ONNX graph taking `feed`'s inputs (batch axis dynamic) whose one output is the first input's shape."""
    dtypes = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    inputs = [
        helper.make_tensor_value_info(name, dtypes[a.dtype], ["batch", *a.shape[1:]]) for name, a in feed.items()
    ]
    first = next(iter(feed))
    output = helper.make_tensor_value_info("shape", TensorProto.INT64, [feed[first].ndim])
    graph = helper.make_graph([helper.make_node("Shape", [first], ["shape"])], "null", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])


TIMERS: dict[str, type[OpTimer]] = {"torch": TorchOpTimer, "onnxruntime": OnnxOpTimer}


def op_timer(backend: str, device: str, threads: int, rounds: int = ROUNDS, ids: IdSource | None = None,
             table_features: Mapping[int, int] | None = None) -> OpTimer:
    """The timer of `backend`; `ids`/`table_features`: see `OpTimer` (default: spread ids)."""
    try:
        return TIMERS[backend](device, threads, rounds, ids, table_features)
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; known: {sorted(TIMERS)}") from None
