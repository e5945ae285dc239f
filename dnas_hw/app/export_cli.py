"""`dnas-hw export`: a trained checkpoint to a checked ONNX model."""

from __future__ import annotations

import click

from dnas_hw.onnx_io import DEFAULT_OPSET


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="A model.pt written by `dnas-hw train` (holds the arch).")
@click.option("--out", required=True, type=click.Path(), help="ONNX file to write (weights over 2 GB go to OUT.data beside it).")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=click.IntRange(9, 20), help="ONNX opset version.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs of the parity check.")
def export(checkpoint, out, opset, seed) -> None:
    """Export CHECKPOINT to OUT: inputs dense [B,13] float32 and sparse [B,26] int64, output prob [B].

    The arch and the training data's meta are stored as ONNX metadata. The model
    is checked with onnx.checker and against torch at batch sizes 1, 7 and 512
    (max abs difference at most 1e-5) before it is written; a failed check
    writes nothing and exits with code 2.
    """
    from dnas_hw.export import PARITY_MAX_ABS_DIFF, export_checkpoint

    result = export_checkpoint(checkpoint, out, opset=opset, seed=seed)
    diffs = ", ".join(f"b{b} {d:.1e}" for b, d in result.max_abs_diff.items())
    click.echo(f"parity vs torch (max abs diff, limit {PARITY_MAX_ABS_DIFF:g}): {diffs}")
    where = f"{result.path} (+ {result.path.name}.data)" if result.external_data else str(result.path)
    click.echo(f"wrote {where}: {result.bytes_written / 2**20:.1f} MiB, opset {result.opset}, {result.arch.num_params():,} parameters")
