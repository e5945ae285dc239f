"""ONNX in one place: export a module, open an onnxruntime session as deployment would.

Used by the profiler (one-op graphs), `dnas-hw export` (whole models) and
`dnas-hw bench`, so all three see the same exporter settings and the same
session options.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Sequence

import onnx
import torch

from dnas_hw.errors import UserError

DEFAULT_OPSET = 17


def export_module(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    path: str | os.PathLike | None = None,
) -> onnx.ModelProto:
    """Export `module` (eval mode) with the TorchScript exporter; axis 0 of every input/output is `batch`.

    The TorchScript-based exporter is used on purpose: it needs no onnxscript
    and turns `nn.Embedding` into one `Gather`.

    Without `path` the model is exported in memory, which protobuf limits to
    2 GB. With `path` it is written there (weights over 2 GB as external data
    files beside it) and the returned proto holds references to that data,
    not the weights.
    """
    module = module.eval()
    axes = {name: {0: "batch"} for name in list(input_names) + list(output_names)} if dynamic_batch else None
    buf = io.BytesIO() if path is None else str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            buf,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    if path is not None:
        return onnx.load(str(path), load_external_data=False)
    return onnx.load_from_string(buf.getvalue())


def ort_providers(device: str) -> list[str]:
    """Execution providers for `device` ("cpu" or "cuda"); CUDA must be present when asked for."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}")


def ort_session(model: onnx.ModelProto | bytes | str, threads: int, device: str = "cpu"):
    """An `InferenceSession` configured as we deploy: all graph optimisations, `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, sess_options=options, providers=ort_providers(device))
