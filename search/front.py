"""One search, the whole front: several (budget, LUT) targets from one trained supernet.

Once-for-all's lesson: train the weight-sharing supernet once, specialise it
cheaply for many constraints. Each target k (a latency budget on one LUT, i.e.
one device) has its own architecture logits, Adam optimizer and budget
controller (a `Head`); the supernet's weights, their optimizers and the Gumbel
generator are shared. `FrontSearcher` is a `search.run.Searcher` that switches
its logits, optimizer, controller, cost tables and budget to one head
(`use(k)`), so the single search's steps, epoch loop and finishing run
unchanged:

- weight steps: the sandwich rule as in one search; the arch of each
  "sampled" step is drawn uniformly (`SearchConfig.weight_sampling`, the
  default), or with `logits` from the heads' distributions in turn;
- arch steps: each arch batch updates `arch_updates` heads in turn (each with
  its own Gumbel draw on the same rows), so K targets cost `arch_updates` times
  one search's arch-step compute, not K times, and each head gets
  `arch_updates / K` of a dedicated search's arch steps (`DEFAULT_ARCH_UPDATES`;
  the cost is measured by benchmarks/front_quality.py);
- finishing: per head, cheapest point first, `search.run._finish` (projection,
  refinement, the finalists, arch.json, derived_init.pt, summary.json) into the
  point's folder, and the supernet's validation metrics at the point's choices
  (`search.rank.supernet_metrics`). The finalists are screened (the first quarter
  of their pass, `search.finalists.screen_share`; the survivors go on from there),
  their records shared between the
  points, the archs the cheaper points chose join each point's finalists
  (`search.finalists.FrontShare`), and each point's argmax is settled with the
  interaction kind the nearest cheaper point chose among finalists of both kinds
  (`search.finalists.kinds_chosen`).

Run folder `out/`:
    front_state.pt      checkpoint after each epoch (removed when the front is finished)
    <point>/            one folder per target, named `<budget>` (`1ms`) with one LUT, or
                        `<budget>-<LUT stem>` (`1ms-cpu-ort`) with several, holding what one search
                        writes: arch.json, arch_probs.json, arch_probs_epochs.json, derived_init.pt,
                        search_log.csv, summary.json
    front.json          written last: its presence marks a finished front (`FRONT_FORMAT`)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pandas as pd
import torch
from torch import nn

from dnas_hw import distributed
from dnas_hw.data.folder import PreparedData
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.errors import UserError
from dnas_hw.files import check_writable, output_lock, read_json, removed_if_left_empty, write_json_atomic, write_text_atomic
from dnas_hw.memory import require_memory, training_bytes
from dnas_hw.space import choices_key
from lut.margin import DEFAULT_QUANTILE, Margin, budget_margin
from lut.table import TARGET_FIELDS, Lut
from search.budget import BudgetController
from search.config import SearchConfig
from search.cost import CostTables
from search.family_search import family_search
from search.finalists import FrontShare, incumbent_choices, screen_share, weight_and_arch_parts
from search.layout import Layout
from search.margin import record_margin
from search.rank import supernet_metrics
from search.run import (LOG, PROBS_LOG, SUMMARY, Searcher, _feasibility, _finish, arch_fields, budget_controller,
                        check_inputs, cost_tables, held_out, id_counts, run_epoch)
from search.state import check_identity, load_state, save_state

FRONT, FRONT_STATE = "front.json", "front_state.pt"
FRONT_FORMAT = "dnas-hw-front/1"
# Heads updated per arch batch, at most. One search's epoch after the warm-up costs, per 4 weight
# steps (4 archs each: ~16 sampled-arch units on dlrm-kaggle), one arch step (~4 units, about a
# largest-arch step: benchmarks/RESULTS.md, supernet_overhead.py). With 4 epochs (1 warm-up), u
# updates per arch batch cost (16 + 3 * (16 + 4u)) / (16 + 3 * 20) of one search by that count:
# u = 2 about 1.16x, u = 4 about 1.47x. Measured on 1M planted rows, a 4-target front's training
# epochs took 1.18x a dedicated search's with u = 2 (benchmarks/RESULTS.md, front_quality.py); the
# finalists and the points' settling then bring the whole front to 1.47x, so the default is 2 (each
# head of a 4-target front then gets half a dedicated search's arch steps).
DEFAULT_ARCH_UPDATES = 2


@dataclass(frozen=True)
class Point:
    """One target of the front: a requested budget on one LUT, and the margin that LUT leaves."""

    name: str  # its folder under the front's out
    budget_us: float  # as requested
    lut: Lut
    margin: Margin

    @property
    def searched_us(self) -> float:
        """The budget the search aims at: the requested one less the LUT's margin."""
        return self.margin.effective_budget_us(self.budget_us)


