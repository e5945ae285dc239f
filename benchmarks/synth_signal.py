"""Does the planted teacher of `data synth` do its job?

Makes a synthetic folder (default 1M rows), trains the project's DLRM
(`dnas_hw.dlrm.model.build_model`) in a few variants and reports test AUC:

- all16:        every table dimension 16;
- important2:   the teacher's important tables at dimension 2, the rest 16;
- noise2:       the noise tables at dimension 2, the rest 16;
- all4:         every table dimension 4.

Each variant trains for `--epochs` epochs; the reported test AUC is the one of
the epoch with the best val AUC. Expected: all16 >= 0.75; important2 clearly
below all16 (capacity on the important tables matters); noise2 close to all16
(capacity on noise does not). The teacher's own AUC (its true logits) is the
ceiling.

    python benchmarks/synth_signal.py --rows 1000000 --epochs 3 [--device cuda] [--json out.json]

Runs on CPU or GPU; the whole train split is held in device memory.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dnas_hw.data.folder import PreparedData
from dnas_hw.data.synth import IMPORTANT, SynthOptions, Teacher, roles, standardise, synth
from dnas_hw.dlrm.arch import Arch
from dnas_hw.dlrm.model import build_model
from dnas_hw.metrics import auc
from dnas_hw.train import make_optimizers, split_parameters


def variants(num_sparse: int) -> dict[str, list[int]]:
    noise = [f for f, r in enumerate(roles()) if r == "noise"]
    out = {"all16": [16] * num_sparse, "important2": [16] * num_sparse, "noise2": [16] * num_sparse,
           "all4": [4] * num_sparse}
    for f in IMPORTANT:
        out["important2"][f] = 2
    for f in noise:
        out["noise2"][f] = 2
    return out


def tensors(split, device):
    return (torch.from_numpy(np.array(split.dense)).to(device),
            torch.from_numpy(np.array(split.sparse, dtype=np.int64)).to(device),
            torch.from_numpy(np.array(split.labels)).to(device))


@torch.no_grad()
def split_auc(model, split, batch=65536) -> float:
    model.eval()
    dense, sparse, labels = split
    scores = torch.cat([model(dense[i:i + batch], sparse[i:i + batch]) for i in range(0, len(labels), batch)])
    model.train()
    return auc(labels.cpu().numpy(), scores.float().cpu().numpy())


def train_variant(data: PreparedData, emb_dims: list[int], args, device) -> dict:
    arch = Arch(num_dense=data.num_dense, bottom_mlp=(64, 16), emb_dims=tuple(emb_dims),
                emb_rows=tuple(data.cardinalities), interaction="dot", top_mlp=(256, 64))
    model = build_model(arch, seed=args.seed).to(device)
    optimizers = make_optimizers(*split_parameters(model), "adam", args.lr)
    dense, sparse, labels = tensors(data.split("train"), device)
    val, test = tensors(data.split("val"), device), tensors(data.split("test"), device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    history, start = [], time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(labels), device=device, generator=gen)
        for i in range(0, len(labels), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = F.binary_cross_entropy_with_logits(model(dense[idx], sparse[idx]), labels[idx])
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()
        history.append({"val": round(split_auc(model, val), 4), "test": round(split_auc(model, test), 4)})
    best = max(history, key=lambda h: h["val"])  # the epoch a user would keep: best on val
    return {"per_epoch": history, "best_val_epoch": history.index(best) + 1, "test_auc": best["test"],
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        meta = synth(Path(tmp) / "synth", SynthOptions(rows=args.rows, seed=args.seed))
        made = time.perf_counter() - start
        data = PreparedData.open(Path(tmp) / "synth")
        test = data.split("test")
        teacher = Teacher.build(tuple(c - 1 for c in data.cardinalities), args.seed)
        ceiling = auc(np.asarray(test.labels), teacher.logits(standardise(np.asarray(test.dense)),
                                                              np.asarray(test.sparse, dtype=np.int64)))
        results = {"rows": args.rows, "synth_seconds": round(made, 1), "teacher_test_auc": round(ceiling, 4),
                   "positive_rate": {s: meta["splits"][s]["positives"] / max(meta["splits"][s]["rows"], 1)
                                     for s in meta["splits"]},
                   "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                   "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "variants": {}}
        print(f"synth {args.rows:,} rows in {made:.1f} s; teacher test AUC {ceiling:.4f}", flush=True)
        for name, dims in variants(data.num_sparse).items():
            if args.only and name not in args.only:
                continue
            r = train_variant(data, dims, args, args.device)
            results["variants"][name] = r
            per_epoch = " ".join(f"{h['val']:.4f}/{h['test']:.4f}" for h in r["per_epoch"])
            print(f"{name:11s} test AUC {r['test_auc']:.4f} (epoch {r['best_val_epoch']}, best on val); "
                  f"val/test per epoch {per_epoch}; {r['seconds']} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
