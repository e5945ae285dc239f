"""The search's per-epoch checkpoint: everything needed to continue exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnas_hw.errors import UserError
from dnas_hw.files import load_torch, save_torch_atomic

FORMAT = "dnas-hw-search-state/1"


def save_state(path: Path, state: dict[str, Any]) -> None:
    save_torch_atomic(path, FORMAT, state)


def load_state(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to a run with the same `identity` (config, budget, space, LUT)."""
    state = load_torch(path, FORMAT, "search checkpoint (delete it to start over)")
    for key, want in identity.items():
        if state.get("identity", {}).get(key) != want:
            raise UserError(f"{path}: saved by a run with another {key}; use a new --out or the same options")
    return state
