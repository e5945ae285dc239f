"""Which sampled choices keep the supernet from learning? One warm-up epoch per setting, scored at fixed archs.

A search's weight steps train a new arch every batch; its arch steps and its
refinement then trust the supernet's loss at other archs. This script measures how
much each kind of sampled choice costs the shared weights:

1. For each setting, a fresh supernet (`search.run.Searcher`, the search's defaults and
   the --set fields) trains one warm-up epoch over the weight part of the train split.
   In a setting the named groups (`bottom`, `bottom_depth`, `emb_dim`, `interaction`,
   `interaction_dim`, `top`, `top_depth`) are drawn uniformly in every weight step and
   every other group is held at the DLRM Kaggle reference's choices (the table sizes are
   held at the full tables in any case, as `SearchConfig.inherit_tables` does). `none`
   trains the reference's path alone: what the shared weights learn with no sampling.
2. The supernet is scored on the val split at the reference's choices (logloss, AUC), at
   the reference with the other interaction kind (`cat` for `dot`: which kind the shared
   weights favour), and at --archs archs drawn uniformly from the space (the same archs for
   every setting; median logloss and AUC).
3. The yardstick: the reference and its other-kind twin trained standalone (`dnas-hw
   train`'s recipe) for the same weight steps on the same rows, scored the same way.

    .venv/bin/python benchmarks/supernet_interference.py --data DIR --lut LUT.csv --out DIR [--seeds 0,1] \
        [--settings all,MLPs] [--set paths_per_step=1 --set sandwich=true]

The held groups mean what they say only without the sandwich rule's largest and smallest
steps (the search's default); with `--set sandwich=true` they apply to its sampled steps.

The LUT only binds the search's cost tables (nothing here depends on latency). Each
finished (setting, seed) is kept in OUT/<setting>-s<seed>.json, so a killed run
restarted with the same arguments goes on from there; OUT/report.json gathers them.
One torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time

import numpy as np
import torch
from torch import nn

from dnas_hw.data.folder import iterate_batches
from dnas_hw.dlrm.arch import dlrm_kaggle_reference
from dnas_hw.dlrm.model import build_model
from dnas_hw.train import TrainConfig, evaluate, make_optimizers, seed_everything, split_parameters
from lut.predict import predict
from lut.table import Lut
from search.config import SearchConfig
from search.rank import supernet_metrics
from search.run import Searcher, cost_tables, id_counts, run_epoch

from _run import config_fields, open_run, search_arguments  # sibling module

MLPS = ("bottom", "bottom_depth", "top", "top_depth")
FEATURES = ("emb_dim", "interaction", "interaction_dim")
SETTINGS = {
    "none": (),
    **{g: (g,) for g in MLPS + FEATURES},
    "bottom+top widths": ("bottom", "top"),
    "bottom+top depths": ("bottom_depth", "top_depth"),
    "MLPs": MLPS,
    "features": FEATURES,
    "all": MLPS + FEATURES,
}


def held_logits(searcher: Searcher, choices: dict, free: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Logits that a weight step's uniform draw (`Searcher.sample(uniform=True)`) reads: uniform for the
    `free` groups, for every other group all mass on `choices` (a gap of 1e4 leaves the Gumbel draw no say)."""
    layout = searcher.net.layout
    one_hot = layout.one_hot(choices)
    logits = layout.init_logits()
    return {g: t if g in free else torch.where(one_hot[g] > 0, 0.0, -1e4).float() for g, t in logits.items()}


def other_kind(arch, kinds: tuple[str, ...]):
    """`arch` with the first interaction kind of `kinds` that is not its own."""
    return dataclasses.replace(arch, interaction=next(k for k in kinds if k != arch.interaction))


def standalone(arch, data, rows: int, seed: int) -> dict[str, float]:
    """`arch` trained alone with `dnas-hw train`'s recipe on the first `rows` rows of the train split
    (one pass, shuffled), scored on the val split."""
    config = TrainConfig(seed=seed)
    seed_everything(seed)
    model = build_model(arch)
    dense, sparse = split_parameters(model)
    optimizers = make_optimizers(dense, sparse, config.optimizer, config.lr)
    for x, ids, y in iterate_batches(data.split("train"), config.batch_size, shuffle=True, seed=seed, rows=(0, rows)):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        nn.functional.binary_cross_entropy_with_logits(model(x, ids), y).backward()
        for opt in optimizers:
            opt.step()
    model.eval()
    return evaluate(model, data.split("val"))


