"""The op registry: every candidate op of every search space, registered once.

An op is a named module factory plus what the rest of the system needs to know
about it: its shape parameters, example inputs for profiling and export, its
output width, FLOPs and parameter count. The model builder, the supernet, the
profiler and the LUT all go through this registry, so a LUT key can never drift
from the op that is built.

A concrete op is an `OpCall`: an op name with its shape parameters. Its LUT key
at a batch size is `(op, canonical JSON of params, batch_size)`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn
import torch.nn.functional as F

Params = Mapping[str, Any]


@dataclass(frozen=True)
class OpDef:
    """What the registry knows about one op.

    build(params) -> nn.Module
    example_inputs(params, batch_size, generator) -> tuple of tensors, realistic (never zeros)
    output_width(params) -> int, the width of the op's output per sample
    flops(params, batch_size) -> int, arithmetic FLOPs (a multiply-add counts 2)
    num_params(params) -> int, trainable parameters
    """

    name: str
    param_names: tuple[str, ...]
    build: Callable[[Params], nn.Module]
    example_inputs: Callable[[Params, int, torch.Generator], tuple[torch.Tensor, ...]]
    output_width: Callable[[Params], int]
    flops: Callable[[Params, int], int]
    num_params: Callable[[Params], int]


_REGISTRY: dict[str, OpDef] = {}


def register_op(
    name: str,
    *,
    params: tuple[str, ...],
    example_inputs: Callable[[Params, int, torch.Generator], tuple[torch.Tensor, ...]],
    output_width: Callable[[Params], int],
    flops: Callable[[Params, int], int],
    num_params: Callable[[Params], int],
) -> Callable[[Callable[[Params], nn.Module]], Callable[[Params], nn.Module]]:
    """Decorator registering a module factory `build(params) -> nn.Module` under `name`.

    A second registration of the same name raises: names are LUT keys.
    """

    def decorate(build: Callable[[Params], nn.Module]) -> Callable[[Params], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"op {name!r} is already registered")
        _REGISTRY[name] = OpDef(name, tuple(params), build, example_inputs, output_width, flops, num_params)
        return build

    return decorate


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; registered: {sorted(_REGISTRY)}") from None


def registered_ops() -> list[str]:
    return sorted(_REGISTRY)


def canonical_json(params: Params) -> str:
    """The one spelling of a parameter set: sorted keys, no spaces."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class OpCall:
    """One concrete op: a registered name and its shape parameters (hashable)."""

    op: str
    params_json: str

    @classmethod
    def make(cls, op: str, **params: Any) -> "OpCall":
        spec = get_op(op)
        if set(params) != set(spec.param_names):
            raise ValueError(f"op {op!r} takes params {sorted(spec.param_names)}, got {sorted(params)}")
        return cls(op, canonical_json(params))

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @property
    def spec(self) -> OpDef:
        return get_op(self.op)

    def key(self, batch_size: int) -> tuple[str, str, int]:
        """The LUT key of this op at a batch size."""
        return (self.op, self.params_json, int(batch_size))

    def build(self) -> nn.Module:
        return self.spec.build(self.params)

    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return self.spec.example_inputs(self.params, batch_size, generator)

    def output_width(self) -> int:
        return self.spec.output_width(self.params)

    def flops(self, batch_size: int) -> int:
        return self.spec.flops(self.params, batch_size)

    def num_params(self) -> int:
        return self.spec.num_params(self.params)

    def __str__(self) -> str:
        return f"{self.op}{self.params_json}"


# --------------------------------------------------------------------------- linear


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "none": nn.Identity}


class LinearAct(nn.Sequential):
    """[B, in_features] -> [B, out_features]: a linear layer and its activation."""

    def __init__(self, in_features: int, out_features: int, activation: str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        super().__init__(nn.Linear(in_features, out_features), ACTIVATIONS[activation]())


@register_op(
    "linear",
    params=("in_features", "out_features", "activation"),
    example_inputs=lambda p, b, g: (torch.randn(b, p["in_features"], generator=g),),
    output_width=lambda p: p["out_features"],
    flops=lambda p, b: 2 * b * p["in_features"] * p["out_features"],
    num_params=lambda p: (p["in_features"] + 1) * p["out_features"],
)
def _build_linear(p: Params) -> nn.Module:
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


@register_op(
    "embedding",
    params=("num_embeddings", "embedding_dim", "pad_to"),
    # Ids spread over the whole table, as real traffic is: never one repeated row.
    example_inputs=lambda p, b, g: (torch.randint(0, p["num_embeddings"], (b,), generator=g),),
    output_width=lambda p: p["pad_to"],
    flops=lambda p, b: 0,
    num_params=lambda p: p["num_embeddings"] * p["embedding_dim"],
)
def _build_embedding(p: Params) -> nn.Module:
    return HashedEmbedding(p["num_embeddings"], p["embedding_dim"], p["pad_to"])


# --------------------------------------------------------------------------- interactions


def _interaction_inputs(p: Params, b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(b, p["dim"], generator=g) for _ in range(p["num_sparse"] + 1))


def _num_pairs(p: Params) -> int:
    n = p["num_sparse"] + 1
    return n * (n - 1) // 2


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


@register_op(
    "interaction_dot",
    params=("num_sparse", "dim"),
    example_inputs=_interaction_inputs,
    output_width=lambda p: p["dim"] + _num_pairs(p),
    flops=lambda p, b: 2 * b * (p["num_sparse"] + 1) ** 2 * p["dim"],
    num_params=lambda p: 0,
)
def _build_dot(p: Params) -> nn.Module:
    return DotInteraction(p["num_sparse"], p["dim"])


class CatInteraction(nn.Module):
    """Concatenation: dense [B, D], sparse_1..sparse_F [B, D] -> [B, (F+1) D]."""

    def forward(self, dense: torch.Tensor, *sparse: torch.Tensor) -> torch.Tensor:
        return torch.cat((dense,) + sparse, dim=1)

    def interact_stacked(self, dense: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """The training form: dense [B, D], stacked [B, F, D] (the F embeddings) -> [B, (F+1) D]."""
        return torch.cat([dense, stacked.flatten(1)], dim=1)


@register_op(
    "interaction_cat",
    params=("num_sparse", "dim"),
    example_inputs=_interaction_inputs,
    output_width=lambda p: (p["num_sparse"] + 1) * p["dim"],
    flops=lambda p, b: 0,
    num_params=lambda p: 0,
)
def _build_cat(p: Params) -> nn.Module:
    return CatInteraction()


INTERACTION_PREFIX = "interaction_"


def interaction_kinds() -> list[str]:
    """Interaction kinds an `Arch` may name: every registered `interaction_<kind>` op."""
    return sorted(n[len(INTERACTION_PREFIX):] for n in _REGISTRY if n.startswith(INTERACTION_PREFIX))
