"""Searched arch vs the DLRM Kaggle reference vs random search at equal compute, on planted synthetic data.

Budgets are multiples (--budgets-x, default 0.5, 1, 2) of the DLRM Kaggle
reference config's LUT latency at --batch-size: the question is whether the
search beats the hand-designed model at its own latency, and how close it
comes at half of it. For each budget:

1. `run_search_within`, as `dnas-hw search` runs it (aimed at the budget less the LUT's
   margin for --budget-quantile; compute: its CPU time), then retrain the derived arch from
   scratch with `train_arch` (compute: its CPU time). With --warm-start, the
   supernet-warm-started retraining is measured beside it (not counted as compute).
2. Random search: archs drawn uniformly from the space, kept if their predicted
   latency lies in [floor, 1] x the budget the search aimed at, each trained with the same TrainConfig,
   until their training CPU time reaches the search's total (search + retraining).
   The best by validation logloss is reported on test.
3. The DLRM Kaggle reference config, trained with the same TrainConfig.

Retraining at 1M rows moves an arch's test logloss by up to 0.02 from one seed to the next (a
run that misses the teacher), so the searched arch and the reference are each retrained on every
seed of --retrain-seeds (default 0,1,2) and compared by their medians; the compute of the search
counts its first retraining only (random trials train once each, on the first seed).

Also: where the search put embedding capacity, per planted role of the teacher
(important / weak / cross / noise, from the data's meta.json).

    .venv/bin/python benchmarks/search_quality.py --data DIR --out DIR [--lut LUT.csv] [--budgets-x 0.5,1,2]

Without --lut the LUT is profiled first (`profiler.run.profile_to_lut`, onnxruntime, cpu, 1 thread), its
embedding lookups replaying the data's own ids (`dnas-hw profile --data`'s default).
Everything runs on one torch thread (the machine is shared). Every finished stage
(reference, search, retraining, each random trial) is recorded with its CPU time
in a `done.json` beside its outputs, so a killed run restarted with the same
arguments goes on from there. Each budget's result is kept in `x<share>/entry.json`
and report.json gathers every budget found under --out, so budgets can run as
separate processes into one folder (start them once the reference is trained:
`--budgets-x ''` trains only the reference).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
import json
import random
import time
from pathlib import Path

import numpy as np

from dnas_hw.checkpoint import load_checkpoint
from dnas_hw.dlrm.arch import Arch, dlrm_kaggle_reference
from dnas_hw.train import TrainConfig, evaluate, fit, train_arch
from lut.margin import DEFAULT_QUANTILE, QUANTILES
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.cost import one_hot_cost
from search.extremes import extreme_arch
from search.family_search import latency_table
from search.layout import Layout
from search.margin import run_search_within

from _run import config_fields, open_run, search_arguments  # sibling module


def timed(fn):
    """(fn(), CPU seconds of this process): compute, not wall time, so a shared machine's load does not
    tilt the equal-compute comparison (everything runs on one torch thread)."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def sample_in_band(space, table, layout, budget_us, floor, rng, tries=20000):
    """A uniformly drawn arch whose predicted latency lies in [floor, 1] x budget (else the best under budget)."""
    fallback = None
    for _ in range(tries):
        choices = space.sample_choices(rng)
        us = one_hot_cost(table, layout.one_hot(choices))
        if floor * budget_us <= us <= budget_us:
            return choices, us
        if us <= budget_us and (fallback is None or us > fallback[1]):
            fallback = (choices, us)
    return fallback


def timed_once(record: Path, fn):
    """`timed(fn)`, run once: a restart of the benchmark after a kill reads the result and its CPU
    seconds back from `record` (JSON) instead of redoing the work (the draws are seeded, so the
    n-th random trial is the same arch on every run)."""
    if record.exists():
        done = json.loads(record.read_text())
        return done["result"], done["cpu_s"]
    result, secs = timed(fn)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"result": result, "cpu_s": secs})
    return result, secs


