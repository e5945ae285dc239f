"""The memory allocator configured as a latency-serving process configures it.

With glibc's defaults, a torch forward pass may return its activations to
the OS: an allocation above the (dynamic) mmap threshold is an `mmap` of its
own, and freeing the top of the heap trims it once more than the trim
threshold is free; the next call then faults the same pages in again, and the
kernel zeroes each one. Whether it happens depends on the process's history of
allocation sizes (glibc moves both thresholds as it goes), so the same model
times differently from one process to the next. Measured (torch, 1 thread,
batch 64, a dlrm-kaggle model, four processes of each kind taking turns): with
the defaults 1187, 1886, 1799 and 1253 us a call; with trimming off and a
fixed mmap threshold 1267, 1338, 1255 and 1407 us. Serving processes switch
it off (or link jemalloc or tcmalloc); onnxruntime allocates from its own
arena.

`serving_allocator()` sets the same for this process: trimming off, and
`mmap` only for blocks of `MMAP_THRESHOLD` or more (tables and weights,
allocated once when a model is built, not per call). Everything that times
(`profiler.runners`, `profiler.timers`) calls it first, so profiles, `lut
validate` and `dnas-hw bench` measure in the same regime. Elsewhere than
glibc it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest allowed fixed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): 32 MiB.
MMAP_THRESHOLD = 32 << 20


@functools.cache
def serving_allocator() -> str:
    """Configure glibc malloc for serving (once per process); returns what was set, for the LUT's metadata."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return "default (no glibc mallopt)"
    # A fixed mmap threshold also stops glibc from moving it (and the trim threshold) at run time.
    if mallopt(M_TRIM_THRESHOLD, -1) != 1 or mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return "default (mallopt refused)"
    return f"glibc: trim off, mmap threshold {MMAP_THRESHOLD >> 20} MiB"
