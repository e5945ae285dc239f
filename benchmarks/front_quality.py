"""One front search of K budgets against K dedicated single-budget searches: time and quality.

The done-when of the front (search/front.py): on 1M planted rows, a front of 4
budgets costs at most 1.5x the time of one single-budget search, every point is
within its budget, and each point's retrained test logloss is within 0.003 of
(or better than) the dedicated search's at the same budget. For the budgets
(--budgets-x: multiples of the DLRM Kaggle reference's LUT latency, or --budgets
in ms), this script runs:

1. the front: `search.front.run_front` over all budgets (one supernet);
2. per budget, the dedicated search: `search.margin.run_search_within` (the CLI's
   single-budget path, the same margin);
3. per budget, both archs retrained from scratch (`search_quality.retrained`, the same TrainConfig) on
   every seed of --retrain-seeds, and their median test logloss compared (--no-retrain:
   the time ratio only): one arch's retraining varies by up to 0.02 between seeds on 1M
   planted rows, more than the 0.003 the comparison is about.

With --dedicated-from, a budget's dedicated search and its retrainings are read from a
`benchmarks/search_quality.py` output folder (its `x{share}` entry) where that folder holds
one for the same budget, LUT, data and search config, instead of being run again (its arch
retrained here where that folder retrained with another recipe, e.g. --train-epochs).

With --only front or --only dedicated, this run does that side's searches alone and
records them: two processes, one per side, then run side by side under the same load
(on two cores, half the wall time), and a third run with the same --out reads both
records and reports.

Times are CPU seconds of this process (one torch thread; a shared machine's
load does not tilt the ratio) and wall seconds beside them. The ratio that
decides is front / mean(dedicated searches). Every finished stage is recorded in
a `done.json` beside its outputs, so a killed run restarted with the same
arguments goes on from there.

    .venv/bin/python benchmarks/front_quality.py --data DIR --lut LUT.csv --out DIR [--budgets-x 0.5,1,2,4]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path


from dnas_hw.dlrm.arch import Arch, dlrm_kaggle_reference
from dnas_hw.train import TrainConfig
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.front import budget_label, run_front
from search.margin import run_search_within
from search.run import cost_tables

from _run import open_run  # sibling module
from search_quality import retrained, seed_text  # sibling module

# The done-when's thresholds.
MAX_TIME_RATIO = 1.5
MAX_LOGLOSS_GAP = 0.003


def timed_once(record: Path, fn):
    """(fn(), CPU seconds, wall seconds), run once: a restart reads them back from `record` (JSON)."""
    if record.exists():
        done = json.loads(record.read_text())
        return done["result"], done["cpu_s"], done["wall_s"]
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"result": result, "cpu_s": cpu, "wall_s": wall}, default=str))
    tmp.replace(record)
    return result, cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--lut", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--batch-size", type=int, default=64, help="serving batch size of the budgets")
    ap.add_argument("--budgets-x", default="0.5,1,2,4", help="budgets as multiples of the DLRM reference's LUT latency")
    ap.add_argument("--budgets", default=None, help="budgets in ms (e.g. 0.5,1,2,4), instead of --budgets-x")
    ap.add_argument("--search-epochs", type=int, default=SearchConfig.epochs)
    ap.add_argument("--train-batch-size", type=int, default=SearchConfig.train_batch_size)
    ap.add_argument("--train-epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--arch-updates", type=int, default=None, help="heads updated per arch batch (search.front's default)")
    ap.add_argument("--no-retrain", action="store_true", help="the time ratio only")
    ap.add_argument("--retrain-seeds", default="0,1,2", help="training seeds each arch is retrained on (compared by median)")
    ap.add_argument("--dedicated-from", default=None,
                    help="a search_quality.py output folder whose dedicated searches (x{share}) stand in for this run's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("front", "dedicated"), default=None,
                    help="run and record one side's searches alone (the other side in another process)")
    args = ap.parse_args()
    out, data, space = open_run(args)
    lut, B = Lut.load(args.lut), args.batch_size
    if args.budgets:
        budgets = [float(b) * 1000 for b in args.budgets.split(",")]
    else:
        ref_us = predict(lut, dlrm_kaggle_reference(data.cardinalities), B).total_us
        # Unrounded, as search_quality.py's, so that its searches can stand in (--dedicated-from).
        budgets = [float(x) * ref_us for x in args.budgets_x.split(",")]
    config = SearchConfig(epochs=args.search_epochs, seed=args.seed, train_batch_size=args.train_batch_size)
    train_cfg = TrainConfig(epochs=args.train_epochs, seed=args.seed)

    seeds = [int(x) for x in args.retrain_seeds.split(",")]
    given = dedicated_searches(Path(args.dedicated_from), budgets, space, lut, B, config, train_cfg) if args.dedicated_from else {}

    def single(budget: float):
        tag = budget_label(budget)
        if budget in given:
            return given[budget]["summary"], given[budget]["cpu_s"], float("nan")
        return timed_once(out / "single" / f"{tag}.done.json", lambda: run_search_within(
            args.data, space, lut, budget_us=budget, batch_size=B, out=out / "single" / tag, config=config, resume=True))

    def the_front():
        return timed_once(out / "front_done.json", lambda: run_front(
            args.data, space, [lut], budgets_us=budgets, batch_size=B, out=out / "front", config=config, resume=True,
            arch_updates=args.arch_updates))

    if args.only == "dedicated":
        for budget in budgets:
            single(budget)
        return
    if args.only == "front":
        the_front()
        return
    # The front runs between the first dedicated search and the others, so that a change of the
    # machine's load during the run weighs on both sides of the ratio.
    single(budgets[0])
    front, front_cpu, front_wall = the_front()
    print(f"front of {len(budgets)}: {front_cpu:.1f} s CPU, {front_wall:.1f} s wall", flush=True)
    rows = []
    for budget, point in zip(budgets, front["points"]):
        tag = budget_label(budget)
        summary, cpu, wall = single(budget)
        row = {"budget_ms": budget / 1000, "searched_against_ms": point["searched_against_ms"],
               "front": {"predicted_ms": point["predicted_latency_ms"], "within_budget": point["within_budget"],
                         "projection_needed": point["projection_needed"], "supernet_val_logloss": point["supernet_val_logloss"]},
               "single": {"predicted_ms": summary["predicted_latency_ms"], "within_budget": summary["within_budget"],
                          "projection_needed": summary["projection_needed"], "cpu_s": cpu, "wall_s": wall}}
        if not args.no_retrain:
            runs = {"front": retrained(args.data, Arch.load(out / "front" / point["arch"]), out / "retrain" / "front" / tag,
                                       train_cfg, seeds)}
            single_run = given[budget]["run"] if budget in given else out / "single" / tag
            runs["single"] = (given[budget]["retrained"] if budget in given and given[budget]["retrained"] is not None else
                              retrained(args.data, Arch.load(single_run / "arch.json"), out / "retrain" / "single" / tag,
                                        train_cfg, seeds))
            for kind, r in runs.items():
                row[kind].update(test_logloss=r["median_test_logloss"], seeds=seed_text(r))
            row["logloss_gap"] = row["front"]["test_logloss"] - row["single"]["test_logloss"]
        row["front"]["chosen_finalist"] = point.get("chosen_finalist")
        row["single"]["chosen_finalist"] = summary.get("chosen_finalist")
        rows.append(row)
        print(json.dumps(row), flush=True)
    for r, budget in zip(rows, budgets):
        r["single"]["epochs_s"] = _epochs_s(given[budget]["run"] if budget in given else out / "single" / budget_label(budget))
    mean_single_cpu = sum(r["single"]["cpu_s"] for r in rows) / len(rows)
    mean_single_wall = sum(r["single"]["wall_s"] for r in rows) / len(rows)  # nan where a search stood in
    report = {
        "data": str(args.data), "train_rows": len(data.split("train")), "space": space.name, "batch_size": B,
        "lut": str(args.lut), "search_config": config.to_dict(), "train_config": asdict(train_cfg),
        "arch_updates_per_batch": front["arch_updates_per_batch"],
        "front_cpu_s": front_cpu, "front_wall_s": front_wall,
        # The searches' own clocks (summary.json / front.json elapsed_s; wall), and of it the training
        # epochs alone (search_log.csv's last elapsed_s): the rest is setup and finishing (projection,
        # derived_init.pt, and for the front the supernet's validation metrics), paid per point.
        "front_elapsed_s": front["elapsed_s"],
        "front_epochs_s": _epochs_s(out / "front" / front["points"][0]["run"]),
        "mean_single_cpu_s": mean_single_cpu, "mean_single_wall_s": mean_single_wall,
        "time_ratio_cpu": front_cpu / mean_single_cpu, "time_ratio_wall": front_wall / mean_single_wall,
        "epochs_ratio_wall": _epochs_s(out / "front" / front["points"][0]["run"]) / (sum(r["single"]["epochs_s"] for r in rows) / len(rows)),
        "points": rows,
    }
    report["done_when"] = {
        "time": report["time_ratio_cpu"] <= MAX_TIME_RATIO,
        "within_budget": all(r["front"]["within_budget"] for r in rows),
        "quality": None if args.no_retrain else all(r["logloss_gap"] <= MAX_LOGLOSS_GAP for r in rows),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))


def dedicated_searches(folder: Path, budgets: list[float], space, lut: Lut, batch_size: int, config: SearchConfig,
                       train_cfg: TrainConfig) -> dict[float, dict]:
    """{budget: {summary, cpu_s, retrained, run}} of the dedicated searches in `folder` (a search_quality.py
    output) at these budgets; one searched with another LUT or config is refused, a missing one left out.
    `retrained` is None where that folder retrained with another recipe than `train_cfg` (e.g. epochs)."""
    lut_fingerprint = cost_tables(space, lut, batch_size, config).latency.fingerprint()
    report = json.loads((folder / "report.json").read_text())
    theirs_train = {**asdict(TrainConfig()), **report.get("train_config", {})}
    same_recipe = {k: v for k, v in theirs_train.items() if k != "seed"} == {k: v for k, v in asdict(train_cfg).items() if k != "seed"}
    found = {}
    for entry_path in folder.glob("x*/entry.json"):
        entry = json.loads(entry_path.read_text())
        budget = next((b for b in budgets if abs(b / 1000 - entry["budget_ms"]) <= 1e-9 * b), None)
        if budget is None:
            continue
        run = entry_path.parent / "search"
        summary = json.loads((run / "summary.json").read_text())
        if summary["identity"]["lut"] != lut_fingerprint:
            raise SystemExit(f"{run} was searched with another LUT")
        ours = {k: v for k, v in config.to_dict().items() if k != "stop_after"}
        # A field added to SearchConfig since that search ran is read at its default.
        theirs = {k: v for k, v in SearchConfig.from_dict(summary["identity"]["config"]).to_dict().items() if k != "stop_after"}
        if theirs != ours:
            raise SystemExit(f"{run} was searched with another search config")
        retrain = ({k: entry["searched"][k] for k in ("val", "test", "train_s", "seeds", "median_test_logloss")}
                   if same_recipe else None)
        found[budget] = {"summary": summary, "cpu_s": entry["search_s"], "retrained": retrain, "run": run}
    return found


def _epochs_s(run: Path) -> float:
    """Wall seconds of a run's training epochs: the last `elapsed_s` of its search_log.csv."""
    import pandas as pd

    return float(pd.read_csv(run / "search_log.csv")["elapsed_s"].iloc[-1])


