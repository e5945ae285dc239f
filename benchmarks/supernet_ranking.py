"""Does the trained supernet rank archs as retraining does? Kendall tau over archs across the budget range.

    .venv/bin/python benchmarks/supernet_ranking.py --data DIR --lut LUT.csv --out DIR [--archs 12] [--epochs 2]

--set FIELD=VALUE (repeatable) trains the supernet with other `SearchConfig` fields (e.g.
`--set sandwich=false`); with --archs-from, a variant of the supernet is ranked against the same retrained archs.

1. The supernet's weights train as in a search's warm-up (`search.run.Searcher`: the
   sandwich rule, uniform logits, the weight part of the train split) for --epochs passes.
2. --archs archs are drawn across the budget range: one per log-spaced latency stratum
   (the LUT at --batch-size) between --low and --high times the DLRM reference config's
   latency, by uniform choices and rejection, so the ranking spans the budgets a user gives.
3. Each arch is scored in the supernet (validation logloss at its one-hot choices,
   `search.rank`) and retrained from scratch with `dnas-hw train`'s defaults (test logloss).
4. Kendall tau (and Spearman) between the supernet's and the retrained losses.

--archs-from REPORT.json scores the archs of an earlier run's report instead of drawing new
ones, and takes their retrained losses from it (retraining does not depend on the supernet, so
a changed supernet is re-ranked without retraining; the report must come from the same data).

Every finished stage is recorded in OUT (supernet.pt, one done.json per arch), so a
killed run restarted with the same arguments goes on from there. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from dnas_hw.dlrm.arch import Arch, dlrm_kaggle_reference
from dnas_hw.metrics import kendall_tau, spearman
from dnas_hw.train import TrainConfig, train_arch
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.cost import one_hot_cost
from search.rank import supernet_metrics
from search.run import Searcher, cost_tables, id_counts, run_epoch

from _run import config_fields, open_run, search_arguments  # sibling module


def draw_across(space, table, layout, low_us: float, high_us: float, n: int, rng: random.Random, tries: int = 200_000):
    """n (choices, latency_us), one per log-spaced stratum of [low, high] (uniform choices, rejection)."""
    edges = [low_us * (high_us / low_us) ** (k / n) for k in range(n + 1)]
    found: list = [None] * n
    for _ in range(tries):
        choices = space.sample_choices(rng)
        us = one_hot_cost(table, layout.one_hot(choices))
        if low_us <= us < high_us:
            k = min(int(math.log(us / low_us) / math.log(high_us / low_us) * n), n - 1)
            found[k] = found[k] or (choices, us)
            if all(found):
                return found
    missing = [f"{edges[k] / 1000:.3f}-{edges[k + 1] / 1000:.3f} ms" for k in range(n) if found[k] is None]
    raise SystemExit(f"no arch drawn in the strata {missing}; widen --low/--high or use fewer --archs")


def main() -> None:
    ap = search_arguments(argparse.ArgumentParser())
    ap.add_argument("--batch-size", type=int, default=64, help="serving batch size of the LUT")
    ap.add_argument("--archs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2, help="supernet training epochs (warm-up style)")
    ap.add_argument("--archs-from", help="an earlier report.json: score its archs, reuse their retrained losses")
    ap.add_argument("--low", type=float, default=0.25, help="lowest latency, as a multiple of the reference's")
    ap.add_argument("--high", type=float, default=4.0, help="highest latency, as a multiple of the reference's")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, data, space = open_run(args)
    lut = Lut.load(args.lut)
    B = args.batch_size
    reference_us = predict(lut, dlrm_kaggle_reference(data.cardinalities), B).total_us
    config = SearchConfig.from_dict({**SearchConfig().to_dict(), **config_fields(args.set),
                                     "epochs": args.epochs + 1, "warmup_epochs": args.epochs, "seed": args.seed})
    searcher = Searcher(space, cost_tables(space, lut, B, config), reference_us, config, id_counts(data, config.split_fraction))
    checkpoint = out / "supernet.pt"
    if checkpoint.exists():
        searcher.net.load_state_dict(torch.load(checkpoint, weights_only=True))
        supernet_s = json.loads((out / "supernet.json").read_text())["cpu_s"]
    else:
        start = time.process_time()
        for epoch in range(args.epochs):
            row = run_epoch(searcher, data, epoch, time.perf_counter(), 0.0)
            print(f"supernet epoch {epoch + 1}: train loss {row['task_loss']:.4f}", flush=True)
        supernet_s = time.process_time() - start
        torch.save(searcher.net.state_dict(), checkpoint)
        (out / "supernet.json").write_text(json.dumps({"cpu_s": supernet_s, "epochs": args.epochs}))
    layout, table = searcher.net.layout, searcher.tables.latency
    earlier = {}
    if args.archs_from:
        before = json.loads(Path(args.archs_from).read_text())
        if Path(before["data"]).resolve() != Path(args.data).resolve():
            raise SystemExit(f"{args.archs_from} was measured on {before['data']}, not {args.data}")
        earlier = {k: row for k, row in enumerate(before["archs"])}
        drawn = [(space.choices_of(Arch.from_dict(row["arch"])), None) for row in before["archs"]]
        drawn = [(choices, one_hot_cost(table, layout.one_hot(choices))) for choices, _ in drawn]
    else:
        drawn = draw_across(space, table, layout, args.low * reference_us, args.high * reference_us, args.archs,
                            random.Random(args.seed))
    val, train_config = data.split("val"), TrainConfig(seed=args.seed)
    rows = []
    for k, (choices, us) in enumerate(drawn):
        record = out / f"arch{k}" / "done.json"
        if record.exists():
            rows.append(json.loads(record.read_text()))
            continue
        arch = space.arch(choices)
        scored = supernet_metrics(searcher.net, choices, val)
        if k in earlier:
            row = {**earlier[k], "predicted_ms": us / 1000, "supernet_val_logloss": scored["logloss"], "retrained_in": args.archs_from}
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(row))
            rows.append(row)
            continue
        start = time.process_time()
        retrained = train_arch(args.data, arch, out / f"arch{k}", train_config, force=True)
        row = {"predicted_ms": us / 1000, "supernet_val_logloss": scored["logloss"], "retrained_val_logloss": retrained["val"]["logloss"],
               "retrained_test_logloss": retrained["test"]["logloss"], "retrain_cpu_s": time.process_time() - start,
               "arch": arch.to_dict()}
        record.write_text(json.dumps(row))
        rows.append(row)
        print(f"arch {k}: {row['predicted_ms']:.3f} ms, supernet val {row['supernet_val_logloss']:.4f}, "
              f"retrained test {row['retrained_test_logloss']:.4f}", flush=True)
    a = [r["supernet_val_logloss"] for r in rows]
    b = [r["retrained_test_logloss"] for r in rows]
    report = {"data": args.data, "lut": args.lut, "space": space.name, "batch_size": B, "reference_ms": reference_us / 1000,
              "supernet_epochs": args.epochs, "supernet_config": config_fields(args.set), "supernet_cpu_s": supernet_s, "archs": rows,
              "kendall_tau": kendall_tau(a, b), "spearman": spearman(a, b)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"Kendall tau {report['kendall_tau']:.3f}, Spearman {report['spearman']:.3f} over {len(rows)} archs", flush=True)


if __name__ == "__main__":
    main()
