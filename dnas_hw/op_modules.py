"""The torch modules behind the registry's built-in ops, with their builders and example inputs.

`dnas_hw.ops` describes each built-in op (name, shape parameters, output width,
FLOPs, parameter count) without torch and names the functions here that build
it and make its inputs; they are imported when an op is first built or fed, so
reading a LUT or listing a space never loads torch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from dnas_hw.ops import Params


# --------------------------------------------------------------------------- linear


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "none": nn.Identity}


class LinearAct(nn.Sequential):
    """[B, in_features] -> [B, out_features]: a linear layer and its activation."""

    def __init__(self, in_features: int, out_features: int, activation: str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        super().__init__(nn.Linear(in_features, out_features), ACTIVATIONS[activation]())


def build_linear(p: Params) -> nn.Module:
    return LinearAct(p["in_features"], p["out_features"], p["activation"])


# --------------------------------------------------------------------------- embedding


class HashedEmbedding(nn.Module):
    """ids [B] int64 -> [B, pad_to]: look up `ids mod num_embeddings`, zero-pad to `pad_to`.

    The modulo makes a table smaller than the feature's cardinality a hashed
    table. Zero-padding to the interaction width lets features of different
    dims meet in one interaction: a padded coordinate contributes nothing to a
    dot product, so a dim-d embedding interacts through its first d coordinates.
    `nn.Embedding` exports to ONNX as a `Gather` (an `EmbeddingBag` with one
    index per bag exports as a `Loop` that runs many times slower).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, pad_to: int, sparse: bool = True):
        super().__init__()
        if embedding_dim > pad_to:
            raise ValueError(f"embedding_dim {embedding_dim} exceeds pad_to {pad_to}")
        self.num_embeddings = num_embeddings
        self.pad = pad_to - embedding_dim
        self.table = nn.Embedding(num_embeddings, embedding_dim, sparse=sparse)
        # DLRM's initialisation: uniform in +-1/sqrt(rows).
        bound = 1.0 / math.sqrt(num_embeddings)
        nn.init.uniform_(self.table.weight, -bound, bound)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.table(ids % self.num_embeddings)
        return F.pad(out, (0, self.pad)) if self.pad else out


def build_embedding(p: Params) -> nn.Module:
    return HashedEmbedding(p["num_embeddings"], p["embedding_dim"], p["pad_to"])


# --------------------------------------------------------------------------- interactions


