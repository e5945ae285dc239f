"""The supernet: every arch of a space in one model, plus the architecture logits.

`SupernetBase` is what the search engine relies on for any family (logits laid
out by `search.layout.Layout`, weights vs logits); `Supernet` is DLRM's.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.space import SearchSpace
from search.layout import Layout
from search.mixed import ElasticMLP, MixedEmbeddings, MixedInteraction, MixedLinear, fixed_choice, pad_to, prefix_masks


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
    # Groups whose smaller candidates are derived from the largest (`inherit`) rather than trained:
    # with `SearchConfig.inherit_tables` the weight steps hold them at their largest choice.
    inherited_groups: tuple[str, ...] = ()

    def __init__(self, space):
        super().__init__()
        self.space, self.layout = space, Layout(space)

    def init_arch_logits(self) -> None:
        self.arch_logits = nn.ParameterDict({g: nn.Parameter(t) for g, t in self.layout.init_logits().items()})

    def inherit(self, id_counts: list[torch.Tensor]) -> None:
        """Re-derive the smaller candidates of `inherited_groups` from the trained largest ones;
        `id_counts[f]` [cardinality_f]: the weight part's id frequencies of feature f. The search
        calls it before arch steps read them and before the supernet is evaluated or extracted."""

    def alignment_loss(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor | None:
        """An extra weight-step loss that keeps the outputs of candidates read by shared weights in
        one space (`SearchConfig.align_heads`), or None. None by default."""
        return None

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

    bottom:      ElasticMLP from num_dense to the widest D, masked (or sliced) to the chosen D
    embeddings:  MixedEmbeddings -> [B, F, D], a dim above D capped by the same mask
    interaction: MixedInteraction -> the canonical layout [B, C], or one (kind, D)'s own output
    top:         ElasticMLP to 1 logit, its first reader taking the interaction's columns
    `arch_logits` (`SupernetBase`) are parameters too, kept apart from the weights.
    The interaction kinds can be enumerated in arch steps (`SupernetBase`).
    """

    enumerated_groups = ("interaction",)
    inherited_groups = ("emb_rows",)

    def __init__(self, space: SearchSpace):
        super().__init__(space)
        self.dims = space.interaction_dims
        d_max = max(self.dims)
        self.bottom = ElasticMLP(space.num_dense, space.bottom_widths, space.bottom_layers, space.depths(space.bottom_layers),
                                 d_max, "relu")
        self.embeddings = MixedEmbeddings(tuple(space.rows_choices(f) for f in range(space.num_sparse)), space.emb_dims)
        self.interaction = MixedInteraction(space)
        self.top = ElasticMLP(self.interaction.out_width, space.top_widths, space.top_layers, space.depths(space.top_layers),
                              1, "none")
        self.register_buffer("dim_masks", prefix_masks(self.dims, d_max), persistent=False)
        self.init_arch_logits()

    def inherit(self, id_counts: list[torch.Tensor]) -> None:
        """Every smaller table candidate becomes the hashed image of the trained full table."""
        self.embeddings.inherit_from_largest(id_counts)

    def alignment_loss(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Every bottom depth's output is dotted with the same embeddings: the shallower closing
        layers learn to give the deepest one's output (`ElasticMLP.head_alignment`)."""
        return self.bottom.head_alignment(dense, self.space.num_dense**-0.5)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        x, embedded = self.features(dense, sparse, probs)
        return self.head(x, embedded, probs["interaction"][..., 0, :], probs)

    def features(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(bottom MLP output [B, D], embedded [B, F, D]): everything before the interaction, at the
        chosen D, or at the widest with the coordinates beyond D masked by its probabilities."""
        p_dim = probs["interaction_dim"][..., 0, :]
        j = fixed_choice(p_dim)
        x = self.bottom(dense, probs["bottom"], probs["bottom_depth"][..., 0, :], self.space.num_dense**-0.5,
                        out_features=None if j is None else self.dims[j])
        embedded = self.embeddings(sparse, probs["emb_rows"], probs["emb_dim"])
        if j is not None:
            d = self.dims[j]
            return x[:, :d], pad_to(embedded, d)[..., :d]
        mask = p_dim @ self.dim_masks
        return x * mask, pad_to(embedded, mask.shape[-1]) * mask[..., None, :]

    def head(self, x: torch.Tensor, embedded: torch.Tensor, p_inter: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The interaction under p_inter ([K] or [B, K]) and the top MLP under probs: logits [B]."""
        p_dim = probs["interaction_dim"][..., 0, :]
        z, columns = self.interaction(x, embedded, p_inter, p_dim)
        inv = self.interaction.inv_sqrt_width(p_inter, p_dim)
        return self.top(z, probs["top"], probs["top_depth"][..., 0, :], inv, columns=columns).squeeze(1)

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
