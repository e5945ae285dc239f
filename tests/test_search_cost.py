"""The expected-cost function: exact at one-hot, hand arithmetic on a toy, finite differences."""

from __future__ import annotations

import random

import pytest
import torch

from dnas_hw.arch import mlp_ops
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.ops import OpCall
from dnas_hw.space import get_space
from lut.predict import predict
from lut.table import overhead_call
from search.cost import CostTables, budget_penalty, cost_loss, expected_cost
from search.family_search import latency_table
from search.layout import Layout
from search_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    assert_one_hot_expected_latency_equals_predict,
    one_thread,
    tiny_space,
    toy_lut,
)

B = 16


@pytest.mark.parametrize("space", [tiny_space(), get_space("dlrm-kaggle")], ids=lambda s: s.name)
def test_one_hot_expected_latency_equals_predict(space):
    assert_one_hot_expected_latency_equals_predict(space, B)


def toy_space() -> SearchSpace:
    """Three slots with choices: the bottom layer's width (8, 16), its depth (0, 1) and the interaction
    width D (2, 4); every other slot has a single choice."""
    return SearchSpace(
        name="toy3", cardinalities=(5, 7), num_dense=3, bottom_widths=(8, 16), bottom_layers=1,
        top_widths=(8,), top_layers=0, emb_dims=(4,), emb_row_fractions=(1.0,), interactions=("dot",),
        interaction_dims=(2, 4),
    )


def test_hand_arithmetic_on_three_candidate_toy():
    space = toy_space()
    lut = toy_lut(space, B)

    def lat(call: OpCall) -> float:
        return lut.latency_us(call, B)

    p8, p16, p_depth0, p_depth1, p_d = 0.4, 0.6, 0.5, 0.5, {2: 0.25, 4: 0.75}
    lin = lambda i, o, act="relu": mlp_ops(i, [o], act)[0]  # noqa: E731
    emb = lambda rows, d: OpCall.make("embedding", num_embeddings=rows, embedding_dim=min(4, d), pad_to=d)  # noqa: E731
    by_hand = lat(overhead_call(3, 2))
    for d, p in p_d.items():
        inter = space.interaction_op("dot", d)
        bottom = p_depth1 * (p8 * (lat(lin(3, 8)) + lat(lin(8, d))) + p16 * (lat(lin(3, 16)) + lat(lin(16, d))))
        bottom += p_depth0 * lat(lin(3, d))
        rest = lat(emb(5, d)) + lat(emb(7, d)) + lat(inter) + lat(lin(inter.output_width(), 1, "none"))
        by_hand += p * (bottom + rest)
    layout = Layout(space)
    probs = {g: torch.ones(len(grp.slots), grp.width, dtype=torch.float64) for g, grp in layout.groups.items()}
    probs["bottom"] = torch.tensor([[p8, p16]], dtype=torch.float64)
    probs["bottom_depth"] = torch.tensor([[p_depth0, p_depth1]], dtype=torch.float64)
    probs["interaction_dim"] = torch.tensor([[p_d[2], p_d[4]]], dtype=torch.float64)
    assert float(expected_cost(latency_table(space, lut, B), probs)) == pytest.approx(by_hand, rel=1e-12)


def _random_logits(layout: Layout, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in layout.init_logits().items():
        noise = torch.randn(t.shape, generator=g, dtype=torch.float64)
        out[name] = torch.where(torch.isfinite(t), noise, t.double()).requires_grad_(True)
    return out


def test_gradient_matches_finite_differences():
    space = tiny_space()
    table, layout = latency_table(space, toy_lut(space, B), B), Layout(space)
    logits = _random_logits(layout, 0)

    def f(lg):
        return expected_cost(table, {g: torch.softmax(t, -1) for g, t in lg.items()})

    f(logits).backward()
    eps = 1e-6
    for g, t in logits.items():
        for idx in [(0, 0), (t.shape[0] - 1, 1)]:
            if not torch.isfinite(t[idx]):
                continue
            plus = {k: v.detach().clone() for k, v in logits.items()}
            minus = {k: v.detach().clone() for k, v in logits.items()}
            plus[g][idx] += eps
            minus[g][idx] -= eps
            numeric = (float(f(plus)) - float(f(minus))) / (2 * eps)
            assert t.grad[idx].item() == pytest.approx(numeric, rel=1e-5, abs=1e-7), (g, idx)


def test_gradient_reaches_logits_through_the_budget_term():
    space = tiny_space()
    tables = CostTables(latency_table(space, toy_lut(space, B), B))
    logits = _random_logits(Layout(space), 3)
    probs = {g: torch.softmax(t, -1) for g, t in logits.items()}
    lat = expected_cost(tables.latency, probs).item()
    loss, details = cost_loss(tables, probs, budget_us=lat / 2, multiplier=1.0, form="hinge")
    loss.backward()
    assert details["latency_ratio"] == pytest.approx(2.0)
    assert loss.item() == pytest.approx(1.0)  # max(0, 2 - 1)
    for g, t in logits.items():
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, g
    # Under the budget the hinge is silent.
    loss, _ = cost_loss(tables, probs, budget_us=lat * 2, multiplier=1.0, form="hinge")
    assert loss.item() == 0.0


def test_penalty_forms():
    lat = torch.tensor(400.0)
    assert budget_penalty(lat, 200.0, 2.0, "hinge").item() == pytest.approx(2.0)
    assert budget_penalty(lat, 200.0, 2.0, "hinge", target=0.5).item() == pytest.approx(3.0)
    assert budget_penalty(lat, 200.0, 0.5, "linear-log").item() == pytest.approx(0.5 * torch.log(lat).item())
    assert budget_penalty(lat, 200.0, 0.2, "fbnet", 0.6).item() == pytest.approx(0.2 * torch.log(lat).item() ** 0.6)
    with pytest.raises(ValueError):
        budget_penalty(lat, 200.0, 1.0, "quadratic")


def test_flops_and_param_bytes_terms_match_the_arch():
    from search.family_search import flops_table, param_bytes_table

    space = tiny_space()
    layout = Layout(space)
    choices = space.sample_choices(random.Random(5))
    arch = space.arch(choices)
    assert float(expected_cost(flops_table(space, B), layout.one_hot(choices))) == arch.flops(B)
    assert float(expected_cost(param_bytes_table(space), layout.one_hot(choices))) == arch.num_params() * 4
