"""Differentiable expected costs of the architecture distribution, and the budget penalty.

A `CostTable` prices every op a space can produce (LUT latency in us, FLOPs,
parameter bytes) in tensors laid out like the logits (see `search.layout`).
`expected_cost(table, probs)` is the expectation of an arch's total price when
each slot is drawn independently from `probs`:

- embeddings:  sum_f sum_{r,e} q_f[r] p_f[e] price(embedding(r, e))
- interaction: sum_k p[k] price(interaction_k)
- an MLP:      a linear layer's input width is itself random (skips pass the
               previous width on), so the expectation runs over joint
               (input, output) widths. With `dist_i` the distribution of layer
               i's input width over the MLP's possible widths U:
                   E_i      = dist_i^T  Price_i  p_i[widths]         Price_i [U, n_widths]
                   dist_i+1 = place(p_i[widths]) + p_i[skip] * dist_i
               and the closing linear (to D, or to the logit) costs dist_L^T out.
               The top MLP starts from the interaction's output width.
- plus a fixed overhead (the LUT's `model_overhead` row).

At one-hot probabilities this is exactly the sum of the arch's own ops, i.e.
`lut.predict.predict(...)`. Everything is a pure function of its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from dnas_hw.arch import mlp_ops
from dnas_hw.ops import OpCall
from dnas_hw.space import SearchSpace
from lut.table import Lut, overhead_call

Price = Callable[[OpCall], float]
DTYPE = torch.float64


@dataclass(frozen=True)
class MlpPrices:
    """One MLP's prices over its possible widths U (sorted).

    start [S, U]     where each start option puts the input width (a one-hot per row)
    layers [L, U, W] price of linear(u -> w) (0 where u cannot reach layer i)
    place [W, U]     one-hot: the width of each choice within U
    out [U]          price of the closing linear from width u
    """

    start: torch.Tensor
    layers: torch.Tensor
    place: torch.Tensor
    out: torch.Tensor
    skip: bool


@dataclass(frozen=True)
class CostTable:
    bottom: MlpPrices
    top: MlpPrices
    embeddings: torch.Tensor  # [F, R_max, E]; 0 on padded table sizes
    interaction: torch.Tensor  # [K]
    overhead: float


def _mlp_prices(
    space: SearchSpace, starts: list[int], widths: tuple[int, ...], layers: int, out_width: int, out_act: str, price: Price
) -> MlpPrices:
    reach = space.mlp_input_widths(set(starts), widths, layers)
    universe = sorted(set(starts) | set(widths))
    pos = {u: i for i, u in enumerate(universe)}
    start = torch.zeros(len(starts), len(universe), dtype=DTYPE)
    for k, s in enumerate(starts):
        start[k, pos[s]] = 1.0
    table = torch.zeros(layers, len(universe), len(widths), dtype=DTYPE)
    for i in range(layers):
        for u in reach[i]:
            for j, w in enumerate(widths):
                table[i, pos[u], j] = price(mlp_ops(u, [w])[0])
    place = torch.zeros(len(widths), len(universe), dtype=DTYPE)
    for j, w in enumerate(widths):
        place[j, pos[w]] = 1.0
    out = torch.zeros(len(universe), dtype=DTYPE)
    for u in reach[-1]:
        out[pos[u]] = price(mlp_ops(u, [out_width], activation=out_act)[0])
    return MlpPrices(start, table, place, out, space.skip)


def cost_table(space: SearchSpace, price: Price, overhead: float = 0.0) -> CostTable:
    """Price every op of `space` with `price(OpCall) -> float`."""
    d = space.interaction_dim
    inter_ops = [space.interaction_op(k) for k in space.interactions]
    rows_max = max(len(space.rows_choices(f)) for f in range(space.num_sparse))
    emb = torch.zeros(space.num_sparse, rows_max, len(space.emb_dims), dtype=DTYPE)
    for f in range(space.num_sparse):
        for r, rows in enumerate(space.rows_choices(f)):
            for e, dim in enumerate(space.emb_dims):
                emb[f, r, e] = price(OpCall.make("embedding", num_embeddings=rows, embedding_dim=dim, pad_to=d))
    return CostTable(
        bottom=_mlp_prices(space, [space.num_dense], space.bottom_widths, space.bottom_layers, d, "relu", price),
        top=_mlp_prices(space, [op.output_width() for op in inter_ops], space.top_widths, space.top_layers, 1, "none", price),
        embeddings=emb,
        interaction=torch.tensor([price(op) for op in inter_ops], dtype=DTYPE),
        overhead=float(overhead),
    )


def latency_table(space: SearchSpace, lut: Lut, batch_size: int, stat: str = "p50_us") -> CostTable:
    """LUT latency (us) at `batch_size`, with the model-overhead row. A miss raises `LutMissError`."""
    overhead = lut.latency_us(overhead_call(space.num_dense, space.num_sparse), batch_size, stat)
    return cost_table(space, lambda c: lut.latency_us(c, batch_size, stat), overhead)


def flops_table(space: SearchSpace, batch_size: int) -> CostTable:
    return cost_table(space, lambda c: float(c.flops(batch_size)))


def param_bytes_table(space: SearchSpace, bytes_per_value: int = 4) -> CostTable:
    """Parameter memory (fp32 by default); dominated by the embedding tables."""
    return cost_table(space, lambda c: float(c.num_params() * bytes_per_value))


def _expected_mlp(prices: MlpPrices, start_probs: torch.Tensor, layer_probs: torch.Tensor | None) -> torch.Tensor:
    dist = start_probs @ prices.start  # [U]
    total = dist.new_zeros(())
    n_widths = prices.place.shape[0]
    for i in range(prices.layers.shape[0]):
        p_width = layer_probs[i, :n_widths]
        total = total + dist @ prices.layers[i] @ p_width
        nxt = p_width @ prices.place
        dist = nxt + layer_probs[i, n_widths] * dist if prices.skip else nxt
    return total + dist @ prices.out


def expected_cost(table: CostTable, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """E[price] under independent per-slot probabilities `{group: [rows, width]}` (see `search.layout`).

    Returns a 0-d tensor, differentiable w.r.t. `probs`.
    """
    probs = {g: p.to(DTYPE) for g, p in probs.items()}
    emb = torch.einsum("fr,fe,fre->", probs["emb_rows"], probs["emb_dim"], table.embeddings)
    p_inter = probs["interaction"][0]
    bottom = _expected_mlp(table.bottom, torch.ones(1, dtype=DTYPE), probs.get("bottom"))
    top = _expected_mlp(table.top, p_inter, probs.get("top"))
    return bottom + emb + p_inter @ table.interaction + top + table.overhead


# --------------------------------------------------------------------------- budget penalty

PENALTY_FORMS = ("band", "hinge", "linear-log", "fbnet")


def budget_penalty(
    expected_us: torch.Tensor,
    budget_us: float,
    multiplier: float,
    form: str,
    fbnet_beta: float = 0.6,
    target: float = 1.0,
) -> torch.Tensor:
    """The latency term added to the task loss.

    band:       multiplier * (E[lat] / budget - target)        (default; a signed Lagrange multiplier from
                two-sided dual ascent: positive pushes latency down, negative pulls it up)
    hinge:      multiplier * max(0, E[lat] / budget - target)  (one-sided: only ever pushes down)
    linear-log: multiplier * log(E[lat] / 1us)                 (the paper's lambda * log(cost))
    fbnet:      multiplier * log(E[lat] / 1us) ** beta          (FBNet's alpha * log(lat)^beta, as an additive term)
    """
    if form == "band":
        return multiplier * (expected_us / budget_us - target)
    if form == "hinge":
        return multiplier * torch.relu(expected_us / budget_us - target)
    if form == "linear-log":
        return multiplier * torch.log(expected_us)
    if form == "fbnet":
        return multiplier * torch.log(expected_us) ** fbnet_beta
    raise ValueError(f"unknown penalty form {form!r}; use one of {PENALTY_FORMS}")


@dataclass(frozen=True)
class CostTables:
    """The tables a search prices with; flops / param_bytes only when their terms are on."""

    latency: CostTable
    flops: CostTable | None = None
    param_bytes: CostTable | None = None
    flops_scale: float = 1.0  # the largest arch's value: extra terms are fractions of it
    param_bytes_scale: float = 1.0


def cost_loss(
    tables: CostTables,
    probs: dict[str, torch.Tensor],
    *,
    budget_us: float,
    multiplier: float,
    form: str,
    fbnet_beta: float = 0.6,
    target: float = 1.0,
    derived_us: float | None = None,
    flops_weight: float = 0.0,
    param_bytes_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The whole cost term and what it is made of: `(loss, details)`.

    loss = budget_penalty(E[lat]) + flops_weight * E[flops]/max_flops + param_bytes_weight * E[bytes]/max_bytes
    With `derived_us` (the current argmax arch's latency), the band / hinge term is
    evaluated at it and differentiated through E[lat]: the hinge then acts exactly
    while the arch that would be returned is over target, however spread the
    probabilities still are.
    details: expected_latency_us, latency_ratio (E[lat]/budget), penalty, and the
    expected FLOPs / parameter bytes when their tables are given.
    """
    lat = expected_cost(tables.latency, probs)
    priced = lat
    if derived_us is not None and form in ("band", "hinge"):
        # Straight-through: the hinge sees the derived arch's latency, its gradient flows through E[lat].
        priced = lat + (derived_us - lat).detach()
    penalty = budget_penalty(priced, budget_us, multiplier, form, fbnet_beta, target)
    loss = penalty
    details = {"expected_latency_us": lat.item(), "latency_ratio": lat.item() / budget_us, "penalty": penalty.item()}
    for name, weight, scale in (
        ("flops", flops_weight, tables.flops_scale),
        ("param_bytes", param_bytes_weight, tables.param_bytes_scale),
    ):
        table = getattr(tables, name)
        if table is None:
            continue
        value = expected_cost(table, probs)
        details[f"expected_{name}"] = value.item()
        if weight:
            loss = loss + weight * value / scale
    return loss, details


def one_hot_cost(table: CostTable, probs_one_hot: dict[str, torch.Tensor]) -> float:
    """The price of one arch (one-hot probabilities), as a float."""
    with torch.no_grad():
        value = float(expected_cost(table, probs_one_hot))
    if not math.isfinite(value):
        raise ValueError("non-finite cost")
    return value
