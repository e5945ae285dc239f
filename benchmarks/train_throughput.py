"""Training throughput of the DLRM Kaggle reference configuration, through `dnas_hw.train.train_step`.

Configuration (issue 2, item 9): 26 tables of 100,000 rows, dim 16, bottom MLP
13-512-256-64-16, top MLP 512-256-1, dot interaction, batch 128, SGD at lr 0.1
with sparse embedding gradients, random data. The target is 1.5 times the
reference, facebookresearch/dlrm's `dlrm_s_pytorch.py`.

The reference is run beside ours when `--reference-dir` names a checkout of
facebookresearch/dlrm (it is not part of this repository, and it needs
scikit-learn, tensorboard and tqdm, which the project does not install;
`--reference-python` names a Python that has them and torch): each round
then also runs `dlrm_s_pytorch.py` in the same configuration (random data,
batch 128, SGD 0.1, one index per lookup, the same torch thread count) in a
process of its own, for as many timed iterations after as many warm-up ones,
and takes the ms/it it prints. Both then see the same machine load, and the
ratios are run by run. Without it the reference is a recorded constant, 18,000
samples/s (7.0 ms/iter), measured once on the 2-core development machine, and
the output says so: a ratio to a constant moves with the load of the day each
side was measured on.

The model, optimizers and step are the project's own (`build_model`,
`split_parameters`, `make_optimizers`, `train_step`, inside
`updated_in_backward` as `fit` runs it). The routes are timed
interleaved run by run so that all see the same machine load:

- `packed`: what `dnas-hw train` does (tables packed: one gather for all
  tables, and their SGD update done in the backward pass in one scatter;
  the MLPs' SGD step done in their backward pass, `MLPUpdatedInBackward`);
- `per-feature`: lookups and updates without packing: each feature's
  registry op (`SparseArch.packed = False`) and `torch.optim.SGD` over all
  parameters, one lookup and one update per table (the rest of the step,
  MLPs and interaction, is the same code);
- `mlp-step-after-backward` (not timed by default): `packed`, but the MLPs
  get weight gradients and `SGD.step()` updates them after the backward pass,
  the plain route `MLPUpdatedInBackward` replaces.

Batches are drawn before timing from a pool of random ids over the full
tables and random dense values and labels, so data loading is not timed.

    .venv/bin/python benchmarks/train_throughput.py --runs 7 --iters 200 --out train_throughput.json
    # beside the reference: DIR a facebookresearch/dlrm checkout, PY a Python with torch, scikit-learn,
    # tensorboard and tqdm (e.g. a venv whose .pth file adds .venv's site-packages, plus those three)
    .venv/bin/python benchmarks/train_throughput.py --reference-dir DIR --reference-python PY --runs 7 --iters 200
    .venv/bin/python benchmarks/train_throughput.py --split     # where the time goes, per part
    # A/B of two routes under load: CPU time of one thread, not a throughput
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --threads 1 --clock process \
        --route packed --route mlp-step-after-backward --runs 15 --iters 60
    .venv/bin/python benchmarks/train_throughput.py --profile 50  # per op (the profiler's overhead included)
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click
import torch
from torch import nn

from dnas_hw.dlrm.arch import dlrm_kaggle_reference
from dnas_hw.dlrm.model import build_model
from dnas_hw.files import write_json_atomic
from dnas_hw.progress import progress
from dnas_hw.train import make_optimizers, split_parameters, updated_in_backward, train_step
from profiler.environment import machine_info

# facebookresearch/dlrm on the development machine, 7.0 ms/iter at batch 128: the recorded constant used
# when the reference is not run beside (see above).
REFERENCE_SAMPLES_PER_S = 18_000
RECORDED = "a recorded constant (facebookresearch/dlrm measured once on the development machine), not run beside"
TARGET_RATIO = 1.5
ROWS, TABLES, DIM, NUM_DENSE = 100_000, 26, 16, 13
ROUTES = ("packed", "per-feature", "mlp-step-after-backward")
DEFAULT_ROUTES = ("packed", "per-feature")


class Trainer:
    """One model with its optimizers, stepping through a fixed pool of random batches."""

    def __init__(self, route: str, batch_size: int, lr: float, pool: int, seed: int):
        arch = dlrm_kaggle_reference([ROWS] * TABLES, dim=DIM)
        self.model = build_model(arch, seed=seed)
        self.model.sparse_arch.packed = route != "per-feature"
        self.model.train()
        self.mlp_step_after_backward = route == "mlp-step-after-backward"
        if route != "per-feature":
            self.optimizers = make_optimizers(*split_parameters(self.model), "sgd", lr)
        else:
            self.optimizers = [torch.optim.SGD(self.model.parameters(), lr=lr)]
        self.loss_fn = nn.BCEWithLogitsLoss()
        g = torch.Generator().manual_seed(seed)
        self.batches = [
            (
                torch.rand(batch_size, NUM_DENSE, generator=g),
                torch.randint(0, ROWS, (batch_size, TABLES), generator=g),
                torch.randint(0, 2, (batch_size,), generator=g).float(),
            )
            for _ in range(pool)
        ]
        self.i = 0

    def steps(self, n: int) -> torch.Tensor:
        loss = torch.zeros(())
        with updated_in_backward(self.model, self.optimizers, mlps=not self.mlp_step_after_backward) as optimizers:
            for _ in range(n):
                loss = train_step(self.model, optimizers, self.loss_fn, *self.batches[self.i % len(self.batches)])
                self.i += 1
        return loss


class Reference:
    """facebookresearch/dlrm's `dlrm_s_pytorch.py` from a checkout, in the configuration of `Trainer`."""

    SCRIPT = "dlrm_s_pytorch.py"
    FINISHED = re.compile(r"Finished training it \d+/\d+ of epoch \d+, ([0-9.]+) ms/it")

    def __init__(self, directory: str, batch_size: int, lr: float, seed: int, python: str = sys.executable):
        self.directory = Path(directory)
        self.python = python
        if not (self.directory / self.SCRIPT).is_file():
            raise click.UsageError(f"--reference-dir: no {self.SCRIPT} in {directory} (a facebookresearch/dlrm checkout)")
        self.args = [
            f"--arch-sparse-feature-size={DIM}", f"--arch-mlp-bot={NUM_DENSE}-512-256-64-{DIM}", "--arch-mlp-top=512-256-1",
            "--arch-interaction-op=dot", "--arch-embedding-size=" + "-".join([str(ROWS)] * TABLES),
            "--data-generation=random", "--num-indices-per-lookup=1", "--num-indices-per-lookup-fixed=True",
            f"--mini-batch-size={batch_size}", f"--learning-rate={lr}", "--loss-function=bce", "--round-targets=True",
            f"--numpy-rand-seed={seed}", "--nepochs=1", "--print-time",
        ]

    def ms_per_iter(self, iters: int) -> float:
        """ms/it of `iters` timed iterations after `iters` warm-up ones, as the reference itself reports them."""
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        command = [self.python, self.SCRIPT, *self.args, f"--num-batches={2 * iters}", f"--print-freq={iters}"]
        done = subprocess.run(command, cwd=self.directory, env=env, capture_output=True, text=True)
        found = self.FINISHED.findall(done.stdout)
        if done.returncode != 0 or len(found) < 2:
            raise click.ClickException(f"the reference failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
        return float(found[-1])


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def time_routes(routes, runs: int, iters: int, warmup: int, batch_size: int, lr: float, pool: int, seed: int,
                clock: str = "wall", reference: Reference | None = None) -> tuple[dict, list[float]]:
    """ms/iter of each route for `runs` runs of `iters` steps, the routes interleaved run by run, and the
    reference's ms/it of each round (empty without `reference`).

    With `reference`, each round also runs it, and `ratio_to_reference` is the median over the rounds of
    (the reference's ms/it) / (the route's ms/iter) in the same round; without, the ratio is to the
    recorded `REFERENCE_SAMPLES_PER_S`.
    """
    now = CLOCKS[clock]
    trainers = {r: Trainer(r, batch_size, lr, pool, seed) for r in routes}
    for t in trainers.values():
        t.steps(warmup)
    ms: dict[str, list[float]] = {r: [] for r in routes}
    reference_ms: list[float] = []
    with progress(runs * (len(routes) + (reference is not None)) * iters, "training steps", "steps") as bar:
        for _ in range(runs):
            for route, trainer in trainers.items():
                start = now()
                loss = trainer.steps(iters)
                ms[route].append((now() - start) / iters * 1e3)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"{route}: the loss diverged ({loss.item()})")
                bar.update(iters, status=f"{route} {ms[route][-1]:.2f} ms/iter")
            if reference is not None:
                reference_ms.append(reference.ms_per_iter(iters))
                bar.update(iters, status=f"reference {reference_ms[-1]:.2f} ms/iter")
    out = {}
    first = ms[routes[0]]
    for route, values in ms.items():
        median = statistics.median(values)
        samples_per_s = batch_size / median * 1e3
        if reference is not None:
            ratio = statistics.median(r / v for r, v in zip(reference_ms, values))
        else:
            ratio = samples_per_s / REFERENCE_SAMPLES_PER_S
        out[route] = {
            "ms_per_iter_median": median,
            "ms_per_iter_min": min(values),
            "ms_per_iter_max": max(values),
            "ms_per_iter_runs": values,
            "samples_per_s": samples_per_s,
            "ratio_to_reference": ratio,
            # Each run's time over the first route's in the same round: steadier under changing load.
            "time_ratio_to_first_route_median": statistics.median(v / f for v, f in zip(values, first)),
        }
    return out, reference_ms


