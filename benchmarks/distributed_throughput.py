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

import os
import statistics
import tempfile
from pathlib import Path

import click

from _torchrun import (benchmark_data, check_epochs, data_options, epoch_worker_options, launch_epochs,  # sibling module
                       report_header, timed_epochs)
from dnas_hw.app.cli_types import INT_LIST

CONFIGS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # name -> (processes, threads per process)


@click.group()
def cli() -> None:
    """2-process vs 1-process training throughput."""


@cli.command()
@data_options
@click.option("--batch-size", "batch_sizes", type=INT_LIST, default="128,1024", show_default=True,
              help="Global batch sizes, comma-separated.")
@click.option("--epochs", default=3, show_default=True, help="Epochs per launch; the first is warm-up.")
@click.option("--runs", default=3, show_default=True, help="Launches per configuration and batch size.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(), help="Also write the results here.")
def run(data_dir, rows, batch_sizes, epochs, runs, seed, json_path) -> None:
    """Time each configuration (CONFIGS) per batch size; print samples/s medians and ratios."""
    from dnas_hw.files import write_json_atomic
    from dnas_hw.progress import progress

    check_epochs(epochs)
    with tempfile.TemporaryDirectory() as tmp:
        data = benchmark_data(data_dir, rows, seed, Path(tmp))
        rates: dict[int, dict[str, list[float]]] = {b: {c: [] for c in CONFIGS} for b in batch_sizes}
        with progress(len(batch_sizes) * runs * len(CONFIGS), "launches", "launches") as bar:
            for b in batch_sizes:
                for i in range(runs):
                    for name, (processes, threads) in CONFIGS.items():
                        r = launch_epochs(__file__, processes, threads, data, b, epochs, seed, Path(tmp) / f"{name}-{b}-{i}.json")
                        rates[b][name].append(r["rows"] / statistics.median(r["epoch_s"][1:]))
                        bar.update(1, status=f"b{b} {name} {rates[b][name][-1]:,.0f} samples/s")
    report = {**report_header(), "batch_sizes": {}}
    click.echo("batch  " + "  ".join(f"{c:>14s}" for c in CONFIGS) + "   2x1/1x1  2x1/1x2   (samples/s, median)")
    for b, by_config in rates.items():
        med = {c: statistics.median(v) for c, v in by_config.items()}
        report["batch_sizes"][b] = {"samples_per_s": by_config, "median": med}
        click.echo(f"{b:5d}  " + "  ".join(f"{med[c]:14,.0f}" for c in CONFIGS)
                   + f"   {med['2x1'] / med['1x1']:7.2f}  {med['2x1'] / med['1x2']:7.2f}")
    if json_path:
        write_json_atomic(json_path, report)


@cli.command(hidden=True)
@epoch_worker_options
def worker(data_dir, batch_size, epochs, seed, out) -> None:
    """One rank: train the reference DLRM for EPOCHS epochs, timing each between barriers."""
    from dnas_hw import distributed
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.dlrm.arch import dlrm_kaggle_reference
    from dnas_hw.dlrm.model import build_model
    from dnas_hw.files import write_json_atomic
    from dnas_hw.train import TrainConfig, make_optimizers, split_parameters, train_epoch

    with distributed.session():
        data = PreparedData.open(data_dir)
        model = build_model(dlrm_kaggle_reference(data.cardinalities), seed=seed)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed)
        optimizers = make_optimizers(*split_parameters(model), config.optimizer, config.lr)
        stepped = distributed.data_parallel(model)
        split = data.split("train")
        times = timed_epochs(epochs, lambda epoch, _start: train_epoch(stepped, optimizers, split, config, epoch))
        if distributed.is_main():
            write_json_atomic(out, {"world": distributed.world_size(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)),
                                    "rows": len(split), "epoch_s": times})


if __name__ == "__main__":
    cli()
