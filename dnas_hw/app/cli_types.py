"""Click parameter types shared by several commands."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Callable

import click


class IntList(click.ParamType):
    """`1,64,512` (commas) or the option repeated: a list of positive ints."""

    name = "INT[,INT...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return [int(v) for v in value]
        try:
            values = [int(v) for v in str(value).replace(" ", ",").split(",") if v]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not values or any(v <= 0 for v in values):
            self.fail(f"{value!r}: expected positive integers", param, ctx)
        return values


INT_LIST = IntList()

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|us|µs)\s*$")


def parse_duration_us(text: str) -> float:
    """`0.8ms` or `800us` -> microseconds. A bare number is refused: the unit must be said."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r}: give a latency with its unit, e.g. 0.8ms or 800us")
    value = float(m.group(1))
    if value <= 0:
        raise ValueError(f"{text!r}: a latency must be positive")
    return value * 1000.0 if m.group(2) == "ms" else value


class Duration(click.ParamType):
    """A latency with its unit (`0.8ms`, `800us`), converted to microseconds."""

    name = "LATENCY"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration_us(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION_US = Duration()


class DurationList(click.ParamType):
    """`0.5ms` or `300us,0.8ms`: latency budgets with their units, in microseconds (a tuple)."""

    name = "LATENCY[,LATENCY...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            budgets = tuple(parse_duration_us(v) for v in str(value).split(",") if v.strip())
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if not budgets:
            self.fail("give at least one budget, e.g. 0.5ms", param, ctx)
        return budgets


DURATION_LIST = DurationList()


def config_options(cls: type, *, hidden: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one option per field of the dataclass `cls` that carries `help` metadata.

    `--field-name` (`flags` metadata: another flag pair; a bool: `--x/--no-x`), typed by the
    field's annotation, a `click.Choice` where `choices` metadata is given. Each option defaults
    to None, meaning "the dataclass's default", and reaches the command under the field's name,
    so a new field of `cls` becomes an option without a second edit.
    """
    hints = typing.get_type_hints(cls)

    def decorate(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if "help" not in f.metadata:
                continue
            flag = "--" + f.name.replace("_", "-")
            kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
            help_text = f"{f.metadata['help']} [default: {f.default}]"
            if kind is bool:
                decls = f.metadata.get("flags", f"{flag}/--no-{flag[2:]}")
                option = click.option(decls, f.name, default=None, help=help_text, hidden=f.name in hidden)
            else:
                param_type = click.Choice(list(f.metadata["choices"])) if "choices" in f.metadata else kind
                option = click.option(flag, f.name, default=None, type=param_type, help=help_text, hidden=f.name in hidden)
            command = option(command)
        return command

    return decorate
