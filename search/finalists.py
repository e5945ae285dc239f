"""The finalists: in-band archs derived from a few starting points, each trained briefly as it will be retrained; the best is returned.

The trained supernet ranks archs across the budget range well (Kendall tau
0.79 over 12 archs on 1M planted rows, benchmarks/RESULTS.md), but one budget's
band holds archs that differ by less than weight sharing distorts them: the
interaction kind (`dot` or `cat`, whose top layers read different columns through
shared weights) came out of the supernet as a coin toss, and the kind that
retrains worse lost up to 0.04 test logloss. Near one budget a short standalone
training compares archs as retraining does, for the price of a few one-pass
trainings, small beside the supernet's four epochs.

Each starting point is settled as the search's own argmax is (`settle`:
projected into [floor, 1] x budget, refined by the supernet, tables and dims
given their capacity); the distinct results are the finalists. The starting
points:

- `search`: the search's argmax;
- `search, {slot} {choice}`: the argmax with another candidate of a group the
  supernet compares least like retraining (`SupernetBase.finalist_groups`; DLRM's
  interaction kind and width, which change what the top MLP's shared first layer
  reads), the group held at it while it is settled;
- `incumbent {name}`: each hand-designed arch the family knows in this space
  (`SupernetBase.incumbents`; DLRM's Kaggle reference config) and each the user
  gives (`dnas-hw search --incumbent ARCH.json`, e.g. the model served today),
  settled into the band: the design a user would ship without the search is a
  finalist, so the search returns something else only when it trains better.

A finalist trains one pass over the weight part of the train split with the
supernet's recipe (optimizer, learning rate, batch size, seed; `dnas-hw train`'s
defaults) and is scored by its logloss on the arch part, which no finalist trained
on; the validation and test splits stay untouched. `finalists.json` in the run
folder holds every finalist's record as it finishes, so a resumed search trains
none twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from dnas_hw.data.folder import PreparedData, Split
from dnas_hw.errors import UserError
from dnas_hw.family import build_model
from dnas_hw.files import read_json, write_json_atomic
from dnas_hw.space import Choice
from dnas_hw.train import TrainConfig, evaluate, fit
from search.config import SearchConfig
from search.cost import CostTable, choices_cost
from search.project import project
from search.refine import HeldOut, keep_capacity, refine
from search.supernet import SupernetBase

RECORDS = "finalists.json"


@dataclass(frozen=True)
class Settled:
    """A starting point moved into the band: its choices and the moves of each step (as in summary.json)."""

    name: str
    choices: dict[str, Choice]
    projection: list[dict]
    refinement: list[dict]
    capacity: list[dict]


def settle(net: SupernetBase, table: CostTable, name: str, start: dict[str, Choice], probs: dict[str, torch.Tensor],
           rows: HeldOut, budget_us: float, floor: float, config: SearchConfig, held: tuple[str, ...] = ()) -> Settled:
    """`start` projected into [floor, 1] x budget_us (by `probs`), refined and given capacity as `config` says;
    the groups in `held` keep their choice throughout."""
    layout = net.layout
    if held:  # the projection weighs a move by its log-probability: a held group's other choices get none
        at_start = layout.one_hot(start)
        probs = {g: at_start[g].to(p.dtype) if g in held else p for g, p in probs.items()}
    choices, projection = project(layout, table, start, probs, budget_us, floor)
    refinement: list[dict] = []
    if config.refine:
        groups = tuple(g for g in (net.refined_groups or tuple(layout.groups)) if g not in held)
        choices, refinement = refine(net, table, choices, rows, budget_us, floor, groups=groups, avoid=net.refine_avoids)
    capacity: list[dict] = []
    if config.keep_capacity and net.capacity_groups:
        choices, capacity = keep_capacity(net, table, choices, rows, budget_us, floor,
                                          groups=tuple(g for g in net.capacity_groups if g not in held))
    return Settled(name, choices, projection, refinement, capacity)


def incumbent_choices(space, archs: dict[str, object]) -> dict[str, dict[str, Choice]]:
    """{name: choices} of user-given incumbents (`dnas-hw search --incumbent`); a `UserError` naming the one
    that is not a point of `space`."""
    out = {}
    for name, arch in archs.items():
        try:
            out[name] = space.choices_of(arch)
        except UserError as e:
            raise UserError(f"incumbent {name}: {e}") from None
    return out


def starting_points(net: SupernetBase, argmax: dict[str, Choice], incumbents: dict[str, dict[str, Choice]] | None = None,
                    ) -> list[tuple[str, dict[str, Choice], tuple[str, ...]]]:
    """(name, choices, held groups) of every starting point but the argmax itself (module docstring);
    `incumbents` ({name: choices}) are the user's, beside the family's own."""
    layout, starts = net.layout, []
    for g in net.enumerated_groups if net.finalist_groups is None else net.finalist_groups:
        for slot, candidates in zip(layout.groups[g].slots, layout.groups[g].choices):
            starts += [(f"search, {slot} {alt}", {**argmax, slot: alt}, (g,)) for alt in candidates if alt != argmax[slot]]
    starts += [(f"incumbent {name}", choices, ()) for name, choices in {**net.incumbents(), **(incumbents or {})}.items()]
    return starts


def distinct(candidates: list[Settled]) -> list[Settled]:
    """The first of each set of candidates that settled on the same choices."""
    seen, kept = set(), []
    for c in candidates:
        key = _key(c.choices)
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept


def _key(choices: dict[str, Choice]) -> str:
    return json.dumps(choices, sort_keys=True)


def weight_and_arch_parts(data: PreparedData, split_fraction: float) -> tuple[Split, Split]:
    """The train split's weight part (the supernet's weights trained on it) and arch part (never trained on)."""
    train = data.split("train")
    cut = int(len(train) * split_fraction)
    part = lambda name, a, b: Split(name, train.dense[a:b], train.sparse[a:b], train.labels[a:b])  # noqa: E731
    return part("finalist training", 0, cut), part("finalist scoring", cut, len(train))


def proxy_metrics(space, choices: dict[str, Choice], parts: tuple[Split, Split], config: SearchConfig) -> dict:
    """Train the arch at `choices` of `space` from scratch one pass over `parts[0]` with the supernet's
    recipe; its metrics on `parts[1]` ({logloss, auc, ...}) and the seconds it took."""
    model = build_model(space.arch(choices), seed=config.seed)
    recipe = TrainConfig(epochs=1, batch_size=config.train_batch_size, optimizer=config.weight_optimizer,
                         lr=config.weight_lr, seed=config.seed)
    started = time.perf_counter()
    fit(model, None, recipe, splits=parts)
    return {**evaluate(model, parts[1]), "train_s": round(time.perf_counter() - started, 3)}


def choose(net: SupernetBase, table: CostTable, candidates: list[Settled], parts: tuple[Split, Split],
           config: SearchConfig, folder: Path) -> tuple[Settled, list[dict]]:
    """(the finalist with the lowest proxy logloss, every finalist's record). Records found in
    `folder`/finalists.json for the same choices and recipe are reused; each new one is written as it
    finishes. Ties keep the earlier finalist (the search's own first)."""
    recipe = {f: getattr(config, f) for f in ("seed", "train_batch_size", "weight_optimizer", "weight_lr", "split_fraction")}
    path = folder / RECORDS
    old = read_json(path, "finalists") if path.exists() else []
    done = {_key(r["choices"]): r for r in old if isinstance(r, dict) and r.get("recipe") == recipe and "choices" in r}
    records = []
    for c in candidates:
        record = done.get(_key(c.choices))
        if record is None:
            metrics = proxy_metrics(net.space, c.choices, parts, config)
            record = {"name": c.name, "choices": c.choices, "recipe": recipe,
                      "predicted_latency_us": choices_cost(table, net.layout, c.choices), "proxy": metrics}
        records.append({**record, "name": c.name})
        write_json_atomic(path, records)
        click.echo(f"search: finalist {c.name}: proxy logloss {record['proxy']['logloss']:.4f} "
                   f"(predicted {record['predicted_latency_us'] / 1000:.3f}ms)", err=True)
    best = min(range(len(candidates)), key=lambda i: records[i]["proxy"]["logloss"])
    for i, r in enumerate(records):
        r["chosen"] = i == best
    write_json_atomic(path, records)
    return candidates[best], records
