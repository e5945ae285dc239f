"""`dnas-hw bench`: report keys, both backends, the LUT comparison, and bad input."""

from __future__ import annotations

import json

import onnx
import pandas as pd
import pytest
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.checkpoint import save_checkpoint
from dnas_hw.dlrm.arch import Arch
from dnas_hw.dlrm.model import build_model
from dnas_hw.export import export_checkpoint
from lut.table import COLUMNS, Lut, overhead_call

CARDS = [10 + 7 * f for f in range(26)]
ARCH = Arch(13, (8,), (4, 8) * 13, tuple(CARDS), "dot", (8,))
OTHER = Arch(13, (8,), (8,) * 26, tuple(CARDS), "cat", (8,))
BATCHES = (1, 8)
REPORT_KEYS = {"model", "backend", "device", "threads", "lut", "ids", "lut_ids", "arch", "machine", "date", "results"}
ROW_KEYS = {"batch_size", "p10_us", "p50_us", "p90_us", "repeats", "throughput_per_s", "predicted_us", "error_pct"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    save_checkpoint(folder / "model.pt", build_model(ARCH, seed=0), extra={"data_meta": {"num_dense": 13, "num_sparse": 26, "cardinalities": CARDS}})
    export_checkpoint(folder / "model.pt", folder / "m.onnx")
    return folder


def _toy_lut(path, arch: Arch, us_per_op: float, **meta) -> float:
    """A LUT holding every key of `arch` (and the overhead) at BATCHES, each `us_per_op`; returns the predicted total."""
    calls = [c for _, c in arch.ops().named()] + [overhead_call(arch.num_dense, arch.num_sparse)]
    unique = {c.key(b) for c in calls for b in BATCHES}
    rows = pd.DataFrame([(op, params, b, us_per_op, us_per_op, us_per_op, 10) for op, params, b in sorted(unique)], columns=COLUMNS)
    Lut(rows, {"backend": "onnxruntime", "device": "cpu", "threads": 1, **meta}).save(path)
    return us_per_op * len(calls)


def _run(*args):
    result = CliRunner().invoke(main, ["bench", *map(str, args)])
    return result.exit_code, result.output


@pytest.mark.slow
def test_json_report_keys_and_figures(exported, tmp_path):
    code, out = _run(exported / "m.onnx", "--batch-size", "1,8", "--json", tmp_path / "b.json")
    assert code == 0, out
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report) == REPORT_KEYS
    assert report["backend"] == "onnxruntime" and report["lut"] is None and report["lut_ids"] is None
    assert report["ids"].startswith("spread")
    assert Arch.from_dict(report["arch"]) == ARCH
    assert [r["batch_size"] for r in report["results"]] == list(BATCHES)
    for r in report["results"]:
        assert set(r) == ROW_KEYS
        assert 0 < r["p10_us"] <= r["p50_us"] <= r["p90_us"] and r["repeats"] >= 5
        assert r["throughput_per_s"] == pytest.approx(r["batch_size"] / r["p50_us"] * 1e6)
        assert r["predicted_us"] is None and r["error_pct"] is None
    assert "p50 ms" in out


@pytest.mark.slow
def test_lut_prediction_and_error(exported, tmp_path):
    predicted = _toy_lut(tmp_path / "lut.csv", ARCH, us_per_op=3.0)
    code, out = _run(exported / "m.onnx", "--batch-size", "1,8", "--lut", tmp_path / "lut.csv", "--json", tmp_path / "b.json")
    assert code == 0, out
    for r in json.loads((tmp_path / "b.json").read_text())["results"]:
        assert r["predicted_us"] == pytest.approx(predicted)
        assert r["error_pct"] == pytest.approx((predicted - r["p50_us"]) / r["p50_us"] * 100)
    assert "LUT ms" in out


@pytest.mark.slow
def test_torch_backend_times_the_checkpoint(exported, tmp_path):
    code, out = _run(exported / "m.onnx", "--backend", "torch", "--checkpoint", exported / "model.pt", "--batch-size", "8",
                     "--json", tmp_path / "b.json")
    assert code == 0, out
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["backend"] == "torch" and report["results"][0]["p50_us"] > 0


def _one_error_line(code, out, *fragments):
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out
    for f in fragments:
        assert f in lines[0], out


