"""LUT fidelity: profile a space, then predict vs measure whole models of random archs (`lut validate`).

For each backend: profile the space into OUT/<backend>-<device>.csv (resumed if
present), then time `--samples` seeded random archs at each batch size (every
model built and exported once) and compare with the LUT's prediction. Writes
OUT/<backend>-<device>-b<B>.json (the `lut validate` report) and
OUT/summary.json, and prints a table against the targets (within +-10% >= 95%,
median |error| <= 5%, Spearman >= 0.95). Where the LUT has a whole-arch
correction (`lut.correction`), the same measurements are also scored against the
plain sum (`additive` columns): before and after the correction, in one run.
The validation also times the profile's reference models again (`profiler.drift`):
the `drift%` column is how much slower the host ran them than during the profile
(median over the references), and `net` the errors with the predictions scaled
by that drift. The targets are read on the errors as measured.

With `--repeat-archs N`, the same run also measures the host's own
repeatability (`timing_repeatability.py`'s two passes over the first N of the
validated archs, best of `ROUNDS` rounds, as `lut validate` times): the share of
models within 10% of themselves, against which the 95% target is read where the
host repeats worse than that (the target then: within 3 points of it).

    .venv/bin/python benchmarks/lut_fidelity.py --out runs/fidelity [--space dlrm-kaggle] \\
        [--backends torch,onnxruntime] [--device cpu] [--threads 1] [--batch-size 1,64,512] [--samples 50] \\
        [--repeat-archs 24]
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
from profiler.runners import ROUNDS
from profiler.validate import sample_archs, validate_many
from timing_repeatability import two_passes  # a sibling script (benchmarks/ is on sys.path when run)

TARGETS = {"within_10pct": 0.95, "median_abs_error_pct": 5.0, "spearman": 0.95}


# Where the host's own repeatability (share of models within 10% of themselves) is below the 95% target, the
# target is to come within this many points of it.
REPEATABILITY_SLACK = 0.03


def within_target(repeatability: float | None) -> float:
    """The within-10% target, lowered to the host's repeatability less 3 points where that is below 95%."""
    if repeatability is None or repeatability >= TARGETS["within_10pct"]:
        return TARGETS["within_10pct"]
    return repeatability - REPEATABILITY_SLACK


def meets(report: dict, repeatability: float | None = None) -> bool:
    return (report["within_10pct"] >= within_target(repeatability) - 1e-9
            and report["median_abs_error_pct"] <= TARGETS["median_abs_error_pct"]
            and report["spearman"] >= TARGETS["spearman"])


STATS = ("within_10pct", "median_abs_error_pct", "spearman", "mean_error_pct", "max_abs_error_pct")


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
    ap.add_argument("--repeat-archs", type=int, default=0,
                    help="Also time the first N validated archs in two passes (the host's repeatability); 0: not.")
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
        repeat = {}
        if args.repeat_archs > 0:
            start = time.perf_counter()
            archs = sample_archs(space, args.samples, seed=args.seed + 1)[: args.repeat_archs]
            _, agreements = two_passes(space, backend, archs, sizes, ROUNDS)
            repeat = {int(b): by_k[str(ROUNDS)]["within_10pct"] for b, by_k in agreements.items()}
            summary.setdefault("repeatability", {})[backend] = {"archs": len(archs), "rounds": ROUNDS,
                                                                "agreement": agreements,
                                                                "seconds": round(time.perf_counter() - start, 1)}
        for b, report in reports.items():
            write_json_atomic(args.out / f"{backend}-{args.device}-b{b}.json", report)
            row = {k: report[k] for k in ("backend", "device", "threads", "batch_size", "samples", *STATS)}
            additive = report.get("additive")
            summary["runs"].append({
                **row, "repeatability_within_10pct": repeat.get(b), "within_10pct_target": within_target(repeat.get(b)),
                "meets_targets": meets(report, repeat.get(b)),
                "whole_arch_correction": report["whole_arch_correction"],
                "additive": {**additive, "meets_targets": meets(additive, repeat.get(b))} if additive else None,
                # The profile's reference models timed again after the validation (`profiler.drift`): how far
                # the host moved between the profile and the validation, and the errors net of it.
                "host_drift": report.get("host_drift"),
                "profile_s": round(profile_s, 1), "validate_s": round(validate_s, 1)})
        write_json_atomic(args.out / "summary.json", summary)
    print(f"{'backend':12} {'batch':>5} {'repeat10':>8} {'within10':>9} {'med|err|%':>9} {'spearman':>8} {'bias%':>7} "
          f"{'max%':>7}  targets   | drift% net: within10 med|err|% | plain sum: within10 med|err|% spearman targets")
    for r in summary["runs"]:
        rep = "-" if r["repeatability_within_10pct"] is None else f"{r['repeatability_within_10pct']:.0%}"
        a = r["additive"]
        plain = (f"{a['within_10pct']:9.0%} {a['median_abs_error_pct']:9.2f} {a['spearman']:8.3f} "
                 f"{'met' if a['meets_targets'] else 'MISSED'}") if a else "(no correction at this batch size)"
        d = r["host_drift"]
        drift = f"{d['pct']:+6.1f} {d['net']['within_10pct']:13.0%} {d['net']['median_abs_error_pct']:9.2f}" if d else f"{'-':>6} {'':23}"
        print(f"{r['backend']:12} {r['batch_size']:5d} {rep:>8} {r['within_10pct']:9.0%} {r['median_abs_error_pct']:9.2f} "
              f"{r['spearman']:8.3f} {r['mean_error_pct']:7.2f} {r['max_abs_error_pct']:7.1f}  "
              f"{'met' if r['meets_targets'] else 'MISSED':8}  | {drift} | {plain}")


if __name__ == "__main__":
    main()
