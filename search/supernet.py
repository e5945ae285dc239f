"""The supernet: every arch of a space in one model, plus the architecture logits.

`SupernetBase` is what the search engine relies on for any family (logits laid
out by `search.layout.Layout`, weights vs logits); `Supernet` is DLRM's.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.space import SearchSpace
from search.layout import Layout
from search.mixed import MixedEmbeddings, MixedInteraction, MixedLinear, shared_linear, sliced_linear


def mixed_mlp(in_width: int, widths: tuple[int, ...], layers: int, skip: bool) -> tuple[nn.ModuleList, int]:
    """`layers` MixedLinear layers from `in_width`, and the width they carry out."""
    mods, width = [], in_width
    for _ in range(layers):
        mods.append(MixedLinear(width, widths, skip))
        width = mods[-1].out_width
    return nn.ModuleList(mods), width


class SupernetBase(nn.Module):
    """A family's supernet: `space`, `layout`, and `arch_logits` ({group: [rows, n]}, -inf on padding).

    A subclass builds its weights, then calls `init_arch_logits()` (last, so the
    weights come first in `parameters()`), and defines
    `forward(dense [B, num_dense], sparse [B, F], probs {group: [rows, n] or [B, rows, n]}) -> logits [B]`.
    """

    def __init__(self, space):
        super().__init__()
        self.space, self.layout = space, Layout(space)

    def init_arch_logits(self) -> None:
        self.arch_logits = nn.ParameterDict({g: nn.Parameter(t) for g, t in self.layout.init_logits().items()})

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch_logits.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Softmax of the logits, {group: [rows, n]} (0 on padding)."""
        return {g: torch.softmax(t, dim=-1) for g, t in self.arch_logits.items()}


class Supernet(SupernetBase):
    """dense [B, num_dense], sparse [B, F], probs {group: [rows, n] or [B, rows, n]} -> logits [B].

    bottom:      MixedLinear per bottom slot, then linear(carry -> D, relu)
    embeddings:  MixedEmbeddings -> [B, F, D]
    interaction: MixedInteraction -> [B, K_max]
    top:         MixedLinear per top slot, then linear(carry -> 1)
    `arch_logits` (`SupernetBase`) are parameters too, kept apart from the weights.
    """

    def __init__(self, space: SearchSpace):
        super().__init__(space)
        d = space.interaction_dim
        self.bottom, width = mixed_mlp(space.num_dense, space.bottom_widths, space.bottom_layers, space.skip)
        self.bottom_out = shared_linear(width, d, "relu")
        self.embeddings = MixedEmbeddings(tuple(space.rows_choices(f) for f in range(space.num_sparse)), space.emb_dims)
        self.interaction = MixedInteraction([space.interaction_op(k) for k in space.interactions])
        self.top, width = mixed_mlp(self.interaction.out_width, space.top_widths, space.top_layers, space.skip)
        self.top_out = shared_linear(width, 1, "none")
        self.init_arch_logits()

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        x, inv = dense, self.space.num_dense**-0.5
        for i, layer in enumerate(self.bottom):
            x, inv = layer(x, probs["bottom"][..., i, :], inv)
        x = sliced_linear(self.bottom_out, x, inv)
        embedded = self.embeddings(sparse, probs["emb_rows"], probs["emb_dim"])
        p_inter = probs["interaction"][..., 0, :]
        z, inv = self.interaction(x, embedded, p_inter), self.interaction.inv_sqrt_width(p_inter)
        for i, layer in enumerate(self.top):
            z, inv = layer(z, probs["top"][..., i, :], inv)
        return sliced_linear(self.top_out, z, inv).squeeze(1)
