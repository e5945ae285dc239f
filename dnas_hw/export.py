"""A trained checkpoint as a deployable ONNX model, checked against torch before it is written.

The model: inputs `dense` float32 [B, num_dense] and `sparse` int64 [B, num_sparse],
output `prob` float32 [B] (the click probability), batch axis dynamic. Embedding
lookups are single `Gather` nodes; a `Loop` in the graph is refused, since it
would run many times slower than the model the LUT priced.

The arch JSON and the training data's meta travel inside the file as metadata
properties (`dnas_hw.arch`, `dnas_hw.data_meta`), so `dnas-hw bench` can price the
model from a LUT and draw inputs like the training data with nothing but the
ONNX file.

Weights beyond protobuf's 2 GB limit are written as ONNX external data in one
file beside the model (`MODEL.onnx.data`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from dnas_hw.arch import ArchMethods
from dnas_hw.checkpoint import load_checkpoint
from dnas_hw.data.folder import MAX_CARDINALITY
from dnas_hw.errors import UserError
from dnas_hw.family import arch_from_dict
from dnas_hw.files import check_writable, first_line, write_error
from dnas_hw.inputs import dlrm_input_pool
from dnas_hw.model import Probability
from dnas_hw.onnx_io import DEFAULT_OPSET, export_module, ort_session

INPUT_NAMES = ("dense", "sparse")
OUTPUT_NAMES = ("prob",)
FORMAT = "dnas-hw-onnx/1"
META_FORMAT = "dnas_hw.format"
META_ARCH = "dnas_hw.arch"
META_DATA = "dnas_hw.data_meta"
PARITY_BATCH_SIZES = (1, 7, 512)
PARITY_MAX_ABS_DIFF = 1e-5
# Protobuf cannot serialise a message of 2 GiB or more; the margin leaves room for the graph.
EXTERNAL_DATA_THRESHOLD_BYTES = 2**31 - 2**26


class ExportError(UserError):
    """An export that must not be shipped: failed check, parity or a forbidden op."""


@dataclass(frozen=True)
class OnnxModelInfo:
    """What `dnas-hw export` stored in an ONNX file's metadata."""

    arch: ArchMethods
    data_meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    arch: ArchMethods
    opset: int
    external_data: bool
    max_abs_diff: dict[int, float]  # batch size -> max |onnxruntime - torch|
    bytes_written: int


# --------------------------------------------------------------------------- inputs


def sparse_id_ranges(arch: ArchMethods, data_meta: dict[str, Any] | None) -> list[int]:
    """Per-feature id range of the model's input: the data's cardinalities, or the tables' rows."""
    cards = (data_meta or {}).get("cardinalities")
    if cards and len(cards) == arch.num_sparse:
        return [int(c) for c in cards]
    return list(arch.emb_rows)


