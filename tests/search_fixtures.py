"""Shared helpers for the search tests (no tests here).

`toy_lut` is a hand-made test fixture, not a measurement: each op's "latency"
is a fixed function of its FLOPs and parameter count plus a per-key jitter, so
that no two candidates tie by accident.
"""

from __future__ import annotations

import hashlib
import random

import pandas as pd
import pytest
import torch

from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.space import get_space
from lut.predict import predict
from lut.table import COLUMNS, Lut, overhead_call
from search.cost import expected_cost
from search.family_search import latency_table
from search.layout import Layout


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


def random_batch(space, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense (n, num_dense) normal, sparse (n, num_sparse) ids within each table's cardinality)."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, space.num_dense, generator=g)
    sparse = torch.stack([torch.randint(0, c, (n,), generator=g) for c in space.cardinalities], 1)
    return dense, sparse


def trained_like(net, seed: int):
    """Perturb every weight of the supernet `net` (in place; returned), so a wrong slice or column
    cannot pass by symmetry of the initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.weight_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


def assert_one_hot_expected_latency_equals_predict(space: SearchSpace, batch_size: int, lut: Lut | None = None) -> None:
    """Over 20 sampled archs (seed 1): the expected cost at one-hot probabilities is the LUT's
    prediction for the derived arch (`lut`, by default the toy LUT), to 1e-12."""
    lut, layout = lut or toy_lut(space, batch_size), Layout(space)
    table = latency_table(space, lut, batch_size)
    rng = random.Random(1)
    for _ in range(20):
        choices = space.sample_choices(rng)
        want = predict(lut, space.arch(choices), batch_size).total_us
        assert float(expected_cost(table, layout.one_hot(choices))) == pytest.approx(want, rel=1e-12)


def assert_one_hot_supernet_equals_extracted(net, space, extract, masked: bool, draws: int) -> list[dict]:
    """Over `draws` sampled archs (seed 0) on a batch of 32: the supernet at one-hot probabilities
    (carrying a gradient when `masked`, else the single-path fast path) computes what
    `extract(net, choices)` does, and that model's arch is space.arch(choices). Returns the choices drawn."""
    dense, sparse = random_batch(space, 32)
    rng = random.Random(0)
    drawn = []
    for _ in range(draws):
        choices = space.sample_choices(rng)
        probs = {g: t.float().requires_grad_(masked) for g, t in net.layout.one_hot(choices).items()}
        model = extract(net, choices)
        assert model.arch == space.arch(choices)
        want = model(dense, sparse).detach()
        # fp32 rounding only (1e-5 of the largest logit): the masked path sums over zero-padded inputs and
        # the single path gathers the interaction's columns, GEMMs of other shapes than the extracted model's.
        torch.testing.assert_close(net(dense, sparse, probs), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
        drawn.append(choices)
    return drawn


def assert_per_sample_masks_give_each_sample_its_arch(net, space, extract, n: int) -> None:
    """A batch of `n` (seed 3), each sample with its own one-hot masks (archs drawn with seed 4): row i of
    the supernet's output is what `extract(net, choices_i)` computes for sample i."""
    dense, sparse = random_batch(space, n, seed=3)
    rng = random.Random(4)
    archs = [space.sample_choices(rng) for _ in range(n)]
    per_sample = {g: torch.stack([net.layout.one_hot(c)[g].float() for c in archs]) for g in net.layout.groups}
    got = net(dense, sparse, per_sample)
    want = torch.stack([extract(net, c)(dense[i : i + 1], sparse[i : i + 1])[0] for i, c in enumerate(archs)])
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
