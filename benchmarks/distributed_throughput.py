"""Training throughput of 2 data-parallel processes against 1, through `dnas_hw.train.train_epoch`.

The model is the DLRM Kaggle reference configuration (bottom 13-512-256-64-16,
top 512-256-1, dot, dim 16) on the tables of a synthetic data folder
(`dnas-hw data synth`, Kaggle's cardinalities scaled by 0.01), SGD with sparse
embedding gradients, as `dnas-hw train` runs it. Each configuration is a fresh
`torchrun --standalone` launch (the 1-process ones too, so both pay the same
start-up), timing whole training epochs (data loading included, validation
not) between barriers; the first epoch is warm-up. Configurations are
interleaved run by run so that all see the same machine load:

- `1x1`: 1 process, 1 thread;  `1x2`: 1 process, 2 threads;
- `2x1`: 2 processes (gloo, DistributedDataParallel), 1 thread each, same global batch.

    .venv/bin/python benchmarks/distributed_throughput.py --rows 20000 --batch-size 128,1024 --runs 3
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from dnas_hw.cli_types import INT_LIST

CONFIGS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # name -> (processes, threads per process)


def launch(data: Path, processes: int, threads: int, batch_size: int, epochs: int, seed: int, out: Path) -> dict:
    """One torchrun launch of the worker below; returns what rank 0 wrote."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               __file__, "worker", "--data", str(data), "--batch-size", str(batch_size), "--epochs", str(epochs),
               "--seed", str(seed), "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f"{processes}x{threads} at batch {batch_size} failed:\n{result.stderr[-2000:]}")
    return json.loads(out.read_text())


@click.group()
def cli() -> None:
    """2-process vs 1-process training throughput."""


@cli.command()
@click.option("--data", "data_dir", type=click.Path(), help="Prepared data folder (default: synthesize --rows rows).")
@click.option("--rows", default=20_000, show_default=True, help="Rows to synthesize when --data is not given.")
@click.option("--batch-size", "batch_sizes", type=INT_LIST, default="128,1024", show_default=True,
              help="Global batch sizes, comma-separated.")
@click.option("--epochs", default=3, show_default=True, help="Epochs per launch; the first is warm-up.")
@click.option("--runs", default=3, show_default=True, help="Launches per configuration and batch size.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(), help="Also write the results here.")
def run(data_dir, rows, batch_sizes, epochs, runs, seed, json_path) -> None:
    """Time each configuration (CONFIGS) per batch size; print samples/s medians and ratios."""
    from dnas_hw.bench import machine_info
    from dnas_hw.data.synth import SynthOptions, synth
    from dnas_hw.files import write_json_atomic
    from dnas_hw.progress import progress

    if epochs < 2:
        raise click.BadParameter("needs at least 2 epochs (the first is warm-up)", param_hint="--epochs")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(data_dir) if data_dir else Path(tmp) / "data"
        if not data_dir:
            synth(data, SynthOptions(rows=rows, seed=seed))
        rates: dict[int, dict[str, list[float]]] = {b: {c: [] for c in CONFIGS} for b in batch_sizes}
        with progress(len(batch_sizes) * runs * len(CONFIGS), "launches", "launches") as bar:
            for b in batch_sizes:
                for i in range(runs):
                    for name, (processes, threads) in CONFIGS.items():
                        r = launch(data, processes, threads, b, epochs, seed, Path(tmp) / f"{name}-{b}-{i}.json")
                        rates[b][name].append(r["rows"] / statistics.median(r["epoch_s"][1:]))
                        bar.update(1, status=f"b{b} {name} {rates[b][name][-1]:,.0f} samples/s")
    report = {"machine": machine_info(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "load_average": os.getloadavg(), "command": " ".join(sys.argv), "batch_sizes": {}}
    click.echo("batch  " + "  ".join(f"{c:>14s}" for c in CONFIGS) + "   2x1/1x1  2x1/1x2   (samples/s, median)")
    for b, by_config in rates.items():
        med = {c: statistics.median(v) for c, v in by_config.items()}
        report["batch_sizes"][b] = {"samples_per_s": by_config, "median": med}
        click.echo(f"{b:5d}  " + "  ".join(f"{med[c]:14,.0f}" for c in CONFIGS)
                   + f"   {med['2x1'] / med['1x1']:7.2f}  {med['2x1'] / med['1x2']:7.2f}")
    if json_path:
        write_json_atomic(json_path, report)


@cli.command(hidden=True)
@click.option("--data", "data_dir", required=True, type=click.Path())
@click.option("--batch-size", required=True, type=int)
@click.option("--epochs", required=True, type=int)
@click.option("--seed", required=True, type=int)
@click.option("--out", required=True, type=click.Path())
def worker(data_dir, batch_size, epochs, seed, out) -> None:
    """One rank: train the reference DLRM for EPOCHS epochs, timing each between barriers."""
    from dnas_hw import distributed
    from dnas_hw.arch import dlrm_kaggle_reference
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.files import write_json_atomic
    from dnas_hw.model import build_model
    from dnas_hw.train import TrainConfig, make_optimizers, split_parameters, train_epoch

    with distributed.session():
        data = PreparedData.open(data_dir)
        model = build_model(dlrm_kaggle_reference(data.cardinalities), seed=seed)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed)
        optimizers = make_optimizers(*split_parameters(model), config.optimizer, config.lr)
        stepped = distributed.data_parallel(model)
        split = data.split("train")
        times = []
        for epoch in range(epochs):
            distributed.barrier()
            start = time.perf_counter()
            train_epoch(stepped, optimizers, split, config, epoch)
            distributed.barrier()
            times.append(time.perf_counter() - start)
        if distributed.is_main():
            write_json_atomic(out, {"world": distributed.world_size(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)),
                                    "rows": len(split), "epoch_s": times})


if __name__ == "__main__":
    cli()
