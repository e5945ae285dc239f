"""LUT fidelity: profile a space, then predict vs measure whole models of random archs (`lut validate`).

For each backend: profile the space into OUT/<backend>-<device>.csv (resumed if
present), then time `--samples` seeded random archs at each batch size (every
model built and exported once) and compare with the LUT's prediction. Writes
OUT/<backend>-<device>-b<B>.json (the `lut validate` report) and
OUT/summary.json, and prints a table against the targets (within +-10% >= 95%,
median |error| <= 5%, Spearman >= 0.95).

    .venv/bin/python benchmarks/lut_fidelity.py --out runs/fidelity [--space dlrm-kaggle] \\
        [--backends torch,onnxruntime] [--device cpu] [--threads 1] [--batch-size 1,64,512] [--samples 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from dnas_hw.files import write_json_atomic
from dnas_hw.space import get_space
from profiler.environment import machine_info
from profiler.run import profile_to_lut
from profiler.validate import validate_many

TARGETS = {"within_10pct": 0.95, "median_abs_error_pct": 5.0, "spearman": 0.95}


def meets(report: dict) -> bool:
    return (report["within_10pct"] >= TARGETS["within_10pct"]
            and report["median_abs_error_pct"] <= TARGETS["median_abs_error_pct"]
            and report["spearman"] >= TARGETS["spearman"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", default="1,64,512")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    space = get_space(args.space)
    sizes = [int(b) for b in args.batch_size.split(",")]
    summary = {"command": " ".join(sys.argv), "machine": machine_info(),
               "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "targets": TARGETS, "runs": []}
    for backend in args.backends.split(","):
        lut_path = args.out / f"{backend}-{args.device}.csv"
        start = time.perf_counter()
        lut = profile_to_lut(space, lut_path, backend=backend, device=args.device, threads=args.threads,
                             batch_sizes=sizes, resume=True, seed=args.seed)
        profile_s = time.perf_counter() - start
        start = time.perf_counter()
        reports = validate_many(lut, space, samples=args.samples, batch_sizes=sizes, seed=args.seed + 1)
        validate_s = time.perf_counter() - start
        for b, report in reports.items():
            write_json_atomic(args.out / f"{backend}-{args.device}-b{b}.json", report)
            row = {k: report[k] for k in ("backend", "device", "threads", "batch_size", "samples", "within_10pct",
                                          "median_abs_error_pct", "spearman", "mean_error_pct", "max_abs_error_pct")}
            summary["runs"].append({**row, "meets_targets": meets(report), "profile_s": round(profile_s, 1),
                                    "validate_s": round(validate_s, 1)})
        write_json_atomic(args.out / "summary.json", summary)
    print(f"{'backend':12} {'batch':>5} {'within10':>9} {'med|err|%':>9} {'spearman':>8} {'bias%':>7} {'max%':>7}  targets")
    for r in summary["runs"]:
        print(f"{r['backend']:12} {r['batch_size']:5d} {r['within_10pct']:9.0%} {r['median_abs_error_pct']:9.2f} "
              f"{r['spearman']:8.3f} {r['mean_error_pct']:7.2f} {r['max_abs_error_pct']:7.1f}  "
              f"{'met' if r['meets_targets'] else 'MISSED'}")


if __name__ == "__main__":
    main()
