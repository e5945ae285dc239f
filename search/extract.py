"""The derived model's weights, sliced out of the supernet.

`copy_linear` is the step every family's extraction shares (a linear's
leading slice, or chosen input columns, with the fan-in scale folded in).
`extract_model(supernet, choices)` (DLRM's) builds `dnas_hw.model.build_model(arch)` and
copies into it the leading slices that the supernet uses for those choices
(with the fan-in scale folded into each linear's weight), so
it computes what the supernet computes at one-hot probabilities (tested), and
can warm-start retraining.
"""

from __future__ import annotations

import torch

from dnas_hw.model import DLRM, build_model
from dnas_hw.space import Choice
from search.mixed import fan_in_scale
from search.supernet import Supernet


def copy_linear(dst: torch.nn.Module, src: torch.nn.Module, columns: torch.Tensor | None = None) -> None:
    """LinearAct -> LinearAct: dst's weight [out, in] is src's leading slice (or, with `columns`
    ([in] ints), those input columns of src's first `out` rows), times the supernet's fan-in
    scale for an input of width `in` (`search.mixed.fan_in_scale`)."""
    out_f, in_f = dst[0].weight.shape
    weight = src[0].weight[:out_f, :in_f] if columns is None else src[0].weight[:out_f, columns]
    dst[0].weight.copy_(weight * fan_in_scale(src[0].in_features, in_f**-0.5))
    dst[0].bias.copy_(src[0].bias[:out_f])


def copy_embeddings(sparse_arch: torch.nn.Module, embeddings: torch.nn.Module) -> None:
    """`dnas_hw.model.SparseArch` <- `search.mixed.MixedEmbeddings`: each feature's table is the
    leading `dim` columns of its size candidate's rows in the fused table."""
    for f, table in enumerate(sparse_arch.tables):
        w = table.table.weight
        w.copy_(embeddings.feature_table(f, w.shape[0])[:, : w.shape[1]])


def extract_model(supernet: Supernet, choices: dict[str, Choice]) -> DLRM:
    arch = supernet.space.arch(choices)
    model = build_model(arch)
    columns = supernet.interaction.columns(arch.interaction, arch.interaction_dim)
    with torch.no_grad():
        for mlp, depth, target, first_columns in (
            (supernet.bottom, choices["bottom_depth"], model.dense_arch, None),
            (supernet.top, choices["top_depth"], model.over_arch, columns),
        ):
            kept = [mlp.layers[i] for i in range(depth)] + [mlp.head(depth)]
            for n, (dst, src) in enumerate(zip(target, kept, strict=True)):
                copy_linear(dst, src, first_columns if n == 0 else None)
        copy_embeddings(model.sparse_arch, supernet.embeddings)
    return model