def warm_start_metrics(derived_init: Path, data, train_cfg) -> dict:
    """Val/test metrics of the derived arch retrained from the supernet's weights instead of from scratch."""
    model, _ = load_checkpoint(derived_init)
    model.train()
    fit(model, data, train_cfg)
    return {"val": evaluate(model, data.split("val")), "test": evaluate(model, data.split("test"))}


def capacity_by_role(arch, meta) -> dict:
    roles = meta["teacher"]["roles"]
    cards = meta["cardinalities"]
    out = {}
    for role in ("important", "weak", "cross", "noise"):
        fs = [f for f in range(len(cards)) if roles[f"C{f + 1}"] == role]
        out[role] = {
            "features": len(fs),
            "mean_dim": float(np.mean([arch.emb_dims[f] for f in fs])),
            "mean_rows_fraction": float(np.mean([arch.emb_rows[f] / cards[f] for f in fs])),
            "dims": [arch.emb_dims[f] for f in fs],
        }
    return out


def main() -> None:
    ap = search_arguments(argparse.ArgumentParser(), lut_required=False)
    ap.add_argument("--batch-size", type=int, default=64, help="serving batch size of the budget")
    ap.add_argument("--budgets-x", default="0.5,1,2", help="budgets as multiples of the DLRM reference's LUT latency")
    ap.add_argument("--search-epochs", type=int, default=SearchConfig.epochs)
    ap.add_argument("--train-epochs", type=int, default=TrainConfig.epochs)
    # The search trains its weights with the optimizer archs are retrained with, so that the
    # supernet ranks candidates under that recipe; both default to `dnas-hw train`'s.
    ap.add_argument("--optimizer", default=TrainConfig.optimizer)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--warm-start", action="store_true",
                    help="also retrain the derived arch from the supernet's weights (derived_init.pt), not counted as compute")
    ap.add_argument("--seed", type=int, default=0, help="seed of the search and of the random draws")
    ap.add_argument("--retrain-seeds", default="0,1,2",
                    help="training seeds the searched arch and the reference are each retrained on (compared by median)")
    ap.add_argument("--budget-quantile", default=DEFAULT_QUANTILE, choices=QUANTILES,
                    help="as `dnas-hw search`: the search aims at the budget less the LUT's margin for it")
    args = ap.parse_args()
    out, data, space = open_run(args)
    B = args.batch_size
    if args.lut:
        lut = Lut.load(args.lut)
    else:
        from dnas_hw.data.ids import data_source
        from profiler.run import profile_to_lut

        lut_path = out / "lut.csv"
        if not lut_path.exists():
            _, secs = timed(lambda: profile_to_lut(space, lut_path, backend="onnxruntime", device="cpu", threads=1,
                                                   batch_sizes=[B], ids=data_source(args.data)))
            print(f"profiled {lut_path} in {secs:.0f}s", flush=True)
        lut = Lut.load(lut_path)
    table, layout = latency_table(space, lut, B), Layout(space)
    fastest, _ = extreme_arch(table, layout, cheapest=True)
    slowest, _ = extreme_arch(table, layout, cheapest=False)
    train_cfg = TrainConfig(epochs=args.train_epochs, optimizer=args.optimizer, lr=args.lr, seed=args.seed)
    config = SearchConfig.from_dict({**SearchConfig().to_dict(), **config_fields(args.set), "epochs": args.search_epochs,
                                     "seed": args.seed, "weight_optimizer": args.optimizer, "weight_lr": args.lr})
    report = {"data": str(args.data), "train_rows": len(data.split("train")), "space": space.name, "batch_size": B,
              "fastest_ms": fastest / 1000, "slowest_ms": slowest / 1000, "train_config": asdict(train_cfg),
              "search_config": config.to_dict(), "cardinalities": list(data.cardinalities)}

    seeds = [int(x) for x in args.retrain_seeds.split(",")]
    ref = dlrm_kaggle_reference(data.cardinalities)
    ref_runs = retrained(args.data, ref, out / "reference", train_cfg, seeds)
    ref_us = predict(lut, ref, B).total_us
    report["reference"] = {"predicted_ms": ref_us / 1000, **ref_runs}
    print(f"reference: predicted {ref_us / 1000:.3f} ms, test logloss {seed_text(ref_runs)}", flush=True)

    for share in [float(s) for s in args.budgets_x.split(",") if s.strip()]:
        budget = share * ref_us
        tag = f"x{share:g}"
        run = out / tag / "search"
        summary, search_s = timed_once(out / tag / "search_done.json",
                                       lambda: run_search_within(args.data, space, lut, budget_us=budget, batch_size=B, out=run,
                                                                 config=config, resume=True, budget_quantile=args.budget_quantile))
        arch = Arch.load(run / "arch.json")
        searched = retrained(args.data, arch, out / tag / "retrain", train_cfg, seeds)
        retrain_s = searched["train_s"]
        warm = warm_start_metrics(run / "derived_init.pt", data, train_cfg) if args.warm_start else None
        compute = search_s + retrain_s
        rng = random.Random(args.seed * 1000 + int(share * 100))
        trials, spent = [], 0.0
        while spent < compute:
            drawn = sample_in_band(space, table, layout, summary["latency_budget_ms"] * 1000, config.floor, rng)
            if drawn is None:
                break
            choices, us = drawn
            trial_dir = out / tag / f"random{len(trials)}"
            metrics, secs = timed_once(trial_dir / "done.json", lambda: train_arch(args.data, space.arch(choices), trial_dir, train_cfg, force=True))
            spent += secs
            trials.append({"predicted_ms": us / 1000, "val": metrics["val"], "test": metrics["test"], "train_s": secs,
                           "arch": space.arch(choices).to_dict()})
        best = min(trials, key=lambda t: t["val"]["logloss"]) if trials else None
        entry = {
            "budget_x_reference": share, "budget_ms": budget / 1000, "search_s": search_s, "retrain_s": retrain_s,
            "searched": {"predicted_ms": summary["predicted_latency_ms"], "within_budget": summary["within_budget"],
                         "budget_status": summary["budget_status"], "projection_moves": len(summary["projection"]),
                         "projection_needed": summary["projection_needed"], "argmax_ms": summary["argmax_latency_ms"],
                         "searched_against_ms": summary["latency_budget_ms"], "refinement": summary.get("refinement", []),
                         "chosen_finalist": summary.get("chosen_finalist"),
                         "finalists": [{k: f[k] for k in ("name", "predicted_latency_us", "screen", "proxy", "chosen") if k in f}
                                       for f in summary.get("finalists", [])],
                         **searched, "arch": arch.to_dict()},
            "searched_warm_start": warm,
            "random": {"trials": len(trials), "compute_s": spent, "best": best,
                       "all_test_logloss": [t["test"]["logloss"] for t in trials]},
            "capacity_by_role": capacity_by_role(arch, data.meta),
        }
        write_json(out / tag / "entry.json", entry)
        print(f"budget {budget / 1000:.3f}ms: searched {summary['predicted_latency_ms']:.3f}ms test logloss {seed_text(searched)}; "
              f"random best of {len(trials)} "
              f"{best['test']['logloss'] if best else float('nan'):.4f}", flush=True)
        gather_report(out, report)
    print(markdown(gather_report(out, report)))