class DotInteraction(nn.Module):
    """DLRM's pairwise dot products, without self-interaction.

    dense [B, D], sparse_1..sparse_F [B, D] -> [B, D + (F+1)F/2]: the dense
    vector followed by the strictly lower triangle of the Gram matrix of the
    F+1 vectors.
    """

    def __init__(self, num_sparse: int, dim: int):
        super().__init__()
        n = num_sparse + 1
        rows, cols = torch.tril_indices(n, n, offset=-1)
        # One flat index into the [F+1, F+1] Gram matrix exports as a single Gather.
        # A constant index tensor: a buffer that follows .to(device) but is not saved.
        self.register_buffer("pairs", rows * n + cols, persistent=False)
        self.register_buffer("gram_sources", PairwiseDots.gram_sources(self.pairs, n), persistent=False)

    def forward(self, dense: torch.Tensor, *sparse: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.interact_stacked(dense, torch.stack(sparse, dim=1))
        t = torch.stack((dense,) + sparse, dim=1)  # [B, F+1, D]
        gram = torch.bmm(t, t.transpose(1, 2))  # [B, F+1, F+1]
        return torch.cat([dense, gram.flatten(1)[:, self.pairs]], dim=1)

    def interact_stacked(self, dense: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """The training form: dense [B, D], stacked [B, F, D] (the F embeddings) -> [B, D + (F+1)F/2]."""
        return DenseAndPairwiseDots.apply(dense, stacked, self.pairs, self.gram_sources)


class PairwiseDots(torch.autograd.Function):
    """t [B, n, D], pairs [P] distinct flat indices i*n + j (i != j) -> [B, P]: the dot products t_i . t_j.

    The same numbers as indexing the Gram matrix `bmm(t, t^T)`, with a cheaper
    backward for training. `gram_sources` [n*n] gives each Gram entry's place
    in [0, grad_1, ..., grad_P]: both (i, j) and (j, i) that of their pair, any
    other entry the 0. One gather then builds the symmetric gradient
    G + G^T of the Gram matrix (no zero fill, scatter and transposed add),
    and one `bmm(G + G^T, t)` gives the input's gradient instead of autograd's two.
    """

    @staticmethod
    def gram_sources(pairs: torch.Tensor, n: int) -> torch.Tensor:
        """[n*n]: entry i*n + j's place in [0, grad_1, ..., grad_P], both (i, j) and (j, i) that of their pair."""
        sources = torch.zeros(n * n, dtype=torch.long, device=pairs.device)
        sources[pairs] = sources[(pairs % n) * n + pairs // n] = torch.arange(1, len(pairs) + 1, device=pairs.device)
        return sources

    @staticmethod
    def dots(t: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """t [B, n, D] -> [B, P]: the dot products of the pairs."""
        return torch.bmm(t, t.transpose(1, 2)).flatten(1).index_select(1, pairs)

    @staticmethod
    def input_grad(grad: torch.Tensor, t: torch.Tensor, gram_sources: torch.Tensor) -> torch.Tensor:
        """grad [B, P] (of the dots) -> [B, n, D] (of t): (G + G^T) t, G + G^T gathered from [0, grad]."""
        b, n, _ = t.shape
        sym = torch.cat([grad.new_zeros(b, 1), grad], dim=1).index_select(1, gram_sources).view(b, n, n)
        return torch.bmm(sym, t)

    @staticmethod
    def forward(ctx, t: torch.Tensor, pairs: torch.Tensor, gram_sources: torch.Tensor | None = None) -> torch.Tensor:
        """`gram_sources`: `PairwiseDots.gram_sources(pairs, n)`, derived here where not given."""
        ctx.save_for_backward(t, PairwiseDots.gram_sources(pairs, t.shape[1]) if gram_sources is None else gram_sources)
        return PairwiseDots.dots(t, pairs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        t, gram_sources = ctx.saved_tensors
        return PairwiseDots.input_grad(grad, t, gram_sources), None, None


class DenseAndPairwiseDots(torch.autograd.Function):
    """dense [B, D], stacked [B, F, D], pairs, gram_sources (see `PairwiseDots`) -> [B, D + P]:
    the dense vector, then the pairs' dot products of t = [dense, stacked] [B, F+1, D].

    The dot interaction's training form as one autograd node: what would otherwise be
    a stack, a select and two concatenations in the graph (each with its own backward,
    a zero-filled gradient for the select and an add where the two paths to `dense` meet)
    is one concatenation forward and two views backward.
    """

    @staticmethod
    def forward(ctx, dense, stacked, pairs, gram_sources):
        t = torch.cat([dense.unsqueeze(1), stacked], dim=1)
        ctx.save_for_backward(t, gram_sources)
        return torch.cat([dense, PairwiseDots.dots(t, pairs)], dim=1)

    @staticmethod
    def backward(ctx, grad):
        t, gram_sources = ctx.saved_tensors
        d = t.shape[2]
        grad_t = PairwiseDots.input_grad(grad[:, d:], t, gram_sources)
        return grad_t[:, 0] + grad[:, :d], grad_t[:, 1:], None, None


def build_dot(p: Params) -> nn.Module:
    return DotInteraction(p["num_sparse"], p["dim"])


class CatInteraction(nn.Module):
    """Concatenation: dense [B, D], sparse_1..sparse_F [B, D] -> [B, (F+1) D]."""

    def forward(self, dense: torch.Tensor, *sparse: torch.Tensor) -> torch.Tensor:
        return torch.cat((dense,) + sparse, dim=1)

    def interact_stacked(self, dense: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """The training form: dense [B, D], stacked [B, F, D] (the F embeddings) -> [B, (F+1) D]."""
        return torch.cat([dense, stacked.flatten(1)], dim=1)


def build_cat(p: Params) -> nn.Module:
    return CatInteraction()


# --------------------------------------------------------------------------- example inputs
# Realistic values, never zeros: the profiler times ops on them.


def linear_inputs(p: Params, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randn(b, p["in_features"], generator=g),)


def embedding_inputs(p: Params, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    # Ids spread over the whole table, as real traffic is: never one repeated row.
    return (torch.randint(0, p["num_embeddings"], (b,), generator=g),)


def interaction_inputs(p: Params, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(b, p["dim"], generator=g) for _ in range(p["num_sparse"] + 1))
