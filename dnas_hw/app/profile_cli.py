"""`dnas-hw profile`: measure every op a space can produce into a latency LUT."""

from __future__ import annotations

import click

from dnas_hw.app.cli_types import INT_LIST
from dnas_hw.app.lut_cli import DATA_HELP, IDS_HELP, SPACE_HELP, resolve_space


@click.command()
@click.option("--space", "space_name", required=True, help=SPACE_HELP)
@click.option("--data", "data_dir", default=None, type=click.Path(), help=DATA_HELP)
@click.option("--backend", required=True, type=click.Choice(["torch", "onnxruntime"]), help="Runtime to measure.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="Intra-op threads.")
@click.option("--batch-size", "batch_sizes", required=True, type=INT_LIST, help="Batch sizes, e.g. 1,64,512.")
@click.option("--out", required=True, type=click.Path(), help="LUT.csv to write (LUT.meta.json beside it).")
@click.option("--resume", is_flag=True, help="Keep rows already measured (LUT.partial.csv, or LUT.csv) and measure only the missing keys.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of inputs, weights and reference archs.")
@click.option("--force", is_flag=True, help="Measure every key again, replacing a finished LUT at --out.")
@click.option("--ids", "ids_choice", default=None, type=click.Choice(["data", "spread"]), help=IDS_HELP)
def profile(space_name, data_dir, backend, device, threads, batch_sizes, out, resume, seed, force, ids_choice) -> None:
    """Time every (op, shape) key of SPACE at each batch size on BACKEND/DEVICE into a LUT."""
    from dnas_hw.data.ids import id_source
    from profiler.run import profile_to_lut

    ids = id_source(ids_choice, data_dir)
    space = resolve_space(space_name, data_dir)
    profile_to_lut(space, out, backend=backend, device=device, threads=threads, batch_sizes=batch_sizes,
                   resume=resume, seed=seed, force=force, ids=ids)
