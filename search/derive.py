"""The derived architecture: the most probable choice per slot, and the probabilities behind it."""

from __future__ import annotations

import torch

from dnas_hw.space import Choice
from search.supernet import SupernetBase


@torch.no_grad()
def derive(supernet: SupernetBase) -> tuple[dict[str, Choice], dict[str, torch.Tensor]]:
    """(argmax `{slot: choice}`, softmax probabilities `{group: [rows, n]}`)."""
    probs = supernet.probabilities()
    return supernet.layout.choices({g: p.argmax(-1) for g, p in probs.items()}), probs
