"""`dnas-hw train`: train an arch on a prepared data folder and evaluate it."""

from __future__ import annotations

from pathlib import Path

import click

from dnas_hw import distributed


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Prepared data folder (dnas-hw data prepare/synth).")
@click.option("--arch", "arch_path", required=True, type=click.Path(), help="Architecture JSON (e.g. a search's arch.json).")
@click.option("--out", required=True, type=click.Path(), help="Run folder for model.pt and metrics.json.")
@click.option("--epochs", default=None, type=int, help="Passes over the train split [default: 1].")
@click.option("--batch-size", default=None, type=int, help="[default: 256]")
@click.option("--optimizer", default=None, type=click.Choice(["sgd", "adagrad", "adam"]),
              help="[default: adam; DLRM's Kaggle recipe is --optimizer sgd --lr 0.1 --batch-size 128]")
@click.option("--lr", default=None, type=float, help="[default: 1e-3]")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last finished epoch.")
@click.option("--force", is_flag=True, help="Replace a finished run in --out.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch threads per process (default: torch's). On a busy machine, more threads than free cores slow a step many times over.")
def train(data_dir, arch_path, out, epochs, batch_size, optimizer, lr, seed, resume, force, threads) -> None:
    """Train ARCH on DATA and write OUT/model.pt and OUT/metrics.json (val and test metrics).

    Under `torchrun --nproc_per_node N -m dnas_hw.app.cli train ...` the N processes
    train data-parallel (--batch-size is the global batch) and rank 0 writes.
    """
    from dnas_hw.family import load_arch
    from dnas_hw.train import TrainConfig, train_arch

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    arch = load_arch(arch_path)
    given = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr}
    config = TrainConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    with distributed.session():
        metrics = train_arch(data_dir, arch, out, config, resume=resume, force=force)
        if not distributed.is_main():
            return
    for split in ("val", "test"):
        m = metrics[split]
        click.echo(f"{split:4s} logloss {m['logloss']:.4f}  auc {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  calibration {m['calibration']:.3f}  rows {m['rows']}")
    click.echo(f"wrote {Path(out) / 'model.pt'} and {Path(out) / 'metrics.json'}")
