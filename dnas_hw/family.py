"""Model families: which arch type, model builder and search space belong together.

A *family* is a kind of CTR model the toolkit can search over: DLRM (built in, the
package `dnas_hw.dlrm`, registered as `dlrm`) or one a user adds (`examples/dcn` is
the worked example). It bundles:

- `arch_type`: a frozen dataclass, the derived architecture as plain data, on the
  arch protocol of `dnas_hw.arch` (`ArchMethods`: its JSON form, counts, `ops()`,
  which `lut.predict` prices);
- `build_model(arch, seed=None) -> nn.Module` with an `.arch` attribute and
  `forward(dense [B, num_dense] float32, sparse [B, num_sparse] int64) -> logits [B]`,
  DLRM's signature, so training, checkpoints, export and bench work unchanged;
- `space_type`: a frozen dataclass on the space protocol of `dnas_hw.space`
  (`SpaceMethods`: `name`, `num_dense`, `num_sparse`, `cardinalities`, `slots()`,
  `arch(choices)`, `op_calls()`, `fingerprint()`, `bind()`, `sample()`, `largest()`,
  `smallest()`), its built-in spaces by name and `space_from_dict(d, name)` for TOML files.

A family that can be searched also registers a search hook (its supernet, cost
table and weight extraction) with the search layer, where the hook is defined:
`search.hooks.register_search` (DLRM's in `search/dlrm/`). Without one the family
profiles, trains, exports and benches, but `dnas-hw search` refuses it.

Which family a file belongs to: an arch's JSON form names it under `"family"`
(absent means `dlrm`, so every DLRM file stays valid), and since checkpoints and
ONNX metadata store that JSON form, they record it too. A space TOML names it
under the top-level key `family` (absent: `dlrm`).

Every family registers itself when its module is imported. This module imports
the built-in ones (`BUILTIN_FAMILIES`) the first time it looks a family up; the
modules named in the environment variable `DNAS_HW_PLUGINS` (comma-separated,
e.g. `examples.dcn`) and the entry points of group `dnas_hw.families` of
installed packages are imported the first time a family or space name is not
found, so `dnas-hw` commands find them with no code change.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

# ArchMethods and fields_from_dict: imported from here by plugins written before they moved to dnas_hw.arch.
from dnas_hw.arch import DEFAULT_FAMILY, FAMILY_KEY, ArchMethods, fields_from_dict  # noqa: F401
from dnas_hw.errors import UserError
from dnas_hw.files import read_json
from dnas_hw.memory import model_bytes, require_memory

PLUGINS_ENV = "DNAS_HW_PLUGINS"
ENTRY_POINT_GROUP = "dnas_hw.families"
# The built-in families' modules: each registers its family, so each imports this module,
# and this module imports them (`load_builtins`) the first time it looks a family up.
BUILTIN_FAMILIES = ("dnas_hw.dlrm",)


class FamilyError(UserError):
    """An unknown family or space name, or a plugin that cannot be imported."""


class SpaceError(UserError):
    """An invalid search space; the message names the key."""


@dataclass(frozen=True)
class ModelFamily:
    name: str
    arch_type: type
    build_model: Callable[..., nn.Module]  # (arch, seed=None) -> module with .arch
    space_type: type
    space_from_dict: Callable[[dict[str, Any], str], Any]  # (TOML mapping without `family`, name) -> space
    spaces: Mapping[str, Any]  # built-in spaces by name


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(
    name: str,
    *,
    arch_type: type,
    build_model: Callable[..., nn.Module],
    space_type: type,
    space_from_dict: Callable[[dict[str, Any], str], Any],
    spaces: Mapping[str, Any] = MappingProxyType({}),
) -> ModelFamily:
    """Register a model family. A second family of the same name, or a built-in
    space name another family already has, raises: names are what files store."""
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    taken = sorted(set(spaces) & {s for f in _FAMILIES.values() for s in f.spaces})
    if taken:
        raise ValueError(f"model family {name!r}: space name(s) {taken} belong to another family")
    family = ModelFamily(name, arch_type, build_model, space_type, space_from_dict, MappingProxyType(dict(spaces)))
    _FAMILIES[name] = family
    return family


def registered_families() -> list[str]:
    load_plugins()
    return sorted(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    load_builtins()
    if name not in _FAMILIES:
        load_plugins()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise FamilyError(
            f"unknown model family {name!r} (registered: {sorted(_FAMILIES)}); name the module that registers it "
            f"in {PLUGINS_ENV} (e.g. {PLUGINS_ENV}=examples.dcn) or install a package with a "
            f"{ENTRY_POINT_GROUP!r} entry point"
        ) from None


def family_of(obj: Any) -> ModelFamily:
    """The family of an arch, a space or a model (through its `.arch`)."""
    load_builtins()
    for family in _FAMILIES.values():
        if isinstance(obj, (family.arch_type, family.space_type)):
            return family
    arch = getattr(obj, "arch", None)
    if arch is not None and arch is not obj:
        return family_of(arch)
    raise TypeError(f"{type(obj).__name__} belongs to no registered model family")


# --------------------------------------------------------------------------- plugins

_loaded_plugins: set[str] = set()
_builtins_loaded = False


def load_builtins() -> None:
    """Import the built-in families' modules (`BUILTIN_FAMILIES`), once."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # first: a module imported here may look a family up while it loads
        for module in BUILTIN_FAMILIES:
            importlib.import_module(module)


