"""The finalists: the search's arch, its one-slot switches and the incumbents, each trained briefly as it will be retrained; the best is returned.

The trained supernet ranks archs across the budget range well (Kendall tau
0.79 over 12 archs on 1M planted rows, benchmarks/RESULTS.md), but one budget's
band holds archs that differ by less than weight sharing distorts them: the
interaction kind (`dot` or `cat`, whose top layers read different columns through
shared weights) came out of the supernet as a coin toss, and the kind that
retrains worse lost up to 0.04 test logloss. Near one budget a short standalone
training compares archs as retraining does, for the price of a few one-pass
trainings, small beside the supernet's four epochs.

The finalists:

- `search`: the search's own arch (its argmax settled: projected into
  [floor, 1] x budget, refined by the supernet, tables and dims given their
  capacity; `settle`);
- `search, {slot} {choice}`: that arch with one slot of a group the supernet
  compares least like retraining switched to each other candidate
  (`SupernetBase.finalist_groups`; DLRM: the interaction kind and width, which
  change what the top MLP's shared first layer reads, and each MLP's depth,
  which changes what its closing layer reads), projected under the budget where
  the switch goes over it. No floor: a cheaper arch that trains better is the
  better answer (on 1M planted rows the search's arch at half the reference's
  latency trained better than its arch at the reference's latency);
- `incumbent {name}`: each hand-designed arch the family knows in this space
  (`SupernetBase.incumbents`; DLRM's Kaggle reference config) and each the user
  gives (`dnas-hw search --incumbent ARCH.json`, e.g. the model served today),
  as it is where it fits the budget: the design a user would ship without the
  search is a finalist, so the search returns something else only when it
  trains better. Only one over the budget is settled as the argmax is (brought
  into the band, refined, given capacity); growing one that fits into the band
  is the search's own arch's business, and settling the reference at 2x and 4x
  its latency cost more CPU than settling those points' own argmax (176 s
  against 152 s on 1M rows: benchmarks/RESULTS.md, settle_cost.py).
- `point {name}`: in a front (`search.front`), the arch each point finished
  before this one chose, as it is, where it fits this budget: trained already,
  it costs nothing, and no point returns an arch that trained worse than a
  cheaper point's.

In a front, a point's own arch is settled with the interaction kind (each
enumerated group, `SupernetBase.enumerated_groups`) the nearest cheaper point
chose among finalists of both kinds, in place of its head's where that differs
(`kinds_chosen`; summary.json's `kinds_from_cheaper_point`), and neither the
projection nor the refinement moves it (with the head's two kinds near even, the
projection alone can switch it): the kind is the choice the supernet compares
least like retraining, and the cheaper point's finalists measured it by
training. A switch alone cannot stand in: a `dot` switch of an arch settled
under `cat` keeps the widths and depths chosen for `cat`. The head's kind stays
a finalist as the own arch's switch. Measured
(benchmarks/RESULTS.md, `front_quality.py`): on 1M planted rows the front's 2x
and 4x heads ended on `cat` (the dedicated searches' on `dot`), every `cat`
finalist there stayed on the starting plateau through its pass, and without the
rule both points returned the `dot` switch of their `cat` arch, which retrained
0.013 worse than the dedicated searches' archs (two epochs, medians of 3 seeds);
with it, every point retrained within 0.003 of its dedicated search or better.

A finalist trains one pass over the weight part of the train split with the
supernet's recipe (optimizer, learning rate, batch size, seed; `dnas-hw train`'s
defaults) and is scored by its logloss on the arch part, which no finalist trained
on; the validation and test splits stay untouched. `finalists.json` in the run
folder holds every finalist's record as it finishes, so a resumed search trains
none twice.

Screening (successive halving's first rung): with a share s < 1
(`SearchConfig.finalist_screen`), every finalist first trains the first batches
of its pass that cover s of the weight part, scored on `SCREEN_SCORED_ROWS` of
the arch part, and only the `finalist_keep` best go on to the end of the pass
where their screen stopped (`dnas_hw.train.Pass`: the same model as a pass from
scratch); n finalists then cost about n * s + keep * (1 - s) whole trainings
instead of n. A front
screens by default (`screen_share`): it trains the finalists of every point, and on
1M planted rows the whole-pass finalists of 4 budgets (0.5x-4x the reference's
latency) cost about three times one search's supernet. The screen
reads at least `MIN_SCREEN_ROWS` (where the share holds fewer, that many; where the
weight part holds no more, no screening): early in training the archs that learn
fastest lead, not those that end best. Measured (benchmarks/RESULTS.md,
`finalist_screening.py`): on 1M planted rows a quarter of the weight rows (160k)
kept the whole pass's winner among its best 2 at 0.5x, 1x and 2x the reference's
latency (the first rows of the part: Kendall tau 0.60-0.78 over 11 finalists;
the first batches of each finalist's pass, as `choose` screens: the winner first
at all three);
an eighth (80k) kept it too but ordered the rest at tau 0.02-0.45; on the demo's
150k rows a quarter (24k) ranked it 5th and 7th (tau 0.53 and -0.05), where the
whole pass is cheap anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch

from dnas_hw.data.folder import PreparedData, Split, num_batches
from dnas_hw.errors import UserError
from dnas_hw.family import build_model
from dnas_hw.files import read_json, write_json_atomic
from dnas_hw.memory import available_bytes, training_bytes
from dnas_hw.space import Choice, choices_key
from dnas_hw.train import Pass, TrainConfig, evaluate, rows_of_batches
from search.config import SearchConfig
from search.cost import CostTable, choices_cost
from search.family_search import family_search
from search.project import project
from search.refine import HeldOut, keep_capacity, refine
from search.supernet import SupernetBase

RECORDS = "finalists.json"
# The share of the weight rows a front's finalists are screened on, and the fewest rows a screening
# reads (module docstring): with fewer the screen ranks by how fast an arch starts to learn.
FRONT_SCREEN = 0.25
MIN_SCREEN_ROWS = 150_000
# The arch-part rows a screen is scored on, evenly spaced: on 1M planted rows, scored on 50k of the 160k,
# the screens ranked the whole pass's winner first at three budgets (benchmarks/RESULTS.md,
# finalist_screening.py), and scoring all 160k was about a fifth of a screen's CPU at 4x the reference's
# latency. A screen picks the best 2 for the whole pass; it need not order the rest.
SCREEN_SCORED_ROWS = 50_000


@dataclass(frozen=True)
class Settled:
    """A finalist candidate: its choices and the moves of each step that made them (as in summary.json)."""

    name: str
    choices: dict[str, Choice]
    projection: list[dict]
    refinement: list[dict]
    capacity: list[dict]


def settle(net: SupernetBase, table: CostTable, name: str, start: dict[str, Choice], probs: dict[str, torch.Tensor],
           rows: HeldOut, budget_us: float, floor: float, config: SearchConfig, held: tuple[str, ...] = ()) -> Settled:
    """`start` projected into [floor, 1] x budget_us (by `probs`), then refined and given capacity in the
    supernet as `config` says: how the search's argmax becomes its arch, and an incumbent a finalist.
    The groups in `held` keep their choices of `start` throughout."""
    choices, projection = project(net.layout, table, start, probs, budget_us, floor, held)
    refinement: list[dict] = []
    if config.refine:
        groups = tuple(g for g in (net.refined_groups or net.layout.groups) if g not in held)
        choices, refinement = refine(net, table, choices, rows, budget_us, floor, groups=groups, avoid=net.refine_avoids)
    capacity: list[dict] = []
    if config.keep_capacity and net.capacity_groups:
        choices, capacity = keep_capacity(net, table, choices, rows, budget_us, floor, groups=net.capacity_groups)
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


@dataclass
class FrontShare:
    """What the points of a front share in their finalists: every record trained so far ({choices key:
    record}, so a finalist two points hold trains once), each finished point's chosen arch, and the
    kinds the finalists of the last point that compared them by training chose (`kinds_chosen`)."""

    records: dict[str, dict] = field(default_factory=dict)
    chosen: dict[str, dict[str, Choice]] = field(default_factory=dict)  # {point name: choices}
    kinds: dict[str, Choice] = field(default_factory=dict)  # {slot: choice}

    def finished(self, net: SupernetBase, point: str, choices: dict[str, Choice], finalists: list[dict]) -> None:
        """Record a finished point: its chosen `choices` and, for each enumerated group's slot whose
        other choices were among its `finalists` (records as summary.json's), the kind it chose."""
        self.chosen[point] = choices
        for g in net.enumerated_groups:
            for slot in net.layout.groups[g].slots:
                if any(r["choices"][slot] != choices[slot] for r in finalists):
                    self.kinds[slot] = choices[slot]


def kinds_chosen(shared: FrontShare | None) -> dict[str, Choice]:
    """{slot: choice} of the enumerated groups (`SupernetBase.enumerated_groups`, DLRM's interaction kind)
    as the last point of a front whose finalists compared them by training chose (`FrontShare.finished`);
    {} outside a front and before any point compared them (a point over its fastest arch, or without
    finalists, measured nothing)."""
    return {} if shared is None else dict(shared.kinds)


def candidates(net: SupernetBase, table: CostTable, own: Settled, probs: dict[str, torch.Tensor], rows: HeldOut,
               budget_us: float, floor: float, config: SearchConfig, incumbents: dict[str, dict[str, Choice]] | None = None,
               borrowed: dict[str, dict[str, Choice]] | None = None) -> list[Settled]:
    """The finalists (module docstring): `own` (the search's settled arch), its switches, the incumbents
    (the family's and `incumbents`, {name: choices}: as they are where they fit `budget_us`, else settled)
    and, as they are, the archs other points of a front chose (`borrowed`, {point name: choices}),
    distinct and within `budget_us`."""
    found = [own] + switches(net, table, own.choices, probs, budget_us)
    for name, choices in {**net.incumbents(), **(incumbents or {})}.items():
        if choices_cost(table, net.layout, choices) <= budget_us:
            found.append(Settled(f"incumbent {name}", choices, [], [], []))
        else:
            found.append(settle(net, table, f"incumbent {name}", choices, probs, rows, budget_us, floor, config))
    found += [Settled(f"point {name}", choices, [], [], []) for name, choices in (borrowed or {}).items()]
    return distinct([c for c in found if choices_cost(table, net.layout, c.choices) <= budget_us])


def switches(net: SupernetBase, table: CostTable, choices: dict[str, Choice], probs: dict[str, torch.Tensor],
             budget_us: float) -> list[Settled]:
    """`choices` with one slot of a finalist group (`SupernetBase.finalist_groups`) switched to each other
    candidate, projected (the switched group held) under `budget_us` where the switch goes over it. No
    floor: a cheaper arch that trains better is the better answer, and the floor only steers the logits."""
    layout, out = net.layout, []
    for g in net.enumerated_groups if net.finalist_groups is None else net.finalist_groups:
        for slot, alternatives in zip(layout.groups[g].slots, layout.groups[g].choices):
            for alt in alternatives:
                if alt != choices[slot]:
                    start = {**choices, slot: alt}
                    moved, projection = project(layout, table, start, probs, budget_us, 0.0, held=(g,))
                    out.append(Settled(f"search, {slot} {alt}", moved, projection, [], []))
    return out


def distinct(found: list[Settled]) -> list[Settled]:
    """The first of each set of candidates that settled on the same choices."""
    seen, kept = set(), []
    for c in found:
        key = choices_key(c.choices)
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept


def weight_and_arch_parts(data: PreparedData, split_fraction: float) -> tuple[Split, Split]:
    """The train split's weight part (the supernet's weights trained on it) and arch part (never trained on)."""
    train = data.split("train")
    cut = int(len(train) * split_fraction)
    part = lambda name, a, b: Split(name, train.dense[a:b], train.sparse[a:b], train.labels[a:b])  # noqa: E731
    return part("finalist training", 0, cut), part("finalist scoring", cut, len(train))


def screen_share(config: SearchConfig, points: int) -> float:
    """The share of the weight rows the finalists are screened on: the config's, else `FRONT_SCREEN` in a
    front of several points and 1 (no screening) in a single search."""
    if config.finalist_screen is not None:
        return config.finalist_screen
    return FRONT_SCREEN if points > 1 else 1.0


def finalist_pass(space, choices: dict[str, Choice], weights: Split, config: SearchConfig,
                  supernet: SupernetBase | None = None) -> Pass:
    """The one pass over `weights` a finalist trains, with the supernet's recipe, from scratch or, with
    `supernet`, from the weights its family extracts from it (nothing trained yet)."""
    if supernet is None:
        model = build_model(space.arch(choices), seed=config.seed)
    else:
        model = family_search(space).extract(supernet, choices)
    recipe = TrainConfig(epochs=1, batch_size=config.train_batch_size, optimizer=config.weight_optimizer,
                         lr=config.weight_lr, seed=config.seed)
    return Pass(model, weights, recipe, label=weights.name)


def scored(training: Pass, rows: Split, seconds: float) -> dict:
    """The metrics ({logloss, auc, ...}) of the model of `training` on `rows`, with the `seconds` it took."""
    return {**evaluate(training.model, rows), "train_s": round(seconds, 3)}


def room_to_pause(arch, config: SearchConfig) -> bool:
    """Whether a screened pass of `arch` may be kept for its whole pass: its weights, optimizer state and
    activations (`dnas_hw.memory.training_bytes`) take at most half the memory available now, so that
    the passes kept leave room for the one training. Unknown memory: yes."""
    available = available_bytes()
    return available is None or 2 * training_bytes(arch, config.train_batch_size, config.weight_optimizer) <= available


def pass_steps(config: SearchConfig, rows: int) -> int:
    """The batches of a finalist's pass that cover `rows` weight rows."""
    return num_batches(rows, config.train_batch_size, drop_last=False)


def proxy_metrics(space, choices: dict[str, Choice], parts: tuple[Split, Split], config: SearchConfig,
                  supernet: SupernetBase | None = None, steps: int | None = None) -> dict:
    """Train the arch at `choices` of `space` one pass over `parts[0]` (`finalist_pass`; with `steps`,
    only its first `steps` batches: a screen) and score it on `parts[1]`: its metrics and the seconds
    it took."""
    started = time.perf_counter()
    training = finalist_pass(space, choices, parts[0], config, supernet)
    training.to(training.steps if steps is None else steps)
    return scored(training, parts[1], time.perf_counter() - started)


def choose(net: SupernetBase, table: CostTable, finalists: list[Settled], parts: tuple[Split, Split],
           config: SearchConfig, folder: Path, screen: float = 1.0, known: dict[str, dict] | None = None,
           ) -> tuple[Settled, list[dict]]:
    """(the finalist with the lowest proxy logloss, every finalist's record).

    With `screen` < 1 and more than `config.finalist_keep` finalists, each first trains the first batches
    of its pass that cover `screen` of the weight part, at least `MIN_SCREEN_ROWS`, scored on
    `SCREEN_SCORED_ROWS` of the arch part (its record's `screen`; none where that is the whole weight
    part), and only the `finalist_keep` best train the whole part, going on where the screen stopped
    (`proxy`; the others' records have none); one with a
    whole-part record in `known` joins them unscreened. Records found in `folder`/finalists.json or in
    `known` ({choices key: record}, e.g. another point's of a front; the new ones are added to it) for
    the same choices and recipe are reused; each new one is written as it finishes. Ties keep the earlier finalist (the search's own first).
    """
    recipe = {f: getattr(config, f) for f in ("seed", "train_batch_size", "weight_optimizer", "weight_lr", "split_fraction")}
    path = folder / RECORDS
    old = read_json(path, "finalists") if path.exists() else []
    known = {} if known is None else known
    done = {**known, **{choices_key(r["choices"]): r for r in old
                        if isinstance(r, dict) and r.get("recipe") == recipe and "choices" in r}}
    records = [{"name": c.name, "choices": c.choices, "recipe": recipe,
                "predicted_latency_us": choices_cost(table, net.layout, c.choices)} for c in finalists]

    # A screen trains the first batches of the finalist's whole pass; the passes that may survive it (the
    # best `finalist_keep` screened so far, {finalist: pass}) are kept where memory allows, and a survivor's
    # whole pass goes on where its screen stopped: the same model as a pass from scratch, for the rest of
    # the rows only (one not kept trains from scratch).
    paused: dict[int, Pass] = {}

    def measure(i: int, what: str, steps: int, scored_on: Split) -> None:
        """records[i][what] (`screen`: the first `steps` batches of its pass, or `proxy`: the whole pass),
        scored on `scored_on`: reused from `done`, else trained."""
        c, r = finalists[i], records[i]
        earlier = done.get(choices_key(c.choices), {})
        same_screen = earlier.get("screen_steps") == steps and earlier.get("screen", {}).get("rows") == len(scored_on)
        if what in earlier and (what == "proxy" or same_screen):
            r[what] = earlier[what]
        else:
            started = time.perf_counter()
            training = paused.pop(i, None) or finalist_pass(net.space, c.choices, parts[0], config)
            went_on_from = training.done
            training.to(steps)
            r[what] = scored(training, scored_on, time.perf_counter() - started)
            if what == "screen":
                if room_to_pause(net.space.arch(c.choices), config):
                    paused[i] = training
                    for j in sorted(paused, key=lambda j: records[j]["screen"]["logloss"])[config.finalist_keep:]:
                        del paused[j]
            elif went_on_from:
                r[what]["went_on_from_step"] = went_on_from
        if what == "screen":
            r["screen_steps"], r["screen_rows"] = steps, rows_of_batches(parts[0], config.train_batch_size, 0, steps)
        known[choices_key(c.choices)] = {**done.get(choices_key(c.choices), {}), **r}
        write_json_atomic(path, records)
        how = f"screened on {r['screen_rows']:,} rows, " if what == "screen" else ""
        click.echo(f"search: finalist {c.name}: {how}logloss {r[what]['logloss']:.4f} "
                   f"(predicted {r['predicted_latency_us'] / 1000:.3f}ms)", err=True)

    # A finalist another point trained on the whole part needs no screen. Only `known` counts here, not
    # this folder's records: a resumed run then keeps what the uninterrupted run kept.
    whole = [i for i, c in enumerate(finalists) if "proxy" in known.get(choices_key(c.choices), {})]
    kept, train = [i for i in range(len(finalists)) if i not in whole], parts[0]
    screened_rows = max(int(len(train) * screen), MIN_SCREEN_ROWS)
    if screen < 1 and len(kept) > config.finalist_keep and screened_rows < len(train):
        scored_on = parts[1].spaced(SCREEN_SCORED_ROWS)
        for i in kept:
            measure(i, "screen", pass_steps(config, screened_rows), scored_on)
        kept = sorted(kept, key=lambda i: records[i]["screen"]["logloss"])[: config.finalist_keep]
    kept = sorted(kept + whole)
    whole_pass = pass_steps(config, len(train))
    for i in kept:
        measure(i, "proxy", whole_pass, parts[1])
    best = min(kept, key=lambda i: records[i]["proxy"]["logloss"])
    for i, r in enumerate(records):
        r["chosen"] = i == best
    write_json_atomic(path, records)
    return finalists[best], records
