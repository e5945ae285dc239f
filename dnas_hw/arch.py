"""The arch protocol, written once for every model family: `ArchMethods`, and `mlp_ops`.

An arch is a frozen dataclass, the derived architecture as plain data. A family's arch
subclasses `ArchMethods`, names its family (`family`), its error type (`error`) and its
list-valued fields (`sequence_fields`), and defines `ops()` (an object whose `named()`
lists `(slot, OpCall)` in execution order: every op the model is built from, which is
what `lut.predict` prices), `num_sparse` and `_validate()`. `ArchMethods` supplies the
rest: lists normalised to tuples, the JSON form (`to_dict` / `from_dict`, `load` /
`save`, with `"family"` written unless it is the default family, DLRM), counts
(`num_params`, `flops`, `embedding_bytes`) and `check_data`.

DLRM's arch is `dnas_hw.dlrm.arch.Arch`; DCN's `examples.dcn.arch.DCNArch`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from typing import Any, ClassVar

from dnas_hw.errors import UserError
from dnas_hw.files import read_json, write_json_atomic
from dnas_hw.ops import OpCall

DEFAULT_FAMILY = "dlrm"
# The key naming the family in an arch's JSON form and in a space TOML (absent: DEFAULT_FAMILY).
FAMILY_KEY = "family"


def mlp_ops(in_width: int, widths: list[int] | tuple[int, ...], activation: str = "relu") -> list[OpCall]:
    """Linear ops for an MLP `in_width -> widths[0] -> ... -> widths[-1]`."""
    ops, prev = [], in_width
    for w in widths:
        ops.append(OpCall.make("linear", in_features=prev, out_features=w, activation=activation))
        prev = w
    return ops


def fields_from_dict(cls: type, d: Any, where: str, error: type[UserError], ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """`d`'s values for the dataclass `cls`'s fields; an unknown or missing key is an `error` naming it.

    Lists stay lists (the dataclass normalises them); keys in `ignore` are
    dropped (e.g. `family`, checked by the caller).
    """
    if not isinstance(d, dict):
        raise error(f"{where}: expected a JSON object, got {type(d).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names) - set(ignore))
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; known: {names}")
    missing = [n for n in names if n not in d]
    if missing:
        raise error(f"{where}: missing key(s) {missing}")
    return {n: d[n] for n in names}


class ArchMethods:
    """The members of the arch protocol that follow from the fields, `ops()` and three class attributes."""

    family: ClassVar[str]  # the family's registered name, written in the JSON form unless DEFAULT_FAMILY
    error: ClassVar[type[UserError]] = UserError  # raised for an invalid field, naming it
    sequence_fields: ClassVar[tuple[str, ...]] = ()  # lists in JSON, tuples in the arch (hashable, compared by value)

    def __post_init__(self) -> None:
        for name in self.sequence_fields:
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise self.error(f"arch field {name}: expected a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        """Raise `self.error` naming the first invalid field (a family's own rules)."""

    def _positive_int(self, name: str, v: Any) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise self.error(f"arch field {name}: expected a positive integer, got {v!r}")

    # ------------------------------------------------------------------ counts

    def num_params(self) -> int:
        return sum(c.num_params() for _, c in self.ops().named())

    def flops(self, batch_size: int) -> int:
        return sum(c.flops(batch_size) for _, c in self.ops().named())

    def embedding_bytes(self, bytes_per_value: int = 4) -> int:
        """The embedding tables' memory (fp32 by default)."""
        return sum(c.num_params() for _, c in self.ops().named() if c.op == "embedding") * bytes_per_value

    def check_data(self, num_dense: int, num_sparse: int, where: str = "data") -> None:
        """Refuse an arch whose feature counts differ from the data's."""
        if (self.num_dense, self.num_sparse) != (num_dense, num_sparse):
            raise self.error(
                f"arch has num_dense = {self.num_dense} and {self.num_sparse} embedding tables, "
                f"but {where} has {num_dense} dense and {num_sparse} categorical features"
            )

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return values if self.family == DEFAULT_FAMILY else {FAMILY_KEY: self.family, **values}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any):
        values = fields_from_dict(cls, d, "arch", cls.error, ignore=(FAMILY_KEY,))
        if d.get(FAMILY_KEY, cls.family) != cls.family:
            raise cls.error(f"arch field {FAMILY_KEY}: {d[FAMILY_KEY]!r} is not {cls.family!r}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike):
        try:
            return cls.from_dict(read_json(path, "arch file"))
        except cls.error as e:
            raise type(e)(f"{path}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())
