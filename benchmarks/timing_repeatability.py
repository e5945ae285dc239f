"""How repeatable is a whole-model latency on this machine? The noise floor of `lut validate`'s ground truth.

Two parts, both with the timer rules of `profiler.runners` (thread clock on one
CPU thread, realistic input pools):

1. **Probe.** A fixed op (a 1024x1024 linear layer at batch 64: 4 MiB of
   weights, in L3) timed in back-to-back windows of `--window` seconds for
   `--probe-seconds`: how far the machine's speed moves by itself (median,
   p5/p95 of the window medians, share of windows over 1.1x the median).
2. **Two passes** over the first `--archs` archs `lut validate` samples
   (seed 1), timed as it times them (groups of `profiler.validate.GROUP`, rounds
   interleaved), keeping every round: for k = 1..`--rounds`, the best of the
   first k rounds of pass A against pass B (median |B/A - 1|, share within
   10% and 5%). A predictor cannot agree with the ground truth better than the
   ground truth agrees with itself.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timing_repeatability.py --out runs/repeat.json \\
        [--backend torch] [--archs 24] [--rounds 9] [--batch-size 1,64] [--probe-seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dnas_hw.files import write_json_atomic
from dnas_hw.progress import progress
from dnas_hw.space import get_space
from dnas_hw.timing import time_callable
from profiler.environment import machine_info
from profiler.runners import time_archs_by_round
from profiler.validate import GROUP, sample_archs


def probe(seconds: float, window_s: float) -> dict:
    """Window medians (us) of a 1024x1024 linear layer at batch 64, back to back for `seconds`."""
    torch.set_num_threads(1)
    layer, x = torch.nn.Linear(1024, 1024).eval(), torch.randn(64, 1024)
    medians = []
    end = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < end:
            stats = time_callable(lambda: layer(x), warmup=2, min_repeats=5, max_repeats=100_000,
                                  min_time_s=window_s, max_time_s=window_s, rel_tol=0.0, clock="thread")
            medians.append(stats.p50_us)
    m = np.array(medians)
    return {"windows": len(m), "window_s": window_s, "median_us": float(np.median(m)),
            "p5_us": float(np.percentile(m, 5)), "p95_us": float(np.percentile(m, 95)),
            "share_over_1.1x_median": float(np.mean(m > 1.1 * np.median(m))), "window_medians_us": m.round(1).tolist()}


def agreement(a_us: np.ndarray, b_us: np.ndarray) -> dict:
    r = b_us / a_us - 1
    return {"median_abs_pct": float(np.median(np.abs(r)) * 100), "within_10pct": float(np.mean(np.abs(r) <= 0.10)),
            "within_5pct": float(np.mean(np.abs(r) <= 0.05)), "mean_pct": float(np.mean(r) * 100)}


def two_passes(space, backend: str, archs: list, sizes: list[int], rounds: int) -> tuple[list, dict]:
    """Time `archs` twice as `lut validate` does, keeping every round: `(round medians per pass,
    {batch: {k: agreement of the best of the first k rounds}})`."""
    passes = []
    for name in ("A", "B"):
        by_arch: list[dict[int, list]] = []
        with progress(len(archs), f"pass {name}", "archs") as bar:
            for start in range(0, len(archs), GROUP):
                group = archs[start : start + GROUP]
                by_arch += time_archs_by_round(group, backend=backend, device="cpu", threads=1, batch_sizes=sizes,
                                               cardinalities=space.cardinalities, seed=1, rounds=rounds)
                bar.update(len(group))
        passes.append([{b: [s.p50_us for s in r[b]] for b in sizes} for r in by_arch])
    agreements = {
        str(b): {str(k): agreement(*(np.array([min(a[b][:k]) for a in p]) for p in passes))
                 for k in range(1, rounds + 1)}
        for b in sizes
    }
    return passes, agreements


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--archs", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch-size", default="1,64")
    ap.add_argument("--probe-seconds", type=float, default=60.0)
    ap.add_argument("--window", type=float, default=0.5)
    args = ap.parse_args()
    space = get_space(args.space)
    sizes = [int(b) for b in args.batch_size.split(",")]
    archs = sample_archs(space, args.archs, seed=1)  # lut validate's archs (the fidelity benchmark's seed)
    result = {"command": " ".join(sys.argv), "machine": machine_info(),
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "probe": probe(args.probe_seconds, args.window) if args.probe_seconds > 0 else None}
    passes, result["agreement"] = two_passes(space, args.backend, archs, sizes, args.rounds)
    result["passes_round_medians_us"] = [[{str(b): v for b, v in a.items()} for a in p] for p in passes]
    write_json_atomic(args.out, result)
    if result["probe"]:
        p = result["probe"]
        print(f"probe: {p['windows']} windows of {p['window_s']} s, median {p['median_us']:.0f} us, "
              f"p5 {p['p5_us']:.0f}, p95 {p['p95_us']:.0f}, {p['share_over_1.1x_median']:.0%} over 1.1x the median")
    print(f"{'batch':>5} {'best of':>7} {'med|B/A-1|%':>11} {'within10':>8} {'within5':>8} {'mean%':>6}")
    for b, by_k in result["agreement"].items():
        for k, a in by_k.items():
            print(f"{b:>5} {k:>7} {a['median_abs_pct']:11.1f} {a['within_10pct']:8.0%} {a['within_5pct']:8.0%} "
                  f"{a['mean_pct']:+6.1f}")


if __name__ == "__main__":
    main()
