"""onnxruntime against torch eager on the same exported models: the latency ratio per batch size.

Target: onnxruntime latency at most 0.8x torch eager at batch sizes 64 and 512.
Each model goes the user's way: a checkpoint, `export_checkpoint` (with its
parity check), then `dnas_hw.app.bench.measure` on both backends with the same
input pools, interleaved per model so that both see the same machine load.

    .venv/bin/python benchmarks/ort_vs_torch.py --threads 1 --batch-size 1,64,512 --samples 3 --out ort_vs_torch.json
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

import click

from dnas_hw.app.bench import measure
from dnas_hw.app.cli_types import INT_LIST
from dnas_hw.checkpoint import save_checkpoint
from dnas_hw.dlrm.arch import Arch, dlrm_kaggle_reference
from dnas_hw.dlrm.model import build_model
from dnas_hw.export import export_checkpoint, read_model_info
from dnas_hw.files import write_json_atomic
from dnas_hw.space import get_space
from profiler.environment import machine_info

TARGET_RATIO = 0.8
TARGET_BATCHES = (64, 512)


def models(space_name: str, samples: int, seed: int) -> dict[str, Arch]:
    """The DLRM Kaggle reference, the space's smallest arch, and `samples` random archs of the space."""
    space = get_space(space_name)
    rng = random.Random(seed)
    out = {"dlrm-kaggle-reference": dlrm_kaggle_reference(space.cardinalities), "space-smallest": space.smallest()}
    out.update({f"random-{i}": space.sample(rng) for i in range(samples)})
    return out


def compare(name: str, arch: Arch, cardinalities, batch_sizes, threads: int, work: Path) -> list[dict]:
    ckpt, onnx_path = work / f"{name}.pt", work / f"{name}.onnx"
    save_checkpoint(ckpt, build_model(arch, seed=0), extra={"data_meta": {"num_dense": arch.num_dense,
                    "num_sparse": arch.num_sparse, "cardinalities": list(cardinalities)}})
    export_checkpoint(ckpt, onnx_path)
    info = read_model_info(onnx_path)
    rows = []
    for b in batch_sizes:
        ort = measure(info, onnx_path, [b], "onnxruntime", threads=threads)[0]
        eager = measure(info, onnx_path, [b], "torch", threads=threads, checkpoint=ckpt)[0]
        rows.append({"model": name, "batch_size": b, "onnxruntime_p50_us": ort.p50_us, "torch_p50_us": eager.p50_us,
                     "ratio": ort.p50_us / eager.p50_us})
    ckpt.unlink()
    onnx_path.unlink()
    return rows


@click.command()
@click.option("--space", "space_name", default="dlrm-kaggle", show_default=True)
@click.option("--samples", default=3, show_default=True, type=int, help="Random archs of the space besides the fixed ones.")
@click.option("--batch-size", "batch_sizes", default="1,64,512", show_default=True, type=INT_LIST)
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(), help="JSON file for every measurement.")
def main(space_name, samples, batch_sizes, threads, seed, out) -> None:
    """Time each model on onnxruntime and torch eager; print the ratio per model and batch size."""
    cardinalities = get_space(space_name).cardinalities
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, arch in models(space_name, samples, seed).items():
            click.echo(f"{name}: {arch.num_params():,} parameters", err=True)
            rows += compare(name, arch, cardinalities, batch_sizes, threads, Path(work))
    click.echo("| model | batch | onnxruntime p50 ms | torch eager p50 ms | ratio |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        click.echo(f"| {r['model']} | {r['batch_size']} | {r['onnxruntime_p50_us'] / 1000:.3f} | "
                   f"{r['torch_p50_us'] / 1000:.3f} | {r['ratio']:.2f} |")
    medians = {b: statistics.median(r["ratio"] for r in rows if r["batch_size"] == b) for b in batch_sizes}
    click.echo("median ratio per batch size: " + ", ".join(f"b{b} {m:.2f}" for b, m in medians.items()))
    checked = [b for b in TARGET_BATCHES if b in medians]
    met = all(medians[b] <= TARGET_RATIO for b in checked)
    click.echo(f"target (median ratio <= {TARGET_RATIO} at b{', b'.join(map(str, checked))}): {'met' if met else 'NOT met'}")
    if out:
        write_json_atomic(out, {"threads": threads, "space": space_name, "machine": machine_info(), "rows": rows,
                                "median_ratio": {str(b): m for b, m in medians.items()}})
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
