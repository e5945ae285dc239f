"""The budget controller and the final projection, on a toy LUT."""

from __future__ import annotations

import pytest
import torch

from lut.predict import predict
from search.budget import BudgetController
from search.cost import CostTables, cost_loss, expected_cost, one_hot_cost
from search.family_search import latency_table, param_bytes_table
from search.layout import Layout
from search.project import project
from search_fixtures import one_thread, tiny_space, toy_lut  # noqa: F401 (autouse fixture)

B = 16


def _argmax(layout, logits):
    return layout.choices({g: t.argmax(-1) for g, t in logits.items()})


@pytest.mark.parametrize("form", ["band", pytest.param("hinge", marks=pytest.mark.slow)])
@pytest.mark.parametrize("share", [pytest.param(0.3, marks=pytest.mark.slow), 0.6, pytest.param(0.9, marks=pytest.mark.slow)])
def test_dual_ascent_drives_the_derived_arch_into_the_band(share, form):
    """Logits pulled towards capacity (a stand-in for the task loss) against the budget term."""
    space = tiny_space()
    lut, layout = toy_lut(space, B), Layout(space)
    tables = CostTables(latency_table(space, lut, B))
    capacity = param_bytes_table(space)
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    budget = low + share * (high - low)
    logits = {g: t.clone().requires_grad_(True) for g, t in layout.init_logits().items()}
    opt = torch.optim.Adam(logits.values(), lr=0.05)
    controller = BudgetController(budget, target=0.95, floor=0.8, lr=0.2, multiplier=0.1, two_sided=form == "band", gain=5.0)
    scale = space.largest().num_params() * 4
    for _ in range(400):
        opt.zero_grad()
        probs = {g: torch.softmax(t, -1) for g, t in logits.items()}
        derived = one_hot_cost(tables.latency, layout.one_hot(_argmax(layout, logits)))
        cost, _ = cost_loss(
            tables, probs, budget_us=budget, multiplier=controller.multiplier, form=form, target=0.95, derived_us=derived
        )
        (cost - expected_cost(capacity, probs) / scale).backward()
        opt.step()
        controller.update(derived)
    derived = predict(lut, space.arch(_argmax(layout, logits)), B).total_us
    assert 0.8 * budget <= derived <= budget


