"""Shared helpers for the search tests (no tests here).

`toy_lut` is a hand-made test fixture, not a measurement: each op's "latency"
is a fixed function of its FLOPs and parameter count plus a per-key jitter, so
that no two candidates tie by accident.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
import torch

from dnas_hw.space import SearchSpace, get_space
from lut.table import COLUMNS, Lut, overhead_call


def toy_latency(op: str, params_json: str, flops: int, num_params: int) -> float:
    jitter = int(hashlib.sha256(f"{op}{params_json}".encode()).hexdigest()[:6], 16) / 16**6
    return 2.0 + flops / 1e4 + num_params / 1e4 + jitter


def toy_lut(space: SearchSpace, batch_size: int, overhead_us: float = 5.0, drop: int = 0) -> Lut:
    """A LUT covering `space` at `batch_size` (minus `drop` rows, to provoke misses)."""
    rows = []
    for call in sorted(space.op_calls(), key=str):
        us = toy_latency(call.op, call.params_json, call.flops(batch_size), call.num_params())
        rows.append([call.op, call.params_json, batch_size, 0.9 * us, us, 1.1 * us, 10])
    o = overhead_call(space.num_dense, space.num_sparse)
    rows.append([o.op, o.params_json, batch_size, overhead_us, overhead_us, overhead_us, 10])
    rows = rows[drop:]
    meta = {"backend": "torch", "device": "cpu", "threads": 1, "space": space.name, "space_hash": space.fingerprint()}
    return Lut(pd.DataFrame(rows, columns=COLUMNS), meta, "toy.csv")


def tiny_space() -> SearchSpace:
    return get_space("dlrm-tiny")


def synth_data(out, rows: int = 2000, seed: int = 0):
    """A tiny planted-teacher data folder (the data package's `data synth`)."""
    from dnas_hw.data.synth import SynthOptions, synth

    synth(out, SynthOptions(rows=rows, seed=seed))
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one thread while a search test runs: on 2 shared cores more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
