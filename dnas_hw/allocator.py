"""The memory allocator configured as a latency-serving process configures it.

With glibc's defaults, a torch forward pass returns its activations to the
OS: an allocation above the (dynamic) mmap threshold is an `mmap` of its own,
and freeing the top of the heap trims it once more than the trim threshold is
free. The next call then faults the same pages in again, and the kernel zeroes
each one. Measured on a served dlrm-kaggle model at batch 64 (torch, 1
thread): 2315 us a call with the defaults, 1389 us with trimming and per-call
mmaps off; inside the model, ops ran 1.6-2.6x their time alone with the
defaults and 1.1-1.2x without. That cost depends on the sizes and order of a
whole model's activations, so no per-op table can price it, and it comes from
the allocator, not the model: serving processes turn it off (or link jemalloc
or tcmalloc). onnxruntime keeps its own arena and never paid it.

`serving_allocator()` sets the same for this process: trimming off, and
`mmap` only for blocks of `MMAP_THRESHOLD` or more (tables and weights,
allocated once when a model is built, not per call). Everything that times
(`dnas_hw.runners`, `profiler.timers`) calls it first, so profiles, `lut
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
