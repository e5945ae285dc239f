"""Gumbel-softmax sampling of architecture masks, and the temperature schedule."""

from __future__ import annotations

import torch


def temperature(epoch: int, init: float, decay: float) -> float:
    """Exponential decay per epoch: `init * decay**epoch` (epoch counts from 0)."""
    return init * decay**epoch


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float,
    *,
    hard: bool,
    samples: int | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Relaxed one-hot samples of categorical distributions.

    logits [rows, n] (-inf marks a choice that does not exist) ->
    [rows, n] when `samples` is None (one draw shared by the whole batch), else
    [samples, rows, n] (one draw per sample). With `hard`, the forward value is
    the one-hot argmax and the gradient is the soft sample's (straight-through);
    for logits that need no gradient it is the exact one-hot.
    The noise comes from `generator`, so a run is reproducible from its seed.
    """
    shape = logits.shape if samples is None else (samples, *logits.shape)
    u = torch.rand(shape, generator=generator, dtype=logits.dtype).clamp_(1e-10, 1.0 - 1e-7)
    noise = -torch.log(-torch.log(u))
    soft = torch.softmax((logits + noise) / tau, dim=-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    # Without a gradient to carry, the exact one-hot (mixed ops then run one candidate only).
    return one_hot + soft - soft.detach() if logits.requires_grad else one_hot


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of probs [rows, n]; zero-probability entries add nothing."""
    logs = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    return -(probs * logs).sum(-1).mean()
