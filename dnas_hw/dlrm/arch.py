"""`Arch`: a derived DLRM architecture as plain data, and the ops it is made of.

JSON form (`top_mlp` lists hidden widths; the final 1-logit layer is implicit)::

    {"num_dense": 13, "bottom_mlp": [512, 256, 64, 16], "emb_dims": [16, ...26],
     "emb_rows": [...26], "interaction": "dot", "top_mlp": [512, 256]}

Model rules, used everywhere (builder, supernet, profiler, LUT):

- The bottom MLP maps the dense features to the interaction width
  `D = bottom_mlp[-1]`; every layer has a ReLU, as in DLRM.
- Feature f looks up `id mod emb_rows[f]` in a table of `emb_dims[f]` columns,
  zero-padded to D. So `emb_dims[f] <= D` is required, and a smaller table is a
  hashed one.
- The interaction `interaction_<kind>` (a registered op) takes the dense vector
  and the 26 padded embeddings, all `[B, D]`.
- The top MLP: hidden layers with ReLU, then a linear layer to one logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from dnas_hw.arch import DEFAULT_FAMILY, ArchMethods, mlp_ops
from dnas_hw.errors import UserError
from dnas_hw.ops import INTERACTION_PREFIX, OpCall, interaction_kinds


class ArchError(UserError):
    """An invalid architecture; the message names the field."""


class ArchOps(NamedTuple):
    """The ops an `Arch` is made of, per DLRM part, in execution order."""

    bottom: list[OpCall]
    embeddings: list[OpCall]
    interaction: OpCall
    top: list[OpCall]

    def named(self) -> list[tuple[str, OpCall]]:
        """Every op with its slot name: bottom.0, ..., emb.0, ..., interaction, top.0, ..., top.out."""
        out = [(f"bottom.{i}", c) for i, c in enumerate(self.bottom)]
        out += [(f"emb.{i}", c) for i, c in enumerate(self.embeddings)]
        out.append(("interaction", self.interaction))
        out += [(f"top.{i}", c) for i, c in enumerate(self.top[:-1])]
        out.append(("top.out", self.top[-1]))
        return out


@dataclass(frozen=True)
class Arch(ArchMethods):
    """JSON form, counts, `load` / `save`, `check_data`: `dnas_hw.arch.ArchMethods`."""

    family = DEFAULT_FAMILY
    error = ArchError
    sequence_fields = ("bottom_mlp", "emb_dims", "emb_rows", "top_mlp")

    num_dense: int
    bottom_mlp: tuple[int, ...]
    emb_dims: tuple[int, ...]
    emb_rows: tuple[int, ...]
    interaction: str
    top_mlp: tuple[int, ...]

    def _validate(self) -> None:
        self._positive_int("num_dense", self.num_dense)
        if not self.bottom_mlp:
            raise ArchError("arch field bottom_mlp: needs at least the output width")
        for name in self.sequence_fields:
            for i, v in enumerate(getattr(self, name)):
                self._positive_int(f"{name}[{i}]", v)
        if not self.emb_dims:
            raise ArchError("arch field emb_dims: needs one entry per categorical feature")
        if len(self.emb_rows) != len(self.emb_dims):
            raise ArchError(
                f"arch field emb_rows: {len(self.emb_rows)} entries, but emb_dims has {len(self.emb_dims)}"
            )
        width = self.bottom_mlp[-1]
        for i, d in enumerate(self.emb_dims):
            if d > width:
                raise ArchError(
                    f"arch field emb_dims[{i}]: {d} exceeds the interaction width bottom_mlp[-1] = {width}"
                )
        if self.interaction not in interaction_kinds():
            raise ArchError(f"arch field interaction: {self.interaction!r} is not one of {interaction_kinds()}")

    @property
    def num_sparse(self) -> int:
        return len(self.emb_dims)

    @property
    def interaction_dim(self) -> int:
        return self.bottom_mlp[-1]

    def ops(self) -> ArchOps:
        """The registered ops this architecture is built from (the model builder's plan)."""
        d = self.interaction_dim
        bottom = mlp_ops(self.num_dense, self.bottom_mlp)
        embeddings = [
            OpCall.make("embedding", num_embeddings=r, embedding_dim=e, pad_to=d)
            for r, e in zip(self.emb_rows, self.emb_dims)
        ]
        interaction = OpCall.make(INTERACTION_PREFIX + self.interaction, num_sparse=self.num_sparse, dim=d)
        top = mlp_ops(interaction.output_width(), self.top_mlp)
        top += mlp_ops(top[-1].output_width() if top else interaction.output_width(), [1], activation="none")
        return ArchOps(bottom, embeddings, interaction, top)


def dlrm_kaggle_reference(cardinalities: tuple[int, ...] | list[int], dim: int = 16) -> Arch:
    """The DLRM Kaggle reference configuration (bottom 13-512-256-64-16, top 512-256-1, dot)."""
    return Arch(
        num_dense=13,
        bottom_mlp=(512, 256, 64, dim),
        emb_dims=(dim,) * len(cardinalities),
        emb_rows=tuple(cardinalities),
        interaction="dot",
        top_mlp=(512, 256),
    )