def retrained(data_dir, arch, folder: Path, train_cfg, seeds: list[int]) -> dict:
    """`arch` trained once per seed (the first into `folder`, seed s into `folder`_s{s}): the first run's
    val/test metrics and CPU seconds, every seed's test metrics, and their median test logloss."""
    runs = []
    for i, seed in enumerate(seeds):
        run = folder if i == 0 else folder.with_name(f"{folder.name}_s{seed}")
        cfg = replace(train_cfg, seed=seed)
        metrics, secs = timed_once(run / "done.json", lambda: train_arch(data_dir, arch, run, cfg, force=True))
        runs.append({"seed": seed, "val": metrics["val"], "test": metrics["test"], "train_s": secs})
    return {"val": runs[0]["val"], "test": runs[0]["test"], "train_s": runs[0]["train_s"],
            "seeds": [{"seed": r["seed"], "test": r["test"]} for r in runs],
            "median_test_logloss": float(np.median([r["test"]["logloss"] for r in runs]))}


def seed_text(runs: dict) -> str:
    """'0.4357 / 0.4339 / 0.4364 (median 0.4357)'"""
    return (" / ".join(f"{r['test']['logloss']:.4f}" for r in runs["seeds"]) + f" (median {runs['median_test_logloss']:.4f})")


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def gather_report(out: Path, report: dict) -> None:
    """report.json: `report` with every budget finished under `out`, this process's or another's."""
    entries = [json.loads(p.read_text()) for p in out.glob("x*/entry.json")]
    report["budgets"] = sorted(entries, key=lambda e: e["budget_x_reference"])
    write_json(out / "report.json", report)
    return report


