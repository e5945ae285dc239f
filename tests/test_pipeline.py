"""`dnas-hw pipeline` end to end on tiny settings, a second run that redoes nothing, and the report pieces."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.app.report import PLOTS, against_reference, mean_probs_by_kind, pareto_front
from dnas_hw.data.ids import IdSource, data_source

TINY = ["--space", "dlrm-tiny", "--rows", "3000", "--batch-size", "16", "--search-epochs", "2", "--train-epochs", "1"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    cache = run.parent / "lut-cache"
    args = ["pipeline", "--out", str(run), "--lut-cache", str(cache), *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return run, args, result.output


@pytest.mark.slow
def test_pipeline_writes_report_plots_and_every_stage(first_run):
    run, _, output = first_run
    report = (run / "report.md").read_text()
    results = json.loads((run / "results.json").read_text())
    for plot in PLOTS:
        assert (run / plot).stat().st_size > 1000
        assert f"]({plot})" in report
    searched = [m for m in results["models"] if m["kind"] == "searched"]
    references = {m["name"] for m in results["models"] if m["kind"] == "reference"}
    # dlrm-tiny cannot express the DLRM reference: the default budgets come from its latency range
    assert len(searched) == len(results["budgets_ms"]) >= 1
    assert references == {"dlrm-kaggle-reference", "space-smallest", "space-largest"}
    for m in results["models"]:
        assert (run / "train" / m["name"] / "model.pt").is_file()
        assert (run / "export" / f"{m['name']}.onnx").is_file()
        assert (run / "bench" / f"{m['name']}.json").is_file()
        assert m["measured_p50_ms"] > 0 and 0 < m["test_auc"] < 1 and m["params"] > 0
    for m in searched:
        assert m["predicted_ms"] is not None and m["budget_ms"] > 0
        assert f"| {m['budget_ms']:.3f} |" in report  # one table row per budget
        epochs = json.loads((run / "search" / f"{m['budget_ms']:g}ms" / "arch_probs_epochs.json").read_text())
        assert [e["epoch"] for e in epochs] == [1, 2]
    assert (run / "lut" / "lut.csv").is_file() and (run / "data" / "meta.json").is_file()
    # Ids as served: the LUT and every bench replay the run's data; each search aims at its budget less the margin.
    ids = data_source(run / "data")
    assert results["lut_meta"]["ids"] == ids.to_meta() and f"ids of the LUT and of the measurements: {ids.describe()}" in report
    for m in results["models"]:
        assert json.loads((run / "bench" / f"{m['name']}.json").read_text())["ids"] == ids.describe()
    for m in searched:
        summary = json.loads((run / "search" / f"{m['budget_ms']:g}ms" / "summary.json").read_text())
        margin = summary["budget_margin"]
        assert margin["quantile"] == "p50" and margin["source"] == "leave-one-out" and margin["references"] == 17
        assert margin["requested_budget_ms"] == pytest.approx(m["budget_ms"])
        assert m["searched_against_ms"] == pytest.approx(m["budget_ms"] / (1 + margin["margin"]))
        assert m["within_budget"] == (m["measured_p50_ms"] <= m["budget_ms"])
    assert "wrote" in output
    # The budgets were one front search: its points are the searched models' folders, each within its budget.
    front = json.loads((run / "search" / "front.json").read_text())
    assert [p["name"] for p in front["points"]] == [f"{b:g}ms" for b in results["budgets_ms"]]
    assert results["front"]["points"][0]["supernet_val_logloss"] == front["points"][0]["supernet_val_logloss"]
    assert all(p["predicted_latency_ms"] <= p["searched_against_ms"] for p in front["points"])
    assert f"## The front: {len(searched)} budgets from one supernet" in report
    assert "## Searched models against the DLRM Kaggle reference" in report
    assert report.count("the reference") >= len(searched)


@pytest.mark.slow
def test_second_run_redoes_no_stage(first_run, monkeypatch):
    run, args, _ = first_run
    import dnas_hw.app.bench
    import dnas_hw.data.synth
    import dnas_hw.export
    import dnas_hw.train
    import profiler.run
    import search.front
    import search.margin
    import search.run

    def refuse(*a, **k):
        raise AssertionError("a finished stage ran again")

    for module, name in [(dnas_hw.data.synth, "synth"), (profiler.run, "profile_to_lut"), (search.run, "run_search"),
                         (search.margin, "run_search_within"), (search.front, "run_front"),
                         (dnas_hw.train, "train_arch"), (dnas_hw.export, "export_checkpoint"), (dnas_hw.app.bench, "bench")]:
        monkeypatch.setattr(module, name, refuse)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.suffix in (".pt", ".onnx", ".csv") or p.name == "summary.json"}
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "done earlier" in result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_a_new_run_reuses_the_cached_lut(first_run, tmp_path, monkeypatch):
    run, args, _ = first_run
    import profiler.run
    from dnas_hw.app.pipeline import PipelineOptions, stage_lut
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.space import get_space

    monkeypatch.setattr(profiler.run, "profile_to_lut", lambda *a, **k: pytest.fail("profiled although a cached LUT fits"))
    opts = PipelineOptions(out=tmp_path / "run2", space="dlrm-tiny", batch_size=16, lut_cache=run.parent / "lut-cache")
    space = get_space("dlrm-tiny", PreparedData.open(run / "data").cardinalities)
    # The same rows made again elsewhere are the same ids (data_source compares the folders' meta.json).
    copy = shutil.copytree(run / "data", tmp_path / "data-copy")
    lut = stage_lut(tmp_path / "run2", space, opts, data_source(copy))
    assert lut.read_text() == (run / "lut" / "lut.csv").read_text()
    # Another serving batch size, or spread ids, are not covered by the cache: they must be profiled.
    with pytest.raises(pytest.fail.Exception, match="profiled although"):
        stage_lut(tmp_path / "run3", space, PipelineOptions(**{**opts.__dict__, "out": tmp_path / "run3", "batch_size": 8}),
                  data_source(copy))
    with pytest.raises(pytest.fail.Exception, match="profiled although"):
        stage_lut(tmp_path / "run4", space, opts, IdSource())


@pytest.mark.slow
def test_rerun_with_other_options_is_refused(first_run):
    run, args, _ = first_run
    changed = [a if a != "3000" else "5000" for a in args]
    result = CliRunner().invoke(main, changed)
    assert result.exit_code == 2
    assert "made with other options" in result.output and "rows" in result.output


def test_default_budgets_are_the_reference_latency_and_half_of_it():
    from dnas_hw.app.pipeline import default_budgets_us, round_up
    from dnas_hw.dlrm.arch import dlrm_kaggle_reference
    from dnas_hw.space import get_space
    from lut.predict import predict
    from search_fixtures import toy_lut

    space = get_space("dlrm-kaggle", cardinalities=[40 + f for f in range(26)])
    lut = toy_lut(space, 16)
    reference = predict(lut, dlrm_kaggle_reference(space.cardinalities), 16).total_us
    budgets, how = default_budgets_us(lut, space, 16)
    assert budgets == (round_up(reference), round_up(reference / 2)) and "reference" in how
    assert reference <= budgets[0] < reference * 1.01
    assert round_up(1234.01) == 1240.0 and round_up(1230.0) == 1230.0 and round_up(0.98765) == 0.988


def test_the_verdict_against_the_reference():
    ref = {"measured_p50_ms": 1.0, "test_logloss": 0.44}
    assert against_reference({"measured_p50_ms": 0.9, "test_logloss": 0.43}, ref).startswith("beats")
    assert against_reference({"measured_p50_ms": 1.1, "test_logloss": 0.43}, ref).startswith("more accurate")
    assert against_reference({"measured_p50_ms": 0.5, "test_logloss": 0.45}, ref).startswith("faster")
    assert against_reference({"measured_p50_ms": 1.5, "test_logloss": 0.45}, ref).startswith("loses")


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.50), (2.0, 0.45), (1.5, 0.55), (3.0, 0.46), (4.0, 0.40)]
    assert pareto_front(points) == [(1.0, 0.50), (2.0, 0.45), (4.0, 0.40)]


def test_mean_probs_by_kind_averages_slots_and_ranks_table_sizes():
    probs = {
        "bottom.0": {"8": 0.2, "16": 0.8},
        "bottom.1": {"8": 0.6, "16": 0.4},
        "emb_rows.0": {"100": 0.9, "10": 0.1},
        "emb_rows.1": {"50": 0.5, "5": 0.5},
        "interaction": {"dot": 0.7, "cat": 0.3},
    }
    got = mean_probs_by_kind(probs)
    assert got["bottom"] == pytest.approx({"8": 0.4, "16": 0.6})
    assert got["emb_rows"] == pytest.approx({"size 1 (largest)": 0.7, "size 2": 0.3})
    assert got["interaction"] == pytest.approx({"dot": 0.7, "cat": 0.3})


def test_given_data_folder_is_used_in_place_and_rows_do_not_matter(tmp_path):
    from dnas_hw.app.pipeline import PipelineOptions, stage_data

    data = tmp_path / "prepared"
    a = PipelineOptions(out=tmp_path / "a", data_dir=data, rows=1000)
    b = PipelineOptions(out=tmp_path / "b", data_dir=data, rows=5000)
    assert stage_data(tmp_path / "a", a) == data and not (tmp_path / "a" / "data").exists()
    assert a.identity() == b.identity() and a.identity()["data_dir"] == str(data.resolve())


@pytest.mark.parametrize("budget", ["0.5", "fast", "-1ms"])
def test_budgets_need_a_unit_and_a_positive_value(tmp_path, budget):
    result = CliRunner().invoke(main, ["pipeline", "--out", str(tmp_path / "run"), "--latency-budget", budget])
    assert result.exit_code == 2 and "--latency-budget" in result.output
    assert not (tmp_path / "run").exists()


def test_the_report_tables_the_front_and_draws_it_through_the_searched_points(tmp_path):
    """report.md gets a row per front point (supernet val logloss beside the retrained test logloss),
    and the Pareto plot a line through the searched models labelled as one supernet."""
    import matplotlib

    from dnas_hw.app.report import markdown, plot_pareto

    matplotlib.use("Agg")
    arch = {"num_dense": 13, "bottom_mlp": [64, 16], "emb_dims": [16] * 26, "emb_rows": [10] * 26, "interaction": "dot", "top_mlp": [64]}

    def model(name, kind, budget, p50, logloss):
        return {"name": name, "kind": kind, "budget_ms": budget, "searched_against_ms": budget and budget * 0.8,
                "predicted_ms": p50, "measured_p50_ms": p50, "measured_p90_ms": p50 * 1.1, "within_budget": True if budget else None,
                "test_logloss": logloss, "test_auc": 0.7, "params": 1000, "embedding_bytes": 2**20, "arch": arch,
                "search_status": "ok" if budget else None}

    models = [model("budget-1ms", "searched", 1.0, 0.7, 0.45), model("budget-0.5ms", "searched", 0.5, 0.4, 0.47),
              model("dlrm-kaggle-reference", "reference", None, 1.2, 0.44), model("space-smallest", "reference", None, 0.2, 0.55),
              model("space-largest", "reference", None, 9.0, 0.46)]
    front = {"elapsed_s": 120.0, "arch_updates_per_batch": 2, "points": [
        {"name": "1ms", "budget_ms": 1.0, "searched_against_ms": 0.8, "predicted_latency_ms": 0.7, "within_budget": True, "supernet_val_logloss": 0.481},
        {"name": "0.5ms", "budget_ms": 0.5, "searched_against_ms": 0.4, "predicted_latency_ms": 0.39, "within_budget": True, "supernet_val_logloss": 0.502}]}
    results = {"data": "d", "space": "dlrm-kaggle", "lut": "l", "lut_meta": {}, "batch_size": 64, "budgets_ms": [1.0, 0.5],
               "options": {"backend": "onnxruntime"}, "models": models, "front": front}
    report = markdown(results)
    assert "## The front: 2 budgets from one supernet" in report
    assert "| 1.000 | 0.800 | 0.700 | 0.4810 | 0.4500 |" in report and "| 0.500 | 0.400 | 0.390 | 0.5020 | 0.4700 |" in report
    ax = plot_pareto(models, 64, one_supernet=True).axes[0]
    line = next(l for l in ax.get_lines() if l.get_label() == "searched front (one supernet)")
    assert list(line.get_xdata()) == [0.4, 0.7] and list(line.get_ydata()) == [0.47, 0.45]
    assert {"dlrm-kaggle-reference", "space-smallest", "space-largest"} <= set(ax.get_legend_handles_labels()[1])
    assert "## The front" not in markdown({**results, "front": None})
    # A searched arch the supernet scored no better than the base rate is called out.
    assert "did not learn this data" not in report
    unlearned = [{**m, "supernet_normalized_entropy": 1.02} if m["name"] == "budget-1ms" else m for m in models]
    assert "**The supernet did not learn this data** (NE >= 1 at the 1 budget(s) 1.000 ms)" in markdown({**results, "models": unlearned})
    # A model the search returned from another finalist than its own argmax says which.
    assert "(finalist `" not in report
    settled = [{**m, "chosen_finalist": "incumbent dlrm-kaggle reference"} if m["name"] == "budget-1ms" else m for m in models]
    assert "- **budget-1ms** (finalist `incumbent dlrm-kaggle reference`: it trained to a lower logloss" in markdown({**results, "models": settled})