def load_plugins() -> None:
    """Import the built-in families, then the modules in `DNAS_HW_PLUGINS` and the `dnas_hw.families`
    entry points, once each."""
    load_builtins()
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for module in names:
        if module not in _loaded_plugins:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise FamilyError(f"{PLUGINS_ENV}: cannot import {module!r} ({type(e).__name__}: {e})") from None
            _loaded_plugins.add(module)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value not in _loaded_plugins:
            ep.load()
            _loaded_plugins.add(ep.value)


# --------------------------------------------------------------------------- archs and models


def arch_from_dict(d: Any) -> Any:
    """An arch of any family from its JSON form (`"family"` picks the family; absent: dlrm)."""
    name = d.get(FAMILY_KEY, DEFAULT_FAMILY) if isinstance(d, dict) else DEFAULT_FAMILY
    if not isinstance(name, str):
        raise FamilyError(f"arch field {FAMILY_KEY}: expected a family name, got {name!r}")
    return get_family(name).arch_type.from_dict(d)


def load_arch(path: str | os.PathLike) -> Any:
    """An arch JSON file of any family."""
    d = read_json(path, "arch file")  # its errors name the file already
    try:
        return arch_from_dict(d)
    except FamilyError:
        raise
    except UserError as e:
        raise type(e)(f"{path}: {e}") from None


def build_model(arch: Any, seed: int | None = None) -> nn.Module:
    """The model of `arch`, built by its family's builder (reproducible initial weights with a seed).

    A model larger than the memory available is refused before anything is allocated.
    """
    require_memory(model_bytes(arch), f"a model of {arch.num_params():,} parameters")
    return family_of(arch).build_model(arch, seed=seed)


# --------------------------------------------------------------------------- spaces


def read_space_toml(path: str | Path) -> dict[str, Any]:
    """A space file's TOML table; a missing or malformed file is a `SpaceError`."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{path}: space file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpaceError(f"{path}: not valid TOML ({e})") from None


def builtin_space_names() -> list[str]:
    load_plugins()
    return sorted(s for f in _FAMILIES.values() for s in f.spaces)


def _builtin_space(name: str) -> Any | None:
    load_builtins()
    for family in _FAMILIES.values():
        if name in family.spaces:
            return family.spaces[name]
    return None


def load_space(name_or_path: str) -> Any:
    """A built-in space of any family by name, or a TOML file whose `family` key picks the family."""
    if not name_or_path.endswith(".toml"):
        if _builtin_space(name_or_path) is None:
            load_plugins()
        space = _builtin_space(name_or_path)
        if space is None:
            raise SpaceError(f"unknown space {name_or_path!r}: use one of {builtin_space_names()} or a .toml file")
        return space
    d = read_space_toml(name_or_path)
    name = d.pop(FAMILY_KEY, DEFAULT_FAMILY)
    if not isinstance(name, str):
        raise SpaceError(f"{name_or_path}: key {FAMILY_KEY} must name a model family, got {name!r}")
    try:
        family = get_family(name)
    except FamilyError as e:
        raise SpaceError(f"{name_or_path}: {e}") from None
    return family.space_from_dict(d, str(name_or_path))