def test_torch_backend_needs_the_matching_checkpoint(exported, tmp_path):
    _one_error_line(*_run(exported / "m.onnx", "--backend", "torch"), "--checkpoint")
    save_checkpoint(tmp_path / "other.pt", build_model(OTHER, seed=0))
    _one_error_line(*_run(exported / "m.onnx", "--backend", "torch", "--checkpoint", tmp_path / "other.pt"), "arch differs")


def test_onnx_without_our_metadata_is_refused(exported, tmp_path):
    model = onnx.load(str(exported / "m.onnx"))
    del model.metadata_props[:]
    onnx.save_model(model, str(tmp_path / "plain.onnx"))
    _one_error_line(*_run(tmp_path / "plain.onnx", "--lut", tmp_path / "lut.csv"), "no dnas-hw metadata")
    _one_error_line(*_run(tmp_path / "missing.onnx"), "not found")


@pytest.mark.slow
def test_lut_of_another_target_or_missing_keys_is_refused(exported, tmp_path):
    _toy_lut(tmp_path / "cuda.csv", ARCH, 1.0, device="cuda")
    _one_error_line(*_run(exported / "m.onnx", "--lut", tmp_path / "cuda.csv"), "device=cuda", "--force")
    code, out = _run(exported / "m.onnx", "--lut", tmp_path / "cuda.csv", "--force", "--batch-size", "1,8")
    assert code == 0, out
    _toy_lut(tmp_path / "threads.csv", ARCH, 1.0, threads=2)
    _one_error_line(*_run(exported / "m.onnx", "--lut", tmp_path / "threads.csv"), "threads=2")
    _toy_lut(tmp_path / "other.csv", OTHER, 1.0)
    _one_error_line(*_run(exported / "m.onnx", "--lut", tmp_path / "other.csv", "--batch-size", "8"), "no row for")
    _toy_lut(tmp_path / "lut.csv", ARCH, 1.0)
    _one_error_line(*_run(exported / "m.onnx", "--lut", tmp_path / "lut.csv", "--batch-size", "64"), "no row for")


@pytest.mark.slow
def test_with_data_the_calls_replay_its_rows_and_a_lut_of_other_ids_is_refused(exported, synth_dir, tmp_path, monkeypatch):
    import dnas_hw.inputs
    from dnas_hw.data.ids import data_source

    source = data_source(synth_dir)
    pools = []
    real = dnas_hw.inputs.dlrm_input_pool
    monkeypatch.setattr(dnas_hw.inputs, "dlrm_input_pool", lambda *a, **k: pools.append(k.get("ids")) or real(*a, **k))
    code, out = _run(exported / "m.onnx", "--batch-size", "8", "--data", synth_dir, "--json", tmp_path / "b.json")
    assert code == 0, out
    assert pools == [source] and f"ids {source.describe()}" in out
    assert json.loads((tmp_path / "b.json").read_text())["ids"] == source.describe()
    # A LUT without a recorded source was profiled with spread ids: not comparable with these calls.
    _toy_lut(tmp_path / "spread.csv", ARCH, 1.0)
    _one_error_line(*_run(exported / "m.onnx", "--batch-size", "8", "--data", synth_dir, "--lut", tmp_path / "spread.csv"),
                    "profiled with ids spread", "--ids spread, or --force")
    code, out = _run(exported / "m.onnx", "--batch-size", "8", "--data", synth_dir, "--lut", tmp_path / "spread.csv",
                     "--force", "--json", tmp_path / "f.json")
    assert code == 0 and "warning: " in out, out
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["lut_ids"].startswith("spread") and report["ids"] == source.describe()
    _toy_lut(tmp_path / "data.csv", ARCH, 1.0, ids=source.to_meta())
    code, out = _run(exported / "m.onnx", "--batch-size", "8", "--data", synth_dir, "--lut", tmp_path / "data.csv")
    assert code == 0 and "warning" not in out, out
    _one_error_line(*_run(exported / "m.onnx", "--batch-size", "8", "--lut", tmp_path / "data.csv"),
                    "these lookups replay spread", f"--data {source.path}")
    _one_error_line(*_run(exported / "m.onnx", "--ids", "data"), "--ids data needs --data")
