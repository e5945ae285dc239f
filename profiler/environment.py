"""What a LUT's metadata says about where and how it was measured."""

from __future__ import annotations

import datetime as dt

from dnas_hw.allocator import serving_allocator
from dnas_hw.runners import ROUNDS, default_clock


def device_name(device: str) -> str:
    from dnas_hw.bench import machine_info

    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return machine_info()["cpu"]


def lut_meta(space, *, backend: str, device: str, threads: int, batch_sizes, seed: int) -> dict:
    """The sidecar `LUT.meta.json` of a profile: target, machine, versions, space, method."""
    from dnas_hw.bench import machine_info

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
    }
