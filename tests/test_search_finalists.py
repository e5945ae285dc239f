"""search.finalists: starting points settled into the band, trained one pass each, the best returned."""

from __future__ import annotations

import json

import pytest
import torch

from dnas_hw.data.folder import PreparedData
from dnas_hw.dlrm.arch import Arch, dlrm_kaggle_reference
from dnas_hw.family import build_model
from dnas_hw.space import get_space
from dnas_hw.train import evaluate
from lut.predict import predict
from search import finalists
from search.config import SearchConfig
from search.cost import choices_cost
from search.dlrm.supernet import Supernet
from search.family_search import family_search, latency_table
from search.finalists import (RECORDS, FrontShare, Settled, candidates, choose, distinct, kinds_chosen, settle, switches,
                              weight_and_arch_parts)
from search.refine import HeldOut
from search.run import run_search
from search_fixtures import synth_data, tiny_space, toy_lut

B = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth_data(tmp_path_factory.mktemp("data") / "synth", rows=2000)


def test_the_switches_are_every_other_kind_width_and_depth_of_the_search_arch():
    space = tiny_space()
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    own = space.smallest_choices()
    probs = {g: t.to(torch.float64) for g, t in net.layout.one_hot(own).items()}
    found = {c.name: c for c in switches(net, table, own, probs, budget_us=1e12)}
    expected = {f"search, {slot} {alt}" for slot in ("interaction", "interaction_dim", "bottom_depth", "top_depth")
                for alt in dict((s.name, s.choices) for s in space.slots())[slot] if alt != own[slot]}
    assert set(found) == expected
    for name, c in found.items():  # with room in the budget: that one slot switched, nothing else
        slot, alt = name.split(", ")[1].rsplit(" ", 1)
        assert {s for s in own if c.choices[s] != own[s]} == {slot} and str(c.choices[slot]) == alt and not c.projection


def test_candidates_hold_the_search_arch_first_and_the_users_incumbent(data):
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    own = Settled("search", space.smallest_choices(), [], [], [])
    probs = {g: t.to(torch.float64) for g, t in net.layout.one_hot(own.choices).items()}
    served = space.choices_of(space.largest())
    budget = 2 * choices_cost(table, net.layout, served)
    found = candidates(net, table, own, probs, rows(space), budget, 0.0,
                       SearchConfig(refine=False, keep_capacity=False), {"served": served})
    assert found[0] is own and found[-1].name == "incumbent served" and found[-1].choices == served
    assert len({json.dumps(c.choices, sort_keys=True) for c in found}) == len(found)


def test_an_incumbent_that_fits_is_a_finalist_as_it_is_and_one_over_the_budget_is_settled(data):
    """Under the budget, even far under the floor, the incumbent is neither grown nor refined: the design a
    user would ship is what the finalists must beat. Over it, it is projected under the budget."""
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    with torch.no_grad():
        probs = {g: t.to(torch.float64) for g, t in net.probabilities().items()}
    # No refinement: the settling is then the projection alone, which does not depend on the untrained
    # supernet's scores.
    config = SearchConfig(refine=False, keep_capacity=False)

    def incumbent(own, served, budget):
        """The incumbent `served` among the finalists of a search whose own arch is `own` (another arch, so
        that `distinct` keeps the incumbent's entry)."""
        found = candidates(net, table, Settled("search", own, [], [], []), probs, rows(space), budget, 0.9, config,
                           {"served": served})
        return next(c for c in found if c.name == "incumbent served")

    small, large = space.smallest_choices(), space.largest_choices()
    small_us, large_us = (choices_cost(table, net.layout, c) for c in (small, large))
    fits = incumbent(large, small, large_us)
    assert fits.choices == small and not fits.projection and not fits.refinement
    budget = (small_us + large_us) / 2
    over = incumbent(small, large, budget)
    assert over.projection and choices_cost(table, net.layout, over.choices) <= budget


def test_the_kaggle_space_offers_the_reference_as_its_incumbent():
    cards = tuple(100 + f for f in range(26))
    space = get_space("dlrm-kaggle", cardinalities=cards)
    incumbents = Supernet(space).incumbents()
    assert list(incumbents) == ["dlrm-kaggle reference"]
    assert space.arch(incumbents["dlrm-kaggle reference"]) == dlrm_kaggle_reference(cards)


def test_a_switch_over_budget_is_projected_under_it_without_switching_back():
    """The search's arch has all the probability; a switch to the other kind goes over the budget: the projection
    must bring it under the budget without switching the kind back, and no floor lifts a cheap switch."""
    space = tiny_space()
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    largest = space.largest_choices()
    probs = {g: t.to(torch.float64) for g, t in net.layout.one_hot(largest).items()}
    budget = 0.999 * choices_cost(table, net.layout, largest)
    found = {c.name: c for c in switches(net, table, largest, probs, budget)}
    other = next(k for k in space.interactions if k != largest["interaction"])
    kind = found[f"search, interaction {other}"]
    assert kind.choices["interaction"] == other and choices_cost(table, net.layout, kind.choices) <= budget
    shallow = found["search, top_depth 0"]  # far under the budget: left as it is
    assert not shallow.projection and choices_cost(table, net.layout, shallow.choices) < 0.8 * budget


