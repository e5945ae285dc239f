"""`dnas-hw export`: parity with torch, no Loop, metadata, external data, and bad input."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from dnas_hw import export as export_mod
from dnas_hw.app.cli import main
from dnas_hw.checkpoint import save_checkpoint
from dnas_hw.dlrm.arch import Arch
from dnas_hw.errors import UserError
from dnas_hw.export import (
    PARITY_BATCH_SIZES,
    PARITY_MAX_ABS_DIFF,
    ExportError,
    export_checkpoint,
    model_inputs,
    read_model_info,
)
from dnas_hw.dlrm.model import build_model
from dnas_hw.model import Probability
from dnas_hw.onnx_io import ort_session

CARDS = [10 + 7 * f for f in range(26)]
DATA_META = {"num_dense": 13, "num_sparse": 26, "cardinalities": CARDS}

ARCHS = {
    # Mixed embedding dims, zero-padded to the interaction width, dot interaction.
    "dot-mixed-dims": Arch(13, (16, 8), tuple([2, 4, 8] * 8 + [8, 2]), tuple(CARDS), "dot", (16,)),
    # Concatenation, one bottom layer, two top layers.
    "cat": Arch(13, (4,), (4,) * 26, tuple(CARDS), "cat", (8, 8)),
    # Reduced (hashed) tables: fewer rows than the feature's cardinality; no top hidden layer.
    "dot-reduced-tables": Arch(13, (8,), (4,) * 26, tuple(max(1, c // 3) for c in CARDS), "dot", ()),
}


def _checkpoint(tmp_path, arch: Arch, name: str = "model.pt", seed: int = 0):
    path = tmp_path / name
    save_checkpoint(path, build_model(arch, seed=seed), extra={"data_meta": DATA_META})
    return path


def _op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _leftovers(folder) -> list[str]:
    return [p for p in os.listdir(folder) if p.startswith(".")]


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_export_matches_torch_without_loops(tmp_path, name):
    arch = ARCHS[name]
    ckpt = _checkpoint(tmp_path, arch)
    result = export_checkpoint(ckpt, tmp_path / "m.onnx")

    assert set(result.max_abs_diff) == set(PARITY_BATCH_SIZES)
    assert max(result.max_abs_diff.values()) <= PARITY_MAX_ABS_DIFF
    assert not result.external_data
    model = onnx.load(str(tmp_path / "m.onnx"))
    ops = _op_types(model)
    assert "Loop" not in ops
    assert ops.count("Gather") >= arch.num_sparse  # one Gather per table (the dot interaction adds one)
    assert [i.name for i in model.graph.input] == ["dense", "sparse"]
    assert [o.name for o in model.graph.output] == ["prob"]
    dense, sparse = model.graph.input
    assert dense.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert sparse.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_value for d in dense.type.tensor_type.shape.dim[1:]] == [13]
    assert dense.type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    info = read_model_info(tmp_path / "m.onnx")
    assert info.arch == arch and info.data_meta == DATA_META
    assert _leftovers(tmp_path) == []


def test_exported_model_computes_the_checkpoints_probabilities(tmp_path):
    """Independent of the export's own parity check: compare with a fresh torch model at batch 33."""
    arch = ARCHS["dot-mixed-dims"]
    ckpt = _checkpoint(tmp_path, arch, seed=5)
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    dense, sparse = model_inputs(arch, DATA_META, batch_size=33, seed=99)
    (prob,) = ort_session(str(tmp_path / "m.onnx"), threads=1).run(None, {"dense": dense.numpy(), "sparse": sparse.numpy()})
    with torch.no_grad():
        expected = Probability(build_model(arch, seed=5)).eval()(dense, sparse).numpy()
    assert prob.shape == (33,)
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    assert sparse.max() > max(arch.emb_rows) // 2  # ids spread over the data's range, not zeros


def test_large_models_use_external_data(tmp_path):
    arch = ARCHS["cat"]
    ckpt = _checkpoint(tmp_path, arch)
    # A lowered threshold takes the > 2 GB code path without writing 2 GB.
    result = export_checkpoint(ckpt, tmp_path / "m.onnx", external_data_threshold=1000)
    assert result.external_data
    data = tmp_path / "m.onnx.data"
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and data.is_file()
    lengths = [int({e.key: e.value for e in t.external_data}["length"]) for t in external]
    assert data.stat().st_size >= sum(lengths) >= 4 * max(r * e for r, e in zip(arch.emb_rows, arch.emb_dims))
    assert max(result.max_abs_diff.values()) <= PARITY_MAX_ABS_DIFF
    assert read_model_info(tmp_path / "m.onnx").arch == arch
    assert _leftovers(tmp_path) == []
    # A later small export to the same name removes the stale data file.
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    assert not data.exists()


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path, ARCHS["cat"])
    monkeypatch.setattr(export_mod, "PARITY_MAX_ABS_DIFF", -1.0)
    with pytest.raises(ExportError, match=r"differs from torch by .* at batch size"):
        export_checkpoint(ckpt, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert _leftovers(tmp_path) == []


def test_loops_are_refused():
    body = onnx.helper.make_graph([], "body", [], [])
    loop = onnx.helper.make_node("Loop", ["n", "c"], [], body=body, name="lookup_loop")
    outer = onnx.helper.make_node("If", ["c"], [], then_branch=onnx.helper.make_graph([loop], "then", [], []),
                                  else_branch=onnx.helper.make_graph([], "else", [], []))
    with pytest.raises(ExportError, match="Loop"):
        export_mod._refuse_loops(onnx.helper.make_graph([outer], "g", [], []))


# --------------------------------------------------------------------------- CLI


def _run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.output


def test_cli_writes_and_reports(tmp_path):
    ckpt = _checkpoint(tmp_path, ARCHS["cat"])
    code, out = _run("export", "--checkpoint", ckpt, "--out", tmp_path / "m.onnx", "--opset", 13)
    assert code == 0, out
    assert "parity vs torch" in out and "b512" in out
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 13


def _foreign(path):
    torch.save({"weights": torch.zeros(3)}, path)


def _truncated(path, tmp_path):
    good = _checkpoint(tmp_path, ARCHS["cat"], name="good.pt")
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


@pytest.mark.parametrize("kind", ["missing", "not-ours", "truncated", "text"])
def test_bad_checkpoints_fail_in_one_line(tmp_path, kind):
    ckpt = tmp_path / "bad.pt"
    if kind == "not-ours":
        _foreign(ckpt)
    elif kind == "truncated":
        _truncated(ckpt, tmp_path)
    elif kind == "text":
        ckpt.write_text("hello\n")
    code, out = _run("export", "--checkpoint", ckpt, "--out", tmp_path / "m.onnx")
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(ckpt) in lines[0], out
    assert not (tmp_path / "m.onnx").exists()


def test_read_model_info_refuses_foreign_onnx(tmp_path):
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [vi("x", onnx.TensorProto.FLOAT, [1])], [vi("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save_model(onnx.helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    with pytest.raises(UserError, match="no dnas-hw metadata"):
        read_model_info(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not onnx")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        read_model_info(tmp_path / "junk.onnx")
