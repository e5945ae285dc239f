"""Search throughput of 2 data-parallel processes against 1, through the search's own epoch loop.

The supernet of the default space (dlrm-kaggle, bound to a synthetic data
folder's tables: Kaggle's cardinalities x 0.01) runs whole search epochs
(`search.run.run_epoch`: data loading, hard single-path weight steps and arch
steps, default SearchConfig except no warm-up), one torch thread per process.
Ops are priced by FLOPs (the step cost does not depend on the table's values,
so no LUT is needed). Each configuration is a fresh `torchrun --standalone`
launch, interleaved run by run; the first epoch is warm-up and the figure is
(weight + arch steps) / epoch seconds, median over the other epochs:

    .venv/bin/python benchmarks/search_distributed_throughput.py run --rows 20000 --epochs 3 --runs 3

`sync` compares the two ways of averaging a weight step's gradients over 2
ranks: the explicit all-reduce the search uses, and DistributedDataParallel
with `find_unused_parameters=True` (needed there: a single-path step leaves
some weights without gradients):

    .venv/bin/python benchmarks/search_distributed_throughput.py sync --runs 3
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import click

from _torchrun import (benchmark_data, check_epochs, data_options, epoch_worker_options, launch_epochs,  # sibling module
                       report_header, timed_epochs, torchrun)

CONFIGS = {"1x1": 1, "2x1": 2}  # name -> processes (one thread each)


def make_search(data_dir: str, batch_size: int, seed: int):
    """(the search state for dlrm-kaggle on `data_dir`, the opened data)."""
    import torch

    from dnas_hw.data.folder import PreparedData
    from dnas_hw.space import get_space
    from search.config import SearchConfig
    from search.cost import CostTables
    from search.family_search import cost_table
    from search.run import Searcher, id_counts

    torch.set_num_threads(1)
    data = PreparedData.open(data_dir)
    space = get_space("dlrm-kaggle", cardinalities=data.cardinalities)
    tables = CostTables(cost_table(space, lambda c: float(c.flops(1)) + 1.0))
    config = SearchConfig(seed=seed, train_batch_size=batch_size, warmup_epochs=0)
    return Searcher(space, tables, budget_us=1e9, config=config, id_counts=id_counts(data, config.split_fraction)), data


@click.group()
def cli() -> None:
    """2-process vs 1-process search throughput."""


@cli.command()
@data_options
@click.option("--batch-size", default=256, show_default=True, help="Global supernet training batch.")
@click.option("--epochs", default=3, show_default=True, help="Search epochs per launch; the first is warm-up.")
@click.option("--runs", default=3, show_default=True, help="Launches per configuration.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(), help="Also write the results here.")
def run(data_dir, rows, batch_size, epochs, runs, seed, json_path) -> None:
    """Time whole search epochs in 1 and 2 processes; print steps/s medians and the ratio."""
    from dnas_hw.files import write_json_atomic
    from dnas_hw.progress import progress

    check_epochs(epochs)
    rates: dict[str, list[float]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        data = benchmark_data(data_dir, rows, seed, Path(tmp))
        with progress(runs * len(CONFIGS), "launches", "launches") as bar:
            for i in range(runs):
                for name, processes in CONFIGS.items():
                    r = launch_epochs(__file__, processes, 1, data, batch_size, epochs, seed, Path(tmp) / f"{name}-{i}.json")
                    rates[name].append(statistics.median(s / t for s, t in zip(r["steps"][1:], r["epoch_s"][1:])))
                    bar.update(1, status=f"{name} {rates[name][-1]:.1f} steps/s")
    med = {c: statistics.median(v) for c, v in rates.items()}
    report = {**report_header(), "steps_per_s": rates, "median": med, "ratio_2x1_1x1": med["2x1"] / med["1x1"]}
    click.echo("  ".join(f"{c}: {med[c]:.2f} steps/s ({' / '.join(f'{v:.2f}' for v in rates[c])})" for c in CONFIGS)
               + f"   2x1/1x1 {report['ratio_2x1_1x1']:.2f}   load {report['load_average'][0]:.1f}")
    if json_path:
        write_json_atomic(json_path, report)


@cli.command(hidden=True)
@epoch_worker_options
def worker(data_dir, batch_size, epochs, seed, out) -> None:
    """One rank: EPOCHS search epochs, each timed between barriers, its steps counted."""
    from dnas_hw import distributed
    from dnas_hw.files import write_json_atomic
    from search.run import run_epoch

    with distributed.session():
        search, data = make_search(data_dir, batch_size, seed)
        counted = {"steps": 0}
        for kind in ("weight_step", "arch_step"):
            def step(*args, _real=getattr(search, kind)):
                counted["steps"] += 1
                return _real(*args)
            setattr(search, kind, step)
        steps = []

        def run_epoch(epoch, start):
            before = counted["steps"]
            run_epoch(search, data, epoch, start, 0.0)
            steps.append(counted["steps"] - before)

        times = timed_epochs(epochs, run_epoch)
        if distributed.is_main():
            write_json_atomic(out, {"world": distributed.world_size(), "epoch_s": times, "steps": steps})


@cli.command()
@click.option("--batch-size", default=256, show_default=True, help="Global batch of a weight step.")
@click.option("--steps", default=150, show_default=True, help="Timed weight steps per launch (after 10 warm-up ones).")
@click.option("--runs", default=3, show_default=True, help="Launches per method, interleaved.")
def sync(batch_size, steps, runs) -> None:
    """Median weight-step time on 2 ranks: explicit gradient all-reduce vs DDP(find_unused_parameters=True)."""
    times: dict[str, list[float]] = {"explicit": [], "ddp": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for method in times:
                r = torchrun(__file__, 2, 1, Path(tmp) / f"{method}-{i}.json",
                             "sync-worker", "--method", method, "--batch-size", str(batch_size), "--steps", str(steps))
                times[method].append(r["median_ms"])
    click.echo("  ".join(f"{m}: {statistics.median(v):.1f} ms ({' / '.join(f'{x:.1f}' for x in v)})" for m, v in times.items())
               + f"   load {os.getloadavg()[0]:.1f}")


@cli.command("sync-worker", hidden=True)
@click.option("--method", required=True, type=click.Choice(["explicit", "ddp"]))
@click.option("--batch-size", required=True, type=int)
@click.option("--steps", required=True, type=int)
@click.option("--out", required=True, type=click.Path())
def sync_worker(method, batch_size, steps, out) -> None:
    """One rank: time hard single-path weight steps on a fixed random batch (its half of the global one)."""
    import torch
    from torch import nn

    from dnas_hw import distributed
    from dnas_hw.data.synth import SynthOptions, synth
    from dnas_hw.files import write_json_atomic

    with distributed.session(), tempfile.TemporaryDirectory() as tmp:
        synth(Path(tmp) / "data", SynthOptions(rows=2000, seed=0))  # only for its tables' sizes
        search, _ = make_search(str(Path(tmp) / "data"), batch_size, 0)
        space, rows = search.space, batch_size // distributed.world_size()
        g = torch.Generator().manual_seed(distributed.rank())
        dense = torch.randn(rows, space.num_dense, generator=g)
        sparse = torch.stack([torch.randint(0, c, (rows,), generator=g) for c in space.cardinalities], 1)
        y = torch.randint(0, 2, (rows,), generator=g).float()
        if method == "explicit":
            def step():
                search.weight_step(dense, sparse, y, 1.0, batch_size)
        else:  # DDP over the weights; the logits and the table (SparseGradGather's) left out
            net = search.net
            ignored = [n for n, p in net.named_parameters() if any(p is q for q in net.arch_parameters() + search.sparse_gather.tables)]
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(net, ignored)
            ddp = nn.parallel.DistributedDataParallel(net, broadcast_buffers=False, find_unused_parameters=True)

            def step():
                for opt in search.weight_opts:
                    opt.zero_grad(set_to_none=True)
                search.loss_fn(ddp(dense, sparse, search.sample(batch_size, 1.0, detach=True)), y).backward()
                for opt in search.weight_opts:
                    opt.step()
        times = []
        for i in range(10 + steps):
            distributed.barrier()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        if distributed.is_main():
            write_json_atomic(out, {"method": method, "median_ms": statistics.median(times[10:]) * 1000})


if __name__ == "__main__":
    cli()
