"""The search's per-epoch checkpoint: everything needed to continue exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnas_hw.errors import UserError
from dnas_hw.files import load_torch, save_torch_atomic

FORMAT = "dnas-hw-search-state/1"


def save_state(path: Path, state: dict[str, Any]) -> None:
    save_torch_atomic(path, FORMAT, state)


# How the parts of a run's identity are named to the user.
_NAMES = {"budget_us": "latency budget (us)", "batch_size": "batch size", "space": "space (fingerprint)",
          "lut": "LUT (fingerprint)", "data": "data",
          # a front's (search.front)
          "budgets_us": "latency budgets (us)", "searched_us": "budgets searched against (us)",
          "luts": "LUTs (fingerprints)", "points": "points", "arch_updates": "arch updates per batch"}


def check_identity(saved: Any, identity: dict[str, Any], path: Path) -> None:
    """Refuse a run folder whose saved identity (config, budget, space, LUT, data) is not `identity`,
    naming the first option that differs with both values."""
    if not isinstance(saved, dict):
        raise UserError(f"{path}: holds no record of the options it was run with; use a new --out")
    for key, want in identity.items():
        have = saved.get(key)
        if key == "config" and isinstance(have, dict) and isinstance(want, dict):
            for option in sorted(set(have) | set(want)):
                if have.get(option) != want.get(option):
                    differ = f"{option} ({have.get(option)!r}, now {want.get(option)!r})"
                    break
            else:
                continue
        elif have != want:
            differ = f"{_NAMES.get(key, key)} ({have!r}, now {want!r})"
        else:
            continue
        raise UserError(f"{path}: saved by a run with another {differ}; use a new --out or the same options")


def load_state(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to a run with the same `identity` (config, budget, space, LUT)."""
    state = load_torch(path, FORMAT, "search checkpoint (delete it to start over)")
    check_identity(state.get("identity"), identity, path)
    return state
