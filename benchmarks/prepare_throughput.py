"""Throughput and peak memory of `dnas-hw data prepare`, end to end.

1. Makes a raw Criteo TSV with `dnas-hw data synth --raw-tsv` (default 2M rows
   at `--scale 1`: Kaggle's own cardinalities, up to 10M values a feature).
2. Runs `dnas-hw data prepare` on it as a child process, several times per
   mode, and reports per run: the wall time of the whole command (interpreter
   start and imports included), the prepare time the command reports (read,
   parse, transform, split, write), rows/s of both, and the child's peak
   resident memory (`ru_maxrss` from `wait4`).
   Also: rows per CPU second (user + system time of the child less that of
   the command doing nothing; it depends less on other jobs than wall time),
   and peak memory of `--hash-size` on a
   tenth of the input and on all of it (it must not grow with the input).
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
CLI = [sys.executable, "-m", "dnas_hw.app.cli", "data"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_child(args: list[str]) -> dict:
    """Run a command; returns its wall and CPU seconds, peak RSS (MiB) and stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(args)}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024, "out": out}


def head_lines(src: Path, dst: Path, lines: int) -> None:
    with open(src, "rb") as f, open(dst, "wb") as g:
        for _, line in zip(range(lines), f):
            g.write(line)


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
        made = run_child([*CLI, "synth", "--rows", str(args.rows), "--scale", str(args.scale),
                          "--out", str(work / "synth"), "--raw-tsv", str(raw), "--force"])
        print(f"made {raw} ({raw.stat().st_size / 2**20:,.0f} MiB) in {made['wall']:.1f} s", flush=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"{dt.date.today().isoformat()}", flush=True)
    baseline = run_child([*CLI, "--help"])
    print(f"the command doing nothing (interpreter and imports): peak RSS {baseline['rss']:,.0f} MiB, "
          f"{baseline['cpu']:.2f} CPU s (subtracted below for rows per CPU second)", flush=True)

    results = {}
    for mode in args.modes:
        runs = []
        for i in range(args.runs):
            load = os.getloadavg()[0]
            r = run_child([*CLI, "prepare", str(raw), "--out", str(work / "prepared"), "--force", *MODES[mode]])
            r["inner"] = float(re.search(r"; ([0-9.]+) s, [0-9,]+ rows/s", r["out"]).group(1))
            r["load"] = load
            r["cpu"] -= baseline["cpu"]
            runs.append(r)
            print(f"{mode:9s} run {i + 1}: {args.rows / r['wall']:>9,.0f} rows/s whole command ({r['wall']:.2f} s), "
                  f"{args.rows / r['inner']:>9,.0f} rows/s prepare ({r['inner']:.2f} s), "
                  f"{args.rows / r['cpu']:>9,.0f} rows per CPU second, peak RSS {r['rss']:,.0f} MiB, "
                  f"load before {load:.1f}", flush=True)
        results[mode] = runs

    print("\n| mode | rows | rows/s, whole command | rows/s, prepare | rows per CPU second | peak RSS MiB "
          "| load avg before runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "inner", "cpu")}
        loads = ", ".join(f"{r['load']:.1f}" for r in runs)
        print(f"| `{' '.join(MODES[mode])}` | {args.rows:,} | {args.rows / med['wall']:,.0f} "
              f"| {args.rows / med['inner']:,.0f} | {args.rows / med['cpu']:,.0f} "
              f"| {max(r['rss'] for r in runs):,.0f} | {loads} |")
    print(f"(medians of {args.runs} runs; raw file {raw.stat().st_size / 2**20:,.0f} MiB; "
          f"command: python -m dnas_hw.app.cli data prepare RAW --out DIR --force <mode>)")

    if "hash" in args.modes:  # memory must not grow with the input in hash mode
        print("\npeak RSS of --hash-size vs input size:")
        for fraction in (0.1, 1.0):
            lines = int(args.rows * fraction)
            part = work / f"head_{lines}.tsv"
            if fraction < 1:
                head_lines(raw, part, lines)
            r = run_child([*CLI, "prepare", str(part if fraction < 1 else raw), "--out", str(work / "prepared"),
                           "--force", *MODES["hash"]])
            print(f"  {lines:>10,} rows: {r['rss']:,.0f} MiB")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
