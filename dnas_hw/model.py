"""Model parts every family uses: the sparse part (`SparseArch`) and the deployed form (`Probability`).

A family's model (DLRM's `dnas_hw.dlrm.model.DLRM`, DCN's `examples.dcn.model.DCN`)
looks its features up through `SparseArch`, so each takes the packed training route
of `dnas_hw.fused_training`; export and bench wrap any of them in `Probability`.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.fused_training import PackedGroup


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


class Probability(nn.Module):
    """The deployed form: the same model with a sigmoid, dense, sparse -> prob [B]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, sparse))
