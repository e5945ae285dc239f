"""DLRM built from an `Arch`, split torchrec-style into dense, sparse, interaction and over parts.

Every module is built from the arch's registered ops (`Arch.ops()`), the same
ops the profiler measures and the LUT prices.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.arch import Arch


class SparseArch(nn.Module):
    """sparse ids [B, F] int64 -> F tensors [B, D]: one hashed, padded lookup per feature."""

    def __init__(self, tables: list[nn.Module]):
        super().__init__()
        self.tables = nn.ModuleList(tables)

    def forward(self, sparse: torch.Tensor) -> list[torch.Tensor]:
        return [table(ids) for table, ids in zip(self.tables, sparse.unbind(1))]


class DLRM(nn.Module):
    """dense [B, num_dense] float32, sparse [B, num_sparse] int64 -> logits [B].

    dense_arch:  [B, num_dense] -> [B, D]                (bottom MLP, D = arch.bottom_mlp[-1])
    sparse_arch: [B, F] -> F x [B, D]                    (lookups, zero-padded to D)
    interaction: [B, D], F x [B, D] -> [B, K]            (K = D + (F+1)F/2 for dot, (F+1)D for cat)
    over_arch:   [B, K] -> [B, 1]                        (top MLP and the logit layer)
    """

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        ops = arch.ops()
        self.dense_arch = nn.Sequential(*(c.build() for c in ops.bottom))
        self.sparse_arch = SparseArch([c.build() for c in ops.embeddings])
        self.interaction = ops.interaction.build()
        self.over_arch = nn.Sequential(*(c.build() for c in ops.top))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.dense_arch(dense)
        embedded = self.sparse_arch(sparse)
        z = self.interaction(x, *embedded)
        return self.over_arch(z).squeeze(1)


class Probability(nn.Module):
    """The deployed form: the same model with a sigmoid, dense, sparse -> prob [B]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, sparse))


def build_model(arch: Arch, seed: int | None = None) -> DLRM:
    """Build the DLRM of `arch`; with a seed, its initial weights are reproducible."""
    if seed is None:
        return DLRM(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DLRM(arch)
