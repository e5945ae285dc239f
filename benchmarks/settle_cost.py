"""What settling a search's arch costs, with and without the supernet's scoring memo.

Settling (`search.finalists.settle`: projection, refinement, capacity) scores one
neighbour arch after another on the same held-out rows (`search.refine.supernet_loss`);
`SupernetBase.score` lets a family keep what those archs share (DLRM: the bottom MLP's
output). On one trained front supernet, this script settles every point's argmax and
every incumbent twice, once through `score` (the memo) and once through plain `forward`,
and reports the CPU seconds of each, their ratio, the number of archs scored and whether
both settled on the same choices (they must: the memo only skips recomputation).

The supernet: `--state`, a front checkpoint whose epochs are all trained (front_state.pt
of `dnas-hw search --latency-budget a,b,...`, copied before the front finishes, or the
state.pt this script saved), or else trained here (`--epochs`) and saved to OUT/state.pt.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/settle_cost.py --data DIR --lut LUT.csv --out DIR \\
        [--state front_state.pt] [--budgets-x 0.5,1,2,4]
"""

from __future__ import annotations

import argparse
import json
import time

from _run import open_run, search_arguments
from dnas_hw.dlrm.arch import dlrm_kaggle_reference
from dnas_hw.files import load_torch
from lut.predict import predict
from lut.table import Lut
from search import refine
from search.config import SearchConfig
from search.finalists import settle
from search.front import FrontSearcher, front_points
from search.refine import HeldOut, evaluating
from search.run import cost_tables, derive, held_out, id_counts, run_epoch
from search.state import FORMAT, save_state

B = 64


def main() -> None:
    ap = search_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--state", default=None, help="a trained front checkpoint (front_state.pt)")
    ap.add_argument("--budgets-x", default="0.5,1,2,4", help="budgets as multiples of the DLRM reference's LUT latency")
    ap.add_argument("--epochs", type=int, default=SearchConfig.epochs, help="epochs to train when no --state is given")
    args = ap.parse_args()
    out, data, space = open_run(args)
    lut = Lut.load(args.lut)
    config = SearchConfig(epochs=args.epochs)
    ref_us = predict(lut, dlrm_kaggle_reference(data.cardinalities), B).total_us
    points = front_points([lut], [float(x) * ref_us for x in args.budgets_x.split(",")], B)
    tables = [cost_tables(space, lut, B, config) for _ in points]
    search = FrontSearcher(space, tables, [p.searched_us for p in points], config, id_counts(data, config.split_fraction))
    if args.state:
        state = load_torch(args.state, FORMAT, "front checkpoint")
        saved = state.get("identity", {})
        if saved.get("luts", [None])[0] != tables[0].latency.fingerprint() or saved.get("space") != space.fingerprint():
            raise SystemExit(f"{args.state}: trained against another LUT or space than --lut {args.lut} and --space {args.space}")
        search.load_state_dict(state)
    else:
        started = time.perf_counter()
        for epoch in range(config.epochs):
            run_epoch(search, data, epoch, started, 0.0)
        save_state(out / "state.pt", {"identity": {"luts": [tables[0].latency.fingerprint()], "space": space.fingerprint()},
                                      **search.state_dict()})
    rows, results = held_out(data, config), []
    for k, p in enumerate(points):
        search.use(k)
        argmax, probs = derive(search.net)
        for name, start in {"search": argmax, **search.net.incumbents()}.items():
            row = {"budget_ms": round(p.searched_us / 1000, 3), "arch": name}
            settled = {}
            for how in ("plain", "memo"):
                scored = []
                loss = refine.supernet_loss

                def counted(*a, **kw):
                    scored.append(1)
                    return loss(*a, **kw)

                refine.supernet_loss = counted
                if how == "plain":  # this instance scores through forward alone
                    search.net.score = lambda dense, sparse, probs, memo: search.net(dense, sparse, probs)
                fresh = HeldOut(rows.dense, rows.sparse, rows.labels)  # an empty memo
                t = time.process_time()
                with evaluating(search.net):
                    settled[how] = settle(search.net, tables[k].latency, name, start, probs, fresh, p.searched_us,
                                          config.floor, config)
                row[f"{how}_s"] = time.process_time() - t
                refine.supernet_loss = loss
                if how == "plain":
                    del search.net.score
                row["archs_scored"] = len(scored)
            row["ratio"] = row["plain_s"] / row["memo_s"]
            row["same_choices"] = settled["plain"].choices == settled["memo"].choices
            print(json.dumps(row), flush=True)
            results.append(row)
    (out / "settle_cost.json").write_text(json.dumps(results, indent=1))
    print("\n| budget ms | arch | archs scored | forward s | memo s | ratio | same choices |\n| ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        print(f"| {r['budget_ms']:.3f} | {r['arch']} | {r['archs_scored']} | {r['plain_s']:.1f} | {r['memo_s']:.1f} | "
              f"{r['ratio']:.2f}x | {r['same_choices']} |")
    plain, memo = sum(r["plain_s"] for r in results), sum(r["memo_s"] for r in results)
    print(f"\nall: {plain:.0f} s forward, {memo:.0f} s memo ({plain / memo:.2f}x)")


if __name__ == "__main__":
    main()
