"""Data-parallel training: 2 gloo processes under torchrun against 1 process, same global batch and seed.

Tolerance: the 2-process run computes each gradient as the mean of two half-batch
gradients (and sums sparse embedding gradients in another order), so it matches
the 1-process run up to float32 rounding, compounded over the steps: weights
within 1e-5 absolute, losses and loglosses within 1e-5, AUC within 1e-3 (one
pair of near-tied scores may swap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from dnas_hw import distributed
from dnas_hw.app.cli import main
from dnas_hw.data.folder import PreparedData
from dnas_hw.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
BATCH = 128
WEIGHT_TOL = 1e-5
LOSS_TOL = 1e-5
AUC_TOL = 1e-3


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """Synthetic data whose last training batch of BATCH rows has an odd size: 2 ranks split it unevenly."""
    from dnas_hw.data.synth import SynthOptions, synth

    out = tmp_path_factory.mktemp("ddp") / "data"
    synth(out, SynthOptions(rows=2001, seed=0))
    assert len(PreparedData.open(out).split("train")) % BATCH % 2 == 1
    return out


def train_args(data: Path, arch: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--arch", str(arch), "--out", str(out), "--epochs", "2",
            "--batch-size", str(BATCH), "--seed", "0", *extra]


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m dnas_hw.app.cli ARGS` (gloo, one thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dnas_hw.app.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    for split in ("val", "test"):
        assert ma[split]["rows"] == mb[split]["rows"]
        assert abs(ma[split]["logloss"] - mb[split]["logloss"]) < LOSS_TOL
        assert abs(ma[split]["auc"] - mb[split]["auc"]) < AUC_TOL
    la, lb = (pd.read_csv(p / "train_log.csv") for p in (a, b))
    assert (la["train_loss"] - lb["train_loss"]).abs().max() < LOSS_TOL
    wa, wb = (torch.load(p / "model.pt", weights_only=True)["state_dict"] for p in (a, b))
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < WEIGHT_TOL


@pytest.fixture(scope="module")
def one_process(odd_data, tiny_arch, tmp_path_factory) -> tuple[Path, Path]:
    """(arch file, run folder) of the 1-process reference run."""
    folder = tmp_path_factory.mktemp("one")
    tiny_arch.save(folder / "arch.json")
    result = CliRunner().invoke(main, train_args(odd_data, folder / "arch.json", folder / "run"))
    assert result.exit_code == 0, (result.output, result.exception)
    return folder / "arch.json", folder / "run"


@pytest.mark.slow
def test_two_processes_match_one(odd_data, one_process, tmp_path):
    arch, reference = one_process
    result = torchrun(train_args(odd_data, arch, tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    # Only rank 0 wrote, and only the finished run's files.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json", "model.pt", "train_log.csv"]
    assert result.stdout.count("wrote ") == 1
    assert_same_run(tmp_path / "run", reference)


@pytest.mark.slow
def test_two_processes_resume_a_stopped_run(odd_data, one_process, tmp_path, stop_training_in_second_epoch):
    arch, reference = one_process
    stop_training_in_second_epoch(True)
    assert CliRunner().invoke(main, train_args(odd_data, arch, tmp_path / "run")).exit_code != 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["train_state.pt"]
    # Both ranks resume from the state one process left, and end where the uninterrupted run did.
    result = torchrun(train_args(odd_data, arch, tmp_path / "run", "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "run" / "train_state.pt").exists()
    assert_same_run(tmp_path / "run", reference)


# --------------------------------------------------------------------------- one process: the identity


def test_one_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.session():
        assert distributed.shard() == (0, 1) and distributed.is_main() and not distributed.is_active()
        assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
        model = torch.nn.Linear(2, 1)
        assert distributed.data_parallel(model) is model
        distributed.barrier()


def test_loss_weight_makes_the_rank_average_the_batch_mean(monkeypatch):
    # 2 ranks with 21 and 22 rows of a 43-row batch: (21/43*2 * mean_0 + 22/43*2 * mean_1) / 2 = batch mean.
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    w0, w1 = distributed.loss_weight(21, 43), distributed.loss_weight(22, 43)
    means = (torch.tensor(0.3), torch.tensor(0.7))
    assert ((w0 * means[0] + w1 * means[1]) / 2).item() == pytest.approx((21 * 0.3 + 22 * 0.7) / 43)
    assert distributed.loss_weight(64, 128) == 1.0


def test_a_world_without_rank_is_a_user_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UserError, match="launch with torchrun"):
        with distributed.session():
            pass
