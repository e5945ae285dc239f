"""`dnas-hw data prepare | synth | show`."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import click

from dnas_hw.data.prepare import DEFAULT_CHUNK_ROWS, PrepareOptions, prepare as prepare_folder
from dnas_hw.data.splits import SPLITS
from dnas_hw.progress import progress


def _rows_progress(stack: ExitStack, total_bytes: int):
    """A progress callback factory for `prepare`: one bar per pass, bytes done, rows and rows/s shown."""

    def open_pass(stage: str):
        bar = stack.enter_context(progress(total_bytes, f"{stage:5s}", "B"))
        rows, start = 0, time.perf_counter()

        def update(nbytes: int, new_rows: int) -> None:
            nonlocal rows
            rows += new_rows
            rate = rows / max(time.perf_counter() - start, 1e-9)
            bar.update(nbytes, status=f"{rows:,} rows, {rate:,.0f} rows/s")

        return update

    return open_pass


def _summary(path: Path, meta: dict, seconds: float) -> str:
    parts = []
    for s in SPLITS:
        rows, pos = meta["splits"][s]["rows"], meta["splits"][s]["positives"]
        parts.append(f"{s} {rows:,} ({pos / rows:.1%} positive)" if rows else f"{s} 0")
    total = sum(meta["splits"][s]["rows"] for s in SPLITS)
    return (f"wrote {path}: " + ", ".join(parts) + f"; {meta['skipped_rows']:,} bad rows skipped; "
            f"{seconds:.2f} s, {total / max(seconds, 1e-9):,.0f} rows/s")


@click.group()
def data() -> None:
    """Prepare Criteo data, make synthetic data, show a prepared folder."""


@data.command()
@click.argument("raw", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write (must not exist).")
@click.option("--hash-size", type=int, help="Hash each categorical value to 1 + h % (N-1); id 0 is missing.")
@click.option("--min-count", type=int,
              help="Vocabulary from the train rows: values seen fewer than N times share an OOV id "
                   "[default: 1 when neither --hash-size nor --vocab is given].")
@click.option("--vocab", "vocab_from", type=click.Path(path_type=Path),
              help="Reuse the vocabulary of a folder prepared with --min-count: new raw data gets the same ids.")
@click.option("--split", "split_kind", type=click.Choice(["days", "random"]), default="days", show_default=True,
              help="days: DLRM's 7 pseudo-days (one file) or one day per file; random: per row.")
@click.option("--val-frac", type=float, default=0.1, show_default=True, help="Random split: fraction of val rows.")
@click.option("--test-frac", type=float, default=0.1, show_default=True, help="Random split: fraction of test rows.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random split: seed.")
@click.option("--on-bad-row", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, show_default=True,
              help="Rows parsed at a time; memory grows with it.")
@click.option("--threads", type=int, default=2, show_default=True, help="Threads parsing chunks.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def prepare(raw, out, hash_size, min_count, vocab_from, split_kind, val_frac, test_frac, seed, on_bad_row, chunk_rows,
            threads, force):
    """Prepare raw Criteo files RAW... (Kaggle train.txt, or 1TB day_0..day_23 in order) into --out."""
    if hash_size is None and min_count is None and vocab_from is None:
        min_count = 1
    options = PrepareOptions(hash_size, min_count, split_kind, val_frac, test_frac, seed, on_bad_row, chunk_rows,
                             threads, vocab_from)
    start = time.perf_counter()
    with ExitStack() as stack:
        length = sum(p.stat().st_size for p in raw if p.is_file())
        meta = prepare_folder(list(raw), out, options, force=force, progress=_rows_progress(stack, length))
    click.echo(_summary(out, meta, time.perf_counter() - start))


@data.command()
@click.option("--rows", type=int, required=True, help="Number of rows to make.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write (must not exist).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scale", type=float, default=0.01, show_default=True,
              help="Tables larger than 1,000 in Kaggle get max(1000, kaggle * scale) values; 1 = Kaggle's sizes.")
@click.option("--val-frac", type=float, default=0.1, show_default=True)
@click.option("--test-frac", type=float, default=0.1, show_default=True)
@click.option("--raw-tsv", type=click.Path(path_type=Path), help="Also write the rows as a raw Criteo file.")
@click.option("--force", is_flag=True, help="Replace --out and --raw-tsv if they exist.")
def synth(rows, out, seed, scale, val_frac, test_frac, raw_tsv, force):
    """Make Criteo-shaped rows whose labels come from a planted teacher (see docs/data.md)."""
    from dnas_hw.data.synth import SynthOptions, synth as synth_folder

    start = time.perf_counter()
    with ExitStack() as stack:
        meta = synth_folder(out, SynthOptions(rows, seed, scale, val_frac, test_frac), raw_tsv=raw_tsv, force=force,
                            progress=lambda stage: stack.enter_context(progress(rows, stage, "rows")).update)
    click.echo(_summary(out, meta, time.perf_counter() - start))
    if raw_tsv:
        click.echo(f"wrote {raw_tsv}")


@data.command()
@click.argument("folder", type=click.Path(path_type=Path))
def show(folder):
    """Summarise a prepared-data folder: rows, positive rate, table sizes, source."""
    from dnas_hw.data.show import describe

    click.echo(describe(folder))
