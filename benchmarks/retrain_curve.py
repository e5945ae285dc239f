"""How an arch's test logloss moves along its retraining, per seed: are seeds apart at the end of the pass?

The search benchmarks compare archs by their retrained test logloss after `dnas-hw train`'s
default of one epoch. This script retrains one arch with the same recipe (`TrainConfig`'s
defaults but `--epochs`) on each seed and evaluates the test split after every tenth of
every epoch, so one sees whether the seeds' spread at the end of the first epoch is a model's
noise or a training still on its way down.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retrain_curve.py --data DIR --arch arch.json \\
        [--seeds 0,1,2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from dnas_hw.data.folder import PreparedData, iterate_batches, num_batches
from dnas_hw.family import build_model, load_arch
from dnas_hw.train import TrainConfig, evaluate, start_training, train_step, updated_in_backward

MARKS = 10  # evaluations per epoch


def curve(arch, data: PreparedData, config: TrainConfig) -> list[float]:
    """Test logloss after each tenth of each epoch of training `arch` with `config` (as `dnas_hw.train.fit`)."""
    model = build_model(arch, seed=config.seed)
    optimizers = start_training(model, config)
    train, test, loss_fn = data.split("train"), data.split("test"), nn.BCEWithLogitsLoss()
    steps = num_batches(len(train), config.batch_size, drop_last=False)
    marks = {steps * m // MARKS for m in range(1, MARKS + 1)}
    out = []
    for epoch in range(config.epochs):
        with updated_in_backward(model, optimizers) as stepped:
            model.train()
            batches = iterate_batches(train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch)
            for step, (d, s, y) in enumerate(batches, start=1):
                train_step(model, stepped, loss_fn, d, s, y, 1.0)
                if step in marks:
                    out.append(evaluate(model, test)["logloss"])
                    model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data, arch = PreparedData.open(args.data), load_arch(args.arch)
    seeds = [int(s) for s in args.seeds.split(",")]
    curves = {}
    for seed in seeds:
        curves[seed] = curve(arch, data, TrainConfig(epochs=args.epochs, seed=seed))
        print(json.dumps({"seed": seed, "test_logloss": [round(v, 4) for v in curves[seed]]}), flush=True)
    print("\n| epochs trained | " + " | ".join(f"seed {s}" for s in seeds) + " | spread |\n| ---: |" + " ---: |" * (len(seeds) + 1))
    for i in range(MARKS - 1, args.epochs * MARKS, MARKS // 2):
        values = [curves[s][i] for s in seeds]
        print(f"| {(i + 1) / MARKS:g} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {max(values) - min(values):.4f} |")


if __name__ == "__main__":
    main()
