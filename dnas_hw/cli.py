"""The `dnas-hw` command line: one click group, one sub-command per stage.

Each stage's command lives beside its code; this module only names them (a
command's module is imported when that command runs, so `dnas-hw --help` and
the commands that need no torch start at once) and turns a `UserError` into one
line on stderr with exit code 2.
"""

from __future__ import annotations

import sys

import click

from dnas_hw import __version__
from dnas_hw.cli_lazy import LazyGroup
from dnas_hw.errors import UserError

# name -> (where the command is defined, its one-line summary for `dnas-hw --help`).
COMMANDS = {
    "data": ("dnas_hw.data.cli:data", "Prepare Criteo data, make synthetic data, show a prepared folder."),
    "profile": (
        "profiler.cli:profile",
        "Time every (op, shape) key of SPACE at each batch size on BACKEND/DEVICE into a LUT.",
    ),
    "lut": ("lut.cli:lut", "Inspect, use and validate latency lookup tables (LUT.csv + LUT.meta.json)."),
    "search": (
        "search.cli:search",
        "Search SPACE on DATA for the best arch whose LUT latency at --batch-size fits --latency-budget.",
    ),
    "train": (
        "dnas_hw.train_cli:train",
        "Train ARCH on DATA and write OUT/model.pt and OUT/metrics.json (val and test metrics).",
    ),
    "export": (
        "dnas_hw.export_cli:export",
        "Export CHECKPOINT to OUT: inputs dense [B,13] float32 and sparse [B,26] int64, output prob [B].",
    ),
    "bench": (
        "dnas_hw.bench_cli:bench",
        "Time MODEL (written by `dnas-hw export`) per batch size: p50/p90 latency and throughput.",
    ),
    "pipeline": (
        "dnas_hw.pipeline_cli:pipeline",
        "Data, profile, search per budget, retrain, export, bench, and OUT/report.md with plots.",
    ),
}


class _Group(LazyGroup):
    """A click group that reports user errors in one line, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dnas-hw")
def main() -> None:
    """Hardware-aware differentiable NAS for CTR models under a latency budget."""


if __name__ == "__main__":
    main()
