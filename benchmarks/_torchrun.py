"""What the 1-process-against-2 benchmarks share: the torchrun launch, the data, the timed epochs, the report.

Each such script is its own torchrun entry point: its `run` command launches the
script's hidden `worker` command (options: `epoch_worker_options`) through
`launch_epochs` once per configuration; the worker times its epochs with
`timed_epochs` and rank 0 writes a JSON file that the launch reads back.
Imported by the scripts as a sibling module (a script's folder is first on
sys.path, under torchrun too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import click


def torchrun(script: str, processes: int, threads: int, out: Path, *args: str) -> dict:
    """Run `script *args --out out` in `processes` processes (`torchrun --standalone`, `threads` torch threads each).

    Returns the JSON that rank 0 wrote to `out`; a failed launch raises ClickException with the stderr tail.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               script, *args, "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f"{processes}x{threads} {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(out.read_text())


def launch_epochs(script: str, processes: int, threads: int, data: Path, batch_size: int, epochs: int, seed: int,
                  out: Path) -> dict:
    """One launch of the script's hidden `worker` command (declared with `epoch_worker_options`); its JSON."""
    return torchrun(script, processes, threads, out, "worker", "--data", str(data), "--batch-size", str(batch_size),
                    "--epochs", str(epochs), "--seed", str(seed))


def epoch_worker_options(worker: Callable) -> Callable:
    """The options `launch_epochs` passes: worker(data_dir, batch_size, epochs, seed, out)."""
    for option in reversed([
        click.option("--data", "data_dir", required=True, type=click.Path()),
        click.option("--batch-size", required=True, type=int),
        click.option("--epochs", required=True, type=int),
        click.option("--seed", required=True, type=int),
        click.option("--out", required=True, type=click.Path()),
    ]):
        worker = option(worker)
    return worker


def data_options(command: Callable) -> Callable:
    """--data (a prepared data folder) and --rows (how many to synthesize without one): see `benchmark_data`."""
    command = click.option("--rows", default=20_000, show_default=True,
                           help="Rows to synthesize when --data is not given.")(command)
    return click.option("--data", "data_dir", type=click.Path(),
                        help="Prepared data folder (default: synthesize --rows rows).")(command)


def check_epochs(epochs: int) -> None:
    """A run needs a warm-up epoch and at least one timed one."""
    if epochs < 2:
        raise click.BadParameter("needs at least 2 epochs (the first is warm-up)", param_hint="--epochs")


def benchmark_data(data_dir: str | None, rows: int, seed: int, tmp: Path) -> Path:
    """`data_dir`, or a synthetic folder of `rows` rows made under `tmp` (Kaggle's cardinalities x 0.01)."""
    from dnas_hw.data.synth import SynthOptions, synth

    if data_dir:
        return Path(data_dir)
    synth(tmp / "data", SynthOptions(rows=rows, seed=seed))
    return tmp / "data"


def timed_epochs(epochs: int, run_epoch: Callable[[int, float], object]) -> list[float]:
    """Seconds of each of `epochs` calls run_epoch(epoch, start), timed between barriers of all ranks."""
    from dnas_hw import distributed

    times = []
    for epoch in range(epochs):
        distributed.barrier()
        start = time.perf_counter()
        run_epoch(epoch, start)
        distributed.barrier()
        times.append(time.perf_counter() - start)
    return times


def report_header() -> dict:
    """machine, date (UTC), load average and command line of this run, to head its JSON report."""
    from profiler.environment import machine_info

    return {"machine": machine_info(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg(), "command": " ".join(sys.argv)}
