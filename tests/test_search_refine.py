"""search.refine: the derived arch moves to the neighbour the supernet scores best, within the band."""

from __future__ import annotations

import json

import pytest
import torch

from dnas_hw.dlrm.arch import Arch
from lut.predict import predict
from search.config import SearchConfig
from search.cost import one_hot_cost
from search.family_search import latency_table
from search.refine import HeldOut, keep_capacity, refine, supernet_loss
from search.run import run_search
from search.supernet import SupernetBase
from search_fixtures import synth_data, tiny_space, toy_lut

B = 64


class ScoredNet(SupernetBase):
    """A stand-in supernet whose logit is sum over slots of a score per choice, for every row:
    with every label 1 its held-out loss is softplus(-score), so the best arch is known. Scores
    in [0, 0.01) keep softplus far from saturating, so every better choice gains."""

    def __init__(self, space, seed: int):
        super().__init__(space)
        g = torch.Generator().manual_seed(seed)
        self.scores = {name: 0.01 * torch.rand(len(grp.slots), grp.width, generator=g) for name, grp in self.layout.groups.items()}
        self.init_arch_logits()

    def forward(self, dense, sparse, probs):
        score = sum((probs[g] * self.scores[g]).sum() for g in probs)
        return score.expand(len(dense))

    def best(self, groups, start):
        """Per slot of `groups` the highest-scoring choice (the score is a sum over slots); the rest as in `start`."""
        out = dict(start)
        for name, grp in self.layout.groups.items():
            if name in groups:
                for i, slot in enumerate(grp.slots):
                    out[slot] = grp.choices[i][int(self.scores[name][i, : len(grp.choices[i])].argmax())]
        return out


def rows(space, n=8):
    return HeldOut(torch.zeros(n, space.num_dense), torch.zeros(n, space.num_sparse, dtype=torch.long), torch.ones(n))


@pytest.fixture
def setup():
    space = tiny_space()
    net = ScoredNet(space, seed=3)
    table = latency_table(space, toy_lut(space, B), B)
    return space, net, table


def latency(net, table, choices):
    return one_hot_cost(table, net.layout.one_hot(choices))


def test_with_room_the_refinement_reaches_the_best_arch_one_slot_at_a_time(setup):
    space, net, table = setup
    start = space.smallest_choices()
    groups = tuple(net.layout.groups)
    choices, moves = refine(net, table, start, rows(space), budget_us=1e12, floor=0.0, min_gain=0.0, max_moves=200, groups=groups)
    assert choices == net.best(groups, start)
    losses = [supernet_loss(net, start, rows(space))] + [m["loss"] for m in moves]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] == pytest.approx(supernet_loss(net, choices, rows(space)))
    assert all(m["slot"] in start and m["from"] != m["to"] for m in moves)
    # each round takes the best move, not just a better one: the first is the best of all neighbours
    neighbours = [{**start, slot: alt} for name, grp in net.layout.groups.items() for i, slot in enumerate(grp.slots)
                  for alt in grp.choices[i] if alt != start[slot]]
    assert moves[0]["loss"] == pytest.approx(min(supernet_loss(net, n, rows(space)) for n in neighbours))


def test_only_the_named_groups_move(setup):
    space, net, table = setup
    start = space.smallest_choices()
    choices, _ = refine(net, table, start, rows(space), budget_us=1e12, floor=0.0, min_gain=0.0, max_moves=200,
                         groups=("top", "top_depth"))
    assert choices == net.best(("top", "top_depth"), start)


def test_every_move_keeps_the_arch_in_the_band(setup):
    space, net, table = setup
    start = space.smallest_choices()
    low, high = latency(net, table, start), latency(net, table, space.largest_choices())
    budget = low + 0.3 * (high - low)
    floor = low / budget
    choices, moves = refine(net, table, start, rows(space), budget_us=budget, floor=floor, min_gain=0.0, max_moves=200)
    assert moves, "room in the band and a better neighbour: the refinement should move"
    for m in moves:
        assert floor * budget <= m["latency_us"] <= budget
    assert latency(net, table, choices) <= budget
    # the unconstrained best is over this budget, so the band, not the scores, stopped it
    assert latency(net, table, net.best(tuple(net.layout.groups), start)) > budget


def test_gains_below_min_gain_and_starts_outside_the_band_are_left_alone(setup):
    space, net, table = setup
    start = space.smallest_choices()
    assert refine(net, table, start, rows(space), budget_us=1e12, floor=0.0, min_gain=10.0) == (start, [])
    over = latency(net, table, start) * 0.5  # the start is over this budget: the projection's business
    assert refine(net, table, start, rows(space), budget_us=over, floor=0.0) == (start, [])


def test_held_out_rows_are_spread_over_the_given_range(tmp_path):
    from dnas_hw.data.folder import PreparedData

    train = PreparedData.open(synth_data(tmp_path / "data", rows=2000)).split("train")
    held = HeldOut.take(train, 1000, len(train), rows=50)
    assert held.dense.shape == (50, train.dense.shape[1]) and held.sparse.dtype == torch.int64
    torch.testing.assert_close(held.dense[0], torch.from_numpy(train.dense[1000].copy()))
    torch.testing.assert_close(held.dense[-1], torch.from_numpy(train.dense[len(train) - 1].copy()))


