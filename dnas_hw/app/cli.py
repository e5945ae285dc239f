"""The `dnas-hw` command line: one click group, one sub-command per stage.

Each command has its module in this package (`<command>_cli.py`); this module
only names them (a command's module is imported when that command runs, so
`dnas-hw --help` and the commands that need no torch start at once) and is the
one place where an error a user can cause (a `UserError`, a bad option or
argument, a file the system refuses to read or write) becomes one line on
stderr, `error: ...`, with exit code 2 and no traceback.
"""

from __future__ import annotations

import errno
import sys
import warnings

import click

from dnas_hw import __version__
from dnas_hw.app.cli_lazy import LazyGroup
from dnas_hw.errors import UserError

# name -> (where the command is defined, its one-line summary for `dnas-hw --help`).
COMMANDS = {
    "data": ("dnas_hw.app.data_cli:data", "Prepare Criteo data, make synthetic data, show a prepared folder."),
    "profile": (
        "dnas_hw.app.profile_cli:profile",
        "Time every (op, shape) key of SPACE at each batch size on BACKEND/DEVICE into a LUT.",
    ),
    "lut": ("dnas_hw.app.lut_cli:lut", "Inspect, use and validate latency lookup tables (LUT.csv + LUT.meta.json)."),
    "search": (
        "dnas_hw.app.search_cli:search",
        "Search SPACE on DATA for the best arch whose LUT latency at --batch-size fits --latency-budget.",
    ),
    "train": (
        "dnas_hw.app.train_cli:train",
        "Train ARCH on DATA and write OUT/model.pt and OUT/metrics.json (val and test metrics).",
    ),
    "export": (
        "dnas_hw.app.export_cli:export",
        "Export CHECKPOINT to OUT: inputs dense [B,13] float32 and sparse [B,26] int64, output prob [B].",
    ),
    "bench": (
        "dnas_hw.app.bench_cli:bench",
        "Time MODEL (written by `dnas-hw export`) per batch size: p50/p90 latency and throughput.",
    ),
    "pipeline": (
        "dnas_hw.app.pipeline_cli:pipeline",
        "Data, profile, search per budget, retrain, export, bench, and OUT/report.md with plots.",
    ),
}


# The packages whose warnings a user should see: ours. Library warnings (torch's
# deprecations and betas, onnx's) say nothing a user can act on.
OUR_PACKAGES = r"(dnas_hw|lut|profiler|search|examples)(\.|$)"


def usage_message(error: click.UsageError) -> str:
    """click's message for a bad option or argument, pointing at the command's help."""
    text = " ".join(error.format_message().split())
    if error.ctx is not None:
        text += f" (see '{error.ctx.command_path} --help')"
    return text


def os_message(error: OSError) -> str:
    name = getattr(error, "filename", None)
    reason = error.strerror or str(error)
    return f"{name}: {reason}" if name else reason


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


class _Group(LazyGroup):
    """A click group that reports every error a user can cause in one line, without a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=OUR_PACKAGES)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            _fail(usage_message(e))
        except click.ClickException as e:
            _fail(" ".join(e.format_message().split()))
        except UserError as e:
            _fail(str(e))
        except OSError as e:
            if e.errno == errno.EPIPE:  # the reader of our output went away (`| head`): nothing to report
                sys.exit(1)
            _fail(os_message(e))
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dnas-hw")
def main() -> None:
    """Hardware-aware differentiable NAS for CTR models under a latency budget."""


if __name__ == "__main__":
    main()
