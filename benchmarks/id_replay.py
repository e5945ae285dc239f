"""What a large table's lookup costs with ids spread over the table against ids replayed from real data.

For each prepared data folder: the feature of the largest cardinality (of those
equal, the one with the most distinct train ids), its full
table (rows = its cardinality, capped at `--max-rows`) at each `--dim`, timed the
way the profiler times a LUT row (`profiler.timers`: the op alone, the best of
`--rounds` rounds spread in time, a null call subtracted, a fresh input set per
call), beside the same table hashed to `--hashed` of its rows (the space's
smallest choice: what the search weighs a full table against), once
with spread ids (the worst case: no id repeats until every row was used) and
once with the ids of consecutive train rows of that feature (`dnas_hw.data.ids`),
on each backend, CPU, 1 thread. The two tables of a source are timed in one
block (rounds interleaved); the two sources alternate within each trial (the
order flips every trial), so both see the same machine load; the figures are
medians over `--trials`, and the ratio is the ratio of the medians. The hashed
table fits in cache under either source: its ratio, near 1 on a quiet machine,
shows how much of a difference the machine's noise alone makes.

With `--lut-space SPACE --lut-data LABEL`, it also profiles SPACE bound to that
folder twice on onnxruntime (spread, then data ids) and states what changes in
the LUT: the DLRM reference's price and its lookups' part, what keeping each of
the five largest tables whole costs over the smallest table choice (at dim 16),
and the budget margin each LUT derives (`lut.margin`).

It also states how skewed each replayed stream is: distinct ids per 10,000
lookups, and the share of lookups that go to the 1% most frequent ids.
Per lookup means the op's time (less the null call, as in the LUT) / batch size.

    .venv/bin/python benchmarks/id_replay.py --data criteo=DIR1 --data synth=DIR2 --batch-size 64 \\
        --dim 16,64 --trials 9 --out id_replay.json
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from dnas_hw.app.cli_types import INT_LIST
from dnas_hw.data.folder import PreparedData
from dnas_hw.data.ids import data_source
from dnas_hw.files import write_json_atomic
from dnas_hw.inputs import pool_sets, spread_ids
from dnas_hw.ops import OpCall
from profiler.environment import machine_info
from profiler.timers import op_timer


def skew(ids: np.ndarray) -> dict:
    """How concentrated a stream of ids is."""
    _, counts = np.unique(ids, return_counts=True)
    top = np.sort(counts)[::-1][: max(1, len(counts) // 100)]
    return {
        "lookups": int(len(ids)),
        "distinct": int(len(counts)),
        "distinct_per_10k_lookups": round(len(counts) / len(ids) * 10_000, 1),
        "top1pct_share": round(float(top.sum() / len(ids)), 4),
    }


def measure(backend: str, calls: list[OpCall], feature: int, source, batch_size: int, trials: int, rounds: int,
            seed: int) -> list[dict]:
    """Per trial: each call's us per lookup under spread and under data ids (the calls of a source timed in one
    block, their rounds interleaved), the two sources one after the other, their order flipped every trial."""
    timers = {
        "spread": op_timer(backend, "cpu", 1, rounds=rounds),
        "data": op_timer(backend, "cpu", 1, rounds=rounds, ids=source,
                         table_features={c.params["num_embeddings"]: feature for c in calls}),
    }
    rows = []
    for t in range(trials):
        us: dict[str, list[float]] = {}
        for name in (["spread", "data"] if t % 2 == 0 else ["data", "spread"]):
            block = timers[name].measure_block([(c, [batch_size]) for c in calls], num_sparse=26, seed=seed)
            us[name] = [by_batch[batch_size].p50_us / batch_size for by_batch in block]
        for i, call in enumerate(calls):
            rows.append({"trial": t, "table_rows": call.params["num_embeddings"], "spread_us_per_lookup": us["spread"][i],
                         "data_us_per_lookup": us["data"][i]})
            print(f"  {backend} {call} trial {t}: spread {us['spread'][i]:.4f} us, data {us['data'][i]:.4f} us",
                  file=sys.stderr)
    return rows


def lut_effect(space_name: str, folder: str, batch_size: int, workdir: Path) -> dict:
    """`space_name` bound to `folder`, profiled on onnxruntime (CPU, 1 thread) with spread and with data ids: the
    DLRM reference's price and its lookups' share, what keeping each of the largest tables whole costs over the
    space's smallest table choice (at dim 16, the reference's), and the budget margin each LUT derives."""
    from dnas_hw.data.ids import IdSource
    from dnas_hw.dlrm.arch import dlrm_kaggle_reference
    from dnas_hw.space import get_space
    from lut.margin import budget_margin
    from lut.predict import predict
    from profiler.run import profile_to_lut

    data = PreparedData.open(folder)
    space = get_space(space_name, data.cardinalities)
    reference = dlrm_kaggle_reference(data.cardinalities)
    largest = sorted(range(data.num_sparse), key=lambda f: -data.cardinalities[f])[:5]
    out = {"space": space_name, "folder": folder, "batch_size": batch_size}
    for name, source in (("spread", IdSource()), ("data", data_source(folder))):
        start = time.time()
        lut = profile_to_lut(space, workdir / f"{name}.csv", backend="onnxruntime", device="cpu", threads=1,
                             batch_sizes=[batch_size], ids=source, force=True)
        prediction = predict(lut, reference, batch_size)
        emb_us = sum(b["us"] for b in prediction.breakdown if b["slot"].startswith("emb."))

        def price(f: int, rows: int) -> float:
            return lut.latency_us(space.embedding_op(rows, 16, 16), batch_size)

        out[name] = {
            "profile_s": round(time.time() - start, 1),
            "reference_us": prediction.total_us,
            "reference_lookups_us": emb_us,
            "full_table_extra_us": {f"C{f + 1} ({data.cardinalities[f]:,} rows)":
                                    price(f, space.rows_choices(f)[0]) - price(f, space.rows_choices(f)[-1])
                                    for f in largest},
            "margin": {q: budget_margin(lut, batch_size, q).margin for q in ("p50", "p90")},
        }
        print(f"{name}: {out[name]}", file=sys.stderr)
    return out


@click.command()
@click.option("--data", "folders", multiple=True, required=True, help="LABEL=DIR, a prepared data folder (repeat).")
@click.option("--backends", default="onnxruntime,torch", show_default=True)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--dim", "dims", default="16,64", show_default=True, type=INT_LIST, help="Embedding dims.")
@click.option("--max-rows", default=1_000_000, show_default=True, type=int, help="Cap of the table's rows.")
@click.option("--hashed", default=0.001, show_default=True, type=float,
              help="Also time the table hashed to this fraction of its rows (the space's smallest choice).")
@click.option("--trials", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--rounds", default=15, show_default=True, type=click.IntRange(min=1),
              help="Rounds per timing, best kept (the profiler uses 7; more resist a loaded machine).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--lut-space", default=None, help="Also profile this space on the --lut-data folder with each source.")
@click.option("--lut-data", default=None, help="LABEL of the --data folder --lut-space is bound to.")
@click.option("--workdir", default=None, type=click.Path(), help="Where the --lut-space profiles go [default: a temporary folder].")
@click.option("--skip-lookups", is_flag=True, help="Only the --lut-space comparison.")
@click.option("--out", required=True, type=click.Path())
def main(folders, backends, batch_size, dims, max_rows, hashed, trials, rounds, seed, lut_space, lut_data, workdir,
         skip_lookups, out) -> None:
    started = time.time()
    results = []
    luts = None
    if lut_space:
        folder = dict(item.partition("=")[::2] for item in folders)[lut_data]
        with tempfile.TemporaryDirectory() as tmp:
            luts = lut_effect(lut_space, folder, batch_size, Path(workdir or tmp))
    if skip_lookups:
        folders = ()
    for item in folders:
        label, _, folder = item.partition("=")
        data = PreparedData.open(folder)
        train = data.split("train").sparse
        # The largest table; among equal ones (data hashed to one size) the feature with the most distinct ids.
        feature = max(range(data.num_sparse), key=lambda f: (data.cardinalities[f], len(np.unique(train[:, f]))))
        rows = min(int(data.cardinalities[feature]), max_rows)
        source = data_source(folder)
        count = pool_sets(batch_size) * batch_size
        stream = source.window(count, seed + batch_size)[1][:, feature] % rows
        info = {"data": label, "folder": folder, "ids": source.describe(), "feature": f"C{feature + 1}",
                "cardinality": int(data.cardinalities[feature]), "table_rows": rows,
                "replayed_stream": skew(stream),
                "spread_stream": skew(spread_ids(rows, count, np.random.default_rng(seed + batch_size)))}
        print(f"{label}: C{feature + 1}, {rows:,} rows; replayed stream {info['replayed_stream']}", file=sys.stderr)
        small = max(1, math.ceil(rows * hashed))
        for dim in dims:
            calls = [OpCall.make("embedding", num_embeddings=n, embedding_dim=dim, pad_to=dim) for n in (rows, small)]
            for backend in backends.split(","):
                trial_rows = measure(backend, calls, feature, source, batch_size, trials, rounds, seed)
                for n in (rows, small):
                    mine = [r for r in trial_rows if r["table_rows"] == n]
                    med = {k: statistics.median(r[k] for r in mine) for k in ("spread_us_per_lookup", "data_us_per_lookup")}
                    # A ratio of medians: a net time near zero (a null subtracted) would make single ratios explode.
                    med["ratio"] = med["spread_us_per_lookup"] / max(med["data_us_per_lookup"], 1e-9)
                    results.append({**info, "table_rows": n, "dim": dim, "table_mib": n * dim * 4 / 2**20,
                                    "backend": backend, "batch_size": batch_size,
                                    **{f"median_{k}": v for k, v in med.items()}, "trials": mine})
    report = {"machine": machine_info(), "load_average": os.getloadavg(), "seconds": round(time.time() - started, 1),
              "results": results, "luts": luts}
    write_json_atomic(out, report)
    print("| data | table | backend | spread us/lookup | data us/lookup | spread / data |")
    for r in results:
        print(f"| {r['data']} | {r['feature']} {r['table_rows']:,} x {r['dim']} ({r['table_mib']:.0f} MiB) "
              f"| {r['backend']} | {r['median_spread_us_per_lookup']:.4f} | {r['median_data_us_per_lookup']:.4f} "
              f"| {r['median_ratio']:.2f} |")
    print(json.dumps({"load_average": report["load_average"], "seconds": report["seconds"]}))


if __name__ == "__main__":
    main()
