"""DCN-v2's search hook: its supernet, cost table and weight extraction.

Registered through the public extension point only (`search.hooks.register_search`,
in `examples/dcn/__init__.py`); the engine (`search.run`) does the rest.

Supernet (weights shared by masking, as DLRM's):

    embeddings  search.mixed.MixedEmbeddings: one fused [sum rows, D] table (D = max dim),
                table sizes hashed into it, the dim a prefix mask -> [B, F, D]
    stack       x0 = [dense, emb_1, ..., emb_F]  [B, Fd + F D]: each feature keeps D columns,
                its dim-e candidate the leading e of them (zeros beyond), so every
                dim choice shares one layout; the standalone model packs the same
                columns side by side (`stack_columns`)
    cross.i     MixedCross: one max-rank low-rank layer; rank k is the leading k
                columns of V^T / rows of U (a prefix mask), "skip" passes x on
    deep.i      search.mixed.MixedLinear (fan-in scaled: the first layer's input
                width is the cross width W_e of the dim choice), then linear(-> 1)

Logit groups (`search.layout`): emb_dim [1, E], emb_rows [F, R_max], cross [L, K (+skip)],
deep [L', W (+skip)]. Padded columns of x0 stay 0 through every cross layer
(x0 * (...) + x), so at one-hot probabilities the supernet computes exactly the
standalone `DCN` of the derived arch (tests/test_search_family_dcn.py).
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.ops import OpCall
from dnas_hw.space import SKIP, Choice
from search.cost import DTYPE, CostTable, Factor, Price, mlp_prices
from search.extract import copy_embeddings, copy_linear
from search.mixed import (
    InvSqrtWidth,
    MixedEmbeddings,
    fan_in_scale,
    fixed_choice,
    mixed_inv_sqrt_width,
    prefix_masks,
    scaled_linear,
    shared_linear,
    sliced_linear,
)
from search.supernet import SupernetBase, mixed_mlp

from examples.dcn.model import DCN, build_dcn
from examples.dcn.space import DCNSpace


class MixedCross(nn.Module):
    """One cross layer choosing its rank (and, with a trailing skip choice, whether it exists).

    x0 [B, W], x [B, W], probs [..., n (+1)] over `ranks` (+ skip) -> [B, W]:
        y = x0 * (U ((probs[:n] @ masks) * V^T x) + (sum probs[:n]) b) + x
    which is sum_k p_k (x0 * (U_k V_k^T x + b) + x) + p_skip x: at a one-hot, rank k's layer.
    V^T and U are fan-in scaled (`search.mixed`): V^T for x's true width (its embedding dim,
    `inv_sqrt_width`), U for the rank, so every candidate starts as a standalone layer
    (nn.Linear's init) of its own fan-ins would.
    """

    def __init__(self, width: int, ranks: tuple[int, ...]):
        super().__init__()
        self.ranks = ranks
        self.down = nn.Linear(width, max(ranks), bias=False)  # V^T
        self.up = nn.Linear(max(ranks), width)  # U and b
        self.register_buffer("masks", prefix_masks(ranks, max(ranks)), persistent=False)

    def forward(self, x0: torch.Tensor, x: torch.Tensor, probs: torch.Tensor, inv_sqrt_width: InvSqrtWidth) -> torch.Tensor:
        n, r_max = len(self.ranks), max(self.ranks)
        j = fixed_choice(probs)
        if j is not None:  # one rank (or skip) for the whole batch: only its slice runs
            if j == n:
                return x
            k = self.ranks[j]
            h = scaled_linear(x, self.down.weight[:k], None, self.down.in_features, inv_sqrt_width)
            return x0 * scaled_linear(h, self.up.weight[:, :k], self.up.bias, r_max, k**-0.5) + x
        p = probs[..., :n]
        inv_rank = mixed_inv_sqrt_width(p / p.sum(-1, keepdim=True).clamp_min(1e-12), self.ranks)
        h = scaled_linear(x, self.down.weight, None, self.down.in_features, inv_sqrt_width) * (p @ self.masks)
        return x0 * (scaled_linear(h, self.up.weight, None, r_max, inv_rank) + p.sum(-1, keepdim=True) * self.up.bias) + x


class DCNSupernet(SupernetBase):
    """dense [B, Fd], sparse [B, F], probs {group: [rows, n] or [B, rows, n]} -> logits [B] (see the module docstring)."""

    def __init__(self, space: DCNSpace):
        super().__init__(space)
        self.embeddings = MixedEmbeddings(tuple(space.rows_choices(f) for f in range(space.num_sparse)), space.emb_dims)
        width = space.num_dense + space.num_sparse * self.embeddings.dim
        self.cross = nn.ModuleList(MixedCross(width, space.cross_ranks) for _ in range(space.cross_layers))
        self.deep, width = mixed_mlp(width, space.deep_widths, space.deep_layers, space.skip)
        self.out = shared_linear(width, 1, "none")
        self.init_arch_logits()

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        embedded = self.embeddings(sparse, probs["emb_rows"], probs["emb_dim"])  # one dim row serves every feature
        x0 = torch.cat([dense, embedded.flatten(1)], dim=1)
        x = x0
        inv = mixed_inv_sqrt_width(probs["emb_dim"][..., 0, :], self.space.widths())  # x0's true width
        for i, layer in enumerate(self.cross):
            x = layer(x0, x, probs["cross"][..., i, :], inv)
        for i, layer in enumerate(self.deep):
            x, inv = layer(x, probs["deep"][..., i, :], inv)
        return sliced_linear(self.out, x, inv).squeeze(1)


def stack_columns(num_dense: int, num_sparse: int, dim: int, max_dim: int) -> torch.Tensor:
    """[Fd + F dim] ints: the supernet's x0 column of each column of the standalone model's x0."""
    features = [num_dense + f * max_dim + torch.arange(dim) for f in range(num_sparse)]
    return torch.cat([torch.arange(num_dense)] + features)


@torch.no_grad()
def extract_dcn(supernet: DCNSupernet, choices: dict[str, Choice]) -> DCN:
    """The standalone DCN of `space.arch(choices)` holding the supernet's weights for those choices."""
    space = supernet.space
    arch = space.arch(choices)
    model = build_dcn(arch)
    columns = stack_columns(space.num_dense, space.num_sparse, arch.emb_dim, supernet.embeddings.dim)
    copy_embeddings(model.sparse_arch, supernet.embeddings)
    kept = [layer for i, layer in enumerate(supernet.cross) if choices[f"cross.{i}"] != SKIP]
    for dst, src, rank in zip(model.cross, kept, arch.cross_ranks, strict=True):
        dst.down.weight.copy_(src.down.weight[:rank, columns] * fan_in_scale(src.down.in_features, len(columns) ** -0.5))
        dst.up.weight.copy_(src.up.weight[columns, :rank] * fan_in_scale(src.up.in_features, rank**-0.5))
        dst.up.bias.copy_(src.up.bias[columns])
    linears = [m.linear for i, m in enumerate(supernet.deep) if choices[f"deep.{i}"] != SKIP] + [supernet.out]
    for n, (dst, src) in enumerate(zip(model.deep, linears, strict=True)):
        copy_linear(dst, src, columns if n == 0 else None)  # the first one reads x0's layout
    return model


def dcn_cost_table(space: DCNSpace, price: Price, overhead: float = 0.0) -> CostTable:
    """Terms (`search.cost`): tables (emb_rows.f x the one emb_dim), the stack (emb_dim),
    each cross layer (emb_dim x cross.i; skip costs 0), the deep MLP from the cross width."""
    dims, n_sparse = space.emb_dims, space.num_sparse
    rows_max = max(len(space.rows_choices(f)) for f in range(n_sparse))
    emb = torch.zeros(n_sparse, rows_max, len(dims), dtype=DTYPE)
    for f in range(n_sparse):
        for r, rows in enumerate(space.rows_choices(f)):
            for e, dim in enumerate(dims):
                emb[f, r, e] = price(OpCall.make("embedding", num_embeddings=rows, embedding_dim=dim, pad_to=dim))
    stack = [price(OpCall.make("dcn_stack", num_dense=space.num_dense, num_sparse=n_sparse, dim=e)) for e in dims]
    factors = [
        Factor(("emb_rows", "emb_dim"), (tuple(range(n_sparse)), (0,) * n_sparse), emb),
        Factor(("emb_dim",), ((0,),), torch.tensor([stack], dtype=DTYPE)),
    ]
    if space.cross_layers:
        per_layer = torch.zeros(len(dims), len(space.cross_ranks) + space.skip, dtype=DTYPE)
        for e, width in enumerate(space.widths()):
            for k, rank in enumerate(space.cross_ranks):
                per_layer[e, k] = price(OpCall.make("cross_lowrank", width=width, rank=rank))
        layers = tuple(range(space.cross_layers))
        factors.append(Factor(("emb_dim", "cross"), ((0,) * len(layers), layers), per_layer.expand(len(layers), -1, -1).clone()))
    deep = mlp_prices(list(space.widths()), space.deep_widths, space.deep_layers, space.skip, [1], "none", price,
                      group="deep", start_slots=(("emb_dim", 0),))
    return CostTable(factors=tuple(factors), mlps=(deep,), overhead=float(overhead))

