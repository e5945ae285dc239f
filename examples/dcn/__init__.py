"""DCN-v2 as a second model family: the worked example of docs/extending.md.

Importing this package registers its ops (`dcn_stack`, `cross_lowrank`), the
family `dcn` (arch `DCNArch`, builder `build_dcn`, space `DCNSpace` with the
built-in spaces `dcn-tiny` and `dcn-kaggle`) and its search hook (`examples.dcn.supernet`:
supernet, cost table, weight extraction). It uses only public extension points:
`dnas_hw.ops.register_op`, `dnas_hw.family.register_family`,
`search.hooks.register_search` and the generic building blocks (`dnas_hw.arch`,
`dnas_hw.space`, `search.mixed`). From the repository root:

    DNAS_HW_PLUGINS=examples.dcn python -m dnas_hw.app.cli profile --space examples/dcn/space.toml ...
"""

from dnas_hw.family import register_family
from search.hooks import register_search

from examples.dcn import ops  # noqa: F401  (registers the ops)
from examples.dcn.arch import FAMILY, DCNArch, DCNArchError
from examples.dcn.model import DCN, build_dcn
from examples.dcn.space import BUILTIN, DCNSpace
from examples.dcn.supernet import DCNSupernet, dcn_cost_table, extract_dcn

register_family(
    FAMILY,
    arch_type=DCNArch,
    build_model=build_dcn,
    space_type=DCNSpace,
    space_from_dict=DCNSpace.from_dict,
    spaces=BUILTIN,
)
SEARCH = register_search(FAMILY, supernet=DCNSupernet, cost_table=dcn_cost_table, extract=extract_dcn)

__all__ = ["DCN", "DCNArch", "DCNArchError", "DCNSpace", "build_dcn"]
