"""`model.pt`: a state dict with its arch, loaded with `weights_only=True` (no pickle code runs)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from dnas_hw.errors import UserError
from dnas_hw.family import arch_from_dict, build_model
from dnas_hw.files import first_line, load_torch, save_torch_atomic

FORMAT = "dnas-hw-model/1"


def save_checkpoint(path: str | os.PathLike, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write `{"format", "arch", "state_dict", "extra"}` atomically (a model of any family: it has `.arch`)."""
    save_torch_atomic(path, FORMAT, {"arch": model.arch.to_dict(), "state_dict": model.state_dict(), "extra": extra or {}})


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The model (in eval mode) and the checkpoint's `extra`; a bad file is a `UserError`."""
    payload = load_torch(path, FORMAT, "dnas-hw checkpoint")
    arch = arch_from_dict(payload.get("arch"))  # of any model family (its JSON form names it)
    model = build_model(arch)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: weights do not match the stored arch ({first_line(e)})") from None
    model.eval()
    return model, payload.get("extra", {})

