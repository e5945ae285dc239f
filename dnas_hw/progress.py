"""One progress bar for all long work: count done, rate, and time left, on stderr."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

import click


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
    def rate(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self._done / elapsed if elapsed > 0 else 0.0

    def _describe(self, _item) -> str:
        rate = self.rate
        text = f"{rate:,.0f} {self._unit}/s" if rate >= 10 else f"{rate:.2f} {self._unit}/s"
        return f"{text} {self.status}".rstrip()


@contextmanager
def progress(total: int, label: str, unit: str = "it") -> Iterator[Progress]:
    """`with progress(n, "training", "samples") as p: p.update(k, status="loss 0.45")`."""
    holder: dict[str, Progress] = {}
    with click.progressbar(
        length=max(int(total), 1),
        label=label,
        file=sys.stderr,
        show_eta=True,
        show_pos=True,
        item_show_func=lambda item: holder["p"]._describe(item) if "p" in holder else "",
    ) as bar:
        holder["p"] = Progress(bar, unit)
        yield holder["p"]
