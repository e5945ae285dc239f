"""The derived model's weights, sliced out of the supernet.

The steps every family's extraction shares: `copy_linear` (a linear's leading
slice, or chosen input columns, with the fan-in scale folded in) and
`copy_embeddings` (each feature's table out of the fused one). A family's
`extract` (DLRM's `search.dlrm.supernet.extract_model`, DCN's
`examples.dcn.supernet.extract_dcn`) builds its standalone model with them.
"""

from __future__ import annotations

import torch

from search.mixed import fan_in_scale


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
