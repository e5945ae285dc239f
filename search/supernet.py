"""The supernet: every arch of a space in one model, plus the architecture logits.

`SupernetBase` is what the search engine relies on for any family (logits laid
out by `search.layout.Layout`, weights vs logits); DLRM's is
`search.dlrm.supernet.Supernet`, DCN's `examples.dcn.supernet.DCNSupernet`.
"""

from __future__ import annotations

import torch
from torch import nn

from search.layout import Layout
from search.mixed import MixedLinear


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
    # The groups whose slots `search.refine` moves after the search (None: every group). A family
    # with per-feature groups names the others: scoring a neighbour costs one pass over the held-out
    # rows, and 2 x 26 per-feature slots of DLRM would make a round ~6x dearer.
    refined_groups: tuple[str, ...] | None = None
    # Groups whose smaller candidates are derived from the largest (`inherit`) rather than trained:
    # with `SearchConfig.inherit_tables` the weight steps hold them at their largest choice.
    inherited_groups: tuple[str, ...] = ()
    # (slot, choice) pairs `search.refine.refine` does not move to: paths the supernet scores too kindly
    # against the rest. DLRM's depth 0 (an MLP reduced to its closing linear) shares no hidden layer
    # with any other path, so weight sharing does not handicap it as it does every deeper path.
    refine_avoids: tuple[tuple[str, object], ...] = ()
    # Groups whose smaller choices only compress what the largest holds (DLRM's table sizes and dims): after
    # the refinement they take their largest choice where the budget allows and the supernet sees no loss
    # (`search.refine.keep_capacity`, `SearchConfig.keep_capacity`).
    capacity_groups: tuple[str, ...] = ()
    # Groups each of whose other candidates, switched into the search's arch, is a finalist (`search.finalists`):
    # choices the supernet compares through weights that read a different input under each, so its ranking
    # among them is least like retraining's. None: `enumerated_groups`.
    finalist_groups: tuple[str, ...] | None = None

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

    def incumbents(self) -> dict[str, dict]:
        """{name: choices} of the hand-designed archs this family knows that are points of this space
        (`search.finalists`: each is a finalist, settled into the budget's band). Empty by default."""
        return {}

    def score(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor], memo: dict) -> torch.Tensor:
        """Logits [B] as `forward`, without gradient, when many archs are scored on the same rows
        (`search.refine.supernet_loss`): `memo` is one dict per batch of those rows, kept by the caller
        from call to call, in which a family may keep what it computed of them that later archs share
        (keyed by the choices and the weights' versions, so a weight changed in place is not served
        stale). The default keeps nothing."""
        return self(dense, sparse, probs)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch_logits.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Softmax of the logits, {group: [rows, n]} (0 on padding)."""
        return {g: torch.softmax(t, dim=-1) for g, t in self.arch_logits.items()}
