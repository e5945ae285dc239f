"""The search loop: alternate weight and logit steps, control the budget, checkpoint each epoch.

Run folder `out/`:
    search_state.pt   checkpoint after each epoch (removed when the run finishes)
    search_log.csv    one row per epoch (rewritten after each)
    arch.json         the derived arch (an `Arch`, loadable by `dnas-hw train`)
    arch_probs.json   {slot: {choice: p}}
    arch_probs_epochs.json  [{"epoch": e, "probs": {slot: {choice: p}}}] after each epoch (rewritten after each)
    derived_init.pt   the derived model holding the supernet's weights (a `model.pt`)
    finalists.json    the finalists' one-pass trainings (`search.finalists`), when there is more than one
    summary.json      written last: its presence marks a finished run

Under torchrun (`dnas_hw.distributed`) the search runs data-parallel: each rank
takes its part of every global batch, gradients are averaged over the ranks,
the Gumbel samples and so the logits stay identical on all of them (checked
after each epoch), and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import torch
from torch import nn

from dnas_hw import distributed
from dnas_hw.data.folder import PreparedData, Split, num_batches, shard_rows
from dnas_hw.checkpoint import save_checkpoint
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.errors import UserError
from dnas_hw.files import check_writable, output_lock, read_json, removed_if_left_empty, write_json_atomic, write_text_atomic
from dnas_hw.memory import require_memory, training_bytes
from dnas_hw.progress import progress
from dnas_hw.space import Choice
from dnas_hw.train import make_optimizers, seed_everything, split_parameters
from lut.predict import predict
from lut.table import Lut, overhead_call
from search.budget import BudgetController
from search.config import SearchConfig
from search.cost import CostTables, cost_loss, one_hot_cost
from search.derive import derive
from search.extremes import extreme_arch
from search.family_search import family_search, flops_table, latency_table, param_bytes_table
from search.finalists import (FrontShare, Settled, candidates, choose, incumbent_choices, kinds_chosen, screen_share, settle,
                              weight_and_arch_parts)
from search.gumbel import entropy, gumbel_softmax, temperature
from search.layout import Layout
from search.project import project
from search.refine import HeldOut, evaluating, supernet_loss
from search.sandwich import extreme_probs, role, sandwich_probs
from search.shards import lockstep_batches
from search.state import check_identity, load_state, save_state
from search.supernet import SupernetBase

# Weight steps between two re-derivations of the inherited candidates (`SupernetBase.inherit`):
# one costs ~0.25 s on dlrm-kaggle's tables, so every 200 steps (51k rows at batch 256) it adds
# well under 1% to an epoch, and an arch step reads images at most that many steps old.
INHERIT_EVERY = 200

STATE, LOG, SUMMARY, INIT = "search_state.pt", "search_log.csv", "summary.json", "derived_init.pt"
PROBS_LOG = "arch_probs_epochs.json"


def check_inputs(data: PreparedData, space: SearchSpace, lut: Lut, batch_size: int) -> None:
    """Refuse a space not bound to this data, or a LUT lacking any key the space needs at `batch_size`."""
    if (space.num_dense, tuple(space.cardinalities)) != (data.num_dense, tuple(data.cardinalities)):
        raise UserError(f"space {space.name} is not bound to {data.path}'s features (num_dense and cardinalities differ)")
    lut.require(space.op_calls() | {overhead_call(space.num_dense, space.num_sparse)}, batch_size)


def cost_tables(space: SearchSpace, lut: Lut, batch_size: int, config: SearchConfig) -> CostTables:
    """The LUT's latency table at `batch_size`, and the FLOPs / parameter-bytes tables when `config` weighs them."""
    flops = flops_table(space, batch_size) if config.flops_weight else None
    params = param_bytes_table(space) if config.param_bytes_weight else None
    largest = space.largest()
    return CostTables(
        latency_table(space, lut, batch_size),
        flops,
        params,
        flops_scale=float(largest.flops(batch_size)),
        param_bytes_scale=float(largest.num_params() * 4),
    )


