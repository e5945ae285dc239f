"""How far apart do a finalist's one-pass proxies land on other seeds, beside the gaps the search picks by?

The finalists (`search.finalists`) are compared by one pass over the weight part of the
train split on one seed (the search's), scored on the arch part: the proxy. Where two
finalists' proxies differ by less than one arch's seed-to-seed spread, the pick is that
seed's. For every search folder given (a search's or a front point's: its finalists.json and
summary.json), this script trains each finalist that has a whole-pass record again, the
same pass with the same recipe, on each seed of --seeds (the record is the search's seed),
and reports per finalist its proxy on every seed and their spread, and per search whether
the search's pick (the best on its seed) is also the best on the other seeds and by their
mean. A finalist met in several folders trains once per seed. Every measurement is kept
in --out (JSON) as it finishes, and a restart with the same --out reuses it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/proxy_seeds.py --data DIR --runs RUN [RUN ...] \\
        [--seeds 1,2] [--out measured.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from statistics import mean

import torch

from dnas_hw.data.folder import PreparedData
from dnas_hw.space import choices_key, get_space
from search.config import SearchConfig
from search.finalists import proxy_metrics, weight_and_arch_parts

from _run import finalist_run_arguments, kept_measurements  # sibling module


def main() -> None:
    ap = finalist_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--seeds", default="1,2", help="seeds each finalist's pass is trained on again")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = PreparedData.open(args.data)
    space = get_space(args.space, cardinalities=data.cardinalities)
    seeds = [int(s) for s in args.seeds.split(",")]
    measure = kept_measurements(args.out)

    def proxy(choices: dict, config: SearchConfig, parts) -> float:
        return measure(f"{choices_key(choices)} seed {config.seed}",
                       lambda: proxy_metrics(space, choices, parts, config)["logloss"])

    print("| search | finalist | LUT ms | proxy logloss, seeds " + " / ".join(map(str, ["search's", *seeds]))
          + " | mean | spread (max - min) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    verdicts = []
    for run in map(Path, args.runs):
        summary = json.loads((run / "summary.json").read_text())
        config = SearchConfig.from_dict({**summary["config"], "stop_after": None})
        parts = weight_and_arch_parts(data, config.split_fraction)
        records = [r for r in json.loads((run / "finalists.json").read_text()) if "proxy" in r]
        by_seed = [[r["proxy"]["logloss"]] + [proxy(r["choices"], replace(config, seed=s), parts) for s in seeds]
                   for r in records]
        for r, losses in zip(records, by_seed):
            print(f"| {run.name} | `{r['name']}` | {r['predicted_latency_us'] / 1000:.3f} | "
                  + " / ".join(f"{x:.4f}" for x in losses) + f" | {mean(losses):.4f} | {max(losses) - min(losses):.4f} |")
        picked = min(range(len(records)), key=lambda i: by_seed[i][0])
        best_on = [min(range(len(records)), key=lambda i: by_seed[i][k]) for k in range(1 + len(seeds))]
        best_mean = min(range(len(records)), key=lambda i: mean(by_seed[i]))
        verdicts.append(f"{run.name}: picked `{records[picked]['name']}`; "
                        "best on each seed: " + ", ".join(f"`{records[i]['name']}`" for i in best_on)
                        + f"; best by the mean: `{records[best_mean]['name']}`")
    print()
    for v in verdicts:
        print(f"- {v}")


if __name__ == "__main__":
    main()
