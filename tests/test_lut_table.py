"""LUT files and lookups: prediction by hand arithmetic, misses, target checks, merge, show, predict CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli_checks import one_error_line, run
from dnas_hw.dlrm.arch import Arch
from lut.predict import predict
from lut.table import COLUMNS, Lut, LutError, LutMissError, merge, meta_path, overhead_call

# Two features (same table shape, so one key priced twice), bottom 2 -> 4, dot, no hidden top layer.
TOY = Arch(num_dense=2, bottom_mlp=(4,), emb_dims=(2, 2), emb_rows=(5, 5), interaction="dot", top_mlp=())
B = 8
META = {"backend": "onnxruntime", "device": "cpu", "threads": 1}


def toy_rows(batch_size: int = B) -> tuple[pd.DataFrame, float]:
    """A LUT for TOY at one batch size with hand-picked latencies, and the hand sum of its prediction."""
    ops = TOY.ops()
    us = {ops.bottom[0]: 3.0, ops.embeddings[0]: 5.0, ops.interaction: 7.0, ops.top[0]: 11.0,
          overhead_call(2, 2): 13.0}
    rows = pd.DataFrame(
        [(c.op, c.params_json, batch_size, v - 1, v, v + 1, 100) for c, v in us.items()], columns=COLUMNS
    )
    return rows, 3.0 + 2 * 5.0 + 7.0 + 11.0 + 13.0


def save_toy(path, rows=None, **meta):
    rows = toy_rows()[0] if rows is None else rows
    Lut(rows, {**META, **meta}).save(path)
    return path


def test_predict_is_the_hand_sum_with_the_overhead_last(tmp_path):
    rows, hand = toy_rows()
    lut = Lut.load(save_toy(tmp_path / "toy.csv", rows))
    p = predict(lut, TOY, B)
    assert p.total_us == pytest.approx(hand)
    assert [b["slot"] for b in p.breakdown] == ["bottom.0", "emb.0", "emb.1", "interaction", "top.out", "overhead"]
    assert predict(lut, TOY, B, stat="p90_us").total_us == pytest.approx(hand + 6)


def test_predict_cli_text_and_json(tmp_path):
    lut_path = save_toy(tmp_path / "toy.csv")
    TOY.save(tmp_path / "arch.json")
    code, out = run("lut", "predict", lut_path, tmp_path / "arch.json", "--batch-size", B)
    assert code == 0 and out.startswith("0.0440 ms"), out
    code, out = run("lut", "predict", lut_path, tmp_path / "arch.json", "--batch-size", B, "--json")
    assert code == 0, out
    d = json.loads(out)
    assert d["predicted_ms"] == pytest.approx(0.044) and len(d["breakdown"]) == 6


def test_a_miss_names_the_key_and_exits_2(tmp_path):
    rows, _ = toy_rows()
    lut_path = save_toy(tmp_path / "toy.csv", rows[rows["op"] != "interaction_dot"])
    with pytest.raises(LutMissError, match="interaction_dot"):
        predict(Lut.load(lut_path), TOY, B)
    TOY.save(tmp_path / "arch.json")
    one_error_line(*run("lut", "predict", lut_path, tmp_path / "arch.json", "--batch-size", B), "no row for 1 key(s): interaction_dot")
    one_error_line(*run("lut", "predict", lut_path, tmp_path / "arch.json", "--batch-size", 64), "no row for 5 key(s)")


def test_a_lut_from_another_target_is_refused_unless_forced(tmp_path):
    lut_path = save_toy(tmp_path / "toy.csv")
    TOY.save(tmp_path / "arch.json")
    args = ("lut", "predict", lut_path, tmp_path / "arch.json", "--batch-size", B)
    one_error_line(*run(*args, "--device", "cuda"), "measured with device=cpu, but device=cuda was asked")
    one_error_line(*run(*args, "--backend", "torch"), "backend=onnxruntime")
    one_error_line(*run(*args, "--threads", 4), "threads=1")
    assert run(*args, "--device", "cpu", "--threads", 1, "--backend", "onnxruntime")[0] == 0
    assert run(*args, "--device", "cuda", "--force")[0] == 0


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_text("op,params\nlinear,{}\n"), "missing column"),
    (lambda p: p.write_text(p.read_text().replace(",3.0,", ",-3.0,")), "negative"),
    (lambda p: p.write_text(p.read_text().replace(",3.0,", ",abc,")), "malformed value"),
    (lambda p: meta_path(p).unlink(), "LUT metadata not found"),
    (lambda p: p.unlink(), "LUT not found"),
])
def test_damaged_luts_are_one_clear_error(tmp_path, damage, needle):
    lut_path = save_toy(tmp_path / "toy.csv")
    damage(lut_path)
    one_error_line(*run("lut", "show", lut_path), needle)


def test_the_overhead_row_may_be_negative(tmp_path):
    rows, hand = toy_rows()
    rows.loc[rows["op"] == "model_overhead", ["p10_us", "p50_us", "p90_us"]] = -2.0
    lut = Lut.load(save_toy(tmp_path / "toy.csv", rows))
    assert predict(lut, TOY, B).total_us == pytest.approx(hand - 13 - 2)


def test_merge_unions_rows_and_refuses_duplicates_or_other_targets(tmp_path):
    a = Lut.load(save_toy(tmp_path / "a.csv", toy_rows(1)[0]))
    b = Lut.load(save_toy(tmp_path / "b.csv", toy_rows(8)[0]))
    merged = merge([a, b])
    assert merged.batch_sizes() == [1, 8] and len(merged.rows) == 10
    assert merged.meta["merged_from"] == [a.path, b.path]
    with pytest.raises(LutError, match="is in both"):
        merge([a, a])
    c = Lut.load(save_toy(tmp_path / "c.csv", toy_rows(64)[0], device="cuda"))
    with pytest.raises(LutError, match="device=cuda"):
        merge([a, c])
    code, out = run("lut", "merge", tmp_path / "a.csv", tmp_path / "b.csv", "--out", tmp_path / "m.csv")
    assert code == 0, out
    assert Lut.load(tmp_path / "m.csv").batch_sizes() == [1, 8]
    one_error_line(*run("lut", "merge", tmp_path / "a.csv", tmp_path / "c.csv", "--out", tmp_path / "x.csv"), "cannot merge")
    assert not (tmp_path / "x.csv").exists()


def test_show_summarises_device_keys_batches_and_slowest_ops(tmp_path):
    lut_path = save_toy(tmp_path / "toy.csv", device_name="Test CPU", space="toy")
    code, out = run("lut", "show", lut_path, "--top", 2)
    assert code == 0, out
    assert "Test CPU" in out and "4 ops, 5 rows" in out and "batch sizes [8]" in out
    assert "model overhead 13.0 us" in out
    slowest = [line for line in out.splitlines() if line.startswith("    ")]
    assert len(slowest) == 2 and "linear" in slowest[0] and "11.0" in slowest[0]
    assert "no in-model factor" in out


def test_show_names_the_in_model_fit(tmp_path):
    per_kind = {"embedding": 0.9, "linear": 1.2, "interaction_dot": 1.2}
    fit = {"method": "per-kind", "loo_error": {"common": 0.058, "per-kind": 0.039}}
    lut_path = save_toy(tmp_path / "toy.csv", in_model_factor={str(B): per_kind}, in_model_fit={str(B): fit})
    code, out = run("lut", "show", lut_path)
    assert code == 0, out
    assert "in-model factors embedding 0.900, interaction_dot 1.200, linear 1.200" in out
    assert "(per-kind fit; leave-one-out error common 5.8%, per-kind 3.9%)" in out
    old = save_toy(tmp_path / "old.csv", in_model_factor={str(B): 1.05})  # one number per batch size, no fit record
    code, out = run("lut", "show", old)
    assert code == 0 and "in-model factor 1.050;" in out
