"""The search's per-epoch checkpoint: everything needed to continue exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dnas_hw.errors import UserError
from dnas_hw.files import atomic_path

FORMAT = "dnas-hw-search-state/1"


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_state(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to a run with the same `identity` (config, budget, space, LUT)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: unreadable search checkpoint ({type(e).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a dnas-hw search checkpoint")
    for key, want in identity.items():
        if state.get("identity", {}).get(key) != want:
            raise UserError(f"{path}: saved by a run with another {key}; use a new --out or the same options")
    return state