def test_a_held_group_keeps_its_choice_through_projection_and_refinement(monkeypatch):
    """The start is over the budget and its kind has no probability: held, the kind stays through the
    projection and the refinement is not asked to move it; free, the projection switches it."""
    space = tiny_space()
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    largest = space.largest_choices()
    other = next(k for k in space.interactions if k != largest["interaction"])
    with torch.no_grad():  # uniform but for the kind, all of whose probability is on the other one
        probs = {g: t.to(torch.float64) for g, t in net.probabilities().items()}
    probs["interaction"] = net.layout.one_hot({**largest, "interaction": other})["interaction"]
    refined = []
    monkeypatch.setattr(finalists, "refine", lambda *a, groups=None, **k: (refined.append(groups), (a[2], []))[1])
    budget = 0.6 * choices_cost(table, net.layout, largest)
    config = SearchConfig(keep_capacity=False)
    held = settle(net, table, "search", largest, probs, rows(space), budget, 0.0, config, held=("interaction",))
    assert held.choices["interaction"] == largest["interaction"] and choices_cost(table, net.layout, held.choices) <= budget
    assert "interaction" not in refined[-1] and "top_depth" in refined[-1]
    free = settle(net, table, "search", largest, probs, rows(space), budget, 0.0, config)
    assert free.choices["interaction"] == other and refined[-1] == net.refined_groups


def test_the_kind_held_is_the_last_one_finalists_of_both_kinds_chose():
    space = tiny_space()
    net = Supernet(space)
    assert kinds_chosen(None) == {} and kinds_chosen(FrontShare()) == {}
    a, b = space.smallest_choices(), space.largest_choices()
    record = lambda choices: {"name": "x", "choices": choices}  # noqa: E731
    shared = FrontShare()
    shared.finished(net, "0.1ms", {**a, "interaction": "cat"}, [record({**a, "interaction": "dot"})])
    assert kinds_chosen(shared) == {"interaction": "cat"} and list(shared.chosen) == ["0.1ms"]
    # A point whose finalists held one kind only (or none: over its fastest arch) measured nothing.
    shared.finished(net, "0.2ms", {**b, "interaction": "dot"}, [record({**a, "interaction": "dot"})])
    shared.finished(net, "0.3ms", {**b, "interaction": "dot"}, [])
    assert kinds_chosen(shared) == {"interaction": "cat"} and list(shared.chosen) == ["0.1ms", "0.2ms", "0.3ms"]
    shared.finished(net, "0.4ms", {**b, "interaction": "dot"}, [record(b), record({**b, "interaction": "cat"})])
    assert kinds_chosen(shared) == {"interaction": "dot"}


def rows(space, n=8):
    return HeldOut(torch.zeros(n, space.num_dense), torch.zeros(n, space.num_sparse, dtype=torch.long), torch.ones(n))


def test_distinct_keeps_the_first_of_each_arch():
    a, b = {"x": 1}, {"x": 2}
    kept = distinct([Settled("search", a, [], [], []), Settled("kind", b, [], [], []), Settled("incumbent", dict(a), [], [], [])])
    assert [c.name for c in kept] == ["search", "kind"]


def test_choose_returns_the_lowest_proxy_logloss_and_a_rerun_trains_none_again(data, tmp_path, monkeypatch):
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    candidates = [Settled("small", space.smallest_choices(), [], [], []), Settled("large", space.largest_choices(), [], [], [])]
    parts = weight_and_arch_parts(PreparedData.open(data), 0.8)
    config = SearchConfig(train_batch_size=128)
    chosen, records = choose(net, table, candidates, parts, config, tmp_path)
    losses = [r["proxy"]["logloss"] for r in records]
    assert chosen.name == candidates[losses.index(min(losses))].name
    assert [r["chosen"] for r in records] == [c is chosen for c in candidates]
    assert json.loads((tmp_path / RECORDS).read_text()) == records
    # The proxy is a real training: each finalist scores below its own untrained start on the scored rows.
    for c, r in zip(candidates, records):
        untrained = evaluate(build_model(space.arch(c.choices), seed=config.seed), parts[1])["logloss"]
        assert r["proxy"]["logloss"] < untrained and r["proxy"]["train_s"] > 0

    def no_training(*args, **kwargs):
        raise AssertionError("a finalist with a record was trained again")

    monkeypatch.setattr(finalists, "finalist_pass", no_training)
    again, records_again = choose(net, table, candidates, parts, config, tmp_path)
    assert again.name == chosen.name and records_again == records


