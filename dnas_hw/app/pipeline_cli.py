"""`dnas-hw pipeline`: the whole product on defaults (`make demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from dnas_hw.app import pipeline as p
from dnas_hw.app.cli_types import DURATION_LIST


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder; a rerun completes what is missing.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Prepared data folder [default: synthetic rows in OUT/data].")
@click.option("--rows", default=p.DEFAULT_ROWS, show_default=True, type=click.IntRange(min=1000), help="Synthetic rows (without --data).")
@click.option("--space", default=p.DEFAULT_SPACE, show_default=True, help="Built-in space or .toml file, bound to the data.")
@click.option("--latency-budget", "budgets_us", type=DURATION_LIST, default=(),
              help="Budgets at --batch-size searched beside the defaults, e.g. 0.3ms,2ms "
                   "[always searched: the DLRM reference config's LUT latency and half of it].")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "torch"]))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=p.DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(min=1), help="Serving batch size of the budgets.")
@click.option("--search-epochs", default=p.DEFAULT_SEARCH_EPOCHS, show_default=True, type=click.IntRange(min=2))
@click.option("--train-epochs", default=p.DEFAULT_TRAIN_EPOCHS, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--lut-cache", type=click.Path(path_type=Path), help="Folder of cached LUTs [default: ~/.cache/dnas-hw/luts].")
@click.option("--ids", default=p.DATA, show_default=True, type=click.Choice(["data", "spread"]),
              help="Ids the LUT's lookups and the bench's calls replay: the data's own rows, or spread over each table (the worst case).")
@click.option("--budget-quantile", default=p.DEFAULT_QUANTILE, show_default=True, type=click.Choice(["p50", "p90"]),
              help="The measured latency each budget holds; the searches aim at the budget less the LUT's margin for it.")
def pipeline(out, data_dir, rows, space, budgets_us, backend, device, threads, batch_size, search_epochs, train_epochs,
             seed, lut_cache, ids, budget_quantile) -> None:
    """Data, profile, search per budget, retrain, export, bench, and OUT/report.md with plots.

    Each stage writes its own subfolder of OUT and is skipped when its outputs
    exist, so a second run (or one after a kill) redoes only what is missing.
    """
    opts = p.PipelineOptions(out=out, data_dir=data_dir, rows=rows, space=space, budgets_us=budgets_us, backend=backend,
                             device=device, threads=threads, batch_size=batch_size, search_epochs=search_epochs,
                             train_epochs=train_epochs, seed=seed, lut_cache=lut_cache, ids=ids,
                             budget_quantile=budget_quantile)
    results = p.run_pipeline(opts)
    for m in results["models"]:
        budget = f"budget {m['budget_ms']:.3f} ms" if m["budget_ms"] else "reference"
        click.echo(f"{m['name']:<28} {budget:<20} measured {m['measured_p50_ms']:.3f} ms  "
                   f"test logloss {m['test_logloss']:.4f}  AUC {m['test_auc']:.4f}")
    click.echo(f"wrote {Path(out) / 'report.md'}")
