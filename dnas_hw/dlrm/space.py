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

The DLRM Kaggle reference config (`dnas_hw.dlrm.arch.dlrm_kaggle_reference`) is an
arch of `dlrm-kaggle` bound to any data: bottom 512-256-64, D 16, dims 16,
full tables, dot, top 512-256.

Built-in spaces by name (`dlrm-kaggle`, `dlrm-tiny`); user spaces as TOML files
with the same field names (`cardinalities` optional). Unknown keys and bad
values are errors that name the key. What every family's space shares (slots,
`bind`, `fingerprint`, `sample`, `from_dict`, ...) is `dnas_hw.space.SpaceMethods`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from dnas_hw.arch import DEFAULT_FAMILY, mlp_ops
from dnas_hw.data.folder import MAX_CARDINALITY
from dnas_hw.dlrm.arch import Arch
from dnas_hw.ops import INTERACTION_PREFIX, OpCall, interaction_kinds
from dnas_hw.space import (
    KAGGLE_HASHED,
    MAX_LAYERS,
    MAX_WIDTH,
    Choice,
    Slot,
    SpaceError,
    SpaceMethods,
    elastic_input_widths,
)


@dataclass(frozen=True)
class SearchSpace(SpaceMethods):
    """DLRM's slots, archs and ops; the rest of the protocol is `dnas_hw.space.SpaceMethods`."""

    family = DEFAULT_FAMILY
    retired_keys = MappingProxyType({"skip": "depth is elastic now (the first k layers are kept), "
                                             "set elastic_depth = true or false instead"})

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

    def _validate(self) -> None:
        self._check_ints("cardinalities", MAX_CARDINALITY)
        for key in ("bottom_widths", "top_widths", "emb_dims", "interaction_dims"):
            self._check_ints(key, MAX_WIDTH)
        self._check_count("num_dense", 1, MAX_WIDTH)
        self._check_count("bottom_layers", 0, MAX_LAYERS)
        self._check_count("top_layers", 0, MAX_LAYERS)
        self._check_fractions()
        unknown = [k for k in self.interactions if k not in interaction_kinds()]
        if not self.interactions or unknown:
            raise SpaceError(f"space {self.name}: interactions {unknown or '[]'} not among {interaction_kinds()}")
        self._check_flag("elastic_depth")

    # ------------------------------------------------------------------ basics

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

    # ------------------------------------------------------------------ archs

    def arch(self, choices: dict[str, Choice]) -> Arch:
        """The architecture for one choice per slot (`{slot: choice}`)."""
        self.check_choices(choices)

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


_BUILTIN: dict[str, SearchSpace] = {
    "dlrm-kaggle": SearchSpace(name="dlrm-kaggle", cardinalities=KAGGLE_HASHED),
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
