"""A helper of the search benchmarks (not a benchmark): the run folder, the data and its bound space."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dnas_hw.data.folder import PreparedData
from dnas_hw.space import get_space


def open_run(args: argparse.Namespace):
    """(out folder, created; the prepared data of `args.data`; `args.space` bound to it). Everything runs on
    one torch thread: the machine is shared, and CPU times compare only at one thread."""
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = PreparedData.open(args.data)
    return out, data, get_space(args.space, cardinalities=data.cardinalities)
