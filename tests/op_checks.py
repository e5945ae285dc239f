"""The checks every registered op must pass, shared by the core's ops (test_ops.py) and a family's (test_dcn.py)."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from dnas_hw.onnx_io import export_module, ort_session
from dnas_hw.ops import OpCall


def assert_onnx_round_trip(call: OpCall, batch: int) -> None:
    """`call`'s module exported traced at `batch` is valid ONNX and, run by onnxruntime at another
    batch size (batch + 2: the batch axis is dynamic), gives torch's output (rtol 1e-5, atol 1e-6)."""
    module = call.build().eval()
    inputs = call.example_inputs(batch, torch.Generator().manual_seed(1))
    names = [f"x{i}" for i in range(len(inputs))]
    proto = export_module(module, inputs, names, ["y"])
    onnx.checker.check_model(proto)
    inputs = call.example_inputs(batch + 2, torch.Generator().manual_seed(2))
    (got,) = ort_session(proto, threads=1).run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    with torch.no_grad():
        want = module(*inputs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
