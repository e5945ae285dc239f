"""Search spaces as data: which choices each slot offers, and every op they can produce.

A DLRM space has these slots (choices in brackets):

- `bottom.{i}`, i < bottom_layers: the width of the bottom MLP's i-th hidden layer [bottom_widths]
- `bottom_depth`: how many of those layers the arch keeps [0..bottom_layers] (elastic depth)
- `emb_dim.{f}`: feature f's embedding dim [emb_dims], capped at the interaction width
- `emb_rows.{f}`: feature f's table size [ceil(fraction * cardinality_f) for each fraction]
- `interaction`: [interactions]
- `interaction_dim`: the interaction width D [interaction_dims]
- `top.{i}`, `top_depth`: as for the bottom MLP, over top_widths and top_layers

Depth is elastic: an arch keeps the *first* k layers of an MLP. So every
hidden layer always reads the same producer (layer i reads layer i-1's
output, the top MLP's first layer always reads the interaction), which is
what lets the supernet share one weight per layer among all archs; a skip
in the middle would make a layer read, through the same weights, another
layer's output. Widths of layers beyond the depth are ignored.

The bottom MLP ends in a layer to D, and every embedding is zero-padded to D
(a padded coordinate adds nothing to a dot product). A feature whose dim
choice exceeds D gets D. The top MLP's input width is then a function of
(interaction, D) alone, a handful of values, so the number of distinct op
shapes, and with it the cost of profiling, stays small.

The DLRM Kaggle reference config (`dnas_hw.arch.dlrm_kaggle_reference`) is an
arch of `dlrm-kaggle` bound to any data: bottom 512-256-64, D 16, dims 16,
full tables, dot, top 512-256.

Built-in spaces by name (`dlrm-kaggle`, `dlrm-tiny`); user spaces as TOML files
with the same field names (`cardinalities` optional). Unknown keys and bad
values are errors that name the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

from dnas_hw.arch import Arch, mlp_ops
from dnas_hw.data.folder import MAX_CARDINALITY
from dnas_hw.family import SpaceError, load_space, read_space_toml
from dnas_hw.ops import INTERACTION_PREFIX, OpCall, interaction_kinds

SKIP = "skip"
Choice = Union[int, str]

# Per-feature cardinalities of Criteo Kaggle `train.txt`, no cap.
KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
# dlrm-kaggle's own default binding: Kaggle hashed to at most 1M rows per table (DLRM's
# --max-ind-range practice), so the largest candidate table (1M x 64 fp32, 256 MB) can be
# profiled and exported without ONNX external data. Bind to real data with --data.
KAGGLE_HASH_CAP = 1_000_000


# What a space may ask for. Beyond these the profile would not finish (keys grow with layers x widths
# x features) or a single op would not fit in memory; the built-in spaces are far inside.
MAX_WIDTH = 65536  # a hidden width, an embedding dim, num_dense
MAX_LAYERS = 16
MAX_CHOICES = 64  # entries of each list of choices
MAX_FEATURES = 1024  # categorical features (cardinalities)


def hashed_rows(cardinality: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Distinct table sizes `ceil(fraction * cardinality)`, largest first (fractions can coincide)."""
    return tuple(sorted({max(1, math.ceil(cardinality * q)) for q in fractions}, reverse=True))


def mlp_input_widths(start_widths: set[int], widths: tuple[int, ...], layers: int, skip: bool) -> list[set[int]]:
    """Possible input widths of each of `layers` hidden layers, and (last entry) of the layer after them.

    A hidden layer outputs one of `widths`, or, when it may be skipped, passes its input on.
    """
    possible = [set(start_widths)]
    for _ in range(layers):
        possible.append(set(widths) | (possible[-1] if skip else set()))
    return possible


def elastic_input_widths(start_widths: set[int], widths: tuple[int, ...], depths: tuple[int, ...]) -> list[set[int]]:
    """Possible input widths of each hidden layer of an elastic-depth MLP, and (last entry) of the
    closing layer: hidden layer 0 reads the start, layer i > 0 a width, the closing layer whichever
    the chosen depth leaves (the start at depth 0)."""
    layers = max(depths)
    possible = [set(start_widths)] + [set(widths) for _ in range(1, layers)]
    closing = (set(start_widths) if 0 in depths else set()) | (set(widths) if any(depths) else set())
    return possible + [closing]


