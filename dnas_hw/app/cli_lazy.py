"""A click group whose sub-commands are imported only when one of them runs.

A command's module may import torch, pandas or onnx; `dnas-hw --help` and the
commands that need none of them should not pay for that. The group knows each
command by where it is defined and by its one-line summary, which its `--help`
lists without importing anything (tests/test_cli.py checks each summary
against the command's own help).
"""

from __future__ import annotations

import importlib
from typing import Mapping

import click


class LazyGroup(click.Group):
    """`lazy_commands`: name -> ("module:attribute", summary) for commands imported on first use."""

    def __init__(self, *args, lazy_commands: Mapping[str, tuple[str, str]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy_commands:
            module, _, attribute = self.lazy_commands[name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, with a command not imported yet shown by its summary."""
        shown = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or click.Command(name, help=self.lazy_commands[name][1])
            if not command.hidden:
                shown.append((name, command))
        if shown:
            limit = formatter.width - 6 - max(len(name) for name, _ in shown)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in shown])
