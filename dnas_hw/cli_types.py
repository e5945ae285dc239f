"""Click parameter types shared by several commands."""

from __future__ import annotations

import re

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
