"""Differentiable expected costs of the architecture distribution, and the budget penalty.

A `CostTable` prices every op a space can produce (LUT latency in us, FLOPs,
parameter bytes) in tensors laid out like the logits (see `search.layout`). It
is family-generic: a model family builds it (its `FamilySearch.cost_table`,
`search.hooks`; `search.family_search.latency_table` prices a space from the
LUT) from two kinds of terms, and `expected_cost(table, probs)` is the
expectation of an arch's total price when each slot is drawn independently
from `probs`:

- a `Factor`: ops whose shape is decided by one to three slots, row by row:
                   sum_r sum_{a,b,c} P_A[rows_A[r], a] P_B[rows_B[r], b] P_C[rows_C[r], c] price[r, a, b, c]
               e.g. DLRM's embeddings (A = emb_rows.f, B = emb_dim.f, C = interaction_dim,
               one row per feature), an interaction (kind x width), DCN's cross layers
               (A = the one emb_dim slot repeated, B = cross.i);
- an MLP (`MlpPrices`): a linear layer's input width is itself random, so the
               expectation runs over joint (input, output) widths. With `dist_i` the
               distribution of layer i's input width over the MLP's possible widths U:
                   E_i      = dist_i^T  Price_i  p_i[widths]         Price_i [U, n_widths]
                   dist_i+1 = place(p_i[widths])  (+ p_i[skip] * dist_i with per-layer skips)
               With elastic depth (a depth slot, the first k layers kept) layer i
               costs P(depth > i) E_i and the closing linear sum_k P(depth = k) dist_k^T out;
               otherwise the closing linear costs dist_L^T out. The first input width
               is fixed, or decided by the joint choice of a few slots (DLRM's top MLP:
               the interaction kind and width; DCN's deep MLP: the embedding dim); the
               closing linear's output width may be decided by a slot (DLRM's bottom MLP:
               the interaction width);
- plus a fixed overhead (the LUT's `model_overhead` row);
- times the LUT's whole-arch correction where it has one (`lut.correction`):
               1 + sum_j coef_j log2(max(1, x_j / knot_j)), x_j a feature of the whole arch
               (dense bytes, table bytes, op count). Each x_j is a sum over the arch's
               ops, so E[x_j] is priced by a table of its own (`CostTable.features`,
               the same terms with the feature as price) and is exact. The correction
               is evaluated at the expected features and multiplies the expected sum:
                   E[sum x m(x)]  ~=  E[sum] x m(E[x])
               an approximation (it ignores the covariance of the sum with the
               features and the curvature of the hinge), exact at one-hot
               probabilities, differentiable everywhere but at a knot.

At one-hot probabilities this is exactly the arch's own price, i.e.
`lut.predict.predict(...)`. Everything is a pure function of its arguments.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from dnas_hw.arch import mlp_ops
from dnas_hw.ops import OpCall
from dnas_hw.space import elastic_input_widths, mlp_input_widths
from lut.correction import Correction

Price = Callable[[OpCall], float]
DTYPE = torch.float64
SlotRef = tuple[str, int]  # (logit group, row): one slot


@dataclass(frozen=True)
class Factor:
    """Ops priced by one to three slots per row: `price [R, n_A(, n_B(, n_C))]`, 0 on padded choices.

    `groups[k]` names the logit group of the k-th slot and `rows[k]` ([R] ints) its row for each of
    the R rows of the factor; a row index may repeat (one slot shared by many ops).
    """

    groups: tuple[str, ...]
    rows: tuple[tuple[int, ...], ...]
    price: torch.Tensor

    def slots(self, r: int) -> tuple[SlotRef, ...]:
        return tuple((g, rows[r]) for g, rows in zip(self.groups, self.rows))


@dataclass(frozen=True)
class MlpPrices:
    """One MLP's prices over its possible widths U (sorted).

    start [n_1, ..., n_k, U]  one-hot: the input width for each joint choice of the k start slots
    layers [L, U, W]          price of linear(u -> w) (0 where u cannot reach layer i)
    place [W, U]              one-hot: the width of each choice within U
    out [U, O]                price of the closing linear from width u to its O output options
    group                     the logit group of the L hidden-layer slots (one row each; skip last)
    skip                      per-layer skips (the group's last choice passes the input on)
    start_slots               the slots whose joint choice picks the start (none: start is [U])
    out_slot                  the slot picking the closing linear's output option (None: O = 1)
    depth_slot, depths        elastic depth: the slot picking how many leading layers are kept,
                              and the depth of each of its choices
    """

    start: torch.Tensor
    layers: torch.Tensor
    place: torch.Tensor
    out: torch.Tensor
    skip: bool
    group: str
    start_slots: tuple[SlotRef, ...] = ()
    out_slot: SlotRef | None = None
    depth_slot: SlotRef | None = None
    depths: tuple[int, ...] = ()

    def slot_refs(self) -> list[SlotRef]:
        """The slots outside `group` that this MLP's price depends on."""
        return [*self.start_slots, *([self.out_slot] if self.out_slot else []), *([self.depth_slot] if self.depth_slot else [])]


@dataclass(frozen=True)
class CostTable:
    factors: tuple[Factor, ...]
    mlps: tuple[MlpPrices, ...]
    overhead: float
    # The whole-arch correction and, per feature it names, the table pricing that feature (no correction of its
    # own): `expected_cost` multiplies the sum by `correction.multiplier` at the expected features.
    correction: Correction | None = None
    features: tuple[tuple[str, "CostTable"], ...] = ()

    def fingerprint(self) -> str:
        """A short hash of every price: two tables priced alike hash alike."""
        h = hashlib.sha256(repr((self.overhead, self.correction)).encode())
        for t in [f.price for f in self.factors] + [t for m in self.mlps for t in (m.start, m.layers, m.out)]:
            h.update(t.contiguous().numpy().tobytes())
        for name, table in self.features:
            h.update(f"{name}:{table.fingerprint()}".encode())
        return h.hexdigest()[:16]

    def with_correction(self, correction: Correction | None, features: dict[str, "CostTable"]) -> "CostTable":
        """This table times `correction` (None: unchanged), its features priced by `features` `{name: table}`."""
        if correction is None:
            return self
        names = sorted({t.feature for t in correction.terms})
        return CostTable(self.factors, self.mlps, self.overhead, correction, tuple((n, features[n]) for n in names))


def mlp_prices(
    starts: list[int] | torch.Tensor,
    widths: tuple[int, ...],
    layers: int,
    skip: bool,
    out_widths: list[int],
    out_act: str,
    price: Price,
    *,
    group: str,
    start_slots: tuple[SlotRef, ...] = (),
    out_slot: SlotRef | None = None,
    depth_slot: SlotRef | None = None,
    depths: tuple[int, ...] = (),
) -> MlpPrices:
    """Price an MLP of `layers` hidden layers (each one of `widths`, skipped with `skip`, or only the
    leading `depths[j]` kept at the depth slot's j-th choice) and its closing linear to each of
    `out_widths`. `starts`: the input width, one per joint choice of `start_slots` (nested lists
    shaped by those slots' choice counts), or the one fixed width without start slots."""
    starts = torch.as_tensor(starts, dtype=torch.long)
    if not start_slots:
        starts = starts.reshape(1)  # one fixed start
    start_set = {int(u) for u in starts.flatten()}
    if depth_slot is not None:
        reach = elastic_input_widths(start_set, widths, depths)
    else:
        reach = mlp_input_widths(start_set, widths, layers, skip)
    universe = sorted(start_set | set(widths))
    pos = {u: i for i, u in enumerate(universe)}
    start = torch.zeros(*starts.shape, len(universe), dtype=DTYPE)
    for index in itertools.product(*(range(n) for n in starts.shape)):
        start[index + (pos[int(starts[index])],)] = 1.0
    if not start_slots:
        start = start.reshape(-1, len(universe))[0]
    table = torch.zeros(layers, len(universe), len(widths), dtype=DTYPE)
    for i in range(layers):
        for u in reach[i]:
            for j, w in enumerate(widths):
                table[i, pos[u], j] = price(mlp_ops(u, [w])[0])
    place = torch.zeros(len(widths), len(universe), dtype=DTYPE)
    for j, w in enumerate(widths):
        place[j, pos[w]] = 1.0
    out = torch.zeros(len(universe), len(out_widths), dtype=DTYPE)
    for u in reach[-1]:
        for o, w in enumerate(out_widths):
            out[pos[u], o] = price(mlp_ops(u, [w], activation=out_act)[0])
    return MlpPrices(start, table, place, out, skip, group, tuple(start_slots), out_slot, depth_slot, tuple(depths))


_AXES = "abc"


def _expected_factor(factor: Factor, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    operands = [probs[g][list(rows)] for g, rows in zip(factor.groups, factor.rows)]  # [R, n_k] each
    axes = _AXES[: len(operands)]
    spec = ",".join(f"r{a}" for a in axes) + f",r{axes}->"
    return torch.einsum(spec, *operands, factor.price)


def _slot_probs(probs: dict[str, torch.Tensor], slot: SlotRef, n: int) -> torch.Tensor:
    group, row = slot
    return probs[group][row, :n]


def _expected_mlp(prices: MlpPrices, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    dist = prices.start
    for slot in prices.start_slots:  # contract the leading axis, one start slot at a time
        dist = torch.tensordot(_slot_probs(probs, slot, dist.shape[0]), dist, dims=1)
    out = prices.out[:, 0] if prices.out_slot is None else prices.out @ _slot_probs(probs, prices.out_slot, prices.out.shape[1])
    n_layers, n_widths = prices.layers.shape[0], prices.place.shape[0]
    if prices.depth_slot is None:
        at_depth = torch.zeros(n_layers + 1, dtype=DTYPE)
        at_depth[-1] = 1.0
    else:  # P(depth = k), k = 0..L
        p_depth = _slot_probs(probs, prices.depth_slot, len(prices.depths))
        at_depth = torch.zeros(n_layers + 1, len(prices.depths), dtype=DTYPE)
        at_depth[list(prices.depths), range(len(prices.depths))] = 1.0
        at_depth = at_depth @ p_depth
    alive = at_depth.flip(0).cumsum(0).flip(0)  # P(depth >= k); layer i runs when depth >= i + 1
    layer_probs = probs.get(prices.group)
    total = dist.new_zeros(())
    for i in range(n_layers):
        total = total + at_depth[i] * (dist @ out)
        p_width = layer_probs[i, :n_widths]
        total = total + alive[i + 1] * (dist @ prices.layers[i] @ p_width)
        nxt = p_width @ prices.place
        dist = nxt + layer_probs[i, n_widths] * dist if prices.skip else nxt
    return total + at_depth[n_layers] * (dist @ out)


def expected_cost(table: CostTable, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """E[price] under independent per-slot probabilities `{group: [rows, width]}` (see `search.layout`).

    Returns a 0-d tensor, differentiable w.r.t. `probs`.
    """
    probs = {g: p.to(DTYPE) for g, p in probs.items()}
    total = sum((_expected_factor(f, probs) for f in table.factors), torch.zeros((), dtype=DTYPE))
    for mlp in table.mlps:
        total = total + _expected_mlp(mlp, probs)
    total = total + table.overhead
    if table.correction is not None:
        features = {name: expected_cost(t, probs) for name, t in table.features}
        total = total * table.correction.multiplier(features, _hinge_log2)
    return total


def _hinge_log2(ratio: torch.Tensor) -> torch.Tensor:
    """`lut.correction.hinge_log2` on a tensor: log2(max(1, ratio)), its gradient 0 below the knot."""
    return torch.log2(torch.clamp(ratio, min=1.0))


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


def choices_cost(table: CostTable, layout, choices: dict) -> float:
    """The price of the arch `choices` ({slot: choice}) under `layout` (a `search.layout.Layout`)."""
    return one_hot_cost(table, layout.one_hot(choices))


def one_hot_cost(table: CostTable, probs_one_hot: dict[str, torch.Tensor]) -> float:
    """The price of one arch (one-hot probabilities), as a float."""
    with torch.no_grad():
        value = float(expected_cost(table, probs_one_hot))
    if not math.isfinite(value):
        raise ValueError("non-finite cost")
    return value
