"""`model.pt`: a state dict with its arch, loaded with `weights_only=True` (no pickle code runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dnas_hw.errors import UserError
from dnas_hw.family import arch_from_dict, build_model
from dnas_hw.files import atomic_path
from dnas_hw.model import DLRM

FORMAT = "dnas-hw-model/1"


def save_checkpoint(path: str | os.PathLike, model: DLRM, extra: dict[str, Any] | None = None) -> None:
    """Write `{"format", "arch", "state_dict", "extra"}` atomically."""
    payload = {"format": FORMAT, "arch": model.arch.to_dict(), "state_dict": model.state_dict(), "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> tuple[DLRM, dict[str, Any]]:
    """The model (in eval mode) and the checkpoint's `extra`; a bad file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: not a readable dnas-hw checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a dnas-hw checkpoint (expected format {FORMAT!r})")
    arch = arch_from_dict(payload.get("arch"))  # of any model family (its JSON form names it)
    model = build_model(arch)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: weights do not match the stored arch ({_first_line(e)})") from None
    model.eval()
    return model, payload.get("extra", {})


def _first_line(error: Exception, limit: int = 120) -> str:
    """An exception's message cut to one line (some torch errors have an empty message)."""
    lines = str(error).splitlines()
    return lines[0][:limit] if lines else "no message"
