"""The front: several budgets and LUTs from one supernet (search/front.py), through `dnas-hw search`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.data.folder import PreparedData
from dnas_hw.dlrm.arch import Arch
from dnas_hw.space import get_space
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.dlrm.supernet import Supernet
from search.finalists import FrontShare, kinds_chosen
import search.front as front_module
from search.front import FrontSearcher, run_front
from search.run import cost_tables, id_counts
from search_fixtures import one_thread, synth_data, toy_lut  # noqa: F401 (autouse fixture)

B = 16
FAST = ["--epochs", "2", "--warmup-epochs", "1", "--train-batch-size", "64"]
RUN_FILES = {"arch.json", "arch_probs.json", "arch_probs_epochs.json", "derived_init.pt", "search_log.csv", "summary.json"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth_data(tmp_path_factory.mktemp("front") / "data", rows=2000)


@pytest.fixture(scope="module")
def space(data):
    return get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)


@pytest.fixture(scope="module")
def luts(space, tmp_path_factory):
    """Two LUTs of two targets: the toy torch LUT, and an "onnxruntime" one 1.5x slower per op."""
    folder = tmp_path_factory.mktemp("luts")
    torch_lut = toy_lut(space, B)
    torch_lut.save(folder / "cpu-torch.csv")
    rows = torch_lut.rows.copy()
    rows[["p10_us", "p50_us", "p90_us"]] *= 1.5
    Lut(rows, {**torch_lut.meta, "backend": "onnxruntime"}).save(folder / "cpu-ort.csv")
    return Lut.load(folder / "cpu-torch.csv"), Lut.load(folder / "cpu-ort.csv")


def budgets_ms(lut, space, shares=(0.15, 0.5, 0.9)) -> list[float]:
    """Budgets at `shares` of the way from the space's smallest to its largest arch, 4 digits: their bands
    [0.8, 1] x budget do not overlap on the toy LUT (consecutive ratios above 1.25)."""
    lo, hi = (predict(lut, a, B).total_us for a in (space.smallest(), space.largest()))
    return [round((lo + s * (hi - lo)) / 1000, 4) for s in shares]


def search(data, luts, budgets, out, *extra):
    args = ["search", "--data", str(data), "--space", "dlrm-tiny", "--batch-size", str(B), "--out", str(out),
            "--latency-budget", ",".join(f"{b}ms" for b in budgets), *FAST, *extra]
    for lut in luts:
        args += ["--lut", lut.path]
    return CliRunner().invoke(main, args)


def own_ms(summary: dict) -> float:
    """The LUT latency of the search's own arch (before another finalist may have replaced it)."""
    own = [f["predicted_latency_us"] / 1000 for f in summary["finalists"] if f["name"] == "search"]
    return own[0] if own else summary["predicted_latency_ms"]


