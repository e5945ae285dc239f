"""DLRM's sparse part through torchrec: one `EmbeddingBagCollection`, sharded with `DistributedModelParallel`.

The mapping (everything else of the DLRM is unchanged):

- feature f's `HashedEmbedding` (rows emb_rows[f], dim emb_dims[f]) becomes table `t{f}`
  of one `EmbeddingBagCollection`, with feature `f{f}`, sum pooling;
- DLRM's lookup is a bag of one id: `id mod rows` is taken before the ids become a
  `KeyedJaggedTensor` (feature-major values, all lengths 1), and the pooled
  `[B, dim]` results are zero-padded to the interaction width D after;
- sharded, each table lives on one rank (`table_wise`) or is split by columns
  (`column_wise`); the ids of a global batch go to the tables' owners and the
  pooled results come back through all-to-alls. The tables' optimizer is fused
  into the backward pass (torchrec's kernels); the dense parts train under DDP.

torchrec's CPU kernels need every embedding dim to be a multiple of 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

SHARDING_TYPES = ("table_wise", "column_wise")  # the two torchrec 1.8 offers on CPU


class EBCSparseArch(nn.Module):
    """sparse ids [B, F] int64 -> F tensors [B, D]: `dnas_hw.model.SparseArch`'s contract, through an EBC."""

    def __init__(self, emb_rows: tuple[int, ...], emb_dims: tuple[int, ...], width: int, device: torch.device | None = None):
        super().__init__()
        self.keys = [f"f{f}" for f in range(len(emb_rows))]
        self.width = width
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=f"t{f}", num_embeddings=r, embedding_dim=d, feature_names=[k], pooling=PoolingType.SUM)
                for f, (r, d, k) in enumerate(zip(emb_rows, emb_dims, self.keys))
            ],
            device=device or torch.device("cpu"),
        )
        self.register_buffer("rows", torch.tensor(emb_rows, dtype=torch.long), persistent=False)

    def jagged(self, sparse: torch.Tensor) -> KeyedJaggedTensor:
        """[B, F] ids -> a KeyedJaggedTensor of F features, one hashed id per sample and feature."""
        ids = (sparse % self.rows).t().reshape(-1)  # feature-major, as a KJT lays out its values
        return KeyedJaggedTensor.from_lengths_sync(keys=self.keys, values=ids, lengths=torch.ones_like(ids))

    def forward(self, sparse: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.ebc(self.jagged(sparse)).to_dict()  # by key: a sharded EBC returns its own order
        return [F.pad(pooled[k], (0, self.width - pooled[k].shape[1])) for k in self.keys]


def with_torchrec_tables(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """`model` (a `dnas_hw.dlrm.model.DLRM`) with its sparse part replaced by an `EBCSparseArch`.

    Returns the model and its tables' weights by table name (`t{f}`), to load
    after sharding (`load_tables`): sharding builds fresh tables.
    """
    arch = model.arch
    weights = {f"t{f}": t.table.weight.detach().clone() for f, t in enumerate(model.sparse_arch.tables)}
    model.sparse_arch = EBCSparseArch(arch.emb_rows, arch.emb_dims, arch.interaction_dim)
    with torch.no_grad():
        for name, w in weights.items():
            model.sparse_arch.ebc.embedding_bags[name].weight.copy_(w)
    return model, weights


def shard(model: nn.Module, sharding_type: str, lr: float) -> nn.Module:
    """`model` under `DistributedModelParallel` (the process group must be up): every table `sharding_type`,
    exact SGD at `lr` fused into the tables' backward; the rest under DDP."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    if sharding_type not in SHARDING_TYPES:
        raise ValueError(f"sharding {sharding_type!r}: use one of {SHARDING_TYPES}")
    tables = list(model.sparse_arch.ebc.embedding_bags)
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(), compute_device="cpu"),
        constraints={t: ParameterConstraints(sharding_types=[sharding_type]) for t in tables},
    )
    sharder = EmbeddingBagCollectionSharder(fused_params={"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": lr})
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    return DistributedModelParallel(model, device=torch.device("cpu"), plan=plan, sharders=[sharder])


@torch.no_grad()
def load_tables(sharded: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy full tables (by name) into this rank's shards of them."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    for key, value in sharded.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = weights[key.split(".")[-2]]  # ...ebc.embedding_bags.t{f}.weight
            for shard_ in value.local_shards():
                (r0, c0), (nr, nc) = shard_.metadata.shard_offsets, shard_.metadata.shard_sizes
                shard_.tensor.copy_(full[r0 : r0 + nr, c0 : c0 + nc])
