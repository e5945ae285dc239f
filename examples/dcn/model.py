"""The DCN-v2 model built from a `DCNArch`'s registered ops."""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.model import SparseArch

from examples.dcn.arch import DCNArch


class DCN(nn.Module):
    """dense [B, num_dense] float32, sparse [B, F] int64 -> logits [B] (stacked DCN-v2).

    sparse_arch: [B, F] -> F x [B, E]                     (hashed lookups; the core's packed training route)
    stack:       [B, Fd], F x [B, E] -> x0 [B, W]         (W = Fd + F E)
    cross:       x_{l+1} = x0 * (U_l (V_l^T x_l) + b_l) + x_l, [B, W] each
    deep:        [B, W] -> [B, 1]                         (ReLU MLP and the logit layer)
    """

    def __init__(self, arch: DCNArch):
        super().__init__()
        self.arch = arch
        ops = arch.ops()
        self.sparse_arch = SparseArch([c.build() for c in ops.embeddings])
        self.stack = ops.stack.build()
        self.cross = nn.ModuleList(c.build() for c in ops.cross)
        self.deep = nn.Sequential(*(c.build() for c in ops.deep))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = self.stack(dense, *self.sparse_arch(sparse))
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.deep(x).squeeze(1)


def build_dcn(arch: DCNArch, seed: int | None = None) -> DCN:
    """Build the DCN of `arch`; with a seed, its initial weights are reproducible."""
    if seed is None:
        return DCN(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DCN(arch)