def test_comma_budgets_give_one_run_folder_per_point_each_within_its_budget(data, space, luts, tmp_path, monkeypatch):
    lut = luts[0]
    budgets = budgets_ms(lut, space)
    scored = []  # the archs the supernet's val metrics were computed at
    real = front_module.supernet_metrics
    monkeypatch.setattr(front_module, "supernet_metrics", lambda net, choices, split: scored.append(choices) or real(net, choices, split))
    result = search(data, [lut], budgets, tmp_path / "front")
    assert result.exit_code == 0, result.output
    front = json.loads((tmp_path / "front" / "front.json").read_text())
    names = [f"{b:g}ms" for b in budgets]
    assert [p["name"] for p in front["points"]] == names and front["arch_updates_per_batch"] == min(2, len(budgets))
    assert {x.name for x in (tmp_path / "front").iterdir()} == {"front.json", *names}  # no checkpoint left
    predicted = []
    for p, budget in zip(front["points"], budgets):
        folder = tmp_path / "front" / p["name"]
        summary = json.loads((folder / "summary.json").read_text())
        assert {x.name for x in folder.iterdir()} == RUN_FILES | ({"finalists.json"} if summary["finalists"] else set())
        arch = Arch.load(tmp_path / "front" / p["arch"])
        # The point's arch is priced as the front says, and within its budget (the toy LUT leaves no margin).
        assert predict(lut, arch, B).total_us / 1000 == pytest.approx(p["predicted_latency_ms"]) == pytest.approx(summary["predicted_latency_ms"])
        assert p["budget_ms"] == p["searched_against_ms"] == pytest.approx(budget) and p["margin"] == 0
        # Within its budget; the search's own arch in the band (a finalist that trained better may use less).
        assert p["predicted_latency_ms"] <= budget and p["within_budget"] and p["budget_status"] == "ok"
        assert 0.8 * budget <= own_ms(summary) <= budget
        assert summary["budget_margin"]["requested_budget_ms"] == pytest.approx(budget)
        assert 0.3 < p["supernet_val_logloss"] < 0.8 and p["supernet_val"]["rows"] == PreparedData.open(data).split("val").__len__()
        log = pd.read_csv(folder / "search_log.csv")
        assert len(log) == 2 and log["latency_budget_ms"].tolist() == pytest.approx([budget] * 2)
        predicted.append(own_ms(summary))
    assert predicted == sorted(predicted) and len(set(predicted)) == 3
    # Points that return one arch share its val metrics: each distinct arch is scored once.
    returned = [json.dumps(json.loads((tmp_path / "front" / n / "summary.json").read_text())["choices"], sort_keys=True) for n in names]
    assert sorted(json.dumps(c, sort_keys=True) for c in scored) == sorted(set(returned))
    # Cheapest first, each point's finalists hold the archs the cheaper points chose (they fit its budget),
    # so no point returns an arch that trained worse than a cheaper point's.
    chosen_loss = []
    for i, p in enumerate(front["points"]):
        records = json.loads((tmp_path / "front" / p["name"] / "summary.json").read_text())["finalists"]
        chosen = next(r for r in records if r["chosen"])
        assert p["chosen_finalist"] == chosen["name"]
        borrowed = {r["name"] for r in records if r["name"].startswith("point ")}
        for earlier in names[:i]:  # a borrowed arch equal to one of its own finalists goes by that one's name
            earlier_choices = json.loads((tmp_path / "front" / earlier / "summary.json").read_text())["choices"]
            assert f"point {earlier}" in borrowed or any(r["choices"] == earlier_choices for r in records)
        chosen_loss.append(chosen["proxy"]["logloss"])
    assert chosen_loss == sorted(chosen_loss, reverse=True)
    # Each point settles its argmax with the interaction kind the nearest cheaper point chose among
    # finalists of both kinds.
    shared, net, held = FrontShare(), Supernet(space), []
    for name in names:
        summary = json.loads((tmp_path / "front" / name / "summary.json").read_text())
        assert summary["kinds_from_cheaper_point"] == kinds_chosen(shared)
        own = next((r["choices"] for r in summary["finalists"] if r["name"] == "search"), summary["choices"])
        assert all(own[slot] == kind for slot, kind in summary["kinds_from_cheaper_point"].items())
        held.append(summary["kinds_from_cheaper_point"])
        shared.finished(net, name, summary["choices"], summary["finalists"])
    assert held[0] == {} and held[1] != {}  # the cheapest point's finalists hold both kinds on this data
    # The heads share the weights' training (one task loss per epoch) but not their logits.
    logs = [pd.read_csv(tmp_path / "front" / n / "search_log.csv") for n in names]
    assert logs[0]["task_loss"].tolist() == logs[2]["task_loss"].tolist()
    assert logs[0]["derived_latency_ms"].iloc[-1] < logs[2]["derived_latency_ms"].iloc[-1]
    assert "supernet val logloss" in result.output and "front.json" in result.output


@pytest.mark.slow
def test_two_luts_give_one_arch_per_budget_and_lut(data, space, luts, tmp_path):
    # Feasible on both LUTs, bands apart on both: 10% of the way up the slower LUT's range, 90% up the faster's.
    budgets = [budgets_ms(luts[1], space, shares=(0.1,))[0], budgets_ms(luts[0], space, shares=(0.9,))[0]]
    front = run_front(data, space, list(luts), budgets_us=[b * 1000 for b in budgets], batch_size=B, out=tmp_path / "f",
                      config=SearchConfig(epochs=2, warmup_epochs=1, train_batch_size=64))
    names = [p["name"] for p in front["points"]]
    assert names == [f"{b:g}ms-{stem}" for stem in ("cpu-torch", "cpu-ort") for b in budgets]
    for p in front["points"]:
        lut = luts[0] if p["name"].endswith("cpu-torch") else luts[1]
        assert p["lut_target"]["backend"] == lut.meta["backend"]
        # Each point is priced on its own LUT and held within its budget there.
        assert predict(lut, Arch.load(tmp_path / "f" / p["arch"]), B).total_us / 1000 == pytest.approx(p["predicted_latency_ms"])
        assert p["predicted_latency_ms"] <= p["budget_ms"]
    # The search's own archs grow with the budget on each LUT (a point may return a cheaper point's arch).
    own = [own_ms(json.loads((tmp_path / "f" / p["name"] / "summary.json").read_text())) for p in front["points"]]
    assert own[0] < own[1] and own[2] < own[3]


