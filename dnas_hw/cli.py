"""The `dnas-hw` command line: one click group, one sub-command per stage.

Each stage's command lives beside its code; this module only gathers them and
turns a `UserError` into one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys

import click

from dnas_hw import __version__
from dnas_hw.errors import UserError


class _Group(click.Group):
    """A click group that reports user errors in one line, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dnas-hw")
def main() -> None:
    """Hardware-aware differentiable NAS for CTR models under a latency budget."""


def _register() -> None:
    # Imported here so that `import dnas_hw` stays light.
    from dnas_hw.train_cli import train

    main.add_command(train)
    from dnas_hw.export_cli import export

    main.add_command(export)
    from dnas_hw.bench_cli import bench

    main.add_command(bench)
    from dnas_hw.pipeline_cli import pipeline

    main.add_command(pipeline)
    from search.cli import search

    main.add_command(search)
    from dnas_hw.data.cli import data

    main.add_command(data)
    from profiler.cli import profile

    main.add_command(profile)
    from lut.cli import lut

    main.add_command(lut)


_register()

if __name__ == "__main__":
    main()
