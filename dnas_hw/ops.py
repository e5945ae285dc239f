"""The op registry: every candidate op of every search space, registered once.

An op is a named module factory plus what the rest of the system needs to know
about it: its shape parameters, example inputs for profiling and export, its
output width, FLOPs and parameter count. The model builder, the supernet, the
profiler and the LUT all go through this registry, so a LUT key can never drift
from the op that is built.

A concrete op is an `OpCall`: an op name with its shape parameters. Its LUT key
at a batch size is `(op, canonical JSON of params, batch_size)`.

The registry itself needs no torch: an op's module and example inputs are
made by functions it calls only when an op is built or fed. The built-in ops'
modules live in `dnas_hw.op_modules` and are named here by module and function
(`_Deferred`), so that reading a LUT, listing a space's keys or starting the
CLI does not load torch.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch
    from torch import nn

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
        _add(OpDef(name, tuple(params), build, example_inputs, output_width, flops, num_params))
        return build

    return decorate


def _add(spec: OpDef) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"op {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


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


# --------------------------------------------------------------------------- built-in ops


@dataclass(frozen=True)
class _Deferred:
    """A function named by module and name, imported when first called: `dnas_hw.op_modules` imports torch."""

    name: str
    module: str = "dnas_hw.op_modules"

    def __call__(self, *args: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args)


def _num_pairs(p: Params) -> int:
    n = p["num_sparse"] + 1
    return n * (n - 1) // 2


# A linear layer and its activation: [B, in_features] -> [B, out_features].
_add(OpDef(
    "linear",
    ("in_features", "out_features", "activation"),
    build=_Deferred("build_linear"),
    example_inputs=_Deferred("linear_inputs"),
    output_width=lambda p: p["out_features"],
    flops=lambda p, b: 2 * b * p["in_features"] * p["out_features"],
    num_params=lambda p: (p["in_features"] + 1) * p["out_features"],
))

# A hashed lookup (ids mod num_embeddings) zero-padded to pad_to: ids [B] -> [B, pad_to].
_add(OpDef(
    "embedding",
    ("num_embeddings", "embedding_dim", "pad_to"),
    build=_Deferred("build_embedding"),
    example_inputs=_Deferred("embedding_inputs"),
    output_width=lambda p: p["pad_to"],
    flops=lambda p, b: 0,
    num_params=lambda p: p["num_embeddings"] * p["embedding_dim"],
))

# DLRM's pairwise dot products without self-interaction: [B, D] x (F+1) -> [B, D + (F+1)F/2].
_add(OpDef(
    "interaction_dot",
    ("num_sparse", "dim"),
    build=_Deferred("build_dot"),
    example_inputs=_Deferred("interaction_inputs"),
    output_width=lambda p: p["dim"] + _num_pairs(p),
    flops=lambda p, b: 2 * b * (p["num_sparse"] + 1) ** 2 * p["dim"],
    num_params=lambda p: 0,
))

# Concatenation: [B, D] x (F+1) -> [B, (F+1) D].
_add(OpDef(
    "interaction_cat",
    ("num_sparse", "dim"),
    build=_Deferred("build_cat"),
    example_inputs=_Deferred("interaction_inputs"),
    output_width=lambda p: (p["num_sparse"] + 1) * p["dim"],
    flops=lambda p, b: 0,
    num_params=lambda p: 0,
))


INTERACTION_PREFIX = "interaction_"


def interaction_kinds() -> list[str]:
    """Interaction kinds an `Arch` may name: every registered `interaction_<kind>` op."""
    return sorted(n[len(INTERACTION_PREFIX):] for n in _REGISTRY if n.startswith(INTERACTION_PREFIX))