def short_arch(arch: dict, cards: list[int]) -> str:
    """bottom 13-512-64, `dot` D 64, top 512-128; 10 of 26 tables full, dims 16 x 20, 4 x 6"""
    dims = sorted(set(arch["emb_dims"]), reverse=True)
    dims_text = ", ".join(f"{d} x {arch['emb_dims'].count(d)}" for d in dims)
    full = sum(r == c for r, c in zip(arch["emb_rows"], cards))
    top = "-".join(map(str, arch["top_mlp"])) or "none"
    return (f"bottom {'-'.join(map(str, [arch['num_dense'], *arch['bottom_mlp']]))}, `{arch['interaction']}` D {arch['bottom_mlp'][-1]}, "
            f"top {top}; {full} of {len(cards)} tables full; dims {dims_text}")


def finalists_text(finalists: list[dict]) -> str:
    """'11; chosen `search, bottom_depth 0` 0.4340 (own 0.4366)': how many, the chosen one's proxy logloss
    and the search's own arch's."""
    if not finalists:
        return "-"
    chosen = next(f for f in finalists if f["chosen"])
    own = next(f for f in finalists if f["name"] == "search")
    text = f"{len(finalists)}; chosen `{chosen['name']}` {chosen['proxy']['logloss']:.4f}"
    if chosen is own:
        return text
    return text + (f" (own {own['proxy']['logloss']:.4f})" if "proxy" in own else " (own screened out)")


def markdown(report: dict) -> str:
    """The RESULTS.md table: the reference, then per budget the searched arch and the best random arch at equal compute."""
    ref = report["reference"]
    lines = ["| model | LUT ms | test logloss, retraining seeds " + " / ".join(str(r["seed"]) for r in ref["seeds"])
             + " | vs reference (medians) | random at equal compute: trials, best test logloss | search + retrain CPU s "
             "| finalists: count; the chosen one's proxy logloss | arch |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
             f"| DLRM reference | {ref['predicted_ms']:.3f} | {seed_text(ref)} | | | | | |"]
    cards = report.get("cardinalities")
    for e in report["budgets"]:
        s, rnd = e["searched"], e["random"]
        best = rnd["best"]["test"]["logloss"] if rnd["best"] else float("nan")
        arch = short_arch(s["arch"], cards) if cards else ""
        finalists = finalists_text(s.get("finalists", []))
        lines.append(f"| searched, {e['budget_x_reference']:g}x = {e['budget_ms']:.3f} ms (against {s['searched_against_ms']:.3f}) "
                     f"| {s['predicted_ms']:.3f}{' (projected)' if s['projection_needed'] else ''} | {seed_text(s)} "
                     f"| {s['median_test_logloss'] - ref['median_test_logloss']:+.4f} | {rnd['trials']}, {best:.4f} "
                     f"| {e['search_s'] + e['retrain_s']:.0f} | {finalists} | {arch} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
