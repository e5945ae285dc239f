"""Scoring archs in a trained supernet: what its shared weights say of an arch, without retraining it.

At one-hot probabilities the supernet computes exactly the extracted model of
those choices (`search.extract`, tested), so its validation loss there is the
loss of that model as the supernet's weights leave it. Whether these scores
rank archs as retraining from scratch does is what `benchmarks/supernet_ranking.py`
measures (Kendall tau).
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.data.folder import Split
from dnas_hw.space import Choice
from dnas_hw.train import evaluate
from search.supernet import SupernetBase


class AtChoices(nn.Module):
    """The supernet fixed at one arch: dense [B, num_dense], sparse [B, F] -> logits [B]."""

    def __init__(self, net: SupernetBase, choices: dict[str, Choice]):
        super().__init__()
        self.net = net
        self.probs = {g: t.float() for g, t in net.layout.one_hot(choices).items()}

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.net(dense, sparse, self.probs)


@torch.no_grad()
def supernet_metrics(net: SupernetBase, choices: dict[str, Choice], split: Split, batch_size: int = 4096) -> dict[str, float]:
    """`dnas_hw.metrics.ctr_metrics` of the supernet at `choices` on `split` (logloss, auc, ...)."""
    return evaluate(AtChoices(net, choices), split, batch_size)
