"""DLRM built from an `Arch`, split torchrec-style into dense, sparse, interaction and over parts.

Every module is built from the arch's registered ops (`Arch.ops()`), the same
ops the profiler measures and the LUT prices.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.arch import Arch
from dnas_hw.fused_training import MLPUpdatedInBackward, PackedGroup
from dnas_hw.op_modules import LinearAct


class SparseArch(nn.Module):
    """sparse ids [B, F] int64 -> F tensors [B, D]: one hashed, padded lookup per feature.

    Each feature's module is its registry op (`HashedEmbedding`), and in eval
    mode, so in every export, each feature runs exactly that op: one `Mod` and
    one `Gather` per feature, as the LUT prices it.

    Training takes a faster route to the same numbers. The weights of all
    tables of one embedding dim are views into one packed buffer (row offsets
    `offsets`), so one `gather` serves them all, and the backward pass hands
    each table the sparse gradient `nn.Embedding(sparse=True)` would give it
    (`dnas_hw.fused_training`: `PackedGroup`, `PackedLookup`). Anything that moves a table to its own storage (a
    device move, `load_state_dict(assign=True)`) only sends training back to
    the per-feature route, as does setting `packed = False` (for comparisons).

    `update_in_backward`: None, or an optimizer with `add_rows_(buffer, rows,
    grads)` (`dnas_hw.train.SparseSGD`, attached by
    `dnas_hw.train.updated_in_backward`). Then the packed route's backward
    pass updates the tables in place, one scatter for all of them, and gives
    them no gradient at all; the per-feature route still gives gradients.
    """

    def __init__(self, tables: list[nn.Module]):
        super().__init__()
        self.tables = nn.ModuleList(tables)
        self.groups = [PackedGroup(self.tables, dim) for dim in sorted({t.table.embedding_dim for t in tables})]
        # Features in group order -> features in input order (None: the groups already are).
        order = torch.cat([g.features for g in self.groups])
        self.register_buffer("unpermute", torch.argsort(order) if len(self.groups) > 1 else None, persistent=False)
        self.width = tables[0].table.embedding_dim + tables[0].pad  # D, every lookup's padded width
        self.packed = True
        self.update_in_backward = None

    def forward(self, sparse: torch.Tensor) -> list[torch.Tensor]:
        stacked = self.lookup_stacked(sparse)
        if stacked is not None:
            return list(stacked.unbind(1))
        return [table(ids) for table, ids in zip(self.tables, sparse.unbind(1))]

    def lookup_stacked(self, sparse: torch.Tensor) -> torch.Tensor | None:
        """sparse [B, F] -> [B, F, D] by the packed training route; None where it does not apply."""
        if not (self.training and self.packed and all(g.is_packed() for g in self.groups)):
            return None
        parts = [g.lookup(sparse, self.width, self.update_in_backward) for g in self.groups]  # [B, F_g, D] each
        return parts[0] if self.unpermute is None else torch.cat(parts, dim=1).index_select(1, self.unpermute)


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