def budget_label(budget_us: float) -> str:
    """`850.0` -> `0.85ms`: a budget as folder names show it."""
    return f"{budget_us / 1000:g}ms"


def front_points(luts: list[Lut], budgets_us: list[float], batch_size: int, quantile: str = DEFAULT_QUANTILE,
                 allow_same_target: bool = False) -> list[Point]:
    """One point per (LUT, budget), LUT by LUT; refuses a budget or a LUT given twice, two LUTs with
    one file name (their folders would clash), and two LUTs of one target (backend, device,
    threads) unless `allow_same_target` (two profiles of one machine are two guesses of one latency)."""
    if not budgets_us or not luts:
        raise UserError("a front needs at least one latency budget and one LUT")
    if any(b <= 0 for b in budgets_us) or batch_size < 1:
        raise UserError("the latency budgets and the batch size must be positive")
    labels = [budget_label(b) for b in budgets_us]
    twice = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if twice:
        raise UserError(f"latency budget {twice[0]} given twice")
    paths = [str(Path(lut.path).resolve()) for lut in luts]
    stems = [Path(lut.path).name.removesuffix(".csv") for lut in luts]
    for i in range(len(luts)):
        for j in range(i):
            if paths[i] == paths[j]:
                raise UserError(f"--lut {luts[i].path} given twice")
            if stems[i] == stems[j]:
                raise UserError(f"--lut {luts[j].path} and {luts[i].path} share the file name {stems[i]}.csv, "
                                f"which names their points' folders: rename one")
            same = all(str(luts[i].meta.get(f)) == str(luts[j].meta.get(f)) for f in TARGET_FIELDS)
            if same and not allow_same_target:
                target = ", ".join(f"{f}={luts[i].meta.get(f)}" for f in TARGET_FIELDS)
                raise UserError(f"--lut {luts[j].path} and {luts[i].path} are both measured on {target}: "
                                f"give one LUT per target (or --allow-same-target to search both)")
    return [Point(lbl if len(luts) == 1 else f"{lbl}-{stem}", b, lut, budget_margin(lut, batch_size, quantile))
            for lut, stem in zip(luts, stems) for lbl, b in zip(labels, budgets_us)]


@dataclass
class Head:
    """One target's architecture state: logits {group: [rows, n]}, their Adam, its budget controller."""

    logits: nn.ParameterDict
    opt: torch.optim.Optimizer
    controller: BudgetController
    tables: CostTables
    budget_us: float


