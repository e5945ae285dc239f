"""Training end to end on tiny synthetic data: `dnas-hw train`, its outputs, seeds, resume, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnas_hw.train
from dnas_hw.app.cli import main
from dnas_hw.checkpoint import load_checkpoint
from dnas_hw.data.folder import PreparedData
from dnas_hw.dlrm.arch import Arch
from dnas_hw.dlrm.model import build_model
from dnas_hw.train import TrainConfig, evaluate, predict

METRICS = ("logloss", "auc", "accuracy", "calibration", "rows")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
# The default optimizer (Adam 1e-3) with small batches: 3,000 rows at the default batch of 256 are
# too few steps for the loss to move by a margin a test can assert.
RECIPE = ("--epochs", 1, "--batch-size", 32)


def train(*args: str):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def metrics_of(run) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    m["train"].pop("elapsed_s")
    return m


def assert_user_error(result, *words: str) -> None:
    """Exit code 2 and one line `error: ...` naming the problem, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(one_torch_thread, synth_dir, tiny_arch, tmp_path_factory):
    """One finished run of `dnas-hw train` (1 epoch, seed 0), shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("train") / "run"
    arch_file = run.parent / "arch.json"
    tiny_arch.save(arch_file)
    result = train("--data", synth_dir, "--arch", arch_file, "--out", run, *RECIPE, "--seed", 0)
    assert result.exit_code == 0, (result.output, result.exception)
    return run, result


def test_train_writes_model_and_metrics_in_range(trained, synth_dir):
    run, result = trained
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "model.pt", "train_log.csv"]
    data = PreparedData.open(synth_dir)
    metrics = metrics_of(run)
    for split in ("val", "test"):
        m = metrics[split]
        assert set(m) == set(METRICS)
        assert m["rows"] == len(data.split(split))
        assert 0 < m["logloss"] < 1 and 0 <= m["auc"] <= 1 and 0 <= m["accuracy"] <= 1 and 0 < m["calibration"] < 3
    assert "val  logloss" in result.stdout and "wrote" in result.stdout


def test_one_epoch_of_the_default_optimizer_lowers_the_loss(trained, synth_dir, tiny_arch):
    run, _ = trained
    model, extra = load_checkpoint(run / "model.pt")  # weights_only=True inside
    assert model.arch == tiny_arch
    assert extra["data_meta"]["num_sparse"] == 26
    val = PreparedData.open(synth_dir).split("val")
    untrained = evaluate(build_model(tiny_arch, seed=0), val)
    assert metrics_of(run)["val"]["logloss"] < untrained["logloss"] - 0.02
    # The checkpoint holds the trained weights: its predictions give the recorded metrics.
    assert evaluate(model, val) == pytest.approx(metrics_of(run)["val"])


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_others(trained, synth_dir, tiny_arch_file, tmp_path):
    run, _ = trained
    assert train("--data", synth_dir, "--arch", tiny_arch_file, "--out", tmp_path / "again", *RECIPE).exit_code == 0
    assert metrics_of(tmp_path / "again") == metrics_of(run)
    assert train("--data", synth_dir, "--arch", tiny_arch_file, "--out", tmp_path / "seed1", "--seed", 1).exit_code == 0
    assert metrics_of(tmp_path / "seed1")["val"] != metrics_of(run)["val"]


def test_a_finished_run_is_kept_unless_forced(trained, synth_dir, tiny_arch_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    before = (run / "model.pt").read_bytes()
    assert_user_error(train("--data", synth_dir, "--arch", tiny_arch_file, "--out", run), "--force")
    assert (run / "model.pt").read_bytes() == before
    assert train("--data", synth_dir, "--arch", tiny_arch_file, "--out", run, "--force", "--lr", 0.05).exit_code == 0
    assert (run / "model.pt").read_bytes() != before


@pytest.mark.slow
def test_resume_after_a_stop_ends_where_an_uninterrupted_run_does(synth_dir, tiny_arch_file, tmp_path,
                                                                  stop_training_in_second_epoch):
    args = ["--data", synth_dir, "--arch", tiny_arch_file, "--epochs", 2, "--optimizer", "adagrad", "--lr", 0.05]
    assert train(*args, "--out", tmp_path / "straight").exit_code == 0

    stop_training_in_second_epoch(True)
    stopped = train(*args, "--out", tmp_path / "resumed")
    assert stopped.exit_code != 0
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["train_state.pt"]  # nothing that looks finished
    stop_training_in_second_epoch(False)

    assert_user_error(train(*args, "--out", tmp_path / "resumed"), "--resume")
    assert_user_error(train(*args[:-1], "0.1", "--out", tmp_path / "resumed", "--resume"), "other training options")
    assert train(*args, "--out", tmp_path / "resumed", "--resume").exit_code == 0
    assert metrics_of(tmp_path / "resumed") == metrics_of(tmp_path / "straight")
    assert not (tmp_path / "resumed" / "train_state.pt").exists()

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "train_state.pt").write_bytes(b"PK\x03\x04 not a torch file")
    assert_user_error(train(*args, "--out", tmp_path / "corrupt", "--resume"), "unreadable training state")


@pytest.mark.slow
def test_every_optimizer_trains(synth_dir, tiny_arch):
    data = PreparedData.open(synth_dir)
    for optimizer, lr in (("sgd", 0.1), ("adagrad", 0.05), ("adam", 0.01)):
        model = build_model(tiny_arch, seed=0)
        before = evaluate(model, data.split("val"))["logloss"]
        history = dnas_hw.train.fit(model, data, TrainConfig(epochs=1, optimizer=optimizer, lr=lr, batch_size=64))
        assert history[-1]["val_logloss"] < before, optimizer


def test_predict_keeps_row_order_and_mode(synth_dir, tiny_arch):
    split = PreparedData.open(synth_dir).split("test")
    model = build_model(tiny_arch, seed=0).train()
    labels, probs = predict(model, split, batch_size=100)
    assert model.training
    np.testing.assert_array_equal(labels, np.asarray(split.labels))
    assert probs.shape == (len(split),) and np.all((probs > 0) & (probs < 1))


# ----------------------------------------------------------------------------- bad input


def test_missing_or_invalid_arch_file(synth_dir, tmp_path):
    out = tmp_path / "run"
    assert_user_error(train("--data", synth_dir, "--arch", tmp_path / "nope.json", "--out", out), "nope.json", "not found")
    (tmp_path / "broken.json").write_text('{"num_dense": 13,')
    assert_user_error(train("--data", synth_dir, "--arch", tmp_path / "broken.json", "--out", out), "not valid JSON")
    bad = Arch(num_dense=13, bottom_mlp=(8,), emb_dims=(4,) * 26, emb_rows=(10,) * 26, interaction="dot", top_mlp=()).to_dict()
    bad["emb_dims"][3] = 16
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert_user_error(train("--data", synth_dir, "--arch", tmp_path / "bad.json", "--out", out), "emb_dims[3]")
    assert not out.exists()


def test_data_folder_without_meta(tmp_path, tiny_arch_file):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert_user_error(train("--data", tmp_path / "empty", "--arch", tiny_arch_file, "--out", out), "meta.json")
    assert_user_error(train("--data", tmp_path / "missing", "--arch", tiny_arch_file, "--out", out), "missing")
    assert not out.exists()


def test_arch_whose_feature_count_does_not_match_the_data(synth_dir, tmp_path):
    arch = Arch(num_dense=13, bottom_mlp=(8,), emb_dims=(4,) * 5, emb_rows=(10,) * 5, interaction="cat", top_mlp=())
    arch.save(tmp_path / "five.json")
    out = tmp_path / "run"
    assert_user_error(train("--data", synth_dir, "--arch", tmp_path / "five.json", "--out", out), "5 embedding tables", "26")
    assert not out.exists()


def test_bad_training_options(synth_dir, tiny_arch_file, tmp_path):
    out = tmp_path / "run"
    assert_user_error(train("--data", synth_dir, "--arch", tiny_arch_file, "--out", out, "--lr", 0), "learning rate")
    assert_user_error(train("--data", synth_dir, "--arch", tiny_arch_file, "--out", out, "--batch-size", -1), "batch size")
    assert not out.exists()


def test_a_pass_taken_in_pieces_ends_where_fit_does(synth_dir, tiny_arch):
    """A `Pass` trained to a step, then (after another training moved torch's generator) to its end,
    leaves the model bit for bit where one epoch of `fit` does; `to` a step it passed trains nothing."""
    data = PreparedData.open(synth_dir)
    config = TrainConfig(epochs=1, batch_size=64, optimizer="adam", lr=0.01, seed=3)
    straight = build_model(tiny_arch, seed=3)
    history = dnas_hw.train.fit(straight, None, config, splits=(data.split("train"), data.split("val")))
    pieces = dnas_hw.train.Pass(build_model(tiny_arch, seed=3), data.split("train"), config)
    pieces.to(7)
    assert pieces.done == 7 and pieces.rows == 7 * 64
    dnas_hw.train.Pass(build_model(tiny_arch, seed=5), data.split("train"), TrainConfig(seed=5)).to(3)
    pieces.to(5)
    assert pieces.done == 7
    pieces.to(pieces.steps + 10)
    assert pieces.done == pieces.steps and pieces.rows == len(data.split("train"))
    for name, p in straight.state_dict().items():
        assert torch.equal(p, pieces.model.state_dict()[name]), name
    assert pieces.train_loss == pytest.approx(history[-1]["train_loss"])