def markdown(report: dict) -> str:
    lines = [
        f"front of {len(report['points'])} budgets: {report['front_cpu_s']:.0f} s CPU ({report['front_wall_s']:.0f} s wall); "
        f"one dedicated search: {report['mean_single_cpu_s']:.0f} s CPU ({report['mean_single_wall_s']:.0f} s wall), mean of "
        f"{len(report['points'])}; ratio **{report['time_ratio_cpu']:.2f}x** CPU ({report['time_ratio_wall']:.2f}x wall; "
        f"the training epochs alone {report['epochs_ratio_wall']:.2f}x wall)",
        "",
        "| budget ms | searched against ms | front: predicted ms | dedicated: predicted ms | front: supernet val logloss "
        "| front: test logloss (median of seeds) | dedicated: test logloss (median of seeds) | gap | front: finalist "
        "| dedicated: finalist |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in report["points"]:
        f, s = r["front"], r["single"]
        tl = (f"{f['seeds']} | {s['seeds']} | {r['logloss_gap']:+.4f}" if "logloss_gap" in r else "n/a | n/a | n/a")
        lines.append(f"| {r['budget_ms']:.3f} | {r['searched_against_ms']:.3f} | {f['predicted_ms']:.3f} | {s['predicted_ms']:.3f} "
                     f"| {f['supernet_val_logloss']:.4f} | {tl} | `{f['chosen_finalist']}` | `{s['chosen_finalist']}` |")
    lines += ["", f"done-when: {report['done_when']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
