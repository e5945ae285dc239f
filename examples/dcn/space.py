"""`DCNSpace`: the DCN-v2 search space as data.

Slots (choices in brackets):

- `emb_dim`: the embedding dim of every feature [emb_dims]
- `emb_rows.{f}`: feature f's table size [ceil(fraction * cardinality_f) for each fraction]
- `cross.{i}`, i < cross_layers: the rank of cross layer i [cross_ranks, "skip"]:
  skipped layers make the number of cross layers a searched choice too
- `deep.{i}`, i < deep_layers: a hidden width of the deep MLP [deep_widths, "skip"]

One dim for all features keeps the cross width W = num_dense + F * emb_dim to
len(emb_dims) values: the cross keys are |emb_dims| x |cross_ranks|, and the
deep MLP's input widths stay few. Built-in spaces `dcn-tiny` and `dcn-kaggle`;
TOML files with `family = "dcn"` and these field names (`cardinalities` optional).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dnas_hw.arch import mlp_ops
from dnas_hw.ops import OpCall
from dnas_hw.space import KAGGLE_CARDINALITIES, KAGGLE_HASH_CAP, SKIP, Choice, Slot, SpaceError, hashed_rows, mlp_input_widths

from examples.dcn.arch import FAMILY, DCNArch, cross_width


@dataclass(frozen=True)
class DCNSpace:
    name: str
    cardinalities: tuple[int, ...]  # one per categorical feature
    num_dense: int = 13
    emb_dims: tuple[int, ...] = (4, 8, 16)
    emb_row_fractions: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
    cross_layers: int = 3
    # Well below the cross widths (117..429 at these dims): the point of the low-rank form.
    cross_ranks: tuple[int, ...] = (16, 32, 64)
    deep_layers: int = 3
    deep_widths: tuple[int, ...] = (256, 512, 1024)
    # Whether cross and deep layers may be skipped (searching depth as well).
    skip: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self._validate()

    def _validate(self) -> None:
        def positive_ints(key: str) -> None:
            values = getattr(self, key)
            if not isinstance(values, tuple) or not values:
                raise SpaceError(f"space {self.name}: {key} must be a non-empty list")
            if any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
                raise SpaceError(f"space {self.name}: {key} must hold positive integers, got {list(values)}")

        for key in ("cardinalities", "emb_dims", "cross_ranks", "deep_widths"):
            positive_ints(key)
        for key in ("num_dense", "cross_layers", "deep_layers"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "num_dense" else 0):
                raise SpaceError(f"space {self.name}: {key} must be a non-negative integer, got {v!r}")
        if not self.emb_row_fractions or any(
            not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q <= 1 for q in self.emb_row_fractions
        ):
            raise SpaceError(f"space {self.name}: emb_row_fractions must lie in (0, 1], got {list(self.emb_row_fractions)}")
        if not isinstance(self.skip, bool):
            raise SpaceError(f"space {self.name}: skip must be true or false")
        narrowest = min(self.widths())
        if max(self.cross_ranks) > narrowest:
            raise SpaceError(
                f"space {self.name}: cross_ranks up to {max(self.cross_ranks)} exceed the narrowest cross width {narrowest}"
            )

    # ------------------------------------------------------------------ basics

    @property
    def num_sparse(self) -> int:
        return len(self.cardinalities)

    def widths(self) -> tuple[int, ...]:
        """The cross widths W, one per embedding dim."""
        return tuple(cross_width(self.num_dense, self.num_sparse, e) for e in self.emb_dims)

    def bind(self, cardinalities: tuple[int, ...] | list[int]) -> "DCNSpace":
        """The same space over a data set with these per-feature cardinalities."""
        return replace(self, cardinalities=tuple(int(c) for c in cardinalities))

    def rows_choices(self, feature: int) -> tuple[int, ...]:
        return hashed_rows(self.cardinalities[feature], self.emb_row_fractions)

    def slots(self) -> list[Slot]:
        extra = (SKIP,) if self.skip else ()
        slots = [Slot("emb_dim", self.emb_dims)]
        slots += [Slot(f"emb_rows.{f}", self.rows_choices(f)) for f in range(self.num_sparse)]
        slots += [Slot(f"cross.{i}", self.cross_ranks + extra) for i in range(self.cross_layers)]
        slots += [Slot(f"deep.{i}", self.deep_widths + extra) for i in range(self.deep_layers)]
        return slots

    def fingerprint(self) -> str:
        """A short hash of the family and everything that decides the space's op keys."""
        blob = json.dumps({"family": FAMILY, **asdict(self)}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ archs

    def arch(self, choices: dict[str, Choice]) -> DCNArch:
        """The architecture for one choice per slot (`{slot: choice}`)."""
        names = [s.name for s in self.slots()]
        missing = [n for n in names if n not in choices]
        unknown = [n for n in choices if n not in names]
        if missing or unknown:
            raise SpaceError(f"space {self.name}: choices missing {missing[:5]} / unknown {unknown[:5]}")

        def kept(prefix: str, layers: int) -> tuple[int, ...]:
            return tuple(choices[f"{prefix}.{i}"] for i in range(layers) if choices[f"{prefix}.{i}"] != SKIP)

        return DCNArch(
            num_dense=self.num_dense,
            emb_dim=choices["emb_dim"],
            emb_rows=tuple(choices[f"emb_rows.{f}"] for f in range(self.num_sparse)),
            cross_ranks=kept("cross", self.cross_layers),
            deep_mlp=kept("deep", self.deep_layers),
        )

    def sample_choices(self, rng: random.Random) -> dict[str, Choice]:
        return {s.name: rng.choice(s.choices) for s in self.slots()}

    def sample(self, rng: random.Random) -> DCNArch:
        return self.arch(self.sample_choices(rng))

    def largest(self) -> DCNArch:
        """The most expensive arch: every slot at its largest choice (cost grows with each), no skips."""
        return self.arch({s.name: max(c for c in s.choices if c != SKIP) for s in self.slots()})

    def smallest(self) -> DCNArch:
        """The cheapest arch: skipped (or smallest) layers, smallest dim and tables."""
        return self.arch({s.name: SKIP if SKIP in s.choices else min(s.choices) for s in self.slots()})

    # ------------------------------------------------------------------ ops

    def op_calls(self) -> set[OpCall]:
        """Every op (with its shape) that any arch of this space is built from."""
        ops: set[OpCall] = set()
        for e in self.emb_dims:
            for f in range(self.num_sparse):
                ops |= {OpCall.make("embedding", num_embeddings=r, embedding_dim=e, pad_to=e) for r in self.rows_choices(f)}
            ops.add(OpCall.make("dcn_stack", num_dense=self.num_dense, num_sparse=self.num_sparse, dim=e))
        ops |= {OpCall.make("cross_lowrank", width=w, rank=r) for w in self.widths() for r in self.cross_ranks}
        deep_in = mlp_input_widths(set(self.widths()), self.deep_widths, self.deep_layers, self.skip)
        for i in range(self.deep_layers):
            ops |= {mlp_ops(w_in, [w])[0] for w_in in deep_in[i] for w in self.deep_widths}
        ops |= {mlp_ops(w_in, [1], activation="none")[0] for w_in in deep_in[-1]}
        return ops

    # ------------------------------------------------------------------ files

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str) -> "DCNSpace":
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpaceError(f"space {name}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(name=name, **{"cardinalities": BUILTIN["dcn-kaggle"].cardinalities, **d})


BUILTIN: dict[str, DCNSpace] = {
    # Kaggle's features hashed to at most 1M rows per table, as dlrm-kaggle.
    "dcn-kaggle": DCNSpace(name="dcn-kaggle", cardinalities=tuple(min(c, KAGGLE_HASH_CAP) for c in KAGGLE_CARDINALITIES)),
    # Small enough that profiling and training it take seconds (tests, smoke runs).
    "dcn-tiny": DCNSpace(
        name="dcn-tiny",
        cardinalities=tuple(10 + 7 * f for f in range(26)),
        emb_dims=(2, 4),
        emb_row_fractions=(1.0, 0.5),
        cross_layers=2,
        cross_ranks=(2, 4),
        deep_layers=2,
        deep_widths=(8, 16),
    ),
}
