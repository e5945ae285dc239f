"""Does a one-pass training on the first share of the weight rows rank a search's finalists as the whole pass does?

The finalists of a search (`search.finalists`) are trained one pass over the weight
part of the train split; screening trains each on the first s of those rows and keeps
the best `finalist_keep` for the whole pass. For every search folder given (its
finalists.json, each record's `proxy` from the whole pass), this script trains every
finalist again on the first s of the weight rows for each --shares value, with the same
recipe and seed, and reports per search and share: Kendall tau between the screened and
the whole-pass logloss, the whole pass's winner's rank among the screened, and the
largest whole-pass logloss lost by keeping the best k screened (0 where the winner is
kept).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finalist_screening.py --data DIR \\
        --runs RUN [RUN ...] [--shares 0.125,0.25] [--keep 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dnas_hw.data.folder import PreparedData, Split
from dnas_hw.metrics import kendall_tau
from dnas_hw.space import get_space
from search.config import SearchConfig
from search.finalists import proxy_metrics, weight_and_arch_parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="search run folders holding finalists.json and summary.json")
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--shares", default="0.125,0.25")
    ap.add_argument("--keep", type=int, default=SearchConfig.finalist_keep)
    ap.add_argument("--out", default=None, help="a JSON file for every measured logloss")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = PreparedData.open(args.data)
    space = get_space(args.space, cardinalities=data.cardinalities)
    rows, measured = [], {}
    for run in map(Path, args.runs):
        summary = json.loads((run / "summary.json").read_text())
        config = SearchConfig.from_dict({**summary["config"], "stop_after": None})
        records = [r for r in json.loads((run / "finalists.json").read_text()) if "proxy" in r]
        weights, scored = weight_and_arch_parts(data, config.split_fraction)
        whole = [r["proxy"]["logloss"] for r in records]
        for share in (float(s) for s in args.shares.split(",")):
            n = int(len(weights) * share)
            first = Split(weights.name, weights.dense[:n], weights.sparse[:n], weights.labels[:n])
            screened = [proxy_metrics(space, r["choices"], (first, scored), config)["logloss"] for r in records]
            order = sorted(range(len(records)), key=lambda i: screened[i])
            winner = min(range(len(records)), key=lambda i: whole[i])
            lost = min(whole[i] for i in order[: args.keep]) - whole[winner]
            rows.append({"run": str(run), "share": share, "finalists": len(records), "tau": kendall_tau(screened, whole),
                         "winner": records[winner]["name"], "winner_rank": order.index(winner) + 1, "lost": lost})
            measured[f"{run} {share}"] = [{"name": r["name"], "whole": w, "screened": s} for r, w, s in zip(records, whole, screened)]
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(measured, indent=1))
    print(f"\n| search | share of the weight rows | finalists | Kendall tau, screened vs whole pass | whole pass's winner "
          f"| its rank screened | logloss lost keeping the best {args.keep} |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['run']} | {r['share']:g} | {r['finalists']} | {r['tau']:.2f} | `{r['winner']}` | {r['winner_rank']} | {r['lost']:.4f} |")


if __name__ == "__main__":
    main()