def time_parts(runs: int, iters: int, batch_size: int, lr: float, seed: int, clock: str = "wall") -> dict[str, float]:
    """Where a packed step's time goes: ms of each part timed on its own, medians over interleaved runs.

    step:        the whole `train_step` (packed route, tables updated in the backward pass);
    gemms:       the MLPs' matrix products alone, the same shapes, no autograd (forward X W^T + b,
                 backward G W for each layer's input but the first, and the weight's step
                 W -= lr G^T X as `MLPUpdatedInBackward` does it, here into a scratch copy of W);
    lookups:     `SparseArch.lookup_stacked` forward and backward (modulo, gather, update in backward);
    interaction: `interact_stacked` forward and backward;
    rest:        step minus the parts: activations, bias steps, loss, autograd and Python overhead.
    """
    now = CLOCKS[clock]
    trainer = Trainer("packed", batch_size, lr, pool=16, seed=seed)
    model = trainer.model
    dense, sparse, _ = trainer.batches[0]
    g = torch.Generator().manual_seed(seed)
    layers = [m[0] for m in list(model.dense_arch) + list(model.over_arch)]
    gemm_args = [(l.weight.detach().clone(), l.bias.detach(), torch.randn(batch_size, l.in_features, generator=g),
                  torch.randn(batch_size, l.out_features, generator=g)) for l in layers]

    def gemms() -> None:
        for i, (w, b, x, grad) in enumerate(gemm_args):
            torch.addmm(b, x, w.t())
            if i:
                torch.mm(grad, w)
            w.addmm_(grad.t(), x, alpha=-lr)

    lookup_grad = torch.randn(batch_size, model.arch.num_sparse, model.arch.interaction_dim, generator=g)

    def lookups() -> None:
        with updated_in_backward(model, trainer.optimizers, mlps=False):
            model.sparse_arch.lookup_stacked(sparse).backward(lookup_grad)

    dense_out = torch.randn(batch_size, model.arch.interaction_dim, generator=g, requires_grad=True)
    stacked = torch.randn(batch_size, model.arch.num_sparse, model.arch.interaction_dim, generator=g, requires_grad=True)
    out_grad = torch.randn(batch_size, model.arch.ops().interaction.output_width(), generator=g)

    def interaction() -> None:
        model.interaction.interact_stacked(dense_out, stacked).backward(out_grad)

    parts = {"step": lambda: trainer.steps(1), "gemms": gemms, "lookups": lookups, "interaction": interaction}
    ms: dict[str, list[float]] = {k: [] for k in parts}
    with progress(runs * len(parts) * iters, "parts of a step", "calls") as bar:
        for _ in range(runs):
            for name, fn in parts.items():
                start = now()
                for _ in range(iters):
                    fn()
                ms[name].append((now() - start) / iters * 1e3)
                bar.update(iters, status=f"{name} {ms[name][-1]:.3f} ms")
    out = {k: statistics.median(v) for k, v in ms.items()}
    out["rest"] = out["step"] - sum(v for k, v in out.items() if k != "step")
    return out


