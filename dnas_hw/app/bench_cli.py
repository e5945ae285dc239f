"""`dnas-hw bench`: an exported model's latency per batch size, against the LUT's prediction."""

from __future__ import annotations

import click

from dnas_hw.app.cli_types import INT_LIST
from dnas_hw.app.lut_cli import IDS_HELP


@click.command()
@click.argument("model", type=click.Path())
@click.option("--batch-size", "batch_sizes", default="1,64,512", show_default=True, type=INT_LIST,
              help="Batch sizes to time, comma-separated.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="Intra-op threads.")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "torch"]),
              help="torch: time the --checkpoint's model in torch eager instead of the ONNX file.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--checkpoint", type=click.Path(), help="The model.pt MODEL was exported from (needed by --backend torch).")
@click.option("--lut", "lut_path", type=click.Path(), help="A LUT of the same backend/device/threads: adds its prediction and error.")
@click.option("--force", is_flag=True, help="Use a LUT measured on another backend, device or thread count, or with other ids.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs.")
@click.option("--json", "json_path", type=click.Path(), help="Also write the report as JSON here.")
@click.option("--data", "data_dir", type=click.Path(), help="Prepared data folder whose rows (ids and dense features) the calls replay (--ids).")
@click.option("--ids", "ids_choice", default=None, type=click.Choice(["data", "spread"]), help=IDS_HELP)
def bench(model, batch_sizes, threads, backend, device, checkpoint, lut_path, force, seed, json_path, data_dir,
          ids_choice) -> None:
    """Time MODEL (written by `dnas-hw export`) per batch size: p50/p90 latency and throughput.

    A fresh input set per call, after warm-up: with --data, consecutive rows of
    its train split (ids with their real frequency skew); else ids spread over
    each table and dense features drawn like the training data. With --lut, the
    LUT's prediction for the model's arch (stored in the ONNX file) and its error
    in percent; a LUT profiled with other ids than these is refused (--force: compared anyway).
    """
    from dnas_hw.app.bench import bench as run_bench, format_table
    from dnas_hw.data.ids import id_source
    from dnas_hw.files import check_writable, write_json_atomic

    if json_path:
        check_writable(json_path, "file")  # before the benchmark, not after it
    ids = id_source(ids_choice, data_dir)
    report = run_bench(model, batch_sizes, backend, device, threads, checkpoint, lut_path, force, seed, ids)
    click.echo(f"{model} on {backend} ({device}, {threads} thread{'s' if threads > 1 else ''}; ids {ids.describe()}):")
    click.echo(format_table(report))
    if json_path:
        write_json_atomic(json_path, report)
        click.echo(f"wrote {json_path}")
