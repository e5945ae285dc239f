"""Memory a model or a job will need, checked against what the machine has before anything is allocated.

An absurd size (a table of 10^12 rows, layers 10^6 wide) must end in a clear
refusal that gives both numbers, not in an allocator's traceback after minutes,
or in the machine swapping. The estimates count float32 parameters, optimizer
state and a batch's activations; they are lower bounds, so a refusal is certain
to be right and a model that passes may still be tight.
"""

from __future__ import annotations

import os
from typing import Any

from dnas_hw.errors import UserError

BYTES_PER_VALUE = 4  # float32
# Copies of the parameters training holds: the weights and their gradients, plus the optimizer's state.
OPTIMIZER_COPIES = {"sgd": 2, "adagrad": 3, "adam": 4}
# An activation is kept for the backward pass and gets a gradient of its own; one more for the work in between.
ACTIVATION_COPIES = 3


def available_bytes() -> int | None:
    """Memory available to a new allocation without swapping (Linux `MemAvailable`), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def require_memory(nbytes: int, what: str) -> None:
    """Refuse (`UserError`) when `what` needs more than the memory available now."""
    available = available_bytes()
    if available is not None and nbytes > available:
        raise UserError(f"{what} needs about {format_bytes(nbytes)} of memory; {format_bytes(available)} is available")


def model_bytes(arch: Any) -> int:
    """The parameters of a model of `arch` (any family), in bytes."""
    return BYTES_PER_VALUE * int(arch.num_params())


def activation_bytes(arch: Any, batch_size: int) -> int:
    """A batch's activations: every op's output, `batch_size` rows each."""
    widths = sum(int(call.output_width()) for _, call in arch.ops().named())
    return BYTES_PER_VALUE * ACTIVATION_COPIES * int(batch_size) * widths


def training_bytes(arch: Any, batch_size: int, optimizer: str) -> int:
    """Training `arch` with `optimizer` at `batch_size`: parameters with gradients and state, and activations."""
    return model_bytes(arch) * OPTIMIZER_COPIES.get(optimizer, max(OPTIMIZER_COPIES.values())) + activation_bytes(
        arch, batch_size
    )
