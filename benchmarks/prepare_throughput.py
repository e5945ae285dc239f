"""Throughput and peak memory of `dnas-hw data prepare`, end to end.

1. Makes a raw Criteo TSV with `dnas-hw data synth --raw-tsv` (default 2M rows
   at `--scale 1`: Kaggle's own cardinalities, up to 10M values a feature).
2. Runs `dnas-hw data prepare` on it as a child process, several times per
   mode, and reports per run: the wall time of the whole command (interpreter
   start and imports included), the prepare time the command reports (read,
   parse, transform, split, write), rows/s of both, and the child's peak
   resident memory (`ru_maxrss` from `wait4`).
3. Prints medians and the machine (CPU model, cores, load average), as a
   markdown table for benchmarks/RESULTS.md.

    python benchmarks/prepare_throughput.py [--rows 2000000] [--runs 3] [--workdir DIR]

The machine may be shared: the load average is printed before each run, and
medians of several runs are reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "hash": ["--hash-size", "10000000"],
    "min-count": ["--min-count", "2"],
}
CLI = [sys.executable, "-m", "dnas_hw.cli", "data"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Run a command; returns (wall seconds, peak RSS in MiB, its stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}")
    return seconds, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--scale", type=float, default=1.0, help="synth cardinality scale (1 = Kaggle's)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument("--workdir", type=Path, help="keep the raw file here (reused if present)")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"synth_{args.rows}_{args.scale}.tsv"
    if not raw.exists():
        seconds, _, _ = run_child([*CLI, "synth", "--rows", str(args.rows), "--scale", str(args.scale),
                                   "--out", str(work / "synth"), "--raw-tsv", str(raw), "--force"])
        print(f"made {raw} ({raw.stat().st_size / 2**20:,.0f} MiB) in {seconds:.1f} s", flush=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"{dt.date.today().isoformat()}", flush=True)

    results = {}
    for mode in args.modes:
        runs = []
        for i in range(args.runs):
            load = os.getloadavg()[0]
            cmd = [*CLI, "prepare", str(raw), "--out", str(work / "prepared"), "--force", *MODES[mode]]
            wall, rss, out = run_child(cmd)
            inner = float(re.search(r"; ([0-9.]+) s, [0-9,]+ rows/s", out).group(1))
            runs.append({"wall": wall, "inner": inner, "rss": rss, "load": load})
            print(f"{mode:9s} run {i + 1}: {args.rows / wall:>9,.0f} rows/s whole command ({wall:.2f} s), "
                  f"{args.rows / inner:>9,.0f} rows/s prepare ({inner:.2f} s), peak RSS {rss:,.0f} MiB, "
                  f"load before {load:.1f}", flush=True)
        results[mode] = runs

    print("\n| mode | rows | rows/s, whole command (median) | rows/s, prepare (median) | peak RSS MiB (max) "
          "| load avg before runs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        inner = statistics.median(r["inner"] for r in runs)
        loads = ", ".join(f"{r['load']:.1f}" for r in runs)
        print(f"| {' '.join(MODES[mode])} | {args.rows:,} | {args.rows / wall:,.0f} | {args.rows / inner:,.0f} "
              f"| {max(r['rss'] for r in runs):,.0f} | {loads} |")
    print(f"\ncommand: {' '.join(cmd[:2])} -m dnas_hw.cli data prepare RAW --out DIR --force <mode>; "
          f"raw file {raw.stat().st_size / 2**20:,.0f} MiB")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