def main() -> None:
    ap = search_arguments(argparse.ArgumentParser())
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--archs", type=int, default=8, help="random archs scored after each setting")
    args = ap.parse_args()
    out, data, space = open_run(args)
    lut = Lut.load(args.lut)
    reference = dlrm_kaggle_reference(data.cardinalities)
    ref_choices = space.choices_of(reference)
    twin = other_kind(reference, space.interactions)
    twin_choices = space.choices_of(twin)
    ref_us = predict(lut, reference, 64).total_us
    rng = random.Random(0)
    drawn = [space.sample_choices(rng) for _ in range(args.archs)]
    val = data.split("val")
    train = data.split("train")
    rows = []
    for name in args.settings.split(","):
        if name not in SETTINGS:
            raise SystemExit(f"setting {name!r}: use one of {', '.join(SETTINGS)}")
        for seed in (int(s) for s in args.seeds.split(",")):
            record = out / f"{name.replace(' ', '_').replace('+', '_')}-s{seed}.json"
            if record.exists():
                rows.append(json.loads(record.read_text()))
                continue
            # One warm-up epoch of weight steps.
            config = SearchConfig.from_dict({**SearchConfig().to_dict(), **config_fields(args.set),
                                             "epochs": 2, "warmup_epochs": 1, "seed": seed})
            searcher = Searcher(space, cost_tables(space, lut, 64, config), ref_us, config,
                                id_counts(data, config.split_fraction))
            searcher.uniform_logits = held_logits(searcher, ref_choices, SETTINGS[name])
            start = time.process_time()
            epoch = run_epoch(searcher, data, 0, time.perf_counter(), 0.0)
            searcher.inherit()
            at_reference = supernet_metrics(searcher.net, ref_choices, val)
            at_twin = supernet_metrics(searcher.net, twin_choices, val)
            drawn_metrics = [supernet_metrics(searcher.net, c, val) for c in drawn]
            row = {
                "setting": name, "sampled": list(SETTINGS[name]), "seed": seed, "config": config_fields(args.set),
                "weight_steps": -(-int(len(train) * config.split_fraction) // config.train_batch_size),
                "train_loss": epoch["task_loss"],
                "reference_logloss": at_reference["logloss"], "reference_auc": at_reference["auc"],
                "twin_logloss": at_twin["logloss"],
                "drawn_logloss_median": statistics.median(m["logloss"] for m in drawn_metrics),
                "drawn_auc_median": statistics.median(m["auc"] for m in drawn_metrics),
                "cpu_s": time.process_time() - start,
            }
            record.write_text(json.dumps(row))
            rows.append(row)
            print(f"{name} seed {seed}: reference {row['reference_logloss']:.4f} (AUC {row['reference_auc']:.3f}), "
                  f"drawn median {row['drawn_logloss_median']:.4f} (AUC {row['drawn_auc_median']:.3f})", flush=True)
    weight_rows = int(len(train) * SearchConfig().split_fraction)
    yardstick_path = out / "standalone.json"
    if yardstick_path.exists():
        yardstick = json.loads(yardstick_path.read_text())
    else:
        yardstick = {name: standalone(arch, data, weight_rows, 0)["logloss"]
                     for name, arch in ((reference.interaction, reference), (twin.interaction, twin))}
        yardstick_path.write_text(json.dumps(yardstick))
    # What predicting the training positive rate for every row scores: a supernet above it has learned nothing.
    rate = float(np.mean(train.labels))
    labels = torch.from_numpy(np.asarray(val.labels, dtype=np.float32))
    base_rate = float(torch.nn.functional.binary_cross_entropy(torch.full_like(labels, rate), labels))
    report = {"data": args.data, "val_rows": len(val), "archs": args.archs, "config": config_fields(args.set),
              "base_rate_logloss": base_rate,
              "standalone_val_logloss": yardstick, "rows": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"val logloss of the base rate: {base_rate:.4f}; standalone, the same steps: "
          + ", ".join(f"reference with {k} {v:.4f}" for k, v in yardstick.items()))
    print(f"| sampled in weight steps | reference's choices: val logloss | AUC | with {twin.interaction}: val logloss "
          "| drawn archs: median val logloss | AUC |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    by_setting: dict[str, list[dict]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    for name, rs in by_setting.items():
        cell = lambda k, f: " / ".join(format(r[k], f) for r in rs)  # noqa: E731 (one value per seed)
        print(f"| {name} | {cell('reference_logloss', '.4f')} | {cell('reference_auc', '.3f')} | {cell('twin_logloss', '.4f')} | "
              f"{cell('drawn_logloss_median', '.4f')} | {cell('drawn_auc_median', '.3f')} |")


if __name__ == "__main__":
    main()