def model_inputs(arch: ArchMethods, data_meta: dict[str, Any] | None, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One input set (dense [B, num_dense] float32, sparse [B, num_sparse] int64) drawn like real data."""
    return dlrm_input_pool(arch.num_dense, sparse_id_ranges(arch, data_meta), batch_size, n=1, seed=seed)[0]


# --------------------------------------------------------------------------- export


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD_BYTES,
) -> ExportResult:
    """Export `checkpoint` (a `model.pt`) to `out`; nothing is written unless every check passes.

    Checks: no `Loop` node, `onnx.checker` full check, and onnxruntime against
    torch on fresh inputs at batch sizes `PARITY_BATCH_SIZES` within
    `PARITY_MAX_ABS_DIFF`. Weights over `external_data_threshold` bytes go to
    `out.data` (ONNX external data).
    """
    out = Path(out)
    check_writable(out, "file")
    model, extra = load_checkpoint(checkpoint)
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        raise ExportError(f"{checkpoint}: weights that are NaN or infinite (a diverged training); nothing written")
    arch = model.arch
    data_meta = (extra.get("data_meta") if isinstance(extra, dict) else None) or {}
    deployed = Probability(model).eval()
    trace_inputs = model_inputs(arch, data_meta, batch_size=2, seed=seed)
    external = arch.num_params() * 4 > external_data_threshold

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staged = work / out.name
        if external:
            # Through a file: torch cannot export over 2 GB in memory. Its per-tensor
            # data files are loaded back and rewritten as one data file by `_save`.
            raw = work / "raw"
            raw.mkdir()
            proto = export_module(deployed, trace_inputs, INPUT_NAMES, OUTPUT_NAMES, opset, path=raw / "model.onnx")
            onnx.load_external_data_for_model(proto, str(raw))
        else:
            proto = export_module(deployed, trace_inputs, INPUT_NAMES, OUTPUT_NAMES, opset)
        _refuse_loops(proto.graph)
        _set_metadata(proto, arch, data_meta)
        _save(proto, staged, external)
        del proto
        _full_check(staged)
        diffs = parity(staged, deployed, data_meta, seed=seed + 1)
        not_finite = [b for b, d in diffs.items() if not math.isfinite(d)]
        if not_finite:
            raise ExportError(
                f"{checkpoint}: the model's output is not finite at batch size {not_finite[0]} (NaN or infinite "
                f"probabilities); nothing written"
            )
        worst_batch = max(diffs, key=diffs.get)
        if diffs[worst_batch] > PARITY_MAX_ABS_DIFF:
            raise ExportError(
                f"{checkpoint}: onnxruntime differs from torch by {diffs[worst_batch]:.3g} at batch size "
                f"{worst_batch} (limit {PARITY_MAX_ABS_DIFF:g}); nothing written"
            )
        written = _move_into_place(staged, out, external)
    except OSError as e:
        raise write_error(out, e) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(out, arch, opset, external, diffs, written)


def parity(
    onnx_path: Path,
    deployed: torch.nn.Module,
    data_meta: dict[str, Any],
    seed: int,
    batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES,
) -> dict[int, float]:
    """Max absolute difference of `prob` between onnxruntime and torch, per batch size."""
    arch = deployed.model.arch
    session = ort_session(str(onnx_path), threads=1)
    diffs = {}
    for b in batch_sizes:
        dense, sparse = model_inputs(arch, data_meta, batch_size=b, seed=seed + b)
        with torch.no_grad():
            expected = deployed(dense, sparse).numpy()
        (got,) = session.run(list(OUTPUT_NAMES), {"dense": dense.numpy(), "sparse": sparse.numpy()})
        if got.shape != expected.shape:
            raise ExportError(f"{onnx_path}: output shape {got.shape} at batch {b}, expected {expected.shape}")
        diffs[b] = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    return diffs


def _nodes(graph: onnx.GraphProto):
    """Every node of `graph` and of its subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            for g in attr.graphs:
                yield from _nodes(g)


def _refuse_loops(graph: onnx.GraphProto) -> None:
    loops = [n.name or n.op_type for n in _nodes(graph) if n.op_type == "Loop"]
    if loops:
        raise ExportError(f"the exported graph holds {len(loops)} Loop node(s) ({loops[0]}): lookups must be Gathers")


def _set_metadata(proto: onnx.ModelProto, arch: ArchMethods, data_meta: dict[str, Any]) -> None:
    values = {META_FORMAT: FORMAT, META_ARCH: arch.to_json(), META_DATA: json.dumps(data_meta, sort_keys=True)}
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "dnas-hw"


def _data_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".data")


def _save(proto: onnx.ModelProto, path: Path, external: bool) -> None:
    if external:
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=_data_path(path).name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(proto, str(path))


def _full_check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported model fails onnx.checker: {str(e).splitlines()[0]}") from None


def _move_into_place(staged: Path, out: Path, external: bool) -> int:
    """Rename the staged model (and its data, first) to `out`; returns the bytes written."""
    written = staged.stat().st_size
    if external:
        written += _data_path(staged).stat().st_size
        os.replace(_data_path(staged), _data_path(out))
    else:
        _data_path(out).unlink(missing_ok=True)  # a stale data file from an earlier, larger export
    os.replace(staged, out)
    return written


# --------------------------------------------------------------------------- reading back


def read_model_info(path: str | os.PathLike) -> OnnxModelInfo:
    """The arch and data meta stored by `dnas-hw export`; any other file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX model not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends for a file that is not ONNX
        raise UserError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get(META_FORMAT) != FORMAT or META_ARCH not in props:
        raise UserError(f"{path}: no dnas-hw metadata (export the model with `dnas-hw export`)")
    try:
        arch = arch_from_dict(json.loads(props[META_ARCH]))  # of any model family (its JSON form names it)
        data_meta = json.loads(props.get(META_DATA, "{}"))
    except (json.JSONDecodeError, RecursionError, UserError) as e:
        raise UserError(f"{path}: malformed dnas-hw metadata ({first_line(e)})") from None
    data_meta = data_meta if isinstance(data_meta, dict) else {}
    cards = data_meta.get("cardinalities")
    if cards is not None and not (
        isinstance(cards, list)
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 < c <= MAX_CARDINALITY for c in cards)
    ):
        raise UserError(f"{path}: malformed dnas-hw metadata (data cardinalities must be positive int32 counts)")
    return OnnxModelInfo(arch, data_meta)