def test_screening_trains_every_finalist_the_first_batches_and_the_best_go_on_to_the_whole_pass(data, tmp_path, monkeypatch):
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    net = Supernet(space)
    table = latency_table(space, toy_lut(space, B), B)
    found = [Settled(f"f{i}", c, [], [], []) for i, c in enumerate(
        [space.smallest_choices(), space.largest_choices(),
         {**space.smallest_choices(), "top_depth": space.largest_choices()["top_depth"]}])]
    parts = weight_and_arch_parts(PreparedData.open(data), 0.8)
    config = SearchConfig(train_batch_size=128, finalist_keep=2)
    seen = []  # per piece of training: (finalist, first batch, stop)
    real = finalists.finalist_pass

    def counted(space_, choices, weights, config_, supernet=None):
        training, name = real(space_, choices, weights, config_, supernet), next(c.name for c in found if c.choices == choices)
        to = training.to

        def logged(step):
            seen.append((name, training.done, min(step, training.steps)))
            to(step)

        training.to = logged
        return training

    monkeypatch.setattr(finalists, "finalist_pass", counted)
    monkeypatch.setattr(finalists, "MIN_SCREEN_ROWS", 100)  # the test data's weight part: 1,280 rows
    monkeypatch.setattr(finalists, "SCREEN_SCORED_ROWS", 150)  # of its arch part's 320
    known: dict = {}
    chosen, records = choose(net, table, found, parts, config, tmp_path, screen=0.25, known=known)
    screen, whole = -(-int(len(parts[0]) * 0.25) // 128), -(-len(parts[0]) // 128)  # 3 and 10 batches
    assert seen[:3] == [(c.name, 0, screen) for c in found]
    kept = sorted(range(3), key=lambda i: records[i]["screen"]["logloss"])[:2]
    assert sorted(seen[3:]) == sorted((found[i].name, screen, whole) for i in kept)  # going on from the screen
    assert all(("proxy" in r) == (i in kept) and r["screen_rows"] == screen * 128 for i, r in enumerate(records))
    assert {r["screen"]["rows"] for r in records} == {150} and {r["proxy"]["rows"] for r in records if "proxy" in r} == {len(parts[1])}
    assert chosen is found[min(kept, key=lambda i: records[i]["proxy"]["logloss"])]
    # A whole pass that went on from its screen scores what one from scratch does.
    for i in kept:
        assert records[i]["proxy"]["logloss"] == finalists.proxy_metrics(space, found[i].choices, parts, config)["logloss"]
        assert records[i]["proxy"]["went_on_from_step"] == screen
    # Killed before the second whole pass: the resumed run trains that one, from scratch, and no other.
    cut = [dict(r) for r in records]
    cut[kept[1]].pop("proxy")
    (tmp_path / RECORDS).write_text(json.dumps(cut))
    seen.clear()
    resumed, resumed_records = choose(net, table, found, parts, config, tmp_path, screen=0.25)
    assert seen == [(found[kept[1]].name, 0, whole)] and resumed is chosen
    assert [i for i, r in enumerate(resumed_records) if "proxy" in r] == sorted(kept)
    assert resumed_records[kept[1]]["proxy"]["logloss"] == records[kept[1]]["proxy"]["logloss"]
    # Without the memory to keep a screened pass, a survivor trains its whole pass from scratch, to the same model.
    monkeypatch.setattr(finalists, "available_bytes", lambda: 1)
    seen.clear()
    _, tight = choose(net, table, found, parts, config, tmp_path / "tight", screen=0.25)
    assert sorted(seen[3:]) == sorted((found[i].name, 0, whole) for i in kept)
    assert [r.get("proxy", {}).get("logloss") for r in tight] == [r.get("proxy", {}).get("logloss") for r in records]
    monkeypatch.setattr(finalists, "available_bytes", lambda: None)  # unknown: passes are kept
    # Another point of a front holding one of these finalists trains it no more (`known`).
    seen.clear()
    again, _ = choose(net, table, [found[kept[0]]], parts, config, tmp_path / "other", screen=0.25, known=known)
    assert seen == [] and again is found[kept[0]]
    # Where a quarter of the weight rows is under MIN_SCREEN_ROWS, the screen reads that many; where that
    # is the whole weight part, every finalist trains the whole pass.
    seen.clear()
    monkeypatch.setattr(finalists, "MIN_SCREEN_ROWS", 500)
    choose(net, table, found, parts, config, tmp_path / "min", screen=0.25)
    assert [stop for _, _, stop in seen[:3]] == [-(-500 // 128)] * 3
    seen.clear()
    monkeypatch.setattr(finalists, "MIN_SCREEN_ROWS", len(parts[0]))
    _, records = choose(net, table, found, parts, config, tmp_path / "none", screen=0.25)
    assert seen == [(c.name, 0, whole) for c in found] and all("screen" not in r for r in records)


def test_a_front_screens_its_finalists_and_a_single_search_does_not():
    assert finalists.screen_share(SearchConfig(), 1) == 1.0
    assert finalists.screen_share(SearchConfig(), 4) == finalists.FRONT_SCREEN < 1
    assert finalists.screen_share(SearchConfig(finalist_screen=1.0), 4) == 1.0
    with pytest.raises(Exception, match="finalist_screen"):
        SearchConfig(finalist_screen=0.0)


def test_the_parts_split_the_train_split_where_the_supernet_does(data):
    prepared = PreparedData.open(data)
    train = prepared.split("train")
    weights, arch = weight_and_arch_parts(prepared, 0.75)
    cut = int(len(train) * 0.75)
    assert len(weights) == cut and len(arch) == len(train) - cut
    assert (arch.labels == train.labels[cut:]).all()


def test_a_search_returns_its_chosen_finalist(data, tmp_path):
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    lut = toy_lut(space, B)
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    budget = low + 0.5 * (high - low)
    summary = run_search(data, space, lut, budget_us=budget, batch_size=B, out=tmp_path / "run",
                         config=SearchConfig(epochs=2, train_batch_size=128))
    records = summary["finalists"]
    assert len(records) >= 2 and records[0]["name"] == "search"
    chosen = [r for r in records if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == summary["chosen_finalist"]
    assert chosen[0]["proxy"]["logloss"] == min(r["proxy"]["logloss"] for r in records)
    assert summary["choices"] == chosen[0]["choices"]
    assert Arch.load(tmp_path / "run" / "arch.json") == space.arch(chosen[0]["choices"])
    for r in records:  # every finalist lies within the budget (a switch may use less than the floor)
        assert r["predicted_latency_us"] <= budget


def test_without_finalists_the_search_returns_its_own_arch(data, tmp_path):
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    lut = toy_lut(space, B)
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    summary = run_search(data, space, lut, budget_us=low + 0.5 * (high - low), batch_size=B, out=tmp_path / "run",
                         config=SearchConfig(epochs=2, train_batch_size=128, finalists=False))
    assert summary["finalists"] == [] and summary["chosen_finalist"] == "search"
    assert not (tmp_path / "run" / RECORDS).exists()


def test_an_incumbent_the_user_gives_starts_a_finalist_and_one_outside_the_space_is_refused(data, tmp_path):
    from cli_checks import one_error_line, run

    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    lut = toy_lut(space, B)
    lut.save(tmp_path / "toy.csv")
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    budget_ms = (low + 0.5 * (high - low)) / 1000
    common = ["search", "--data", data, "--space", "dlrm-tiny", "--lut", tmp_path / "toy.csv", "--batch-size", B,
              "--latency-budget", f"{budget_ms:.4f}ms", "--epochs", 2, "--train-batch-size", 128]
    served = space.largest()
    served.save(tmp_path / "served.json")
    outside = Arch(**{**served.to_dict(), "top_mlp": (24,)})  # 24 is no width of dlrm-tiny
    outside.save(tmp_path / "outside.json")
    one_error_line(*run(*common, "--out", tmp_path / "refused", "--incumbent", tmp_path / "outside.json"), "incumbent outside")
    assert not (tmp_path / "refused").exists()
    code, output = run(*common, "--out", tmp_path / "run", "--incumbent", tmp_path / "served.json")
    assert code == 0, output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["identity"]["incumbents"] == {"served": space.choices_of(served)}
    # Resumed without it, the finished search is another search: refused, naming the difference.
    one_error_line(*run(*common, "--out", tmp_path / "run", "--resume"), "incumbents")


def test_a_proxy_from_the_supernet_starts_from_the_weights_it_extracts(data):
    """`proxy_metrics` with a supernet (benchmarks/finalist_screening.py's screens from the supernet's weights)
    trains the model its family extracts, the derived model's weights, not a fresh one."""
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    net = Supernet(space)
    with torch.no_grad():
        for p in net.weight_parameters():
            p.add_(0.05 * torch.randn_like(p))
    parts = weight_and_arch_parts(PreparedData.open(data), 0.8)
    choices = space.largest_choices()
    inherited = finalists.proxy_metrics(space, choices, parts, SearchConfig(), net, steps=0)["logloss"]
    assert inherited == pytest.approx(evaluate(family_search(space).extract(net, choices), parts[1])["logloss"])
    assert inherited != pytest.approx(finalists.proxy_metrics(space, choices, parts, SearchConfig(), steps=0)["logloss"])
