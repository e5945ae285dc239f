"""Timing an exported model as it is served, and comparing it with the LUT's prediction.

The measurement goes through `profiler.runners` (realistic input pools, the same
timer and session settings the profiler used to fill the LUT), so a LUT's
prediction and a bench figure are measured the same way and their difference is
the LUT's error, not a difference of method.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from dnas_hw.arch import ArchMethods
from dnas_hw.data.ids import DATA, IdSource
from dnas_hw.errors import UserError
from dnas_hw.export import OnnxModelInfo, read_model_info, sparse_id_ranges
from dnas_hw.progress import progress
from lut.predict import predict
from profiler.environment import machine_info

BACKENDS = ("onnxruntime", "torch")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BenchRow:
    """One batch size: latency percentiles per call (us), throughput, and the LUT's view when asked."""

    batch_size: int
    p10_us: float
    p50_us: float
    p90_us: float
    repeats: int
    throughput_per_s: float  # samples per second at the median latency
    predicted_us: float | None = None
    error_pct: float | None = None  # (predicted - measured) / measured, in percent


def measure(
    info: OnnxModelInfo,
    onnx_path: str | os.PathLike,
    batch_sizes: list[int],
    backend: str = "onnxruntime",
    device: str = "cpu",
    threads: int = 1,
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    ids: IdSource | None = None,
) -> list[BenchRow]:
    """Per-batch-size latency of the model on `backend` (torch: the checkpoint's model in eager mode);
    `ids`: the model's inputs (`dnas_hw.data.ids`: a data folder's rows, or None: spread ids)."""
    from dnas_hw.inputs import dlrm_input_pool
    from profiler.runners import OnnxRunner, time_torch

    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: use one of {list(BACKENDS)}")
    if backend == "torch":
        module = _torch_module(info.arch, checkpoint)
        time_pool = lambda pool: time_torch(module, pool, threads=threads, device=device)  # noqa: E731
    else:
        runner = OnnxRunner(Path(onnx_path), threads, device)
        time_pool = runner.time
    ranges = sparse_id_ranges(info.arch, info.data_meta)
    rows = []
    with progress(len(batch_sizes), f"bench {backend}", "batch sizes") as bar:
        for b in batch_sizes:
            stats = time_pool(dlrm_input_pool(info.arch.num_dense, ranges, b, seed=seed, ids=ids))
            rows.append(BenchRow(b, stats.p10_us, stats.p50_us, stats.p90_us, stats.repeats, b / stats.p50_us * 1e6))
            bar.update(1, status=f"b{b} p50 {stats.p50_us / 1000:.3f} ms")
    return rows


def _torch_module(arch: ArchMethods, checkpoint: str | os.PathLike | None):
    """The deployed form (with the sigmoid, as in the ONNX model) of the checkpoint; its arch must match."""
    from dnas_hw.checkpoint import load_checkpoint
    from dnas_hw.model import Probability

    if checkpoint is None:
        raise UserError("--backend torch needs --checkpoint (the model.pt the ONNX file was exported from)")
    model, _ = load_checkpoint(checkpoint)
    if model.arch != arch:
        raise UserError(f"{checkpoint}: its arch differs from the one stored in the ONNX model")
    return Probability(model).eval()


def load_lut_for(lut_path: str | os.PathLike, backend: str, device: str, threads: int, force: bool = False):
    """The LUT at `lut_path`, refused (`UserError`) if measured on another backend, device or thread count."""
    from lut.table import Lut

    lut = Lut.load(lut_path)
    lut.check_target(force=force, backend=backend, device=device, threads=threads)
    return lut


def add_predictions(rows: list[BenchRow], arch: ArchMethods, lut) -> list[BenchRow]:
    """Rows with the LUT's predicted latency and its error; a LUT miss is a `UserError` naming the keys."""
    out = []
    for row in rows:
        predicted = predict(lut, arch, row.batch_size).total_us
        error = (predicted - row.p50_us) / row.p50_us * 100.0
        out.append(BenchRow(**{**asdict(row), "predicted_us": predicted, "error_pct": error}))
    return out


def bench(
    onnx_path: str | os.PathLike,
    batch_sizes: list[int],
    backend: str = "onnxruntime",
    device: str = "cpu",
    threads: int = 1,
    checkpoint: str | os.PathLike | None = None,
    lut_path: str | os.PathLike | None = None,
    force: bool = False,
    seed: int = 0,
    ids: IdSource | None = None,
) -> dict[str, Any]:
    """Measure an exported model (and price it from a LUT); the JSON-ready report `dnas-hw bench --json` writes.

    `ids`: where the inputs come from (`dnas_hw.data.ids`; None: spread ids); a
    LUT profiled with other ids is refused unless `force` (then the report says so).
    Keys: `model`, `backend`, `device`, `threads`, `lut`, `ids`, `lut_ids` (None
    without a LUT), `arch`, `machine`, `date`, and `results` (one `BenchRow` dict per batch size).
    """
    if device not in DEVICES:
        raise UserError(f"device {device!r}: use one of {list(DEVICES)}")
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    ids = ids or IdSource()
    info = read_model_info(onnx_path)
    if ids.kind == DATA:
        info.arch.check_data(*_data_features(ids), where=str(ids.path))
    # The LUT is checked (target, ids, and every key the arch needs) before any time is spent measuring.
    lut = load_lut_for(lut_path, backend, device, threads, force) if lut_path is not None else None
    if lut is not None:
        differ = lut.check_ids(ids, force)
        if differ:
            click.echo(f"warning: {differ} (--force)", err=True)
        for b in batch_sizes:
            predict(lut, info.arch, b)
    rows = measure(info, onnx_path, batch_sizes, backend, device, threads, checkpoint, seed, ids)
    if lut is not None:
        rows = add_predictions(rows, info.arch, lut)
    return {
        "model": str(onnx_path),
        "backend": backend,
        "device": device,
        "threads": threads,
        "lut": str(lut_path) if lut_path is not None else None,
        "ids": ids.describe(),
        "lut_ids": lut.id_source.describe() if lut is not None else None,
        "arch": info.arch.to_dict(),
        "machine": machine_info(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "results": [asdict(r) for r in rows],
    }


def _data_features(ids: IdSource) -> tuple[int, int]:
    """(num_dense, num_sparse) of a data source's folder."""
    from dnas_hw.data.folder import PreparedData

    data = PreparedData.open(ids.path)
    return data.num_dense, data.num_sparse


def format_table(report: dict[str, Any]) -> str:
    """The report's results as an aligned text table (ms)."""
    with_lut = report["lut"] is not None
    head = f"{'batch':>6} {'p50 ms':>9} {'p90 ms':>9} {'samples/s':>11}"
    if with_lut:
        head += f" {'LUT ms':>9} {'error':>8}"
    lines = [head]
    for r in report["results"]:
        line = f"{r['batch_size']:>6} {r['p50_us'] / 1000:>9.3f} {r['p90_us'] / 1000:>9.3f} {r['throughput_per_s']:>11,.0f}"
        if with_lut:
            line += f" {r['predicted_us'] / 1000:>9.3f} {r['error_pct']:>+7.1f}%"
        lines.append(line)
    return "\n".join(lines)