def profile_route(route: str, iters: int, batch_size: int, lr: float, seed: int, rows: int) -> str:
    """The torch profiler's per-op table (self CPU time) for `iters` steps of one route."""
    from torch.profiler import ProfilerActivity, profile

    trainer = Trainer(route, batch_size, lr, pool=16, seed=seed)
    trainer.steps(10)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.steps(iters)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@click.command()
@click.option("--runs", default=7, show_default=True, help="Timed runs per route; the figure is their median.")
@click.option("--iters", default=200, show_default=True, help="Training steps per run.")
@click.option("--warmup", default=30, show_default=True, help="Untimed steps per route first.")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.1, show_default=True)
@click.option("--pool", default=64, show_default=True, help="Distinct random batches cycled through.")
@click.option("--threads", default=None, type=int, help="torch intra-op threads (default: torch's, one per core).")
@click.option("--route", "routes", multiple=True, type=click.Choice(ROUTES), default=DEFAULT_ROUTES, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--clock", type=click.Choice(sorted(CLOCKS)), default="wall", show_default=True,
              help="wall: the figure. process: CPU time of this process, for comparing routes with --threads 1 "
                   "while other jobs load the machine (not a throughput).")
@click.option("--profile", "profile_iters", default=0, help="Instead of timing, profile this many steps of each route.")
@click.option("--split", is_flag=True, help="Instead of the routes, time the parts of a packed step (see time_parts).")
@click.option("--reference-dir", type=click.Path(file_okay=False), default=None,
              help="A facebookresearch/dlrm checkout: run its dlrm_s_pytorch.py beside ours in every round "
                   "(needs scikit-learn, tensorboard and tqdm). Without it the reference is a recorded constant.")