def test_without_the_budget_term_capacity_wins():
    """The control case: the same pull with no budget term ends far over the budget."""
    space = tiny_space()
    lut, layout = toy_lut(space, B), Layout(space)
    capacity = param_bytes_table(space)
    logits = {g: t.clone().requires_grad_(True) for g, t in layout.init_logits().items()}
    opt = torch.optim.Adam(logits.values(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (-expected_cost(capacity, {g: torch.softmax(t, -1) for g, t in logits.items()})).backward()
        opt.step()
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    assert predict(lut, space.arch(_argmax(layout, logits)), B).total_us > low + 0.9 * (high - low)


@pytest.mark.slow
def test_two_sided_budget_grows_an_arch_that_is_too_small():
    """No pull towards capacity at all: only a negative multiplier can lift the argmax from the smallest arch into the band."""
    space = tiny_space()
    lut, layout = toy_lut(space, B), Layout(space)
    tables = CostTables(latency_table(space, lut, B))
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    budget = low + 0.6 * (high - low)
    small = _choices_of(space, space.smallest())
    logits = {g: (3.0 * layout.one_hot(small, torch.float32)[g]).masked_fill(~layout.groups[g].valid(), float("-inf")).requires_grad_(True)
              for g in layout.groups}
    opt = torch.optim.Adam(logits.values(), lr=0.05)
    for two_sided in (False, True):
        controller = BudgetController(budget, target=0.95, floor=0.8, lr=0.2, multiplier=0.0, two_sided=two_sided, gain=5.0)
        for _ in range(300):
            opt.zero_grad()
            probs = {g: torch.softmax(t, -1) for g, t in logits.items()}
            derived = one_hot_cost(tables.latency, layout.one_hot(_argmax(layout, logits)))
            cost, _ = cost_loss(tables, probs, budget_us=budget, multiplier=controller.multiplier, form="band",
                                target=0.95, derived_us=derived)
            cost.backward()
            opt.step()
            controller.update(derived)
        derived = predict(lut, space.arch(_argmax(layout, logits)), B).total_us
        if two_sided:
            assert controller.multiplier < 0 and 0.8 * budget <= derived <= budget
        else:  # one-sided: the multiplier stays at 0 and nothing lifts the arch
            assert controller.multiplier == 0 and derived < 0.8 * budget


def test_controller_moves_the_multiplier_both_ways():
    c = BudgetController(100.0, target=0.9, floor=0.8, lr=0.5, multiplier=1.0)
    assert c.update(150.0) > 1.0
    m = c.multiplier
    assert c.update(85.0) == m  # inside [floor, target]: held
    assert c.update(50.0) < m
    for _ in range(4):  # 1.15 - 4 * 0.5 * (0.8 - 0.1)
        c.update(10.0)
    assert c.multiplier == pytest.approx(-0.25)  # two-sided: the multiplier goes negative
    pd = BudgetController(100.0, 0.9, 0.8, 0.5, 1.0, gain=2.0)
    assert pd.update(150.0) == pytest.approx(1.0 + 0.5 * 0.6 + 2.0 * 0.6)  # integral + gain * error
    one_sided = BudgetController(100.0, 0.9, 0.8, 0.5, 0.1, two_sided=False)
    assert one_sided.update(10.0) == 0.0
    c2 = BudgetController(100.0, 0.9, 0.8, 0.5, 1.0)
    c2.load_state_dict(c.state_dict())
    assert c2.multiplier == c.multiplier


@pytest.mark.slow
def test_projection_steps_down_then_up_and_logs_each_move():
    space = tiny_space()
    lut, layout = toy_lut(space, B), Layout(space)
    table = latency_table(space, lut, B)
    probs = {g: torch.softmax(t, -1) for g, t in layout.init_logits().items()}
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    budget = (low + high) / 2
    big = _choices_of(space, space.largest())
    choices, moves = project(layout, table, big, probs, budget, floor=0.8)
    lat = predict(lut, space.arch(choices), B).total_us
    assert lat <= budget and moves and moves[-1]["latency_us"] == pytest.approx(lat)
    small = _choices_of(space, space.smallest())
    choices, moves = project(layout, table, small, probs, budget, floor=0.8)
    lat = predict(lut, space.arch(choices), B).total_us
    assert 0.8 * budget <= lat <= budget and moves


def test_projection_takes_a_move_that_lands_in_the_band_when_one_exists():
    """Over budget, one switch lands in the band: the projection takes one such switch and stops, rather
    than the cheapest per microsecond, which can overshoot below the floor where no single switch climbs
    back within the budget."""
    space = tiny_space()
    lut, layout = toy_lut(space, B), Layout(space)
    table = latency_table(space, lut, B)
    probs = {g: torch.softmax(t, -1) for g, t in layout.init_logits().items()}
    big = _choices_of(space, space.largest())
    start = predict(lut, space.arch(big), B).total_us
    drops = sorted(predict(lut, space.arch({**big, slot: alt}), B).total_us
                   for g, grp in layout.groups.items() for i, slot in enumerate(grp.slots) for alt in grp.choices[i] if alt != big[slot])
    large = [d for d in drops if d < 0.85 * start]
    landing = large[len(large) // 2]  # a switch that takes a good part of the latency off
    budget = landing / 0.9
    choices, moves = project(layout, table, big, probs, budget, floor=0.8)
    lat = predict(lut, space.arch(choices), B).total_us
    assert len(moves) == 1 and 0.8 * budget <= lat <= budget


def _choices_of(space, arch):
    """`{slot: choice}` of an extreme arch, recovered by search over the slots' extreme choices."""
    from dnas_hw.space import SKIP

    pick_big = arch == space.largest()
    out = {}
    for s in space.slots():
        if s.name == "interaction":
            out[s.name] = arch.interaction
        elif pick_big:
            out[s.name] = max(c for c in s.choices if c != SKIP)
        else:
            out[s.name] = SKIP if SKIP in s.choices else min(s.choices)
    assert space.arch(out) == arch
    return out


@pytest.mark.slow
def test_extreme_archs_match_exhaustive_enumeration():
    import itertools

    from dnas_hw.dlrm.space import SearchSpace
    from search.extremes import extreme_arch

    space = SearchSpace(
        name="enum", cardinalities=(40,), num_dense=3, bottom_widths=(8, 16), bottom_layers=2,
        top_widths=(4, 8), top_layers=2, emb_dims=(2, 4), emb_row_fractions=(1.0, 0.25), interactions=("dot", "cat"),
    )
    lut, layout = toy_lut(space, B), Layout(space)
    table = latency_table(space, lut, B)
    slots = space.slots()
    prices = [predict(lut, space.arch(dict(zip([s.name for s in slots], combo))), B).total_us
              for combo in itertools.product(*(s.choices for s in slots))]
    low, low_choices = extreme_arch(table, layout, cheapest=True)
    high, high_choices = extreme_arch(table, layout, cheapest=False)
    assert low == pytest.approx(min(prices)) and high == pytest.approx(max(prices))
    assert predict(lut, space.arch(low_choices), B).total_us == pytest.approx(low)
    assert predict(lut, space.arch(high_choices), B).total_us == pytest.approx(high)