@pytest.mark.slow
def test_a_stopped_front_resumes_to_the_same_archs_and_a_finished_one_keeps_its_options(data, space, luts, tmp_path):
    lut = luts[0]
    budgets = budgets_ms(lut, space, shares=(0.3, 0.8))
    kw = dict(budgets_us=[b * 1000 for b in budgets], batch_size=B)
    config = dict(epochs=2, warmup_epochs=1, train_batch_size=64)
    full = run_front(data, space, [lut], out=tmp_path / "full", config=SearchConfig(**config), **kw)
    stopped = run_front(data, space, [lut], out=tmp_path / "part", config=SearchConfig(**config, stop_after=1), **kw)
    assert stopped == {"stopped_after_epoch": 1, "epochs": 2} and (tmp_path / "part" / "front_state.pt").exists()
    assert not (tmp_path / "part" / "front.json").exists()
    again = search(data, [lut], budgets, tmp_path / "part")
    assert again.exit_code == 2 and "--resume" in again.output and again.output.count("\n") == 1
    resumed = search(data, [lut], budgets, tmp_path / "part", "--resume")
    assert resumed.exit_code == 0, resumed.output
    part = json.loads((tmp_path / "part" / "front.json").read_text())
    for p, q in zip(full["points"], part["points"]):
        for name in ("arch.json", "arch_probs.json"):
            assert (tmp_path / "full" / p["name"] / name).read_text() == (tmp_path / "part" / q["name"] / name).read_text()
        assert p["supernet_val_logloss"] == pytest.approx(q["supernet_val_logloss"], rel=1e-6)
    # A finished front resumed with its options gives its result; with others it is refused, one line, exit 2.
    same = search(data, [lut], budgets, tmp_path / "part", "--resume")
    assert same.exit_code == 0 and json.loads((tmp_path / "part" / "front.json").read_text()) == part
    other = search(data, [lut], budgets, tmp_path / "part", "--resume", "--arch-lr", "0.01")
    assert other.exit_code == 2 and "arch_lr" in other.output and other.output.count("\n") == 1
    more = search(data, [lut], [*budgets, 1.0], tmp_path / "part", "--resume")
    assert more.exit_code == 2 and "latency budgets" in more.output


@pytest.mark.parametrize("case, needle", [
    ("budget twice", "given twice"),
    ("lut twice", "given twice"),
    ("same target", "both measured on backend=torch"),
    ("same file name", "share the file name"),
    ("too many updates", "arch updates per batch"),
])
def test_bad_front_inputs_are_one_line_and_write_nothing(data, space, luts, tmp_path, case, needle):
    lut, ort = luts
    budgets = budgets_ms(lut, space, shares=(0.3, 0.8))
    args = {
        "budget twice": ([lut], [budgets[0], budgets[0]]),
        "lut twice": ([lut, lut], budgets),
        "same target": ([lut, Lut(lut.rows, lut.meta, str(tmp_path / "copy.csv"))], budgets),
        "same file name": ([lut, Lut(ort.rows, ort.meta, str(tmp_path / "cpu-torch.csv"))], budgets),
        "too many updates": ([lut], budgets),
    }[case]
    for extra in args[0][1:]:
        if not (tmp_path / extra.path).exists():
            extra.save(extra.path)
    result = search(data, args[0], args[1], tmp_path / "out", *(["--front-arch-updates", "3"] if case == "too many updates" else []))
    assert result.exit_code == 2 and result.output.startswith("error:") and result.output.count("\n") == 1, result.output
    assert needle in result.output
    assert not (tmp_path / "out").exists()
    if case == "same target":  # intended: two profiles of one target, searched side by side
        ok = search(data, args[0], args[1][:1], tmp_path / "out", "--allow-same-target", "--epochs", "2")
        assert ok.exit_code == 0, ok.output
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["front.json", f"{budgets[0]:g}ms-copy", f"{budgets[0]:g}ms-cpu-torch"])


def test_heads_share_the_weights_but_not_the_logits(data, space, luts):
    lut = luts[0]
    config = SearchConfig(epochs=2, warmup_epochs=1, train_batch_size=64, sandwich=True)
    tables = [cost_tables(space, lut, B, config)] * 3
    s = FrontSearcher(space, tables, [100.0, 200.0, 300.0], config, id_counts(PreparedData.open(data), config.split_fraction))
    weights = {id(p) for opt in s.weight_opts for g in opt.param_groups for p in g["params"]}
    logits = [{id(p) for p in h.logits.values()} for h in s.heads]
    assert not any(ids & weights for ids in logits) and len(set.union(*logits)) == sum(map(len, logits))
    s.use(2)
    assert s.net.arch_parameters() == list(s.heads[2].logits.values()) and s.budget_us == 300.0
    assert {id(p) for p in s.net.weight_parameters()} == weights
    # Sampled weight steps (odd steps of the sandwich) draw from the heads in turn.
    assert [s.sampling_head(step) for step in (1, 3, 5, 7)] == [0, 1, 2, 0]


def test_the_pipeline_names_budget_folders_as_the_front_names_its_points():
    from dnas_hw.app.pipeline import budget_label as pipeline_label
    from search.front import budget_label

    for us in (500.0, 1000.0, 1234.5, 73.2, 4000.0):
        assert pipeline_label(us) == budget_label(us)