@click.option("--reference-python", default=sys.executable, show_default="this Python",
              help="The Python that runs the reference (one with torch and the reference's packages).")
@click.option("--out", type=click.Path(), default=None, help="Also write the figures as JSON.")
def main(runs, iters, warmup, batch_size, lr, pool, threads, routes, seed, clock, profile_iters, split, reference_dir,
         reference_python, out) -> None:
    """Training samples/s of the DLRM Kaggle reference configuration, against facebookresearch/dlrm's (run beside
    with --reference-dir, else a recorded 18,000 samples/s)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if profile_iters:
        for route in routes:
            click.echo(f"== {route}: {profile_iters} steps")
            click.echo(profile_route(route, profile_iters, batch_size, lr, seed, rows=30))
        return
    if split:
        load_before = load_average()
        parts = time_parts(runs, iters, batch_size, lr, seed, clock)
        click.echo(f"{torch.get_num_threads()} threads, {clock} clock; load average {load_before} -> {load_average()}")
        for name, value in parts.items():
            click.echo(f"{name:12s} {value:6.3f} ms  {value / parts['step']:5.1%}")
        return
    reference = Reference(reference_dir, batch_size, lr, seed, reference_python) if reference_dir else None
    if reference is not None and clock != "wall":
        raise click.UsageError("--reference-dir needs the wall clock (the reference reports wall time)")
    load_before = load_average()
    results, reference_ms = time_routes(routes, runs, iters, warmup, batch_size, lr, pool, seed, clock, reference)
    if reference is not None:
        reference_median = statistics.median(reference_ms)
        reference_report = {"is": "run beside, each round (facebookresearch/dlrm dlrm_s_pytorch.py)",
                            "directory": str(Path(reference_dir).resolve()), "python": reference_python,
                            "ms_per_iter_runs": reference_ms,
                            "ms_per_iter_median": reference_median, "samples_per_s": batch_size / reference_median * 1e3}
        reference_line = (f"reference: facebookresearch/dlrm run beside in each round, {reference_median:.2f} ms/it "
                          f"(runs {min(reference_ms):.2f}-{max(reference_ms):.2f}), "
                          f"{reference_report['samples_per_s']:,.0f} samples/s; ratios below are run by run")
        against = "the reference run beside"
    else:
        reference_report = {"is": RECORDED, "samples_per_s": REFERENCE_SAMPLES_PER_S}
        reference_line = (f"reference: {REFERENCE_SAMPLES_PER_S:,} samples/s, {RECORDED} this one: ratios to it move "
                          f"with the load of each day (--reference-dir runs it beside)")
        against = f"the recorded {REFERENCE_SAMPLES_PER_S:,}"
    report = {
        "config": {"tables": TABLES, "rows": ROWS, "dim": DIM, "bottom_mlp": [NUM_DENSE, 512, 256, 64, DIM],
                   "top_mlp": [512, 256, 1], "interaction": "dot", "batch_size": batch_size, "optimizer": "sgd",
                   "lr": lr, "runs": runs, "iters": iters, "warmup": warmup, "clock": clock},
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": load_average()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "reference": reference_report,
        "target_ratio": TARGET_RATIO,
        "results": results,
    }
    click.echo(f"{report['machine']['cpu']}, {report['machine']['cores']} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads; load average {load_before} -> {report['machine']['load_average_after']}; "
               f"{clock} clock")
    click.echo(reference_line)
    for route, r in results.items():
        met = "meets" if r["ratio_to_reference"] >= TARGET_RATIO else "below"
        against_reference = (f"{r['samples_per_s']:8,.0f} samples/s  {r['ratio_to_reference']:.2f}x {against} "
                             f"({met} the {TARGET_RATIO}x target)" if clock == "wall" else "CPU time, not a throughput")
        click.echo(f"{route:12s} {r['ms_per_iter_median']:6.2f} ms/iter (runs {r['ms_per_iter_min']:.2f}-"
                   f"{r['ms_per_iter_max']:.2f})  {against_reference}; "
                   f"time / {routes[0]}'s, run by run: median {r['time_ratio_to_first_route_median']:.3f}")
    if out:
        write_json_atomic(out, report)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
