"""One progress bar for all long work: count done, rate, and time left, on stderr.

On a terminal the bar redraws in place and is cleared when the work fails, so
an error line is not preceded by a half-drawn bar. Elsewhere (a log file, a
pipe) nothing is written while the work runs and one line, with the count,
time and rate, when it has finished: a failed run's stderr is its error alone.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

import click


def _rate_text(rate: float, unit: str) -> str:
    return f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2f} {unit}/s"


class Progress:
    """Wraps `click.progressbar`, adding a rate (`unit`/s) and a caller-supplied status text."""

    def __init__(self, bar, unit: str):
        self._bar = bar
        self._unit = unit
        self._start = time.perf_counter()
        self._done = 0
        self.status = ""

    def update(self, n: int, status: str | None = None) -> None:
        self._done += n
        if status is not None:
            self.status = status
        self._bar.update(n)

    @property
    def done(self) -> int:
        return self._done

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self._done / elapsed if elapsed > 0 else 0.0

    def _describe(self, _item) -> str:
        return f"{_rate_text(self.rate, self._unit)} {self.status}".rstrip()

    def summary(self, label: str) -> str:
        """One line for a finished bar: `label: N unit in S s, R unit/s; status`."""
        text = f"{label}: {self._done:,} {self._unit} in {self.elapsed:.1f} s, {_rate_text(self.rate, self._unit)}"
        return text + (f"; {self.status}" if self.status else "")


@contextmanager
def progress(total: int, label: str, unit: str = "it") -> Iterator[Progress]:
    """`with progress(n, "training", "samples") as p: p.update(k, status="loss 0.45")`."""
    holder: dict[str, Progress] = {}
    on_terminal = sys.stderr.isatty()
    with click.progressbar(
        length=max(int(total), 1),
        label=label,
        file=sys.stderr,
        show_eta=True,
        show_pos=True,
        hidden=not on_terminal,
        item_show_func=lambda item: holder["p"]._describe(item) if "p" in holder else "",
    ) as bar:
        holder["p"] = Progress(bar, unit)
        try:
            yield holder["p"]
        except BaseException:
            if on_terminal:
                bar.hidden = True  # no final redraw and no newline: the line is cleared instead
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            raise
    if not on_terminal:
        click.echo(holder["p"].summary(label.strip()), err=True)
