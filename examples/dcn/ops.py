"""DCN-v2's own ops, registered in the core op registry (the model reuses `embedding` and `linear`).

- `dcn_stack(num_dense, num_sparse, dim)`: dense [B, Fd], F x [B, E] -> x0 [B, Fd + F E], the
  concatenation DCN's cross and deep networks start from;
- `cross_lowrank(width, rank)`: one low-rank cross layer (DCN-v2, Wang et al. 2021, eq. 2 with
  W = U V^T): x0 [B, W], x [B, W] -> x0 * (U (V^T x) + b) + x  [B, W].

One op per cross layer, keyed by (width, rank) only: a space's cross keys are
(number of widths) x (number of ranks), however many layers it stacks.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_hw.ops import Params, register_op


class DenseSparseStack(nn.Module):
    """dense [B, Fd], sparse_1..sparse_F [B, E] -> [B, Fd + F E]."""

    def forward(self, dense: torch.Tensor, *sparse: torch.Tensor) -> torch.Tensor:
        return torch.cat((dense,) + sparse, dim=1)


def _stack_inputs(p: Params, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    dense = torch.randn(b, p["num_dense"], generator=g)
    return (dense,) + tuple(torch.randn(b, p["dim"], generator=g) for _ in range(p["num_sparse"]))


@register_op(
    "dcn_stack",
    params=("num_dense", "num_sparse", "dim"),
    example_inputs=_stack_inputs,
    output_width=lambda p: p["num_dense"] + p["num_sparse"] * p["dim"],
    flops=lambda p, b: 0,
    num_params=lambda p: 0,
)
def _build_stack(p: Params) -> nn.Module:
    return DenseSparseStack()


class LowRankCross(nn.Module):
    """x0 [B, W], x [B, W] -> x0 * (U (V^T x) + b) + x  [B, W], with V^T: W -> rank, U: rank -> W."""

    def __init__(self, width: int, rank: int):
        super().__init__()
        self.down = nn.Linear(width, rank, bias=False)  # V^T
        self.up = nn.Linear(rank, width)  # U and b

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.up(self.down(x)) + x


@register_op(
    "cross_lowrank",
    params=("width", "rank"),
    example_inputs=lambda p, b, g: (torch.randn(b, p["width"], generator=g), torch.randn(b, p["width"], generator=g)),
    output_width=lambda p: p["width"],
    # Two matmuls (W x rank multiply-adds each), the Hadamard product and the residual add;
    # like `linear`, the bias add is not counted.
    flops=lambda p, b: 4 * b * p["width"] * p["rank"] + 2 * b * p["width"],
    num_params=lambda p: 2 * p["width"] * p["rank"] + p["width"],
)
def _build_cross(p: Params) -> nn.Module:
    return LowRankCross(p["width"], p["rank"])
