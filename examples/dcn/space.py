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

from dataclasses import dataclass

from dnas_hw.arch import mlp_ops
from dnas_hw.ops import OpCall
from dnas_hw.space import KAGGLE_HASHED, SKIP, Choice, Slot, SpaceError, SpaceMethods, mlp_input_widths

from examples.dcn.arch import FAMILY, DCNArch, cross_width


@dataclass(frozen=True)
class DCNSpace(SpaceMethods):
    """DCN's slots, archs and ops; the rest of the protocol is `dnas_hw.space.SpaceMethods`."""

    family = FAMILY

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

    def _validate(self) -> None:
        for key in ("cardinalities", "emb_dims", "cross_ranks", "deep_widths"):
            self._check_ints(key)
        self._check_count("num_dense", 1)
        self._check_count("cross_layers", 0)
        self._check_count("deep_layers", 0)
        self._check_fractions()
        self._check_flag("skip")
        narrowest = min(self.widths())
        if max(self.cross_ranks) > narrowest:
            raise SpaceError(
                f"space {self.name}: cross_ranks up to {max(self.cross_ranks)} exceed the narrowest cross width {narrowest}"
            )

    # ------------------------------------------------------------------ basics

    def widths(self) -> tuple[int, ...]:
        """The cross widths W, one per embedding dim."""
        return tuple(cross_width(self.num_dense, self.num_sparse, e) for e in self.emb_dims)

    def slots(self) -> list[Slot]:
        extra = (SKIP,) if self.skip else ()
        slots = [Slot("emb_dim", self.emb_dims)]
        slots += [Slot(f"emb_rows.{f}", self.rows_choices(f)) for f in range(self.num_sparse)]
        slots += [Slot(f"cross.{i}", self.cross_ranks + extra) for i in range(self.cross_layers)]
        slots += [Slot(f"deep.{i}", self.deep_widths + extra) for i in range(self.deep_layers)]
        return slots

    # ------------------------------------------------------------------ archs

    def arch(self, choices: dict[str, Choice]) -> DCNArch:
        """The architecture for one choice per slot (`{slot: choice}`)."""
        self.check_choices(choices)

        def kept(prefix: str, layers: int) -> tuple[int, ...]:
            return tuple(choices[f"{prefix}.{i}"] for i in range(layers) if choices[f"{prefix}.{i}"] != SKIP)

        return DCNArch(
            num_dense=self.num_dense,
            emb_dim=choices["emb_dim"],
            emb_rows=tuple(choices[f"emb_rows.{f}"] for f in range(self.num_sparse)),
            cross_ranks=kept("cross", self.cross_layers),
            deep_mlp=kept("deep", self.deep_layers),
        )

    def largest_choices(self) -> dict[str, Choice]:
        """The most expensive arch's choices: every slot at its largest choice (cost grows with each), no skips."""
        return {s.name: max(c for c in s.choices if c != SKIP) for s in self.slots()}

    def smallest_choices(self) -> dict[str, Choice]:
        """The cheapest arch's choices: skipped (or smallest) layers, smallest dim and tables."""
        return {s.name: SKIP if SKIP in s.choices else min(s.choices) for s in self.slots()}

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


BUILTIN: dict[str, DCNSpace] = {
    # Kaggle's features hashed to at most 1M rows per table, as dlrm-kaggle.
    "dcn-kaggle": DCNSpace(name="dcn-kaggle", cardinalities=KAGGLE_HASHED),
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
