"""The space protocol, written once for every model family: slots, `SpaceMethods`, the space lookup.

A search space is a frozen dataclass: which choices each slot offers (`slots()`, each a
`Slot(name, choices)`; `SKIP` is the choice of leaving a layer out), the arch of one
choice per slot (`arch(choices)`) and every op any of its archs runs (`op_calls()`, what
`profile` measures). A family's space subclasses `SpaceMethods`, names its family
(`family`), has the fields `name`, `cardinalities`, `num_dense` and
`emb_row_fractions`, and defines `slots()`, `arch()`, `op_calls()`, `_validate()`,
`largest_choices()` and `smallest_choices()`. `SpaceMethods` supplies the rest: lists
normalised to tuples, `num_sparse`, `bind`, `rows_choices`, `fingerprint`, `sample`,
`largest` / `smallest`, `from_dict` (a TOML file's keys; unknown ones are errors naming
them) and the validation helpers the families share.

DLRM's space is `dnas_hw.dlrm.space.SearchSpace` (built-in `dlrm-kaggle`, `dlrm-tiny`);
DCN's `examples.dcn.space.DCNSpace`. `get_space` finds a built-in space of any
family by name, or reads a TOML file whose `family` key picks the family.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, Union

from dnas_hw.arch import DEFAULT_FAMILY, FAMILY_KEY
from dnas_hw.family import SpaceError, load_space, read_space_toml

SKIP = "skip"
Choice = Union[int, str]


def choices_key(choices: Mapping[str, Choice]) -> str:
    """One arch's choices ({slot: choice}) as a string equal for equal choices: a dict key for what is
    measured of an arch (records, memos)."""
    return json.dumps(choices, sort_keys=True)

# Per-feature cardinalities of Criteo Kaggle `train.txt`, no cap.
KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
# The Kaggle spaces' own default binding (and a space file's without `cardinalities`): Kaggle
# hashed to at most 1M rows per table (DLRM's --max-ind-range practice), so the largest
# candidate table (1M x 64 fp32, 256 MB) can be profiled and exported without ONNX external
# data. Bind to real data with --data.
KAGGLE_HASH_CAP = 1_000_000
KAGGLE_HASHED = tuple(min(c, KAGGLE_HASH_CAP) for c in KAGGLE_CARDINALITIES)


# What a space may ask for. Beyond these the profile would not finish (keys grow with layers x widths
# x features) or a single op would not fit in memory; the built-in spaces are far inside.
MAX_WIDTH = 65536  # a hidden width, an embedding dim, num_dense
MAX_LAYERS = 16
MAX_CHOICES = 64  # entries of each list of choices
MAX_FEATURES = 1024  # categorical features (cardinalities)


@dataclass(frozen=True)
class Slot:
    name: str
    choices: tuple[Choice, ...]


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


class SpaceMethods:
    """The members of the space protocol that follow from the fields, `slots()` and `arch()`."""

    family: ClassVar[str]  # the family's registered name, hashed into the fingerprint unless DEFAULT_FAMILY
    # Keys a space file may no longer use, with what to write instead (named in the error).
    retired_keys: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        self._validate()

    def _validate(self) -> None:
        """Raise a `SpaceError` naming the first invalid key (a family's own rules, with the helpers below)."""

    # ------------------------------------------------------------------ basics

    @property
    def num_sparse(self) -> int:
        return len(self.cardinalities)

    def bind(self, cardinalities: tuple[int, ...] | list[int]):
        """The same space over a data set with these per-feature cardinalities."""
        return replace(self, cardinalities=tuple(int(c) for c in cardinalities))

    def rows_choices(self, feature: int) -> tuple[int, ...]:
        """Distinct table sizes for a feature, largest first (fractions can coincide)."""
        return hashed_rows(self.cardinalities[feature], self.emb_row_fractions)

    def fingerprint(self) -> str:
        """A short hash of the family and everything that decides the space's op keys."""
        d = asdict(self)
        if self.family != DEFAULT_FAMILY:  # DLRM's hash predates families: LUTs keep matching it
            d[FAMILY_KEY] = self.family
        blob = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ archs

    def check_choices(self, choices: dict[str, Choice]) -> None:
        """Refuse choices that miss a slot or name one the space does not have."""
        names = [s.name for s in self.slots()]
        missing = [n for n in names if n not in choices]
        unknown = [n for n in choices if n not in names]
        if missing or unknown:
            raise SpaceError(f"space {self.name}: choices missing {missing[:5]} / unknown {unknown[:5]}")

    def sample_choices(self, rng: random.Random) -> dict[str, Choice]:
        return {s.name: rng.choice(s.choices) for s in self.slots()}

    def sample(self, rng: random.Random):
        return self.arch(self.sample_choices(rng))

    def largest(self):
        """The most expensive arch (`largest_choices`)."""
        return self.arch(self.largest_choices())

    def smallest(self):
        """The cheapest arch (`smallest_choices`)."""
        return self.arch(self.smallest_choices())

    # ------------------------------------------------------------------ files

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str):
        """A space from a TOML file's keys (without `family`); `cardinalities` defaults to `KAGGLE_HASHED`."""
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(d) - known)
        for key in unknown:
            if key in cls.retired_keys:
                raise SpaceError(f"space {name}: unknown key {key!r}: {cls.retired_keys[key]}")
        if unknown:
            raise SpaceError(f"space {name}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(name=name, **{"cardinalities": KAGGLE_HASHED, **d})
        except TypeError as e:
            raise SpaceError(f"space {name}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path):
        return cls.from_dict(read_space_toml(path), name=str(path))

    # ------------------------------------------------------------------ validation helpers

    def _check_ints(self, key: str, limit: int | None = None) -> None:
        """A non-empty list of positive integers; with `limit`, also at most that large and not too long."""
        values = getattr(self, key)
        if not isinstance(values, tuple) or not values:
            raise SpaceError(f"space {self.name}: {key} must be a non-empty list")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise SpaceError(f"space {self.name}: {key} must hold positive integers, got {v!r}")
        if limit is None:
            return
        if len(values) > (MAX_FEATURES if key == "cardinalities" else MAX_CHOICES):
            raise SpaceError(f"space {self.name}: {key} has {len(values):,} entries, more than a space may ask")
        if max(values) > limit:
            what = " (ids are stored as int32)" if key == "cardinalities" else ""
            raise SpaceError(f"space {self.name}: {key} holds {max(values):,}, above the limit {limit:,}{what}")

    def _check_count(self, key: str, minimum: int, limit: int | None = None) -> None:
        """An integer of at least `minimum` (and, with `limit`, at most that)."""
        v = getattr(self, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise SpaceError(f"space {self.name}: {key} must be a non-negative integer, got {v!r}")
        if limit is not None and v > limit:
            raise SpaceError(f"space {self.name}: {key} is {v:,}, above the limit {limit:,}")

    def _check_fractions(self) -> None:
        q = self.emb_row_fractions
        if not q or len(q) > MAX_CHOICES or any(not isinstance(x, (int, float)) or isinstance(x, bool) or not 0 < x <= 1 for x in q):
            raise SpaceError(f"space {self.name}: emb_row_fractions must lie in (0, 1], got {q}")

    def _check_flag(self, key: str) -> None:
        if not isinstance(getattr(self, key), bool):
            raise SpaceError(f"space {self.name}: {key} must be true or false")


def get_space(name_or_path: str, cardinalities: tuple[int, ...] | list[int] | None = None):
    """A built-in space of any registered family by name, or a TOML file; bound to `cardinalities` when given.

    A TOML's `family` key picks its family (default `dlrm`, `dnas_hw.family`), so the
    result is a DLRM `SearchSpace` unless a file or name of another family is given.
    """
    space = load_space(name_or_path)
    return space.bind(cardinalities) if cardinalities is not None else space
