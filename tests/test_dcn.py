"""The DCN-v2 example family (examples/dcn): ops, arch, space, model, and the core workflow on it.

`examples.dcn` is imported by the fixture, not at collection: its ops join the
global registry, and `tests/test_ops.py` collects every registered op.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import onnx
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.errors import UserError
from dnas_hw.family import PLUGINS_ENV, arch_from_dict, family_of, load_arch
from dnas_hw.ops import OpCall
from dnas_hw.space import SKIP, SpaceError, get_space
from op_checks import assert_onnx_round_trip
from profiler.run import profile_to_lut

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
BATCH = 5


@pytest.fixture(scope="module")
def small_arch(dcn):
    return dcn.DCNArch(num_dense=13, emb_dim=4, emb_rows=tuple(40 - f for f in range(26)), cross_ranks=(4, 2), deep_mlp=(16,))


# --------------------------------------------------------------------------- ops

# op -> (params, FLOPs at BATCH, parameter count), by hand.
OP_CASES = {
    # A concatenation: no arithmetic, no weights.
    "dcn_stack": ({"num_dense": 3, "num_sparse": 2, "dim": 4}, 0, 0),
    # V^T x and U(.) are 6x2 multiply-adds each (x2 FLOPs), then 6 products and 6 adds per sample;
    # weights: V 6x2, U 2x6 and its 6 biases.
    "cross_lowrank": ({"width": 6, "rank": 2}, BATCH * (2 * 2 * 6 * 2 + 2 * 6), 6 * 2 + 2 * 6 + 6),
}


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_op_shape_flops_params_by_hand(dcn, op):
    params, flops, num_params = OP_CASES[op]
    call = OpCall.make(op, **params)
    with torch.no_grad():
        out = call.build()(*call.example_inputs(BATCH, torch.Generator().manual_seed(0)))
    assert out.shape == (BATCH, call.output_width())
    assert call.flops(BATCH) == flops and call.num_params() == num_params
    assert sum(p.numel() for p in call.build().parameters()) == num_params


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_op_onnx_round_trip_at_another_batch_size(dcn, op):
    assert_onnx_round_trip(OpCall.make(op, **OP_CASES[op][0]), BATCH)


def test_cross_layer_by_hand(dcn):
    layer = OpCall.make("cross_lowrank", width=2, rank=1).build()
    with torch.no_grad():
        layer.down.weight.copy_(torch.tensor([[1.0, 1.0]]))  # V^T x = x_1 + x_2
        layer.up.weight.copy_(torch.tensor([[2.0], [-1.0]]))  # U = (2, -1)
        layer.up.bias.copy_(torch.tensor([0.5, 0.0]))
        x0, x = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 1.0]])
        # U V^T x + b = (2*3 + 0.5, -3) = (6.5, -3); x0 * that + x = (6.5 + 2, -9 + 1).
        torch.testing.assert_close(layer(x0, x), torch.tensor([[8.5, -8.0]]))


# --------------------------------------------------------------------------- arch


def test_arch_json_names_its_family_and_round_trips(dcn, small_arch, tmp_path):
    d = small_arch.to_dict()
    assert d["family"] == "dcn" and d["cross_ranks"] == [4, 2]
    assert arch_from_dict(json.loads(small_arch.to_json())) == small_arch
    small_arch.save(tmp_path / "a.json")
    assert load_arch(tmp_path / "a.json") == small_arch and family_of(small_arch).name == "dcn"
    assert small_arch.width == 13 + 26 * 4
    assert [s for s, _ in small_arch.ops().named()][-5:] == ["stack", "cross.0", "cross.1", "deep.0", "deep.out"]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"cross_ranks": [200]}, "cross_ranks[0]: rank 200 exceeds the cross width 117"),
        ({"emb_dim": 0}, "emb_dim"),
        ({"deep_mlp": "16"}, "deep_mlp: expected a list"),
        ({"emb_rows": []}, "emb_rows"),
        ({"family": "dlrm-ish"}, "unknown model family"),
        ({"extra": 1}, "unknown key(s) ['extra']"),
    ],
)
def test_bad_arch_fields_are_named(dcn, small_arch, change, words):
    with pytest.raises(UserError) as e:
        arch_from_dict({**small_arch.to_dict(), **change})
    assert words in str(e.value)


# --------------------------------------------------------------------------- space


def test_sampled_archs_are_built_from_op_calls_and_bounded(dcn_tiny):
    calls = dcn_tiny.op_calls()
    big, small = dcn_tiny.largest(), dcn_tiny.smallest()
    assert big.cross_ranks == (4, 4) and big.deep_mlp == (16, 16) and small.cross_ranks == () and small.deep_mlp == ()
    rng = random.Random(0)
    for arch in [dcn_tiny.sample(rng) for _ in range(40)] + [big, small]:
        used = {c for _, c in arch.ops().named()}
        assert used <= calls, sorted(map(str, used - calls))[:3]
        assert small.flops(64) <= arch.flops(64) <= big.flops(64)
        assert small.num_params() <= arch.num_params() <= big.num_params()


def test_key_set_stays_small(dcn_tiny):
    ops = {}
    for call in dcn_tiny.op_calls():
        ops.setdefault(call.op, set()).add(call)
    widths = {13 + 26 * e for e in dcn_tiny.emb_dims}
    # Cross keys: one per (width, rank), however many layers are stacked.
    assert {(c.params["width"], c.params["rank"]) for c in ops["cross_lowrank"]} == {(w, r) for w in widths for r in (2, 4)}
    assert len(ops["dcn_stack"]) == 2
    # Deep layers: inputs from {W} and the widths; outputs the widths, or the logit.
    assert {c.params["in_features"] for c in ops["linear"]} == widths | {8, 16}
    slots = {s.name: s.choices for s in dcn_tiny.slots()}
    assert slots["cross.0"] == (2, 4, SKIP) and slots["emb_dim"] == (2, 4) and len(slots) == 1 + 26 + 2 + 2


def test_space_toml_with_family_key(dcn):
    space = get_space(str(ROOT / "examples/dcn/space.toml"))
    assert isinstance(space, dcn.DCNSpace) and space.cross_ranks == (16, 32, 64) and space.num_sparse == 26
    assert space.fingerprint() != get_space("dcn-kaggle").fingerprint()
    bound = space.bind([5] * 26)
    assert bound.rows_choices(0) == (5, 1) and bound.fingerprint() != space.fingerprint()


@pytest.mark.parametrize(
    "body, words",
    [
        ("cross_ranks = [4]\nwidth = 3\n", "unknown key(s) ['width']"),
        ("emb_dims = [1]\ncross_ranks = [64]\n", "exceed the narrowest cross width 39"),
        ("deep_widths = []\n", "deep_widths must be a non-empty list"),
        ("emb_row_fractions = [0]\n", "emb_row_fractions"),
    ],
)
def test_bad_space_files_name_the_key(dcn, tmp_path, body, words):
    path = tmp_path / "bad.toml"
    path.write_text('family = "dcn"\n' + body)
    with pytest.raises(SpaceError) as e:
        get_space(str(path))
    assert words in str(e.value)


# --------------------------------------------------------------------------- the core workflow on a DCN


def test_model_matches_its_arch(dcn, small_arch):
    from dnas_hw.family import build_model

    model = build_model(small_arch, seed=0)
    assert isinstance(model, dcn.DCN) and sum(p.numel() for p in model.parameters()) == small_arch.num_params()
    dense, sparse = torch.randn(BATCH, 13), torch.randint(0, 1000, (BATCH, 26))
    assert model(dense, sparse).shape == (BATCH,)
    # The packed training route (the core's SparseArch) computes what eval's per-feature route does.
    with torch.no_grad():
        train_out = model.train()(dense, sparse)
        torch.testing.assert_close(train_out, model.eval()(dense, sparse))


def test_lut_prediction_sums_the_dcn_ops(dcn, small_arch):
    from lut.predict import predict
    from lut.table import COLUMNS, Lut, overhead_call

    named = small_arch.ops().named()
    calls = {c for _, c in named} | {overhead_call(13, 26)}
    rows = [(c.op, c.params_json, 8, i, 10.0 * (i + 1), 20 * i, 50) for i, c in enumerate(sorted(calls, key=str))]
    lut = Lut(pd.DataFrame(rows, columns=COLUMNS), meta={})
    # Every named op is a distinct key here (no two tables alike), so the prediction is the sum of all rows.
    assert len(named) == len({c for _, c in named})
    expected = sum(us for _, _, _, _, us, _, _ in rows)
    assert predict(lut, small_arch, 8).total_us == pytest.approx(expected)


@pytest.mark.slow
def test_train_export_and_bench_a_dcn_through_the_cli(dcn, small_arch, synth_dir, tmp_path, monkeypatch):
    from dnas_hw.checkpoint import load_checkpoint
    from dnas_hw.export import export_checkpoint

    monkeypatch.setenv(PLUGINS_ENV, "examples.dcn")
    small_arch.save(tmp_path / "arch.json")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(synth_dir), "--arch", str(tmp_path / "arch.json"), "--out", str(run)])
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["val"]["logloss"] < 1
    model, extra = load_checkpoint(run / "model.pt")
    assert isinstance(model, dcn.DCN) and model.arch == small_arch and extra["data_meta"]["num_sparse"] == 26
    exported = export_checkpoint(run / "model.pt", tmp_path / "dcn.onnx")
    assert max(exported.max_abs_diff.values()) <= 1e-5
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "dcn.onnx")).metadata_props}
    assert json.loads(props["dnas_hw.arch"])["family"] == "dcn"
    # bench reads the arch back from the ONNX metadata, through its family.
    benched = CliRunner().invoke(main, ["bench", str(tmp_path / "dcn.onnx"), "--batch-size", "4", "--json", str(tmp_path / "b.json")])
    assert benched.exit_code == 0, (benched.output, benched.exception)
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["arch"] == small_arch.to_dict() and report["results"][0]["p50_us"] > 0


@pytest.mark.slow
def test_profile_a_dcn_space_through_the_registry(dcn, tmp_path):
    from lut.predict import predict
    from lut.table import Lut

    path = tmp_path / "micro.toml"
    path.write_text('family = "dcn"\nemb_dims = [2]\nemb_row_fractions = [1.0]\ncross_layers = 1\ncross_ranks = [2]\n'
                    "deep_layers = 1\ndeep_widths = [8]\ncardinalities = [" + ", ".join(["20"] * 26) + "]\n")
    space = get_space(str(path))
    profile_to_lut(space, tmp_path / "lut.csv", backend="torch", device="cpu", threads=1, batch_sizes=[4])
    lut = Lut.load(tmp_path / "lut.csv")
    for arch in (space.largest(), space.smallest()):
        assert predict(lut, arch, 4).total_us > 0
