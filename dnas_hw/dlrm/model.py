"""DLRM built from an `Arch`, split torchrec-style into dense, sparse, interaction and over parts.

Every module is built from the arch's registered ops (`Arch.ops()`), the same
ops the profiler measures and the LUT prices.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.dlrm.arch import Arch
from dnas_hw.fused_training import MLPUpdatedInBackward
from dnas_hw.model import SparseArch
from dnas_hw.op_modules import LinearAct


class DLRM(nn.Module):
    """dense [B, num_dense] float32, sparse [B, num_sparse] int64 -> logits [B].

    dense_arch:  [B, num_dense] -> [B, D]                (bottom MLP, D = arch.bottom_mlp[-1])
    sparse_arch: [B, F] -> F x [B, D]                    (lookups, zero-padded to D)
    interaction: [B, D], F x [B, D] -> [B, K]            (K = D + (F+1)F/2 for dot, (F+1)D for cat)
    over_arch:   [B, K] -> [B, 1]                        (top MLP and the logit layer)

    In training, where the lookups take the packed route, they stay one tensor
    [B, F, D] and meet the dense vector in the interaction's `interact_stacked`,
    sparing the autograd graph a split into F tensors and a stack back.

    `dense_update_in_backward`: None, or a plain `torch.optim.SGD` over the MLPs'
    parameters (attached by `dnas_hw.train.updated_in_backward`). Then in
    training each MLP runs as one `MLPUpdatedInBackward` (`dnas_hw.fused_training`), whose backward pass
    applies the SGD step to the weights right where their gradients appear.
    """

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        ops = arch.ops()
        self.dense_arch = nn.Sequential(*(c.build() for c in ops.bottom))
        self.sparse_arch = SparseArch([c.build() for c in ops.embeddings])
        self.interaction = ops.interaction.build()
        self.over_arch = nn.Sequential(*(c.build() for c in ops.top))
        self.dense_update_in_backward = None

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self._mlp(self.dense_arch, dense)
        # A sparse part without the packed route (e.g. examples/torchrec's) has no `lookup_stacked`.
        lookup_stacked = getattr(self.sparse_arch, "lookup_stacked", None)
        stacked = lookup_stacked(sparse) if lookup_stacked and hasattr(self.interaction, "interact_stacked") else None
        if stacked is not None:
            z = self.interaction.interact_stacked(x, stacked)
        else:
            z = self.interaction(x, *self.sparse_arch(sparse))
        return self._mlp(self.over_arch, z).squeeze(1)

    def mlp_parameters(self) -> list[nn.Parameter] | None:
        """The bottom and top MLPs' weights and biases, those `dense_update_in_backward` steps;
        None where a layer is not a `LinearAct` with a ReLU or no activation (it cannot)."""
        layers = list(self.dense_arch) + list(self.over_arch)
        if not all(isinstance(l, LinearAct) and isinstance(l[1], (nn.ReLU, nn.Identity)) for l in layers):
            return None
        return [p for layer in layers for p in layer.parameters()]

    def _mlp(self, mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        sgd = self.dense_update_in_backward
        if sgd is None or not self.training:
            return mlp(x)
        params, relus = [], []
        for linear, activation in mlp:  # LinearAct layers; unpacked, not indexed: ~half the Python cost a step
            params += (linear.weight, linear.bias)
            relus.append(isinstance(activation, nn.ReLU))
        return MLPUpdatedInBackward.apply(x, sgd.param_groups[0]["lr"], tuple(relus), *params)


def build_model(arch: Arch, seed: int | None = None) -> DLRM:
    """Build the DLRM of `arch`; with a seed, its initial weights are reproducible."""
    if seed is None:
        return DLRM(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DLRM(arch)
