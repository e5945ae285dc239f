"""The DLRM family, registered under the name `dlrm` (the family of every file that names none).

Its core modules, one idea each, on the protocols of `dnas_hw.arch`, `dnas_hw.space`
and `dnas_hw.family`:

    arch.py    `Arch` (the derived architecture as data), `dlrm_kaggle_reference`
    space.py   `SearchSpace`: slots, archs, op calls; the built-in `dlrm-kaggle`, `dlrm-tiny`
    model.py   `DLRM`, `build_model`: the model of an `Arch`

Its search hook (supernet, cost table, weight extraction) is the search layer's
`search/dlrm/`, registered there. `dnas_hw.family` imports this package the first
time it looks a family up.
"""

from __future__ import annotations

from dnas_hw.arch import DEFAULT_FAMILY
from dnas_hw.dlrm.arch import Arch, ArchError, dlrm_kaggle_reference
from dnas_hw.dlrm.model import DLRM, build_model
from dnas_hw.dlrm.space import BUILTIN_SPACES, SearchSpace
from dnas_hw.family import register_family

FAMILY = register_family(
    DEFAULT_FAMILY,
    arch_type=Arch,
    build_model=build_model,
    space_type=SearchSpace,
    space_from_dict=SearchSpace.from_dict,
    spaces=BUILTIN_SPACES,
)

__all__ = ["DLRM", "Arch", "ArchError", "SearchSpace", "build_model", "dlrm_kaggle_reference"]
