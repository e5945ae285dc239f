"""`DCNArch`: a DCN-v2 architecture (stacked: cross network, then deep network) as plain data.

JSON form (`deep_mlp` lists hidden widths; the final 1-logit layer is implicit)::

    {"family": "dcn", "num_dense": 13, "emb_dim": 16, "emb_rows": [...26],
     "cross_ranks": [64, 64, 64], "deep_mlp": [512, 256]}

Model rules (builder, space and LUT all follow them):

- every feature f looks up `id mod emb_rows[f]` in a table of `emb_dim` columns
  (one dim for all features, so x0's width takes one value per dim choice and
  the cross and deep shapes stay few);
- x0 = [dense, emb_1, ..., emb_F], width W = num_dense + F * emb_dim;
- one low-rank cross layer per entry of `cross_ranks` (none: x0 goes straight on);
- the deep MLP (ReLU hidden layers) on the cross output, then a linear layer to one logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from dnas_hw.arch import ArchMethods, mlp_ops
from dnas_hw.errors import UserError
from dnas_hw.ops import OpCall

FAMILY = "dcn"


class DCNArchError(UserError):
    """An invalid DCN architecture; the message names the field."""


class DCNOps(NamedTuple):
    """The ops a `DCNArch` is made of, in execution order."""

    embeddings: list[OpCall]
    stack: OpCall
    cross: list[OpCall]
    deep: list[OpCall]  # hidden layers, then the logit layer

    def named(self) -> list[tuple[str, OpCall]]:
        """Every op with its slot name: emb.0, ..., stack, cross.0, ..., deep.0, ..., deep.out."""
        out = [(f"emb.{i}", c) for i, c in enumerate(self.embeddings)]
        out.append(("stack", self.stack))
        out += [(f"cross.{i}", c) for i, c in enumerate(self.cross)]
        out += [(f"deep.{i}", c) for i, c in enumerate(self.deep[:-1])]
        out.append(("deep.out", self.deep[-1]))
        return out


def cross_width(num_dense: int, num_sparse: int, emb_dim: int) -> int:
    """The width W of x0 and of every cross layer."""
    return num_dense + num_sparse * emb_dim


@dataclass(frozen=True)
class DCNArch(ArchMethods):
    """JSON form, counts, `load` / `save`, `check_data`: `dnas_hw.arch.ArchMethods`."""

    family = FAMILY
    error = DCNArchError
    sequence_fields = ("emb_rows", "cross_ranks", "deep_mlp")

    num_dense: int
    emb_dim: int
    emb_rows: tuple[int, ...]
    cross_ranks: tuple[int, ...]
    deep_mlp: tuple[int, ...]

    def _validate(self) -> None:
        self._positive_int("num_dense", self.num_dense)
        self._positive_int("emb_dim", self.emb_dim)
        if not self.emb_rows:
            raise DCNArchError("arch field emb_rows: needs one entry per categorical feature")
        for name in self.sequence_fields:
            for i, v in enumerate(getattr(self, name)):
                self._positive_int(f"{name}[{i}]", v)
        for i, r in enumerate(self.cross_ranks):
            if r > self.width:
                raise DCNArchError(f"arch field cross_ranks[{i}]: rank {r} exceeds the cross width {self.width}")

    @property
    def num_sparse(self) -> int:
        return len(self.emb_rows)

    @property
    def width(self) -> int:
        return cross_width(self.num_dense, self.num_sparse, self.emb_dim)

    def ops(self) -> DCNOps:
        """The registered ops this architecture is built from (the model builder's plan)."""
        e = self.emb_dim
        embeddings = [OpCall.make("embedding", num_embeddings=r, embedding_dim=e, pad_to=e) for r in self.emb_rows]
        stack = OpCall.make("dcn_stack", num_dense=self.num_dense, num_sparse=self.num_sparse, dim=e)
        cross = [OpCall.make("cross_lowrank", width=self.width, rank=r) for r in self.cross_ranks]
        deep = mlp_ops(self.width, self.deep_mlp)
        deep += mlp_ops(self.deep_mlp[-1] if self.deep_mlp else self.width, [1], activation="none")
        return DCNOps(embeddings, stack, cross, deep)
