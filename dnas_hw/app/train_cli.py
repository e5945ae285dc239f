"""`dnas-hw train`: train an arch on a prepared data folder and evaluate it."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click

from dnas_hw import distributed
from dnas_hw.errors import UserError
from dnas_hw.files import check_writable, output_lock, removed_if_left_empty, write_json_atomic, write_text_atomic


def train_arch(
    data_dir: str | Path,
    arch,
    out: str | Path,
    config,
    resume: bool = False,
    force: bool = False,
) -> dict:
    """Train `arch` on `data_dir`; writes `out/model.pt`, `out/metrics.json`, `out/train_log.csv`.

    Returns the metrics. Shared by the CLI, the search's retraining and the pipeline.
    `arch` may be of any model family (`dnas_hw.family`). Under torchrun every rank
    trains its shard (`dnas_hw.distributed`) and only rank 0 writes (and locks `out`).
    The output is checked for writability and the training for memory before any
    work, and a run that fails before writing anything leaves no folder behind.
    """
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.memory import require_memory, training_bytes

    out = Path(out)
    data = PreparedData.open(data_dir)
    arch.check_data(data.num_dense, data.num_sparse, where=str(data_dir))
    state = out / "train_state.pt"
    if (out / "model.pt").exists() and not force:
        raise UserError(f"{out}/model.pt already exists (use --force to retrain)")
    if state.exists() and not (resume or force):
        raise UserError(f"{out} holds an unfinished run: use --resume to continue it or --force to restart")
    check_writable(out, "folder")
    require_memory(training_bytes(arch, config.batch_size, config.optimizer),
                   f"training a model of {arch.num_params():,} parameters at batch size {config.batch_size}")
    with (output_lock(out) if distributed.is_main() else contextlib.nullcontext()), removed_if_left_empty(out):
        return _train(data, arch, out, state, config, resume, force)


def _train(data, arch, out: Path, state: Path, config, resume: bool, force: bool) -> dict:
    import pandas as pd

    from dnas_hw.checkpoint import save_checkpoint
    from dnas_hw.family import build_model
    from dnas_hw.train import evaluate, fit

    if force and state.exists() and not resume and distributed.is_main():
        state.unlink()
    out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()  # every rank sees the state file as rank 0 left it

    model = build_model(arch, seed=config.seed)
    start = time.perf_counter()
    history = fit(model, data, config, state_path=state)
    elapsed = time.perf_counter() - start
    metrics = {
        "val": evaluate(model, data.split("val")),
        "test": evaluate(model, data.split("test")),
        "train": {"loss": history[-1]["train_loss"], "epochs": config.epochs, "elapsed_s": round(elapsed, 3)},
    }
    if distributed.is_main():
        save_checkpoint(out / "model.pt", model, extra={"data_meta": {k: data.meta[k] for k in ("num_dense", "num_sparse", "cardinalities")}})
        write_text_atomic(out / "train_log.csv", pd.DataFrame(history).to_csv(index=False))
        write_json_atomic(out / "metrics.json", metrics)
        state.unlink(missing_ok=True)
    distributed.barrier()
    return metrics


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
    from dnas_hw.train import TrainConfig

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
