"""The supernet: every arch of a space in one model, plus the architecture logits.

`SupernetBase` is what the search engine relies on for any family (logits laid
out by `search.layout.Layout`, weights vs logits); `Supernet` is DLRM's.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.space import SearchSpace
from search.layout import Layout
from search.mixed import MixedEmbeddings, MixedInteraction, MixedLinear, fixed_choice, shared_linear, sliced_linear


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

    `enumerated_groups` names single-row groups whose candidates are different
    ops rather than nested slices of one weight (DLRM's interaction kinds).
    With `SearchConfig.enumerate_groups`, the arch step takes their logits'
    gradient by enumerating the candidates (`search.run`) instead of
    straight-through, which compares the sampled kind's output with an
    unrelated one through weights trained on the first (docs/search.md: on the
    planted data it did not change the choice). A family that names such groups
    defines `forward_with_candidates(dense, sparse, probs) -> (logits [B], {group: [K, B]})`:
    the logits under `probs`, and without gradient the logits with the group's
    choice set to each of its K candidates, every other choice as in `probs`.
    """

    enumerated_groups: tuple[str, ...] = ()

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
    The interaction kinds can be enumerated in arch steps (`SupernetBase`).
    """

    enumerated_groups = ("interaction",)

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
        x, embedded = self.features(dense, sparse, probs)
        return self.head(x, embedded, probs["interaction"][..., 0, :], probs)

    def features(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(bottom MLP output [B, D], embedded [B, F, D]): everything before the interaction."""
        x, inv = dense, self.space.num_dense**-0.5
        for i, layer in enumerate(self.bottom):
            x, inv = layer(x, probs["bottom"][..., i, :], inv)
        return sliced_linear(self.bottom_out, x, inv), self.embeddings(sparse, probs["emb_rows"], probs["emb_dim"])

    def head(self, x: torch.Tensor, embedded: torch.Tensor, p_inter: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The interaction under p_inter ([K] or [B, K]) and the top MLP under probs: logits [B]."""
        z, inv = self.interaction(x, embedded, p_inter), self.interaction.inv_sqrt_width(p_inter)
        for i, layer in enumerate(self.top):
            z, inv = layer(z, probs["top"][..., i, :], inv)
        return sliced_linear(self.top_out, z, inv).squeeze(1)

    def forward_with_candidates(self, dense: torch.Tensor, sparse: torch.Tensor,
                                probs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits [B] under probs, {"interaction": [K, B]} without gradient, one row per kind).

        The features are computed once for all kinds; a per-batch one-hot kind's
        row is the logits themselves.
        """
        x, embedded = self.features(dense, sparse, probs)
        p_inter = probs["interaction"][..., 0, :]
        logits = self.head(x, embedded, p_inter, probs)
        sampled = fixed_choice(p_inter)
        fixed = {g: t.detach() for g, t in probs.items()}  # so the top layers take their single-path fast path
        with torch.no_grad():
            kinds = torch.eye(len(self.interaction.kinds), dtype=p_inter.dtype)
            rows = [logits.detach() if k == sampled else self.head(x, embedded, kinds[k], fixed) for k in range(len(kinds))]
        return logits, {"interaction": torch.stack(rows)}