class FrontSearcher(Searcher):
    """A `Searcher` with K heads over one supernet; `use(k)` makes head k the one its steps read and move.

    Head 0 is the `Searcher`'s own logits, optimizer and controller; the others start as it does
    (uniform logits, the config's multiplier).
    """

    def __init__(self, space: SearchSpace, tables: list[CostTables], budgets_us: list[float], config: SearchConfig,
                 id_counts: list[torch.Tensor] | None = None, arch_updates: int | None = None):
        """`arch_updates`: heads updated per arch batch (default: `DEFAULT_ARCH_UPDATES`, at most every head)."""
        arch_updates = min(DEFAULT_ARCH_UPDATES, len(tables)) if arch_updates is None else arch_updates
        if not 1 <= arch_updates <= len(tables):
            raise UserError(f"arch updates per batch must lie in [1, {len(tables)}] (the number of targets), got {arch_updates}")
        super().__init__(space, tables[0], budgets_us[0], config, id_counts)
        self.heads = [Head(self.net.arch_logits, self.arch_opt, self.controller, tables[0], budgets_us[0])]
        for t, b in zip(tables[1:], budgets_us[1:]):
            logits = nn.ParameterDict({g: nn.Parameter(x) for g, x in self.net.layout.init_logits().items()})
            self.heads.append(Head(logits, torch.optim.Adam(logits.values(), lr=config.arch_lr), budget_controller(b, config), t, b))
        self.arch_updates, self.next_head, self.current = arch_updates, 0, 0
        self.arch_loss_sums = [[0.0, 0] for _ in self.heads]  # per head: (loss x rows, rows) of this epoch's arch steps

    def use(self, k: int) -> None:
        """Make head k the search's logits (the supernet's `arch_logits` submodule), optimizer, controller, tables, budget."""
        h = self.heads[k]
        self.net.arch_logits = h.logits  # nn.Module.__setattr__ replaces the registered submodule
        self.arch_opt, self.controller, self.tables, self.budget_us, self.current = h.opt, h.controller, h.tables, h.budget_us, k

    def sampling_head(self, step: int) -> int:
        """The head whose distribution weight step `step` samples from when `weight_sampling` is
        `logits`: the heads in turn over the sampled steps (with the sandwich rule every other step;
        the extremes' steps too draw from it, for the unordered groups). Uniform draws use none."""
        return (step // 2 if self.config.sandwich else step) % len(self.heads)

    def weight_step(self, dense, sparse, y, tau: float, global_rows: int | None = None, step: int = 1) -> float:
        self.use(self.sampling_head(step))
        return super().weight_step(dense, sparse, y, tau, global_rows, step)

    def arch_step(self, dense, sparse, y, tau: float, global_rows: int | None = None) -> tuple[float, dict]:
        """`arch_updates` heads in turn each take one step of their logits on these rows."""
        for _ in range(self.arch_updates):
            k, self.next_head = self.next_head, (self.next_head + 1) % len(self.heads)
            self.use(k)
            loss, details = super().arch_step(dense, sparse, y, tau, global_rows)
            self.arch_loss_sums[k][0] += loss * len(y)
            self.arch_loss_sums[k][1] += len(y)
        return loss, details

    def epoch_rows(self, row: dict) -> list[dict]:
        """Per head, `run_epoch`'s `row` with its own logits' fields and arch-step loss; resets the sums."""
        rows = []
        for k, (total, n) in enumerate(self.arch_loss_sums):
            self.use(k)
            rows.append({**row, "arch_task_loss": total / n if n else float("nan"), **arch_fields(self)})
        self.arch_loss_sums = [[0.0, 0] for _ in self.heads]
        return rows

    def state_dict(self) -> dict[str, Any]:
        self.use(0)
        return {**super().state_dict(), "next_head": self.next_head,
                "heads": [{"logits": h.logits.state_dict(), "arch_opt": h.opt.state_dict(), "controller": h.controller.state_dict()}
                          for h in self.heads[1:]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.use(0)
        super().load_state_dict(state)
        for h, s in zip(self.heads[1:], state["heads"], strict=True):
            h.logits.load_state_dict(s["logits"])
            h.opt.load_state_dict(s["arch_opt"])
            h.controller.load_state_dict(s["controller"])
        self.next_head = int(state["next_head"])


def run_front(
    data_dir,
    space: SearchSpace,
    luts: list[Lut],
    *,
    budgets_us: list[float],
    batch_size: int,
    out,
    config: SearchConfig,
    resume: bool = False,
    budget_quantile: str = DEFAULT_QUANTILE,
    allow_same_target: bool = False,
    arch_updates: int | None = None,
    incumbents: dict | None = None,
) -> dict:
    """Search `space` once for every (LUT, budget) point (`front_points`); returns front.json's content.

    `arch_updates`: heads updated per arch batch (default `min(DEFAULT_ARCH_UPDATES, points)`).
    `incumbents` ({name: arch}): as `search.run.run_search`'s, a finalist's start at every point.
    Every input is checked before anything is written; `resume` continues from the last finished
    epoch, and a finished front searched with the same options returns its front.json.
    """
    out = Path(out)
    family_search(space)
    if distributed.is_active() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("a front (several budgets or LUTs) runs in one process: search one budget per torchrun launch")
    points = front_points(luts, budgets_us, batch_size, budget_quantile, allow_same_target)
    arch_updates = min(DEFAULT_ARCH_UPDATES, len(points)) if arch_updates is None else int(arch_updates)
    if not 1 <= arch_updates <= len(points):
        raise UserError(f"arch updates per batch must lie in [1, {len(points)}] (the front's points), got {arch_updates}")
    if (out / FRONT).exists() and not resume:
        raise UserError(f"{out} holds a finished front search; use a new --out")
    if (out / FRONT_STATE).exists() and not resume:
        raise UserError(f"{out} holds an unfinished front search: use --resume to continue it or a new --out")
    check_writable(out, "folder")
    if not (out / FRONT_STATE).exists() and not (out / FRONT).exists():
        for p in points:  # a fresh front must not overwrite another run's folder
            if (out / p.name / SUMMARY).exists() or (out / p.name / "search_state.pt").exists():
                raise UserError(f"{out / p.name} holds a search of its own; use a new --out")
    data = PreparedData.open(data_dir)
    starts = incumbent_choices(space, incumbents or {})
    tables = []
    for p in points:
        check_inputs(data, space, p.lut, batch_size)
        tables.append(cost_tables(space, p.lut, batch_size, config))
    identity = {
        "config": {k: v for k, v in config.to_dict().items() if k != "stop_after"},
        "budgets_us": [p.budget_us for p in points],
        "searched_us": [p.searched_us for p in points],
        "luts": [t.latency.fingerprint() for t in tables],
        "points": [p.name for p in points],
        "arch_updates": arch_updates,
        "batch_size": batch_size, "space": space.fingerprint(),
        "data": str(Path(data_dir).resolve()),
        "incumbents": starts,
    }
    if (out / FRONT).exists():  # resuming a finished front: its result, if searched with these options
        front = read_json(out / FRONT, "front")
        check_identity(front.get("identity") if isinstance(front, dict) else None, identity, out / FRONT)
        return front
    require_memory(training_bytes(space.largest(), config.train_batch_size, config.weight_optimizer),
                   f"the supernet of space {space.name} (its largest arch: {space.largest().num_params():,} parameters)")
    with output_lock(out), removed_if_left_empty(out):
        return _front(data, space, points, tables, identity, batch_size, out, config, resume, arch_updates, budget_quantile, starts)


def _front(data: PreparedData, space, points: list[Point], tables, identity, batch_size: int, out: Path, config: SearchConfig,
           resume: bool, arch_updates: int, quantile: str, incumbents: dict[str, dict]) -> dict:
    layout = Layout(space)
    feasible = [_feasibility(t, layout, p.searched_us, config.floor) for p, t in zip(points, tables)]
    for p, (status, fastest_us, slowest_us) in zip(points, feasible):
        if status != "ok":
            click.echo(f"search: {p.name}: budget {p.searched_us / 1000:.3f}ms is {status} "
                       f"(fastest arch {fastest_us / 1000:.3f}ms, slowest {slowest_us / 1000:.3f}ms)", err=True)
    search = FrontSearcher(space, tables, [p.searched_us for p in points], config, id_counts(data, config.split_fraction),
                           arch_updates)
    logs: list[list[dict]] = [[] for _ in points]
    probs_logs: list[list[dict]] = [[] for _ in points]
    elapsed_before = 0.0
    if resume and (out / FRONT_STATE).exists():
        state = load_state(out / FRONT_STATE, identity)
        search.load_state_dict(state)
        logs, probs_logs, elapsed_before = state["logs"], state["probs_logs"], float(state["elapsed_s"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    last = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
    for epoch in range(len(logs[0]), last):
        row = run_epoch(search, data, epoch, started, elapsed_before)
        for k, (p, head_row) in enumerate(zip(points, search.epoch_rows(row))):
            search.use(k)
            logs[k].append(head_row)
            with torch.no_grad():
                probs_logs[k].append({"epoch": epoch + 1, "probs": layout.probs_dict(search.net.probabilities())})
            (out / p.name).mkdir(exist_ok=True)
            write_text_atomic(out / p.name / LOG, pd.DataFrame(logs[k]).to_csv(index=False))
            write_json_atomic(out / p.name / PROBS_LOG, probs_logs[k])
        save_state(out / FRONT_STATE, {"identity": identity, "logs": logs, "probs_logs": probs_logs,
                                       "elapsed_s": elapsed_before + time.perf_counter() - started, **search.state_dict()})
    if len(logs[0]) < config.epochs:
        return {"stopped_after_epoch": len(logs[0]), "epochs": config.epochs}
    val, rows, parts = data.split("val"), held_out(data, config), weight_and_arch_parts(data, config.split_fraction)
    finished, shared = {}, FrontShare()
    val_metrics: dict[str, dict] = {}  # {choices: the supernet's val metrics}: points returning one arch share a pass
    screen = screen_share(config, len(points))
    # Cheapest first: a point's finalists include the archs the points finished before it chose, where
    # they fit its budget (trained already, they cost nothing), so no point returns an arch that trained
    # worse than a cheaper point's.
    for k in sorted(range(len(points)), key=lambda k: points[k].searched_us):
        p, (status, fastest_us, slowest_us) = points[k], feasible[k]
        search.use(k)
        folder = out / p.name
        summary = _finish(search, folder, logs[k], p.searched_us, batch_size, p.lut, status, fastest_us, slowest_us,
                          elapsed_before + time.perf_counter() - started, {**identity, "point": p.name}, rows, parts, incumbents,
                          screen, shared)
        summary = record_margin(summary, folder, p.margin, p.budget_us, p.lut)
        shared.finished(search.net, p.name, summary["choices"], summary["finalists"])
        key = choices_key(summary["choices"])
        if key not in val_metrics:  # the heads share the weights: one arch scores alike at every point
            val_metrics[key] = supernet_metrics(search.net, summary["choices"], val)
        metrics = val_metrics[key]
        finished[k] = point_record(p, summary, metrics)
    front = {
        "format": FRONT_FORMAT,
        "space": space.name,
        "batch_size": batch_size,
        "budget_quantile": quantile,
        "epochs": config.epochs,
        "seed": config.seed,
        "arch_updates_per_batch": arch_updates,
        "elapsed_s": round(elapsed_before + time.perf_counter() - started, 3),
        "points": [finished[k] for k in range(len(points))],
        "config": config.to_dict(),
        "identity": identity,
    }
    write_json_atomic(out / FRONT, front)
    (out / FRONT_STATE).unlink(missing_ok=True)
    return front


def point_record(p: Point, summary: dict, metrics: dict) -> dict:
    """front.json's entry for one point (paths relative to the front's folder)."""
    return {
        "name": p.name,
        "budget_ms": p.budget_us / 1000,
        "searched_against_ms": summary["latency_budget_ms"],
        "margin": summary["budget_margin"]["margin"],
        "lut": str(p.lut.path),
        "lut_target": {f: p.lut.meta.get(f) for f in TARGET_FIELDS},
        "predicted_latency_ms": summary["predicted_latency_ms"],
        "within_budget": summary["within_budget"],
        "budget_status": summary["budget_status"],
        "projection_needed": summary["projection_needed"],
        "chosen_finalist": summary["chosen_finalist"],
        "arch": f"{p.name}/arch.json",
        "run": p.name,
        "supernet_val_logloss": metrics["logloss"],
        "supernet_val": metrics,
    }
