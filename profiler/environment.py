"""Where and how a LUT was measured: the machine's facts and the LUT's metadata."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from profiler.allocator import serving_allocator
from profiler.runners import ROUNDS, default_clock


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return machine_info()["cpu"]


def lut_meta(space, *, backend: str, device: str, threads: int, batch_sizes, seed: int) -> dict:
    """The sidecar `LUT.meta.json` of a profile: target, machine, versions, space, method."""
    machine = machine_info()
    backend_version = machine["onnxruntime"] if backend == "onnxruntime" else machine["torch"]
    return {
        "backend": backend,
        "backend_version": backend_version,
        "device": device,
        "device_name": device_name(device),
        "cpu_model": machine["cpu"],
        "cores": machine["cores"],
        "threads": threads,
        "dtype": "float32",
        "torch_version": machine["torch"],
        "onnxruntime_version": machine["onnxruntime"],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "space": space.name,
        "space_hash": space.fingerprint(),
        "batch_sizes": sorted(int(b) for b in batch_sizes),
        "seed": seed,
        "clock": "cuda-events" if device == "cuda" else default_clock(device, threads),
        "rounds": ROUNDS,
        "allocator": serving_allocator(),
        "statistic": "best of rounds; per op, less a null call on the same inputs (docs/profiling.md)",
        "caches": cache_sizes(),
    }


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores and runtime versions of this machine."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "caches": cache_sizes(),
    }


def cache_sizes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[str, int]:
    """`{"L1d", "L2", "L3": bytes}` of the CPU caches Linux reports for cpu0 (the data and unified levels;
    empty where it reports none). The whole-arch correction's knots (`profiler.correction_fit`)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    out: dict[str, int] = {}
    for index in sorted(Path(root).glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction" or not size:
            continue
        number, unit = (size[:-1], size[-1]) if size[-1] in units else (size, "")
        if number.isdigit():
            out[f"L{level}" + ("d" if kind == "Data" else "")] = int(number) * units.get(unit, 1)
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
