"""Data-parallel search: 2 gloo processes under torchrun against 1 process, same global batch and seed.

The data are chosen so that both kinds of uneven sharding happen every epoch:
the weight part's last global batch holds 1 row (rank 0 gets none of it and
takes a zero-gradient step), the arch part's last one 65 (32 and 33 rows).

Tolerance: each 2-process gradient is the mean of two half-batch gradients, so
the numbers match one process up to float32 rounding compounded over the steps:
losses and latencies within 1e-4 relative, probabilities within 1e-3 absolute (Adam
divides a logit's step by its gradient's RMS, so a slot whose gradient is near zero
takes lr-sized steps that rounding can tilt); the derived arch, the
choices and the budget controller's path (a function of the derived arch's
latency, a step function of the logits) identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.data.folder import PreparedData
from dnas_hw.space import get_space
from lut.predict import predict
from search_fixtures import one_thread, synth_data, toy_lut  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
B = 16  # serving batch size of the LUT
TRAIN_BATCH = 128
ROWS = 2030  # 1602 training rows: weight part 1281 = 10 x 128 + 1, arch part 321 = 2 x 128 + 65
REL_TOL = 1e-4
PROBS_ABS_TOL = 1e-3
COMPARED = ("task_loss", "arch_task_loss", "expected_latency_ms", "derived_latency_ms", "multiplier", "entropy", "temperature")


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict:
    """Data, LUT file and budget shared by every run here."""
    folder = tmp_path_factory.mktemp("search-ddp")
    data = synth_data(folder / "data", rows=ROWS)
    train = len(PreparedData.open(data).split("train"))
    assert (train * 4 // 5) % TRAIN_BATCH == 1 and (train - train * 4 // 5) % TRAIN_BATCH % 2 == 1
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)
    lut = toy_lut(space, B)
    lut.save(folder / "toy.csv")
    low, high = predict(lut, space.smallest(), B).total_us, predict(lut, space.largest(), B).total_us
    return {"data": data, "lut": folder / "toy.csv", "budget_ms": (low + 0.5 * (high - low)) / 1000, "folder": folder}


def search_args(setting: dict, out: Path, *extra: str) -> list[str]:
    return ["search", "--data", str(setting["data"]), "--space", "dlrm-tiny", "--lut", str(setting["lut"]),
            "--latency-budget", f"{setting['budget_ms']:.4f}ms", "--batch-size", str(B), "--out", str(out),
            "--epochs", "2", "--warmup-epochs", "0", "--train-batch-size", str(TRAIN_BATCH), "--seed", "0", *extra]


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m dnas_hw.app.cli ARGS` (gloo, one thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dnas_hw.app.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def one_process(setting: dict, name: str, *extra: str) -> Path:
    out = setting["folder"] / name
    if not (out / "summary.json").exists():
        result = CliRunner().invoke(main, search_args(setting, out, *extra))
        assert result.exit_code == 0, (result.output, result.exception)
    return out


def assert_same_search(a: Path, b: Path) -> None:
    assert json.loads((a / "arch.json").read_text()) == json.loads((b / "arch.json").read_text())
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("choices", "predicted_latency_ms", "budget_status", "projection"):
        assert sa[key] == sb[key], key
    # The multiplier follows the same derived archs in both runs; its float sums may round apart
    # in the last bits (seen: -0.012309779186690496 against ...519).
    assert sa["final_multiplier"] == pytest.approx(sb["final_multiplier"], rel=1e-9, abs=1e-12)
    la, lb = (pd.read_csv(p / "search_log.csv") for p in (a, b))
    assert len(la) == len(lb) == 2
    for column in COMPARED:
        assert la[column].to_numpy() == pytest.approx(lb[column].to_numpy(), rel=REL_TOL, nan_ok=True), column
    pa, pb = (json.loads((p / "arch_probs.json").read_text()) for p in (a, b))
    assert pa.keys() == pb.keys()
    for slot in pa:
        assert pa[slot] == pytest.approx(pb[slot], abs=PROBS_ABS_TOL), slot


@pytest.mark.slow
def test_two_processes_match_one(setting, tmp_path):
    # Per-batch hard samples (the default): single-path weight steps, which leave the
    # weights of skipped layers and unchosen interaction kinds without gradients.
    reference = one_process(setting, "one-per-batch")
    result = torchrun(search_args(setting, tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    # Only rank 0 wrote: the same files as one process, and one closing message.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in reference.iterdir())
    assert result.stdout.count("wrote ") == 1
    assert_same_search(tmp_path / "run", reference)


@pytest.mark.slow
def test_two_processes_resume_a_stopped_search(setting, tmp_path):
    # Per-sample samples: each rank uses its own rows' draws of the whole batch's samples.
    reference = one_process(setting, "one-per-sample", "--sampling", "per-sample")
    stopped = torchrun(search_args(setting, tmp_path / "run", "--sampling", "per-sample", "--stop-after", "1"))
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not (tmp_path / "run" / "arch.json").exists() and (tmp_path / "run" / "search_state.pt").exists()
    assert len(pd.read_csv(tmp_path / "run" / "search_log.csv")) == 1
    resumed = torchrun(search_args(setting, tmp_path / "run", "--sampling", "per-sample", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "run" / "search_state.pt").exists()
    assert_same_search(tmp_path / "run", reference)


# --------------------------------------------------------------------------- pieces, in one process


def test_lockstep_batches_give_every_rank_every_global_batch(setting):
    from dnas_hw.data.folder import iterate_batches
    from search.shards import lockstep_batches

    train = PreparedData.open(setting["data"]).split("train")
    cut = len(train) * 4 // 5  # 10 full batches and one of a single row
    kw = dict(seed=3, epoch=1, rows=(0, cut))
    whole = list(iterate_batches(train, TRAIN_BATCH, shuffle=True, **kw))
    for rank in (0, 1):
        parts = list(lockstep_batches(train, TRAIN_BATCH, shard=(rank, 2), **kw))
        assert [g for *_, g in parts] == [TRAIN_BATCH] * 10 + [1]
        # Rank 0's share of the 1-row batch is empty; rank 1 holds the row.
        assert [len(y) for _, _, y, _ in parts] == [64] * 10 + [rank]
        assert parts[-1][0].shape == (rank, train.dense.shape[1]) and parts[-1][1].shape == (rank, train.sparse.shape[1])
        for (dense, _, y, _), (whole_dense, _, whole_y) in zip(parts, whole):
            own = slice(rank * len(whole_y) // 2, (rank + 1) * len(whole_y) // 2)
            assert (y == whole_y[own]).all() and (dense == whole_dense[own]).all()


def test_gradient_sync_is_the_identity_in_one_process():
    import torch

    from dnas_hw import distributed

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_grads([p])
    assert p.grad.tolist() == [2.0, 2.0, 2.0]
    assert distributed.same_on_all_ranks([torch.tensor([float("-inf"), 1.0])])


def test_a_batch_the_processes_cannot_share_is_refused_before_anything_is_written(setting, tmp_path, monkeypatch):
    from dnas_hw import distributed
    from dnas_hw.errors import UserError
    from lut.table import Lut
    from search.config import SearchConfig
    from search.run import run_search

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    space = get_space("dlrm-tiny", cardinalities=PreparedData.open(setting["data"]).cardinalities)
    with pytest.raises(UserError, match="not divisible by the 3 processes"):
        run_search(setting["data"], space, Lut.load(setting["lut"]), budget_us=setting["budget_ms"] * 1000, batch_size=B,
                   out=tmp_path / "run", config=SearchConfig(train_batch_size=TRAIN_BATCH))
    assert not (tmp_path / "run").exists()
