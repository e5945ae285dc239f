"""A helper of the search benchmarks (not a benchmark): the run folder, the data and its bound space; the
options and the kept measurements of the benchmarks that read finished search folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import torch

from dnas_hw.data.folder import PreparedData
from dnas_hw.space import get_space


def search_arguments(ap: argparse.ArgumentParser, lut_required: bool = True) -> argparse.ArgumentParser:
    """The options every search benchmark takes: --data, --lut, --out, --space, and --set (repeatable) for
    the `SearchConfig` fields its searches or supernets train with (`config_fields`)."""
    ap.add_argument("--data", required=True)
    ap.add_argument("--lut", required=lut_required, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a SearchConfig field (repeatable), e.g. --set paths_per_step=1")
    return ap


def open_run(args: argparse.Namespace):
    """(out folder, created; the prepared data of `args.data`; `args.space` bound to it). Everything runs on
    one torch thread: the machine is shared, and CPU times compare only at one thread."""
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = PreparedData.open(args.data)
    return out, data, get_space(args.space, cardinalities=data.cardinalities)


def config_fields(pairs: list[str]) -> dict:
    """`--set` values: `["sandwich=false", "weight_lr=3e-4"]` -> {"sandwich": False, "weight_lr": 0.0003}, each
    value read as JSON (so true/false/null and numbers), else kept as a string; for `SearchConfig.from_dict`."""
    fields = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return fields


def finalist_run_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a benchmark over finished searches' finalists: --data, --runs (search or front-point
    folders holding finalists.json and summary.json), --space, and --out (the measurements, `kept_measurements`)."""
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="search run folders holding finalists.json and summary.json")
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--out", default=None, help="a JSON file of every measured logloss, reused by a restart")
    return ap


def kept_measurements(path: str | None) -> Callable[[str, Callable[[], Any]], Any]:
    """`measure(key, fn)`: fn() the first time `key` is asked for, its result then kept (JSON-able) and written to
    `path` as each finishes, so a restart with the same `path` measures nothing twice (None: kept in memory)."""
    out = Path(path) if path else None
    measured: dict[str, Any] = json.loads(out.read_text()) if out and out.exists() else {}

    def measure(key: str, fn: Callable[[], Any]) -> Any:
        if key not in measured:
            measured[key] = fn()
            if out:
                out.write_text(json.dumps(measured, indent=1))
        return measured[key]

    return measure