def _feasibility(tables: CostTables, layout: Layout, budget_us: float, floor: float) -> tuple[str, float, float]:
    """(status, fastest arch's latency, slowest arch's latency), the extremes found exactly."""
    fastest, _ = extreme_arch(tables.latency, layout, cheapest=True)
    slowest, _ = extreme_arch(tables.latency, layout, cheapest=False)
    if fastest > budget_us:
        return "infeasible: even the fastest arch of the space is over the budget", fastest, slowest
    if slowest < floor * budget_us:
        return f"loose: even the slowest arch of the space uses less than {floor:.0%} of the budget", fastest, slowest
    return "ok", fastest, slowest


def budget_controller(budget_us: float, config: SearchConfig) -> BudgetController:
    """A fresh budget controller for `budget_us` with `config`'s penalty, target, floor and gains."""
    return BudgetController(budget_us, config.target, config.floor, config.multiplier_lr, config.multiplier_init,
                            two_sided=config.penalty == "band", gain=config.multiplier_gain)


class Searcher:
    """One search's state (supernet, optimizers, budget controller, Gumbel generator) and its steps.

    `weight_step` and `arch_step` each take one batch; `run_epoch` alternates them over the
    train split; `run_search` adds checkpoints, the run folder and the final derivation.
    Benchmarks and tests drive a `Searcher` directly.
    """

    def __init__(self, space: SearchSpace, tables: CostTables, budget_us: float, config: SearchConfig,
                 id_counts: list[torch.Tensor] | None = None):
        """`id_counts` ([cardinality_f] per feature, see `id_counts`): needed when the supernet
        inherits candidates (`SearchConfig.inherit_tables`); they weigh the hashed images."""
        self.space, self.tables, self.budget_us, self.config = space, tables, budget_us, config
        seed_everything(config.seed)
        self.family = family_search(space)
        self.net = self.family.supernet(space)
        self.inherits = config.inherit_tables and bool(self.net.inherited_groups)
        if self.inherits and id_counts is None:
            raise ValueError("Searcher: inherit_tables needs the data's id_counts (search.run.id_counts)")
        self.id_counts, self.steps_since_inherit = id_counts, 0
        dense, sparse = split_parameters(WeightsView(self.net))
        self.weight_opts = make_optimizers(dense, sparse, config.weight_optimizer, config.weight_lr)
        # Several processes: each step averages its gradients over the ranks explicitly (the dense
        # weights' and the logits' in one all-reduce each, the tables' in a SparseGradGather) rather
        # than through DistributedDataParallel, whose reducer expects a gradient for every weight
        # and the logits in every backward: a hard weight step uses one path (skipped layers and
        # unchosen interaction kinds get none) and an arch step freezes the weights. DDP with
        # find_unused_parameters=True was no cheaper: a dlrm-kaggle weight step (global batch 256,
        # 2 gloo ranks) took 98.4 ms explicit vs 99.6 ms DDP, medians of 5 launches each at load ~7
        # (benchmarks/search_distributed_throughput.py sync; its section of benchmarks/RESULTS.md).
        self.dense_weights, self.sparse_weights = dense, sparse
        self.sparse_gather = distributed.SparseGradGather(sparse) if distributed.is_active() and sparse else None
        self.arch_opt = torch.optim.Adam(self.net.arch_parameters(), lr=config.arch_lr)
        self.controller = budget_controller(budget_us, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.extremes = extreme_probs(self.net.layout, self.net.enumerated_groups)
        self.uniform_logits = self.net.layout.init_logits()

    def sample(self, global_rows: int, tau: float, detach: bool, uniform: bool = False) -> dict[str, torch.Tensor]:
        """Gumbel samples for a global batch of `global_rows` rows: {group: [rows, n]}, or per sample
        [b, rows, n] for this rank's b rows of it; from the arch logits, or with `uniform` from
        uniform ones. Every rank draws the whole batch's samples from the same generator, so all
        use what one process would."""
        per_sample = self.config.sampling == "per-sample"
        logits = self.uniform_logits if uniform else self.net.arch_logits
        samples = {
            g: gumbel_softmax(t.detach() if detach else t, tau, hard=self.config.hard,
                              samples=global_rows if per_sample else None, generator=self.generator)
            for g, t in logits.items()
        }
        if per_sample:
            own = shard_rows(global_rows, distributed.shard())
            samples = {g: s[own] for g, s in samples.items()}
        return samples

    def task_loss(self, dense, sparse, y, probs, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over this rank's rows of a `global_rows` batch, that loss times `distributed.loss_weight`)."""
        return self.weighted_loss(self.net(dense, sparse, probs), y, global_rows)

    def weighted_loss(self, logits, y, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`task_loss` from logits [..., B] (the mean over the last dimension)."""
        if not len(y):  # no rows of a short last batch: a zero loss, so that the rank still joins the step
            return logits.sum(), logits.sum()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)
        weight = distributed.loss_weight(len(y), global_rows)
        return loss, (loss * weight if weight != 1.0 else loss)

    def enumerated_loss(self, dense, sparse, y, probs, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`task_loss` for an arch step, plus the exact gradient of the enumerated groups' logits.

        Each enumerated group g (`SupernetBase.enumerated_groups`) runs with its
        sample fixed, and its candidates' losses L_gk (all other choices as
        sampled) enter as sum_k softmax(logits_g)_k * L_gk: the expected loss
        over g's choice, whose gradient is exact rather than straight-through.
        """
        groups = self.net.enumerated_groups if self.config.enumerate_groups else ()
        if not groups:
            return self.task_loss(dense, sparse, y, probs, global_rows)
        probs = {g: t.detach() if g in groups else t for g, t in probs.items()}
        logits, candidates = self.net.forward_with_candidates(dense, sparse, probs)
        loss, weighted = self.weighted_loss(logits, y, global_rows)
        for g in groups:
            _, candidate_losses = self.weighted_loss(candidates[g], y, global_rows)  # [K], no gradient
            weighted = weighted + (torch.softmax(self.net.arch_logits[g][0], -1) * candidate_losses).sum()
        return loss, weighted

    def weight_step(self, dense, sparse, y, tau: float, global_rows: int | None = None, step: int = 1) -> float:
        """One step of the weights on this rank's rows of a global batch; returns their mean loss.

        The step follows the mean gradient of `SearchConfig.paths_per_step` archs, each run on the
        whole batch; path k of step `step` (its index in its epoch) has the role number
        `step * paths_per_step + k` in the sandwich rule (`search.sandwich`). The supernet's
        `inherited_groups` take their largest choice when it inherits."""
        global_rows = len(y) if global_rows is None else global_rows
        paths = self.config.paths_per_step
        for opt in self.weight_opts:
            opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(paths):
            loss, weighted = self.path_loss(dense, sparse, y, tau, global_rows, step * paths + k)
            (weighted / paths).backward()
            total += loss.item()
        if self.inherits:
            self.steps_since_inherit += 1
        distributed.average_grads(self.dense_weights)
        if self.config.weight_grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.dense_weights, self.config.weight_grad_clip)
        for opt in self.weight_opts:
            opt.step()
        return total / paths

    def path_loss(self, dense, sparse, y, tau: float, global_rows: int, role_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`task_loss` of one arch of a weight step: drawn (uniformly or from the logits), or the
        sandwich's extreme for `role_step`; plus the head alignment in the sandwich's largest steps."""
        # drawn in every path: the generator's path stays one
        probs = self.sample(global_rows, tau, detach=True, uniform=self.config.weight_sampling == "uniform")
        if self.config.sandwich:
            probs = sandwich_probs(role_step, probs, self.extremes)
        if self.inherits:
            probs = {g: self.extremes["largest"][g] if g in self.net.inherited_groups else p for g, p in probs.items()}
        loss, weighted = self.task_loss(dense, sparse, y, probs, global_rows)
        if self.config.align_heads and self.config.sandwich and role(role_step) == "largest" and len(y):
            alignment = self.net.alignment_loss(dense, sparse)
            if alignment is not None:
                weighted = weighted + alignment * distributed.loss_weight(len(y), global_rows)
        return loss, weighted

    def arch_step(self, dense, sparse, y, tau: float, global_rows: int | None = None) -> tuple[float, dict]:
        """One step of the logits (weights frozen) on this rank's rows; returns (their mean loss, cost details)."""
        global_rows = len(y) if global_rows is None else global_rows
        self.inherit(every=INHERIT_EVERY)
        self.arch_opt.zero_grad(set_to_none=True)
        weights = self.net.weight_parameters()
        trained = [p.requires_grad for p in weights]
        for p in weights:
            p.requires_grad_(False)
        try:
            task, weighted = self.enumerated_loss(dense, sparse, y, self.sample(global_rows, tau, detach=False), global_rows)
            cost, details = self.cost(self.net.probabilities(), self.derived_latency_us())
            (weighted + cost).backward()
        finally:
            for p, t in zip(weights, trained):
                p.requires_grad_(t)
        # The cost term's gradient is the same on every rank: averaging keeps it, and averages the task's.
        distributed.average_grads(self.net.arch_parameters())
        self.arch_opt.step()
        self.controller.update(self.derived_latency_us())
        return task.item(), details

    def train_tables(self, on: bool) -> None:
        """Whether weight steps update the tables (the sparse-gradient weights; `SearchConfig.tables_once`)."""
        for p in self.sparse_weights:
            p.requires_grad_(on)

    def inherit(self, every: int = 1) -> None:
        """Re-derive the inherited candidates if `every` weight steps or more ran since the last time."""
        if self.inherits and self.steps_since_inherit >= every:
            self.net.inherit(self.id_counts)
            self.steps_since_inherit = 0

    def cost(self, probs, derived_us: float | None = None) -> tuple[torch.Tensor, dict]:
        c = self.config
        return cost_loss(
            self.tables, probs, budget_us=self.budget_us, multiplier=self.controller.multiplier, form=c.penalty,
            fbnet_beta=c.fbnet_beta, target=c.target, derived_us=derived_us, flops_weight=c.flops_weight, param_bytes_weight=c.param_bytes_weight,
        )

    def derived_latency_us(self) -> float:
        choices, _ = derive(self.net)
        return one_hot_cost(self.tables.latency, self.net.layout.one_hot(choices))

    def state_dict(self) -> dict[str, Any]:
        return {
            "supernet": self.net.state_dict(),
            "weight_opts": [o.state_dict() for o in self.weight_opts],
            "arch_opt": self.arch_opt.state_dict(),
            "controller": self.controller.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["supernet"])
        for opt, s in zip(self.weight_opts, state["weight_opts"], strict=True):
            opt.load_state_dict(s)
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.controller.load_state_dict(state["controller"])
        self.generator.set_state(state["generator"])


class WeightsView(nn.Module):
    """The supernet without its logits, for `split_parameters` (dense vs sparse-gradient weights)."""

    def __init__(self, net: SupernetBase):
        super().__init__()
        self.parts = nn.ModuleList([m for name, m in net.named_children() if name != "arch_logits"])


def weight_rows(cut: int, epoch: int, config: SearchConfig) -> tuple[int, int]:
    """The rows [first, last) of the train split that epoch `epoch`'s weight steps read: with
    `config.one_pass`, its own 1/epochs of the weight part [0, cut), else all of it."""
    if not config.one_pass:
        return 0, cut
    return cut * epoch // config.epochs, cut * (epoch + 1) // config.epochs


def run_epoch(search: Searcher, data: PreparedData, epoch: int, started: float, elapsed_before: float) -> dict:
    """One search epoch: weight steps on the weight part of the train split, interleaved (after the
    warm-up) with arch steps on the rest; returns the epoch's row of search_log.csv."""
    c = search.config
    train = data.split("train")
    cut = int(len(train) * c.split_fraction)
    first, last = weight_rows(cut, epoch, c)
    tau = temperature(epoch, c.temperature_init, c.temperature_decay)
    searching = epoch >= c.warmup_epochs
    search.train_tables(epoch == 0 or c.one_pass or not c.tables_once)
    n_weight = num_batches(last - first, c.train_batch_size, drop_last=False)
    n_arch = num_batches(len(train) - cut, c.train_batch_size, drop_last=False) if searching else 0
    every = max(1, n_weight // max(n_arch, 1))
    # With several processes each rank reads its part of every global batch (`dnas_hw.distributed`).
    rank, world = distributed.shard()
    weights = lockstep_batches(train, c.train_batch_size, seed=c.seed, epoch=epoch, rows=(first, last), shard=(rank, world))
    arch = lockstep_batches(train, c.train_batch_size, seed=c.seed + 1, epoch=epoch, rows=(cut, len(train)), shard=(rank, world))
    budget_ms = search.budget_us / 1000
    task_sum = task_n = arch_sum = arch_n = 0
    details = search.cost(search.net.probabilities())[1]
    label = f"search epoch {epoch + 1}/{c.epochs}" + ("" if searching else " (warm-up)") + (f" rank {rank}/{world}" if world > 1 else "")
    with progress(n_weight + n_arch, label, "batches") as bar:
        for step, (dense, sparse, y, global_rows) in enumerate(weights):
            task_sum += search.weight_step(dense, sparse, y, tau, global_rows, step) * len(y)
            task_n += len(y)
            bar.update(1)
            if searching and (step + 1) % every == 0:
                batch = next(arch, None)
                if batch is not None:
                    *rows, global_rows = batch
                    loss, details = search.arch_step(*rows, tau, global_rows)
                    arch_sum += loss * len(rows[2])
                    arch_n += len(rows[2])
                    bar.update(1)
            bar.status = f"loss {task_sum / max(task_n, 1):.4f} E[lat] {details['expected_latency_us'] / 1000:.3f}/{budget_ms:.3f}ms mult {search.controller.multiplier:.3g}"
    search.inherit()  # the candidates as the epoch's weights imply: for the checkpoint and the derivation
    task_sum, task_n, arch_sum, arch_n = distributed.all_reduce_sum([task_sum, task_n, arch_sum, arch_n])
    if not distributed.same_on_all_ranks([*search.net.arch_parameters(), torch.tensor([search.controller.multiplier])]):
        raise RuntimeError(f"search epoch {epoch + 1}: the architecture logits or the budget multiplier differ between ranks")
    # The None entries are filled by `arch_fields` in place, which keeps search_log.csv's column order.
    row = {
        "epoch": epoch + 1,
        "temperature": tau,
        "multiplier": None,
        "task_loss": task_sum / max(task_n, 1),
        "arch_task_loss": arch_sum / arch_n if arch_n else float("nan"),
        "expected_latency_ms": None,
        "derived_latency_ms": None,
        "latency_budget_ms": None,
        "entropy": None,
        "elapsed_s": round(elapsed_before + time.perf_counter() - started, 3),
    }
    return {**row, **arch_fields(search)}


def arch_fields(search: Searcher) -> dict:
    """The logits' part of a search_log.csv row: multiplier, expected and derived latency, budget,
    mean slot entropy (and the expected FLOPs / parameter bytes when the config weighs them)."""
    with torch.no_grad():
        probs = search.net.probabilities()
        _, details = search.cost(probs)
    return {
        "multiplier": search.controller.multiplier,
        "expected_latency_ms": details["expected_latency_us"] / 1000,
        "derived_latency_ms": search.derived_latency_us() / 1000,
        "latency_budget_ms": search.budget_us / 1000,
        "entropy": float(sum(entropy(p) * p.shape[0] for p in probs.values()) / sum(p.shape[0] for p in probs.values())),
        **{f"expected_{k}": details[f"expected_{k}"] for k in ("flops", "param_bytes") if f"expected_{k}" in details},
    }


def id_counts(data: PreparedData, split_fraction: float) -> list[torch.Tensor]:
    """[cardinality_f] per feature: how often each id occurs in the weight part of the train split."""
    sparse = data.split("train").sparse
    weights = sparse[: int(len(sparse) * split_fraction)]
    return [torch.from_numpy(np.bincount(weights[:, f], minlength=c)) for f, c in enumerate(data.cardinalities)]


def run_search(
    data_dir,
    space: SearchSpace,
    lut: Lut,
    *,
    budget_us: float,
    batch_size: int,
    out,
    config: SearchConfig,
    resume: bool = False,
    incumbents: dict | None = None,
) -> dict:
    """Search `space` on `data_dir` for the best arch whose LUT latency at `batch_size` fits `budget_us`.

    `incumbents` ({name: arch}): hand-designed archs of the space, each a finalist's start (`search.finalists`).
    Writes the run folder `out` (see the module docstring) and returns summary.json's content.
    """
    out = Path(out)
    family_search(space)  # refuses a family without a search hook, before any work
    if budget_us <= 0 or batch_size < 1:
        raise UserError("the latency budget and the batch size must be positive")
    if config.train_batch_size % distributed.world_size():
        raise UserError(f"--train-batch-size {config.train_batch_size} is not divisible by the {distributed.world_size()} processes")
    if (out / SUMMARY).exists() and not resume:
        raise UserError(f"{out} holds a finished search; use a new --out")
    if (out / STATE).exists() and not resume:
        raise UserError(f"{out} holds an unfinished search: use --resume to continue it or a new --out")
    check_writable(out, "folder")
    data = PreparedData.open(data_dir)
    check_inputs(data, space, lut, batch_size)
    starts = incumbent_choices(space, incumbents or {})
    tables = cost_tables(space, lut, batch_size, config)
    identity = {
        "config": {k: v for k, v in config.to_dict().items() if k != "stop_after"},
        "budget_us": budget_us, "batch_size": batch_size, "space": space.fingerprint(),
        "lut": tables.latency.fingerprint(),
        "data": str(Path(data_dir).resolve()),
        "incumbents": starts,
    }
    if (out / SUMMARY).exists():  # resuming a finished run: its result, if it was run with these options
        summary = read_json(out / SUMMARY, "summary")
        check_identity(summary.get("identity") if isinstance(summary, dict) else None, identity, out / SUMMARY)
        return summary
    require_memory(training_bytes(space.largest(), config.train_batch_size, config.weight_optimizer),
                   f"the supernet of space {space.name} (its largest arch: {space.largest().num_params():,} parameters)")
    with (output_lock(out) if distributed.is_main() else contextlib.nullcontext()), removed_if_left_empty(out):
        return _search(data, space, lut, tables, identity, budget_us, batch_size, out, config, resume, starts)


def _search(data, space, lut, tables, identity, budget_us, batch_size, out: Path, config, resume, incumbents) -> dict:
    status, fastest_us, slowest_us = _feasibility(tables, Layout(space), budget_us, config.floor)
    if status != "ok" and distributed.is_main():
        click.echo(f"search: budget {budget_us / 1000:.3f}ms is {status} "
                   f"(fastest arch {fastest_us / 1000:.3f}ms, slowest {slowest_us / 1000:.3f}ms)", err=True)
    search = Searcher(space, tables, budget_us, config, id_counts(data, config.split_fraction))
    log: list[dict] = []
    probs_log: list[dict] = []
    elapsed_before = 0.0
    if resume and (out / STATE).exists():
        state = load_state(out / STATE, identity)
        search.load_state_dict(state)
        log, elapsed_before = list(state["log"]), float(state["elapsed_s"])
        probs_log = list(state.get("probs_log", []))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    last = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
    # With several processes every rank runs the same search (identical logits, averaged
    # gradients) and rank 0 alone writes; the others wait for its files at a barrier.
    for epoch in range(len(log), last):
        log.append(run_epoch(search, data, epoch, started, elapsed_before))
        with torch.no_grad():
            probs_log.append({"epoch": epoch + 1, "probs": search.net.layout.probs_dict(search.net.probabilities())})
        if distributed.is_main():
            write_text_atomic(out / LOG, pd.DataFrame(log).to_csv(index=False))
            write_json_atomic(out / PROBS_LOG, probs_log)
            elapsed = elapsed_before + time.perf_counter() - started
            save_state(out / STATE, {"identity": identity, "log": log, "probs_log": probs_log, "elapsed_s": elapsed,
                                     **search.state_dict()})
        distributed.barrier()
    if len(log) < config.epochs:
        return {"stopped_after_epoch": len(log), "epochs": config.epochs}
    if distributed.is_main():
        summary = _finish(search, out, log, budget_us, batch_size, lut, status, fastest_us, slowest_us,
                          elapsed_before + time.perf_counter() - started, identity, held_out(data, config),
                          weight_and_arch_parts(data, config.split_fraction), incumbents, screen_share(config, 1))
    distributed.barrier()
    return summary if distributed.is_main() else read_json(out / SUMMARY, "summary")


def held_out(data: PreparedData, config: SearchConfig) -> HeldOut:
    """The rows `search.refine` scores neighbours on: the arch part of the train split, which the
    supernet's weights never trained on."""
    train = data.split("train")
    return HeldOut.take(train, int(len(train) * config.split_fraction), len(train))


def supernet_learned(net: SupernetBase, choices: dict, rows: HeldOut) -> dict[str, float]:
    """The supernet's logloss at `choices` on the held-out rows, the base rate's, and their ratio (the
    normalized entropy: 1 or more means the shared weights predict no better than a constant)."""
    loss, base = supernet_loss(net, choices, rows), rows.base_rate_logloss()
    return {"logloss": loss, "base_rate_logloss": base, "normalized_entropy": loss / base}


def _echo_moves(settled: Settled) -> None:
    for what, done in (("projection", settled.projection), ("refinement", settled.refinement), ("capacity", settled.capacity)):
        for m in done:
            loss = f"held-out logloss {m['loss']:.4f}, " if "loss" in m else ""
            click.echo(f"search: {what} {m['slot']}: {m['from']} -> {m['to']} ({loss}predicted {m['latency_us'] / 1000:.3f}ms)", err=True)


def _finish(search: Searcher, out: Path, log, budget_us, batch_size, lut, status, fastest_us, slowest_us, elapsed,
            identity, rows: HeldOut, parts: tuple[Split, Split], incumbents: dict[str, dict], screen: float = 1.0,
            shared: FrontShare | None = None) -> dict:
    """The search's arch (derived, settled, its finalists chosen: `screen` as `search.finalists.choose`'s;
    in a front, `shared` lends the records and the chosen archs of its other points) and every file of
    the run folder but the log; summary.json's content."""
    space, config, layout = search.space, search.config, search.net.layout
    argmax, probs = derive(search.net)
    # A floor the slowest arch cannot reach is no floor: then the argmax stands unless over budget.
    floor = config.floor if status == "ok" else 0.0
    table = search.tables.latency
    finalists: list[dict] = []
    kinds: dict[str, Choice] = {}
    if status.startswith("infeasible"):
        moves = project(layout, table, argmax, probs, budget_us, floor)[1]
        fastest_us, fastest = extreme_arch(table, layout, cheapest=True)
        moves.append({"slot": "*", "from": "projected argmax", "to": "the fastest arch", "latency_us": fastest_us})
        chosen = own = Settled("search", fastest, moves, [], [])
        _echo_moves(own)
    else:
        # In a front, the kind the cheaper points' finalists trained best is held, in place of the head's
        # where it differs (module docstring of search.finalists); the head's kind stays a finalist as a switch.
        kinds = kinds_chosen(shared)
        if any(argmax[slot] != c for slot, c in kinds.items()):
            click.echo("search: settling the argmax with " + ", ".join(f"{s} {c}" for s, c in kinds.items())
                       + " (chosen by the cheaper points of the front)", err=True)
        with evaluating(search.net):
            chosen = own = settle(search.net, table, "search", {**argmax, **kinds}, probs, rows, budget_us, floor, config,
                                  held=tuple(layout.where(slot)[0] for slot in kinds))
            _echo_moves(own)
            if config.finalists:
                found = candidates(search.net, table, own, probs, rows, budget_us, floor, config, incumbents,
                                   shared.chosen if shared else None)
                if len(found) > 1:
                    chosen, finalists = choose(search.net, table, found, parts, config, out, screen,
                                               shared.records if shared else None)
    choices, moves = chosen.choices, own.projection
    if chosen is not own:
        click.echo(f"search: returning the finalist {chosen.name}, which trained to a lower logloss on the arch rows "
                   "than the search's own arch", err=True)
    learned = supernet_learned(search.net, choices, rows)
    if learned["normalized_entropy"] >= 1.0:
        click.echo(f"search: warning: the supernet scores the derived arch at {learned['logloss']:.4f} held-out logloss, "
                   f"no better than predicting the base rate ({learned['base_rate_logloss']:.4f}): its shared weights "
                   "learned too little of this data for the search's choices to mean much; search on more rows "
                   "(docs/search.md, Known limits)", err=True)
    arch = space.arch(choices)
    predicted = predict(lut, arch, batch_size).total_us
    arch.save(out / "arch.json")
    # The derived model with the supernet's weights: retraining may warm-start from it.
    save_checkpoint(out / INIT, search.family.extract(search.net, choices), extra={"source": "supernet", "seed": config.seed})
    write_json_atomic(out / "arch_probs.json", layout.probs_dict(probs))
    within = predicted <= budget_us
    # The floor steers the search's own arch; a finalist under it that trained better is a better answer, not a miss.
    own_us = predicted if chosen is own else predict(lut, space.arch(own.choices), batch_size).total_us
    if status == "ok" and not config.floor * budget_us <= own_us <= budget_us:
        status = f"missed: the search's own arch uses {own_us / budget_us:.0%} of the budget"
    summary = {
        "predicted_latency_ms": predicted / 1000,
        "latency_budget_ms": budget_us / 1000,
        "budget_used": predicted / budget_us,
        "within_budget": within,
        "budget_status": status,
        "batch_size": batch_size,
        "epochs": config.epochs,
        "seed": config.seed,
        "elapsed_s": round(elapsed, 3),
        "fastest_arch_latency_ms": fastest_us / 1000,
        "slowest_arch_latency_ms": slowest_us / 1000,
        "argmax_latency_ms": one_hot_cost(search.tables.latency, layout.one_hot(argmax)) / 1000,
        # In a front: the kinds the nearest cheaper point chose among finalists of both, held through projection
        # and refinement ({slot: choice}).
        "kinds_from_cheaper_point": kinds,
        # The search is meant to land in the band by itself; the projection is a logged safety net.
        "projection_needed": bool(moves),
        "projection": moves,
        # Then the moves to the neighbour the supernet scored best on held-out rows (`search.refine`).
        "refinement": own.refinement,
        # Then each table size and dim to its largest where the supernet sees no loss (`search.refine.keep_capacity`).
        "capacity": own.capacity,
        # The finalists trained one pass each (`search.finalists`), the chosen one marked; empty when the
        # search's own arch is the only one within the budget. `choices` is the chosen finalist's.
        "finalists": finalists,
        "chosen_finalist": chosen.name,
        # Whether the shared weights learned the data at all: an arch scored no better than the base rate was
        # chosen by weights that cannot tell candidates apart.
        "supernet_heldout": learned,
        "derived_init": INIT,
        "choices": choices,
        "final_multiplier": search.controller.multiplier,
        "space": space.name,
        "lut": lut.path,
        "config": config.to_dict(),
        # What `--resume` of the finished run compares with its options.
        "identity": identity,
    }
    if not within:
        click.echo(f"search: the returned arch is over the budget ({predicted / 1000:.3f}ms > {budget_us / 1000:.3f}ms): {status}", err=True)
    write_json_atomic(out / SUMMARY, summary)
    (out / STATE).unlink(missing_ok=True)
    return summary
