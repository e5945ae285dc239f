"""dcn-tiny through the whole workflow from the command line: data synth -> profile -> search with a
budget (interrupted and resumed) -> train -> export -> bench, with DNAS_HW_PLUGINS=examples.dcn."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.data.folder import PreparedData
from dnas_hw.family import PLUGINS_ENV, load_arch
from dnas_hw.space import get_space
from lut.margin import budget_margin
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.extremes import extreme_arch
from search.family_search import latency_table
from search.layout import Layout
from search.margin import run_search_within
from search_fixtures import one_thread  # noqa: F401 (autouse fixture)

B = 16
OPTIONS = ["--epochs", "2", "--train-batch-size", "128", "--seed", "3"]


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.mark.slow
def test_dcn_tiny_profile_search_train_export_bench(tmp_path, monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "examples.dcn")
    data, lut_path = tmp_path / "data", tmp_path / "lut.csv"
    _cli("data", "synth", "--rows", "2000", "--scale", "0.0001", "--out", str(data))
    _cli("profile", "--space", "dcn-tiny", "--data", str(data), "--backend", "torch", "--batch-size", str(B), "--out", str(lut_path))
    space = get_space("dcn-tiny", cardinalities=PreparedData.open(data).cardinalities)
    lut = Lut.load(lut_path)
    table = latency_table(space, lut, B)
    fastest, _ = extreme_arch(table, Layout(space), cheapest=True)
    slowest, _ = extreme_arch(table, Layout(space), cheapest=False)
    # The search aims at the budget less the LUT's margin: that effective budget lies 40% of the way up.
    margin = budget_margin(lut, B).margin
    budget_us = float(f"{(fastest + 0.4 * (slowest - fastest)) * (1 + margin):.3f}")
    budget = ["--latency-budget", f"{budget_us:.3f}us", "--batch-size", str(B)]

    # Interrupted after one epoch (the API's stop_after), then resumed from the command line.
    config = SearchConfig.from_dict({"epochs": 2, "train_batch_size": 128, "seed": 3, "stop_after": 1})
    # The command's own path: the budget less the LUT's margin (search.margin), so the command resumes it.
    stopped = run_search_within(data, space, lut, budget_us=budget_us, batch_size=B, out=tmp_path / "s", config=config)
    assert stopped == {"stopped_after_epoch": 1, "epochs": 2} and (tmp_path / "s" / "search_state.pt").exists()
    _cli("search", "--data", str(data), "--space", "dcn-tiny", "--lut", str(lut_path), *budget, "--out", str(tmp_path / "s"),
         "--resume", *OPTIONS)
    _cli("search", "--data", str(data), "--space", "dcn-tiny", "--lut", str(lut_path), *budget, "--out", str(tmp_path / "once"),
         *OPTIONS)
    run = tmp_path / "s"
    assert (run / "arch.json").read_text() == (tmp_path / "once" / "arch.json").read_text()  # resumed = uninterrupted
    assert len(pd.read_csv(run / "search_log.csv")) == 2 and not (run / "search_state.pt").exists()
    summary = json.loads((run / "summary.json").read_text())
    arch = load_arch(run / "arch.json")
    assert type(arch).__name__ == "DCNArch" and arch == space.arch(summary["choices"])
    probs = json.loads((run / "arch_probs.json").read_text())
    assert set(probs) == {s.name for s in space.slots()} and all(sum(p.values()) == pytest.approx(1) for p in probs.values())
    # Within the effective budget by the LUT, and not trivially: it excludes the slowest arch.
    effective_us = summary["budget_margin"]["effective_budget_ms"] * 1000
    assert effective_us == pytest.approx(budget_us / (1 + margin)) and summary["latency_budget_ms"] * 1000 == pytest.approx(effective_us)
    assert predict(lut, arch, B).total_us <= effective_us and summary["within_budget"]
    assert predict(lut, space.largest(), B).total_us > effective_us

    _cli("train", "--data", str(data), "--arch", str(run / "arch.json"), "--out", str(run / "final"))
    assert 0 < json.loads((run / "final" / "metrics.json").read_text())["val"]["logloss"] < 1
    _cli("export", "--checkpoint", str(run / "final" / "model.pt"), "--out", str(tmp_path / "m.onnx"))
    _cli("bench", str(tmp_path / "m.onnx"), "--batch-size", str(B), "--backend", "onnxruntime", "--json", str(tmp_path / "b.json"))
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["arch"] == arch.to_dict() and report["results"][0]["p50_us"] > 0


@pytest.mark.slow
def test_a_dcn_search_missing_lut_rows_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "examples.dcn")
    data = tmp_path / "data"
    _cli("data", "synth", "--rows", "300", "--scale", "0.0001", "--out", str(data))
    lut_path = tmp_path / "lut.csv"
    _cli("profile", "--space", "dlrm-tiny", "--data", str(data), "--backend", "torch", "--batch-size", str(B), "--out", str(lut_path))
    result = CliRunner().invoke(main, ["search", "--data", str(data), "--space", "dcn-tiny", "--lut", str(lut_path),
                                       "--latency-budget", "1ms", "--batch-size", str(B), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error:")
    assert not (tmp_path / "r").exists()
