"""Cost of profiling: a whole space on one backend at several batch sizes, from scratch.

Prints the key count, wall time and the process's CPU time (on a shared
machine the wall time includes time other processes held the cores), and
writes OUT/profile_cost.json.

    .venv/bin/python benchmarks/profile_cost.py --out runs/profile-cost [--space dlrm-kaggle] \\
        [--backend onnxruntime] [--device cpu] [--threads 1] [--batch-size 1,64,512]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from dnas_hw.files import write_json_atomic
from dnas_hw.space import get_space
from profiler.environment import machine_info
from profiler.keys import all_keys
from profiler.run import partial_path, profile_to_lut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", default="1,64,512")
    args = ap.parse_args()
    space = get_space(args.space)
    sizes = [int(b) for b in args.batch_size.split(",")]
    lut_path = args.out / f"{args.backend}-{args.device}.csv"
    for stale in (lut_path, partial_path(lut_path)):
        stale.unlink(missing_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    profile_to_lut(space, lut_path, backend=args.backend, device=args.device, threads=args.threads, batch_sizes=sizes)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {"command": " ".join(sys.argv), "machine": machine_info(),
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "space": space.name,
              "ops": len(space.op_calls()), "keys": len(all_keys(space, sizes)), "batch_sizes": sizes,
              "backend": args.backend, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    write_json_atomic(args.out / "profile_cost.json", result)
    print(f"{result['space']}: {result['ops']} ops, {result['keys']} keys, {args.backend}: "
          f"{wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU")


if __name__ == "__main__":
    main()
