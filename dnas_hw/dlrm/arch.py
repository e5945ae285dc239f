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

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from dnas_hw.errors import UserError
from dnas_hw.files import read_json, write_json_atomic
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


def mlp_ops(in_width: int, widths: list[int] | tuple[int, ...], activation: str = "relu") -> list[OpCall]:
    """Linear ops for an MLP `in_width -> widths[0] -> ... -> widths[-1]`."""
    ops, prev = [], in_width
    for w in widths:
        ops.append(OpCall.make("linear", in_features=prev, out_features=w, activation=activation))
        prev = w
    return ops


@dataclass(frozen=True)
class Arch:
    num_dense: int
    bottom_mlp: tuple[int, ...]
    emb_dims: tuple[int, ...]
    emb_rows: tuple[int, ...]
    interaction: str
    top_mlp: tuple[int, ...]

    def __post_init__(self) -> None:
        # Normalise lists to tuples so an Arch is hashable and compares by value.
        for name in ("bottom_mlp", "emb_dims", "emb_rows", "top_mlp"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        def positive_int(name: str, v: Any) -> None:
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ArchError(f"arch field {name}: expected a positive integer, got {v!r}")

        positive_int("num_dense", self.num_dense)
        if not self.bottom_mlp:
            raise ArchError("arch field bottom_mlp: needs at least the output width")
        for name in ("bottom_mlp", "emb_dims", "emb_rows", "top_mlp"):
            for i, v in enumerate(getattr(self, name)):
                positive_int(f"{name}[{i}]", v)
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

    def num_params(self) -> int:
        return sum(c.num_params() for _, c in self.ops().named())

    def embedding_bytes(self, bytes_per_value: int = 4) -> int:
        return sum(r * e for r, e in zip(self.emb_rows, self.emb_dims)) * bytes_per_value

    def flops(self, batch_size: int) -> int:
        return sum(c.flops(batch_size) for _, c in self.ops().named())

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> "Arch":
        if not isinstance(d, dict):
            raise ArchError(f"arch: expected a JSON object, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ArchError(f"arch: unknown field(s) {unknown}; expected {names}")
        missing = [n for n in names if n not in d]
        if missing:
            raise ArchError(f"arch: missing field(s) {missing}")
        for name in ("bottom_mlp", "emb_dims", "emb_rows", "top_mlp"):
            if not isinstance(d[name], list):
                raise ArchError(f"arch field {name}: expected a list, got {d[name]!r}")
        if not isinstance(d["interaction"], str):
            raise ArchError(f"arch field interaction: expected a string, got {d['interaction']!r}")
        return cls(**{n: d[n] for n in names})

    @classmethod
    def load(cls, path) -> "Arch":
        try:
            return cls.from_dict(read_json(path, "arch file"))
        except ArchError as e:
            raise ArchError(f"{path}: {e}") from None

    def save(self, path) -> None:
        write_json_atomic(path, self.to_dict())

    def check_data(self, num_dense: int, num_sparse: int, where: str = "data") -> None:
        """Refuse an arch whose feature counts differ from the data's."""
        if self.num_dense != num_dense:
            raise ArchError(f"arch has num_dense = {self.num_dense}, but {where} has {num_dense} dense features")
        if self.num_sparse != num_sparse:
            raise ArchError(
                f"arch has {self.num_sparse} embedding tables, but {where} has {num_sparse} categorical features"
            )


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