@pytest.mark.parametrize("refined", [True, False])
def test_a_search_records_its_refinement_and_stays_within_budget(tmp_path, refined):
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.space import get_space

    data = synth_data(tmp_path / "data", rows=2000)
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    lut = toy_lut(space, B)
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    budget = low + 0.5 * (high - low)
    config = SearchConfig(epochs=2, train_batch_size=128, refine=refined)
    summary = run_search(data, space, lut, budget_us=budget, batch_size=B, out=tmp_path / "run", config=config)
    assert isinstance(summary["refinement"], list) and (refined or not summary["refinement"])
    arch = Arch.load(tmp_path / "run" / "arch.json")
    assert predict(lut, arch, B).total_us <= budget
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["refinement"] == summary["refinement"]
    if summary["refinement"]:
        assert summary["choices"][summary["refinement"][-1]["slot"]] == summary["refinement"][-1]["to"]


def test_supernet_learned_compares_the_arch_with_the_base_rate():
    """A supernet that predicts the held-out rows' own positive rate for every row scores a normalized
    entropy of 1; one whose logits lean towards the labels scores below 1."""
    import math

    from search.run import supernet_learned

    space = tiny_space()
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0] * 4)
    held = HeldOut(torch.zeros(16, space.num_dense), torch.zeros(16, space.num_sparse, dtype=torch.long), labels)
    assert held.base_rate_logloss() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))

    class Constant(SupernetBase):
        def __init__(self, logits):
            super().__init__(space)
            self.logits = logits
            self.init_arch_logits()

        def forward(self, dense, sparse, probs):
            return self.logits

    choices = space.choices_of(space.smallest())
    at_rate = supernet_learned(Constant(torch.full((16,), math.log(0.25 / 0.75))), choices, held)
    assert at_rate["normalized_entropy"] == pytest.approx(1.0)
    leaning = supernet_learned(Constant(2.0 * (2 * labels - 1)), choices, held)
    assert leaning["normalized_entropy"] < 1.0
    assert leaning["logloss"] == pytest.approx(leaning["normalized_entropy"] * leaning["base_rate_logloss"])


CAPACITY = ("emb_rows", "emb_dim")


def test_keep_capacity_takes_the_largest_table_and_dim_unless_the_supernet_sees_a_loss(setup):
    """Indifferent scores: every table size and dim goes to its largest choice; one slot whose largest
    choice the supernet scores clearly worse stays where it was."""
    space, net, table = setup
    for g in CAPACITY:
        net.scores[g].zero_()
    grp = net.layout.groups["emb_rows"]
    worse = grp.choices[0].index(max(grp.choices[0]))
    net.scores["emb_rows"][0, worse] = -0.5
    start = space.smallest_choices()
    choices, moves = keep_capacity(net, table, start, rows(space), budget_us=1e12, floor=0.0, groups=CAPACITY)
    for name in CAPACITY:
        g = net.layout.groups[name]
        for i, slot in enumerate(g.slots):
            expected = start[slot] if slot == grp.slots[0] else max(g.choices[i])
            assert choices[slot] == expected, slot
    assert {m["slot"] for m in moves} == {s for s in choices if choices[s] != start[s]}
    assert all(choices[s] == start[s] for s in start if not s.startswith(CAPACITY))
    assert supernet_loss(net, choices, rows(space)) <= supernet_loss(net, start, rows(space)) + 5e-4


def test_keep_capacity_stays_within_the_budget(setup):
    space, net, table = setup
    for g in CAPACITY:
        net.scores[g].zero_()
    start = space.smallest_choices()
    grown, _ = keep_capacity(net, table, start, rows(space), budget_us=1e12, floor=0.0, groups=CAPACITY)
    low, high = latency(net, table, start), latency(net, table, grown)
    assert high > low
    budget = low + 0.4 * (high - low)
    choices, moves = keep_capacity(net, table, start, rows(space), budget_us=budget, floor=0.0, groups=CAPACITY)
    assert moves and choices != grown
    assert all(m["latency_us"] <= budget for m in moves) and latency(net, table, choices) <= budget


def test_the_refinement_does_not_move_to_the_choices_it_avoids(setup):
    """A move the supernet scores best is not taken when its (slot, choice) is avoided; the next best is."""
    space, net, table = setup
    start = space.smallest_choices()
    groups = tuple(net.layout.groups)
    choices, moves = refine(net, table, start, rows(space), budget_us=1e12, floor=0.0, min_gain=0.0, max_moves=1, groups=groups)
    first = (moves[0]["slot"], moves[0]["to"])
    avoided, again = refine(net, table, start, rows(space), budget_us=1e12, floor=0.0, min_gain=0.0, max_moves=200,
                            groups=groups, avoid=(first,))
    assert again and all((m["slot"], m["to"]) != first for m in again)
    assert avoided[first[0]] != first[1] or start[first[0]] == first[1]

