"""Does a short training rank a search's finalists as the whole pass does, from scratch or from the supernet's weights?

The finalists of a search (`search.finalists`) are trained one pass over the weight
part of the train split; screening trains each the first batches of its pass that cover
s of those rows and keeps the best `finalist_keep` for the rest of the pass. For every search folder given (its
finalists.json and summary.json; a front's point folders too), this script ranks every
finalist by each screen and compares with the whole pass:

- `scratch s`: from scratch, the first batches of the pass that cover s of the weight
  rows (--shares), the screen `search.finalists.choose` runs;
- `inherited s` (with --state, the run's trained supernet: a search_state.pt or a
  front_state.pt copied before the search finished): the finalist's model extracted
  from the supernet (its family's `extract`), trained the first batches of a pass that
  cover s of the weight rows (--inherit-shares; 0: scored as extracted).

Every screen scores on `SCREEN_SCORED_ROWS` of the arch part of the train split, evenly
spaced (as `search.finalists.choose`), which no weight trained on, with the search's recipe
and seed; the whole pass on all of it. A finalist whose record holds no whole pass (a
screened-out finalist of a front) is trained the whole pass here with --train-missing,
else left out. Per search and screen: Kendall tau between the screened and the
whole-pass logloss, the whole pass's winner's rank among the screened, the whole-pass
logloss lost keeping the best --keep, and the screen's mean CPU seconds per finalist.
Every measurement is kept in --out (JSON) as it finishes, and a restart with the same
--out reuses it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finalist_screening.py --data DIR \\
        --runs RUN [RUN ...] [--shares 0.125,0.25] [--state CKPT --inherit-shares 0,0.0625] \\
        [--train-missing] [--keep 2] [--out measured.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dnas_hw.data.folder import PreparedData
from dnas_hw.files import load_torch
from dnas_hw.metrics import kendall_tau
from dnas_hw.space import choices_key, get_space
from search.config import SearchConfig
from search.family_search import family_search
from search.finalists import SCREEN_SCORED_ROWS, pass_steps, proxy_metrics, weight_and_arch_parts
from search.state import FORMAT

from _run import finalist_run_arguments, kept_measurements  # sibling module


def main() -> None:
    ap = finalist_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--shares", default="0.125,0.25", help="shares of the weight rows screened from scratch ('' for none)")
    ap.add_argument("--state", default=None, help="the runs' trained supernet checkpoint, for the inherited screens")
    ap.add_argument("--inherit-shares", default="0,0.0625", help="shares of the weight rows screened from the supernet's weights")
    ap.add_argument("--train-missing", action="store_true", help="train the whole pass of finalists whose record has none")
    ap.add_argument("--keep", type=int, default=SearchConfig.finalist_keep)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = PreparedData.open(args.data)
    space = get_space(args.space, cardinalities=data.cardinalities)
    net = None
    if args.state:
        net = family_search(space).supernet(space)
        net.load_state_dict(load_torch(args.state, FORMAT, "search checkpoint")["supernet"])
        net.eval()
    measure = kept_measurements(args.out)
    screens = [("scratch", float(s)) for s in args.shares.split(",") if s]
    screens += [("inherited", float(s)) for s in args.inherit_shares.split(",") if s] if net is not None else []
    rows = []
    for run in map(Path, args.runs):
        summary = json.loads((run / "summary.json").read_text())
        config = SearchConfig.from_dict({**summary["config"], "stop_after": None})
        weights, scored = weight_and_arch_parts(data, config.split_fraction)
        records, seen = [], set()
        for r in json.loads((run / "finalists.json").read_text()):
            key = choices_key(r["choices"])
            if key not in seen and ("proxy" in r or args.train_missing):
                seen.add(key)
                records.append(r)
        whole = [measure(f"{run} whole {r['name']}", lambda r=r: r.get("proxy") or proxy_metrics(space, r["choices"], (weights, scored), config))
                 for r in records]
        winner = min(range(len(records)), key=lambda i: whole[i]["logloss"])
        scored_on = scored.spaced(SCREEN_SCORED_ROWS)
        for how, share in screens:
            n = int(len(weights) * share)
            steps = pass_steps(config, n)

            def screen(r, how=how, steps=steps):
                if how == "scratch" and "screen" in r and r.get("screen_steps") == steps and r["screen"].get("rows") == len(scored_on):
                    return r["screen"]  # the search's own screen on these rows
                return proxy_metrics(space, r["choices"], (weights, scored_on), config, net if how == "inherited" else None, steps)

            got = [measure(f"{run} {how} {share:g} {r['name']}", lambda r=r: screen(r)) for r in records]
            order = sorted(range(len(records)), key=lambda i: got[i]["logloss"])
            rows.append({"run": str(run), "screen": f"{how} {share:g}", "rows": n, "finalists": len(records),
                         "tau": kendall_tau([g["logloss"] for g in got], [w["logloss"] for w in whole]),
                         "winner": records[winner]["name"], "winner_rank": order.index(winner) + 1,
                         "lost": min(whole[i]["logloss"] for i in order[: args.keep]) - whole[winner]["logloss"],
                         "screen_s": sum(g["train_s"] for g in got) / len(got),
                         "whole_s": sum(w["train_s"] for w in whole) / len(whole)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| search | screen (rows) | finalists | Kendall tau, screened vs whole pass | whole pass's winner "
          f"| its rank screened | logloss lost keeping the best {args.keep} | CPU s per finalist, screen / whole pass |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['run']} | {r['screen']} ({r['rows']:,}) | {r['finalists']} | {r['tau']:.2f} | `{r['winner']}` "
              f"| {r['winner_rank']} | {r['lost']:.4f} | {r['screen_s']:.1f} / {r['whole_s']:.1f} |")


if __name__ == "__main__":
    main()
