"""DLRM's supernet (`Supernet`), its mixed interaction, and the extraction of a derived DLRM.

    bottom       search.mixed.ElasticMLP from num_dense to the widest D, masked to the chosen D
    embeddings   search.mixed.MixedEmbeddings -> [B, F, D]
    interaction  MixedInteraction: each kind at the widest D in one canonical layout, so a
                 column means one thing in every candidate (`interaction_columns`)
    top          search.mixed.ElasticMLP to 1 logit

`extract_model(supernet, choices)` builds `dnas_hw.dlrm.model.build_model(arch)` and
copies into it the leading slices that the supernet uses for those choices
(with the fan-in scale folded into each linear's weight, `search.extract`), so
it computes what the supernet computes at one-hot probabilities (tested), and
can warm-start retraining.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.dlrm.arch import dlrm_kaggle_reference
from dnas_hw.dlrm.model import DLRM, build_model
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.space import Choice, SpaceError
from search.extract import copy_embeddings, copy_linear
from search.mixed import ElasticMLP, InvSqrtWidth, MixedEmbeddings, fixed_choice, pad_to, prefix_masks
from search.supernet import SupernetBase


# Bottom MLP outputs `Supernet.score` keeps per batch of rows: the refinement's bottom moves each
# bring a new one, and the arch they leave goes on scoring its own.
BOTTOM_MEMO = 2


def interaction_columns(kind: str, num_sparse: int, dim: int, max_dim: int) -> list[int]:
    """Where the `kind` interaction's output at width `dim` lies in its output at `max_dim`.

    dot: the dense vector's first `dim` coordinates, then every pair's product;
    cat: the first `dim` coordinates of each of the F + 1 vectors.
    """
    if kind == "dot":
        pairs = (num_sparse + 1) * num_sparse // 2
        return list(range(dim)) + [max_dim + p for p in range(pairs)]
    if kind == "cat":
        return [v * max_dim + c for v in range(num_sparse + 1) for c in range(dim)]
    raise ValueError(f"interaction {kind!r}: the supernet knows no column layout for it (search/dlrm/supernet.py)")


class MixedInteraction(nn.Module):
    """dense [B, d], embedded [B, F, d], kind probs [..., K], width probs [..., n_D] -> (z, columns).

    Mixed: z [B, C] in the canonical layout, one block per kind, each the kind's output at the
    widest D (masked coordinates are zero), and columns None. So a column means one thing in
    every candidate: one coordinate of one input vector, or the product of one pair, and a kind
    never reads columns trained on another's. At a fixed (kind, D): z is the kind's own output
    at D [B, width], and columns its place in the canonical layout (`interaction_columns`).
    """

    def __init__(self, space):
        super().__init__()
        self.kinds, self.dims, self.max_dim = space.interactions, space.interaction_dims, max(space.interaction_dims)
        self.ops = nn.ModuleList(space.interaction_op(k, self.max_dim).build() for k in self.kinds)
        block = [space.interaction_op(k, self.max_dim).output_width() for k in self.kinds]
        self.offsets = [sum(block[:i]) for i in range(len(block))]
        self.out_width = sum(block)
        self.widths = torch.tensor([[space.interaction_op(k, d).output_width() for d in self.dims] for k in self.kinds],
                                   dtype=torch.float64)  # [K, n_D]
        for i, kind in enumerate(self.kinds):
            for d in self.dims:
                cols = [self.offsets[i] + c for c in interaction_columns(kind, space.num_sparse, d, self.max_dim)]
                self.register_buffer(f"columns_{i}_{d}", torch.tensor(cols), persistent=False)

    def columns(self, kind: str, dim: int) -> torch.Tensor:
        """[width] ints: the (kind, dim) output's columns in the canonical layout."""
        return getattr(self, f"columns_{self.kinds.index(kind)}_{dim}")

    def inv_sqrt_width(self, kind_probs: torch.Tensor, dim_probs: torch.Tensor) -> InvSqrtWidth:
        """E[1/sqrt(output width)] under independent kind and width probs (the top MLP's fan-in scaling)."""
        k, j = fixed_choice(kind_probs), fixed_choice(dim_probs)
        if k is not None and j is not None:
            return float(self.widths[k, j]) ** -0.5
        inv = torch.einsum("...k,kd,...d->...", kind_probs.detach().double(), self.widths**-0.5, dim_probs.detach().double())
        return inv.to(kind_probs.dtype)[..., None]

    def forward(self, dense: torch.Tensor, embedded: torch.Tensor, kind_probs: torch.Tensor,
                dim_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        k, j = fixed_choice(kind_probs), fixed_choice(dim_probs)
        if k is not None and j is not None:
            d = self.dims[j]
            return self.ops[k](dense[:, :d], *embedded[..., :d].unbind(1)), self.columns(self.kinds[k], d)
        dense, embedded = pad_to(dense, self.max_dim), pad_to(embedded, self.max_dim)
        sparse = embedded.unbind(1)
        blocks = [kind_probs[..., i : i + 1] * op(dense, *sparse) for i, op in enumerate(self.ops)]
        return torch.cat(blocks, dim=1), None


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
    refined_groups = ("bottom", "bottom_depth", "interaction", "interaction_dim", "top", "top_depth")
    capacity_groups = ("emb_rows", "emb_dim")
    # On 1M planted rows every refinement move to a top MLP of depth 0 retrained worse (0.4354 -> 0.4430,
    # 0.4298 -> 0.4657; on the demo data 0.5129 -> 0.5156): the supernet scored the lone closing layer,
    # which learns fast and alone, above the deeper paths its shared layers serve.
    refine_avoids = (("top_depth", 0),)
    # Each of these sets what a shared layer reads: the interaction's kind and width, the top MLP's first
    # layer (other columns, or other pairs' dot products at another width); an MLP's depth, its closing
    # layer (the output of another hidden layer). The refinement moved the top depth to 0 in three searches,
    # each time for the worse on retraining (`refine_avoids`); a finalist is judged by training instead.
    finalist_groups = ("interaction", "interaction_dim", "bottom_depth", "top_depth")

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

    def incumbents(self) -> dict[str, dict[str, Choice]]:
        """DLRM's Kaggle reference config, where the space holds it (`dlrm-kaggle` does)."""
        try:
            return {"dlrm-kaggle reference": self.space.choices_of(dlrm_kaggle_reference(self.space.cardinalities))}
        except SpaceError:
            return {}

    def alignment_loss(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Every bottom depth's output is dotted with the same embeddings: the shallower closing
        layers learn to give the deepest one's output (`ElasticMLP.head_alignment`)."""
        return self.bottom.head_alignment(dense, self.space.num_dense**-0.5)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor],
                memo: dict | None = None) -> torch.Tensor:
        """Logits [B]; `memo`: as `score`'s (None: nothing kept)."""
        x, embedded = self.features(dense, sparse, probs, memo)
        return self.head(x, embedded, probs["interaction"][..., 0, :], probs)

    def score(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor], memo: dict) -> torch.Tensor:
        """`forward`, with the bottom MLP's output and the last arch's embedded vectors kept in `memo`
        (`SupernetBase.score`, `embedded`): the settling's moves change the tables, dims and top far more
        often than the bottom, and a wide bottom MLP is most of a scoring pass (benchmarks/RESULTS.md,
        settle_cost.py)."""
        return self(dense, sparse, probs, memo)

    def features(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor],
                 memo: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bottom MLP output [B, D], embedded [B, F, D]): everything before the interaction, at the
        chosen D, or at the widest with the coordinates beyond D masked by its probabilities. With
        `memo` (`score`), a fixed bottom's output is taken from it or kept in it (`memo["bottom"]`), and
        the embedded vectors too (`embedded`)."""
        p_dim = probs["interaction_dim"][..., 0, :]
        j = fixed_choice(p_dim)
        key = self._bottom_key(probs, j) if memo is not None and not torch.is_grad_enabled() else None
        bottoms = memo.setdefault("bottom", {}) if key is not None else {}
        x = bottoms.get(key)
        if x is None:
            x = self.bottom(dense, probs["bottom"], probs["bottom_depth"][..., 0, :], self.space.num_dense**-0.5,
                            out_features=None if j is None else self.dims[j])
            if key is not None:
                while len(bottoms) >= BOTTOM_MEMO:
                    bottoms.pop(next(iter(bottoms)))  # the oldest: dicts keep insertion order
                bottoms[key] = x
        embedded = self.embedded(sparse, probs, memo)
        if j is not None:
            d = self.dims[j]
            return x[:, :d], pad_to(embedded, d)[..., :d]
        mask = p_dim @ self.dim_masks
        return x * mask, pad_to(embedded, mask.shape[-1]) * mask[..., None, :]

    def embedded(self, sparse: torch.Tensor, probs: dict[str, torch.Tensor], memo: dict | None = None) -> torch.Tensor:
        """The embeddings' output [B, F, D]. With `memo` (`score`) at one table size and dim per feature,
        only the features whose size or dim differ from the last arch scored on these rows are looked up
        and written into that arch's output, kept in `memo` and returned (so it holds until the next scoring
        of these rows): the capacity pass moves one table at a time and the refinement none, while looking
        up every table was a third of a scoring pass (4x point, 1M rows), and copying the output whole
        cost as much."""
        rows, dims = probs["emb_rows"], probs["emb_dim"]
        fixed = MixedEmbeddings.is_fixed(rows) and MixedEmbeddings.is_fixed(dims)
        if memo is None or torch.is_grad_enabled() or not fixed:
            return self.embeddings(sparse, rows, dims)
        chosen, version = torch.stack([rows.argmax(-1), dims.argmax(-1)]), self.embeddings.table.weight._version  # [2, F]
        last = memo.get("embedded")
        if last is None or last[0] != version:
            out = self.embeddings.lookup(sparse, rows, dims)
        else:
            out, changed = last[2], (chosen != last[1]).any(0).nonzero().flatten()
            if len(changed):
                out[:, changed] = self.embeddings.lookup(sparse, rows, dims, changed)
        memo["embedded"] = (version, chosen, out)
        return out

    def _bottom_key(self, probs: dict[str, torch.Tensor], j: int | None) -> tuple | None:
        """What the bottom MLP's output depends on, at fixed choices: its depth, its widths, the output
        width index j and its weights' versions (bumped by every in-place change); None when a choice is mixed."""
        depth = fixed_choice(probs["bottom_depth"][..., 0, :])
        if depth is None or j is None:
            return None
        widths = tuple(fixed_choice(row) for row in probs["bottom"].reshape(-1, probs["bottom"].shape[-1]))
        if None in widths[: self.bottom.depths[depth]]:
            return None
        return ("bottom", depth, widths[: self.bottom.depths[depth]], j, tuple(p._version for p in self.bottom.parameters()))

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


def extract_model(supernet: Supernet, choices: dict[str, Choice]) -> DLRM:
    arch = supernet.space.arch(choices)
    model = build_model(arch)
    columns = supernet.interaction.columns(arch.interaction, arch.interaction_dim)
    with torch.no_grad():
        for mlp, depth, target, first_columns in (
            (supernet.bottom, choices["bottom_depth"], model.dense_arch, None),
            (supernet.top, choices["top_depth"], model.over_arch, columns),
        ):
            kept = [mlp.layers[i] for i in range(depth)] + [mlp.head(depth)]
            for n, (dst, src) in enumerate(zip(target, kept, strict=True)):
                copy_linear(dst, src, first_columns if n == 0 else None)
        copy_embeddings(model.sparse_arch, supernet.embeddings)
    return model
