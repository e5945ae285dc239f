"""The DLRM family, registered under the name `dlrm` (the family of every file that names none).

Its pieces: the arch (`dnas_hw.arch.Arch`), the model (`dnas_hw.model`), the
spaces (`dnas_hw.space`: `SearchSpace`, the built-in `dlrm-kaggle` and
`dlrm-tiny`) and the search hook (`search.dlrm:SEARCH`, imported when a search
starts). `dnas_hw.family` imports this module the first time it looks a family up.
"""

from __future__ import annotations

from dnas_hw.arch import Arch
from dnas_hw.family import DEFAULT_FAMILY, register_family
from dnas_hw.model import build_model
from dnas_hw.space import BUILTIN_SPACES, SearchSpace

FAMILY = register_family(
    DEFAULT_FAMILY,
    arch_type=Arch,
    build_model=build_model,
    space_type=SearchSpace,
    space_from_dict=lambda d, name: SearchSpace.from_dict(d, name=name),
    spaces=BUILTIN_SPACES,
    search="search.dlrm:SEARCH",
)
