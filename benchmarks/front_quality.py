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
3. per budget, both archs retrained from scratch (`train_arch`, the same TrainConfig),
   and their test logloss compared (--no-retrain: the time ratio only).

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
from dnas_hw.train import TrainConfig, train_arch
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.front import budget_label, run_front
from search.margin import run_search_within

from _run import open_run  # sibling module

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
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, data, space = open_run(args)
    lut, B = Lut.load(args.lut), args.batch_size
    if args.budgets:
        budgets = [float(b) * 1000 for b in args.budgets.split(",")]
    else:
        ref_us = predict(lut, dlrm_kaggle_reference(data.cardinalities), B).total_us
        budgets = [round(float(x) * ref_us, 1) for x in args.budgets_x.split(",")]
    config = SearchConfig(epochs=args.search_epochs, seed=args.seed, train_batch_size=args.train_batch_size)
    train_cfg = TrainConfig(epochs=args.train_epochs, seed=args.seed)

    def single(budget: float):
        tag = budget_label(budget)
        return timed_once(out / "single" / f"{tag}.done.json", lambda: run_search_within(
            args.data, space, lut, budget_us=budget, batch_size=B, out=out / "single" / tag, config=config, resume=True))

    # The front runs between the first dedicated search and the others, so that a change of the
    # machine's load during the run weighs on both sides of the ratio.
    single(budgets[0])
    front, front_cpu, front_wall = timed_once(out / "front_done.json", lambda: run_front(
        args.data, space, [lut], budgets_us=budgets, batch_size=B, out=out / "front", config=config, resume=True,
        arch_updates=args.arch_updates))
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
            for kind, arch_path in (("front", out / "front" / point["arch"]), ("single", out / "single" / tag / "arch.json")):
                metrics, _, _ = timed_once(out / "retrain" / kind / tag / "done.json", lambda: train_arch(
                    args.data, Arch.load(arch_path), out / "retrain" / kind / tag, train_cfg, force=True))
                row[kind]["test_logloss"] = metrics["test"]["logloss"]
            row["logloss_gap"] = row["front"]["test_logloss"] - row["single"]["test_logloss"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    for r, budget in zip(rows, budgets):
        r["single"]["epochs_s"] = _epochs_s(out / "single" / budget_label(budget))
    mean_single_cpu = sum(r["single"]["cpu_s"] for r in rows) / len(rows)
    mean_single_wall = sum(r["single"]["wall_s"] for r in rows) / len(rows)
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
        "| front: test logloss | dedicated: test logloss | gap |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["points"]:
        f, s = r["front"], r["single"]
        tl = (f"{f['test_logloss']:.4f} | {s['test_logloss']:.4f} | {r['logloss_gap']:+.4f}" if "logloss_gap" in r
              else "n/a | n/a | n/a")
        lines.append(f"| {r['budget_ms']:.3f} | {r['searched_against_ms']:.3f} | {f['predicted_ms']:.3f} | {s['predicted_ms']:.3f} "
                     f"| {f['supernet_val_logloss']:.4f} | {tl} |")
    lines += ["", f"done-when: {report['done_when']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