@dataclass(frozen=True)
class Slot:
    name: str
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    cardinalities: tuple[int, ...]  # one per categorical feature
    num_dense: int = 13
    # 64 makes the reference's bottom MLP (512-256-64) a candidate.
    bottom_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    bottom_layers: int = 3
    top_widths: tuple[int, ...] = (128, 256, 512, 1024)
    top_layers: int = 3
    emb_dims: tuple[int, ...] = (4, 8, 16, 32, 64)
    emb_row_fractions: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
    interactions: tuple[str, ...] = ("dot", "cat")
    # The interaction width D. A wide D lets the important features keep long
    # embeddings but widens every padded vector, the dot products and cat's output;
    # DLRM's Kaggle config uses 16.
    interaction_dims: tuple[int, ...] = (16, 32, 64)
    # Whether depth is searched (elastic: the first k layers, k = 0..layers) or fixed at all layers.
    elastic_depth: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        self._validate()

    def _validate(self) -> None:
        def ints(key: str, values: Any) -> None:
            if not isinstance(values, tuple) or not values:
                raise SpaceError(f"space {self.name}: {key} must be a non-empty list")
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                    raise SpaceError(f"space {self.name}: {key} must hold positive integers, got {v!r}")

        def at_most(key: str, values: tuple, limit: int, what: str = "") -> None:
            if len(values) > (MAX_FEATURES if key == "cardinalities" else MAX_CHOICES):
                raise SpaceError(f"space {self.name}: {key} has {len(values):,} entries, more than a space may ask")
            if max(values) > limit:
                raise SpaceError(f"space {self.name}: {key} holds {max(values):,}, above the limit {limit:,}{what}")

        ints("cardinalities", self.cardinalities)
        ints("bottom_widths", self.bottom_widths)
        ints("top_widths", self.top_widths)
        ints("emb_dims", self.emb_dims)
        ints("interaction_dims", self.interaction_dims)
        at_most("cardinalities", self.cardinalities, MAX_CARDINALITY, " (ids are stored as int32)")
        for key in ("bottom_widths", "top_widths", "emb_dims", "interaction_dims"):
            at_most(key, getattr(self, key), MAX_WIDTH)
        for key in ("num_dense", "bottom_layers", "top_layers"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "num_dense" else 0):
                raise SpaceError(f"space {self.name}: {key} must be a non-negative integer, got {v!r}")
            limit = MAX_WIDTH if key == "num_dense" else MAX_LAYERS
            if v > limit:
                raise SpaceError(f"space {self.name}: {key} is {v:,}, above the limit {limit:,}")
        if not self.emb_row_fractions or len(self.emb_row_fractions) > MAX_CHOICES or any(
            not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q <= 1 for q in self.emb_row_fractions
        ):
            raise SpaceError(f"space {self.name}: emb_row_fractions must lie in (0, 1], got {self.emb_row_fractions}")
        unknown = [k for k in self.interactions if k not in interaction_kinds()]
        if not self.interactions or unknown:
            raise SpaceError(f"space {self.name}: interactions {unknown or '[]'} not among {interaction_kinds()}")
        if not isinstance(self.elastic_depth, bool):
            raise SpaceError(f"space {self.name}: elastic_depth must be true or false")

    # ------------------------------------------------------------------ basics

    @property
    def num_sparse(self) -> int:
        return len(self.cardinalities)

    def bind(self, cardinalities: tuple[int, ...] | list[int]) -> "SearchSpace":
        """The same space over a data set with these per-feature cardinalities."""
        return replace(self, cardinalities=tuple(int(c) for c in cardinalities))

    def rows_choices(self, feature: int) -> tuple[int, ...]:
        """Distinct table sizes for a feature, largest first (fractions can coincide)."""
        return hashed_rows(self.cardinalities[feature], self.emb_row_fractions)

    def depths(self, layers: int) -> tuple[int, ...]:
        """The depth choices of an MLP of `layers` hidden layers."""
        return tuple(range(layers + 1)) if self.elastic_depth else (layers,)

    def slots(self) -> list[Slot]:
        slots = [Slot(f"bottom.{i}", self.bottom_widths) for i in range(self.bottom_layers)]
        slots.append(Slot("bottom_depth", self.depths(self.bottom_layers)))
        slots += [Slot(f"emb_dim.{f}", self.emb_dims) for f in range(self.num_sparse)]
        slots += [Slot(f"emb_rows.{f}", self.rows_choices(f)) for f in range(self.num_sparse)]
        slots.append(Slot("interaction", self.interactions))
        slots.append(Slot("interaction_dim", self.interaction_dims))
        slots += [Slot(f"top.{i}", self.top_widths) for i in range(self.top_layers)]
        slots.append(Slot("top_depth", self.depths(self.top_layers)))
        return slots

    def fingerprint(self) -> str:
        """A short hash of everything that decides the space's op keys."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ archs

    def arch(self, choices: dict[str, Choice]) -> Arch:
        """The architecture for one choice per slot (`{slot: choice}`)."""
        names = [s.name for s in self.slots()]
        missing = [n for n in names if n not in choices]
        unknown = [n for n in choices if n not in names]
        if missing or unknown:
            raise SpaceError(f"space {self.name}: choices missing {missing[:5]} / unknown {unknown[:5]}")

        def widths(prefix: str) -> tuple[int, ...]:
            return tuple(choices[f"{prefix}.{i}"] for i in range(choices[f"{prefix}_depth"]))

        d = choices["interaction_dim"]
        return Arch(
            num_dense=self.num_dense,
            bottom_mlp=widths("bottom") + (d,),
            emb_dims=tuple(min(choices[f"emb_dim.{f}"], d) for f in range(self.num_sparse)),
            emb_rows=tuple(choices[f"emb_rows.{f}"] for f in range(self.num_sparse)),
            interaction=choices["interaction"],
            top_mlp=widths("top"),
        )

    def choices_of(self, arch: Arch) -> dict[str, Choice]:
        """`{slot: choice}` whose `arch()` is `arch`; a `SpaceError` naming the first part that is not a
        choice of this space. Layers beyond the depth take their narrowest width."""
        def fail(what: str) -> SpaceError:
            return SpaceError(f"space {self.name}: the arch's {what} is not a choice of this space")

        if (arch.num_dense, arch.num_sparse) != (self.num_dense, self.num_sparse):
            raise fail("feature counts")
        d = arch.interaction_dim
        if d not in self.interaction_dims:
            raise fail(f"interaction width {d}")
        if arch.interaction not in self.interactions:
            raise fail(f"interaction {arch.interaction!r}")
        choices: dict[str, Choice] = {"interaction": arch.interaction, "interaction_dim": d}
        for prefix, hidden, widths, layers in (("bottom", arch.bottom_mlp[:-1], self.bottom_widths, self.bottom_layers),
                                               ("top", arch.top_mlp, self.top_widths, self.top_layers)):
            if len(hidden) not in self.depths(layers) or any(w not in widths for w in hidden):
                raise fail(f"{prefix} MLP {list(hidden)}")
            choices[f"{prefix}_depth"] = len(hidden)
            choices.update({f"{prefix}.{i}": hidden[i] if i < len(hidden) else min(widths) for i in range(layers)})
        for f, (dim, rows) in enumerate(zip(arch.emb_dims, arch.emb_rows)):
            # A dim below D is its own choice; D itself is reached by any choice >= D.
            dims = [e for e in self.emb_dims if e == dim or (dim == d and e >= d)]
            if not dims:
                raise fail(f"emb_dims[{f}] = {dim}")
            if rows not in self.rows_choices(f):
                raise fail(f"emb_rows[{f}] = {rows}")
            choices[f"emb_dim.{f}"], choices[f"emb_rows.{f}"] = min(dims), rows
        return {s.name: choices[s.name] for s in self.slots()}

    def sample_choices(self, rng: random.Random) -> dict[str, Choice]:
        return {s.name: rng.choice(s.choices) for s in self.slots()}

    def sample(self, rng: random.Random) -> Arch:
        return self.arch(self.sample_choices(rng))

    def largest_choices(self) -> dict[str, Choice]:
        """The most expensive arch's choices: deepest and widest layers, largest tables and dims, the
        widest interaction, its costliest kind."""
        rest = {s.name: max(s.choices) for s in self.slots() if s.name != "interaction"}
        return max(self._with_each_interaction(rest), key=lambda c: self._cost(self.arch(c)))

    def smallest_choices(self) -> dict[str, Choice]:
        """The cheapest arch's choices: shallowest and narrowest layers, smallest tables and dims, the
        narrowest interaction, its cheapest kind."""
        rest = {s.name: min(s.choices) for s in self.slots() if s.name != "interaction"}
        return min(self._with_each_interaction(rest), key=lambda c: self._cost(self.arch(c)))

    def largest(self) -> Arch:
        return self.arch(self.largest_choices())

    def smallest(self) -> Arch:
        return self.arch(self.smallest_choices())

    def _with_each_interaction(self, rest: dict[str, Choice]) -> list[dict[str, Choice]]:
        return [{**rest, "interaction": kind} for kind in self.interactions]

    @staticmethod
    def _cost(arch: Arch) -> tuple[int, int]:
        # The interaction is judged with the rest of the arch: with no hidden
        # layers, a wide `cat` output can cost less than `dot`'s Gram matrix.
        return arch.flops(1), arch.num_params()

    # ------------------------------------------------------------------ ops

    def interaction_op(self, kind: str, dim: int) -> OpCall:
        return OpCall.make(INTERACTION_PREFIX + kind, num_sparse=self.num_sparse, dim=dim)

    def interaction_ops(self) -> list[OpCall]:
        """Every (kind, D) interaction op, kinds outer, dims inner (`Slot` order)."""
        return [self.interaction_op(k, d) for k in self.interactions for d in self.interaction_dims]

    def embedding_op(self, rows: int, dim: int, interaction_dim: int) -> OpCall:
        """Feature lookup of a `dim` choice (capped at D) in a table of `rows`, padded to D."""
        return OpCall.make("embedding", num_embeddings=rows, embedding_dim=min(dim, interaction_dim), pad_to=interaction_dim)

    def op_calls(self) -> set[OpCall]:
        """Every op (with its shape) that any arch of this space is built from."""
        ops: set[OpCall] = set()
        bottom_in = elastic_input_widths({self.num_dense}, self.bottom_widths, self.depths(self.bottom_layers))
        for i in range(self.bottom_layers):
            ops |= {mlp_ops(w_in, [w])[0] for w_in in bottom_in[i] for w in self.bottom_widths}
        ops |= {mlp_ops(w_in, [d])[0] for w_in in bottom_in[-1] for d in self.interaction_dims}
        for f in range(self.num_sparse):
            for rows in self.rows_choices(f):
                ops |= {self.embedding_op(rows, e, d) for e in self.emb_dims for d in self.interaction_dims}
        interaction_ops = self.interaction_ops()
        ops |= set(interaction_ops)
        top_in = elastic_input_widths({op.output_width() for op in interaction_ops}, self.top_widths, self.depths(self.top_layers))
        for i in range(self.top_layers):
            ops |= {mlp_ops(w_in, [w])[0] for w_in in top_in[i] for w in self.top_widths}
        ops |= {mlp_ops(w_in, [1], activation="none")[0] for w_in in top_in[-1]}
        return ops

    # ------------------------------------------------------------------ files

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str) -> "SearchSpace":
        names = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(d) - names)
        if "skip" in unknown:
            raise SpaceError(f"space {name}: unknown key 'skip': depth is elastic now (the first k layers are kept), "
                             f"set elastic_depth = true or false instead")
        if unknown:
            raise SpaceError(f"space {name}: unknown key(s) {unknown}; known: {sorted(names)}")
        d = dict(d)
        d.setdefault("cardinalities", _BUILTIN["dlrm-kaggle"].cardinalities)
        try:
            return cls(name=name, **d)
        except TypeError as e:
            raise SpaceError(f"space {name}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "SearchSpace":
        return cls.from_dict(read_space_toml(path), name=str(path))


_BUILTIN: dict[str, SearchSpace] = {
    "dlrm-kaggle": SearchSpace(
        name="dlrm-kaggle",
        cardinalities=tuple(min(c, KAGGLE_HASH_CAP) for c in KAGGLE_CARDINALITIES),
    ),
    # Small enough that profiling and searching it take seconds (tests, smoke runs).
    "dlrm-tiny": SearchSpace(
        name="dlrm-tiny",
        cardinalities=tuple(10 + 7 * f for f in range(26)),
        bottom_widths=(8, 16),
        bottom_layers=2,
        top_widths=(8, 16),
        top_layers=2,
        emb_dims=(2, 4),
        emb_row_fractions=(1.0, 0.5),
        interaction_dims=(2, 4),
    ),
}


BUILTIN_SPACES = MappingProxyType(_BUILTIN)


def builtin_spaces() -> list[str]:
    return sorted(_BUILTIN)


def get_space(name_or_path: str, cardinalities: tuple[int, ...] | list[int] | None = None) -> SearchSpace:
    """A built-in space by name, or a TOML file; bound to `cardinalities` when given.

    Names and files of every registered model family are found (`dnas_hw.family`:
    a TOML's `family` key picks it, default `dlrm`), so the result is a DLRM
    `SearchSpace` unless a file or name of another family is given.
    """
    space = load_space(name_or_path)
    return space.bind(cardinalities) if cardinalities is not None else space
