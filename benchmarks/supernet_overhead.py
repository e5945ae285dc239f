"""Supernet training step vs the largest standalone candidate's, same batch size.

Target (issue 5): a supernet step <= 1.5x a training step of the largest arch
of the space. Hard sampling (the default) makes weight steps single-path: they
run the sampled arch only, so at uniform logits they cost an average arch.
Arch steps and soft weight steps run every candidate through the masks. Both train with SGD and sparse embedding gradients, one torch
thread, timed on the thread's CPU clock (the machine is shared), in
interleaved rounds; the figure is the median over rounds.

    .venv/bin/python benchmarks/supernet_overhead.py [--space dlrm-kaggle] [--batch-size 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

from dnas_hw.data.synth import synth_cardinalities
from dnas_hw.dlrm.model import build_model
from dnas_hw.space import elastic_input_widths, get_space
from dnas_hw.timing import time_callable
from dnas_hw.train import make_optimizers, split_parameters
from search.config import SearchConfig
from search.cost import CostTables
from search.family_search import cost_table
from search.run import Searcher


def batch(space, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, space.num_dense, generator=g)
    sparse = torch.stack([torch.randint(0, c, (n,), generator=g) for c in space.cardinalities], 1)
    return dense, sparse, torch.randint(0, 2, (n,), generator=g).float()


def standalone_step(model, dense, sparse, y):
    opts = make_optimizers(*split_parameters(model), "sgd", 0.1)
    loss_fn = nn.BCEWithLogitsLoss()

    def step():
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss_fn(model(dense, sparse), y).backward()
        for o in opts:
            o.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="dlrm-kaggle")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    # Bound to the synthetic data's cardinalities (data synth, default scale), as the quality benchmark.
    space = get_space(args.space, cardinalities=[c + 1 for c in synth_cardinalities(0.01)])
    dense, sparse, y = batch(space, args.batch_size)
    # Latency does not enter the step's cost: price ops by FLOPs so no LUT is needed here.
    tables = CostTables(cost_table(space, lambda c: float(c.flops(1)) + 1.0))
    candidates = {"largest standalone": standalone_step(build_model(space.largest(), seed=0), dense, sparse, y)}
    for mode, hard in (("per-batch", True), ("per-batch", False), ("per-sample", False)):
        # Uniform id counts: the step's cost does not depend on the hashed images' weights.
        s = Searcher(space, tables, budget_us=1e9, config=SearchConfig(sampling=mode, hard=hard),
                     id_counts=[torch.ones(c) for c in space.cardinalities])
        name = f"{mode}, {'hard' if hard else 'soft'}"
        # At uniform logits, hard weight steps sample archs uniformly: the mean over draws is the figure.
        candidates[f"supernet weight step ({name})"] = lambda s=s: s.weight_step(dense, sparse, y, 1.0)
        candidates[f"supernet arch step ({name})"] = lambda s=s: s.arch_step(dense, sparse, y, 1.0)
    rounds: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            rounds[name].append(time_callable(fn, warmup=3, min_repeats=10, max_time_s=3.0, clock="thread").p50_us / 1000)
    base = statistics.median(rounds["largest standalone"])
    # The anchor: a supernet that mixes every (input width, output width) pair per layer, as the
    # paper's released code does, multiplies the hidden-layer MACs by this (computed, not timed).
    pairwise = masked = 0
    for starts, widths, layers in (({space.num_dense}, space.bottom_widths, space.bottom_layers),
                                   ({op.output_width() for op in space.interaction_ops()}, space.top_widths, space.top_layers)):
        reach = elastic_input_widths(starts, widths, space.depths(layers))
        for i in range(layers):
            pairwise += sum(u * w for u in reach[i] for w in widths)
            masked += max(reach[i]) * max(widths)
    report = {
        "space": space.name, "batch_size": args.batch_size, "threads": 1, "rounds": args.rounds,
        "largest_arch": space.largest().to_dict() | {"emb_rows": "all full"},
        "step_ms": {k: round(statistics.median(v), 3) for k, v in rounds.items()},
        "ratio_to_largest": {k: round(statistics.median(v) / base, 3) for k, v in rounds.items()},
        "pairwise_mixing_hidden_macs_vs_masked": round(pairwise / masked, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
