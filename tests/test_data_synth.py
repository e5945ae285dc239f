"""`data synth`: determinism, the raw TSV round trip, and the planted teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.data.folder import PreparedData
from dnas_hw.data.synth import (
    IMPORTANT, KAGGLE_CARDINALITIES, SynthOptions, Teacher, roles, standardise, synth, synth_cardinalities,
)
from dnas_hw.metrics import auc


def files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """40,000 synthetic rows, as a folder and as a raw TSV."""
    tmp = tmp_path_factory.mktemp("synth")
    synth(tmp / "a", SynthOptions(rows=40_000, seed=7), raw_tsv=tmp / "a.tsv")
    return tmp


def test_same_seed_same_bytes(made, tmp_path):
    synth(tmp_path / "b", SynthOptions(rows=40_000, seed=7), raw_tsv=tmp_path / "b.tsv")
    assert files(made / "a") == files(tmp_path / "b")
    assert (made / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    synth(tmp_path / "c", SynthOptions(rows=40_000, seed=8))
    assert files(made / "a")["train_sparse.npy"] != files(tmp_path / "c")["train_sparse.npy"]


def test_meta_shape_and_teacher(made):
    data = PreparedData.open(made / "a")
    meta = data.meta
    assert meta["source"] == {"kind": "synth", "files": [], "seed": 7,
                              "options": {"rows": 40_000, "scale": 0.01, "val_frac": 0.1, "test_frac": 0.1}}
    assert sum(s["rows"] for s in meta["splits"].values()) == 40_000
    assert 0.7 < meta["splits"]["train"]["rows"] / 40_000 < 0.9
    for s in meta["splits"].values():
        assert 0.21 < s["positives"] / s["rows"] < 0.29
    assert data.cardinalities == tuple(c + 1 for c in synth_cardinalities(0.01))
    assert max(data.cardinalities) == round(max(KAGGLE_CARDINALITIES) * 0.01) + 1
    teacher = meta["teacher"]
    assert teacher["roles"]["C2"] == "important" and sorted(teacher["important"]) == sorted(IMPORTANT)
    assert set(teacher["roles"].values()) == {"important", "weak", "cross", "noise"}
    sparse = np.asarray(data.split("train").sparse)
    assert (sparse >= 0).all() and (sparse < np.array(data.cardinalities)).all()
    # Zipf-like: the most frequent values of a large table dominate.
    counts = np.bincount(sparse[:, 2], minlength=data.cardinalities[2])
    assert counts[1] > counts[10] > counts[100] > 0
    dense = np.asarray(data.split("train").dense)
    assert dense.min() == 0 and dense.max() > 10  # heavy-tailed counts, after log(1 + x)


@pytest.mark.slow
def test_raw_tsv_prepares_to_the_same_rows(made, tmp_path):
    r = CliRunner().invoke(main, ["data", "prepare", str(made / "a.tsv"), "--out", str(tmp_path / "p"),
                                  "--split", "random", "--seed", "7", "--min-count", "1"])
    assert r.exit_code == 0, r.output
    a, p = PreparedData.open(made / "a"), PreparedData.open(tmp_path / "p")
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(s).dense, p.split(s).dense)
        np.testing.assert_array_equal(a.split(s).labels, p.split(s).labels)
        np.testing.assert_array_equal(np.asarray(a.split(s).sparse) == 0, np.asarray(p.split(s).sparse) == 0)
    # On train the prepared ids are a relabelling of the synthetic ones, value for value.
    sa, sp = np.asarray(a.split("train").sparse), np.asarray(p.split("train").sparse)
    for f in range(26):
        pairs = np.unique(np.stack([sa[:, f], sp[:, f]], 1), axis=0)
        assert len(pairs) == len(np.unique(sa[:, f])) == len(np.unique(sp[:, f]))


def _fit_auc(data: PreparedData, features: list[int], steps: int, use_dense: bool) -> float:
    """Test AUC of a logistic model: one weight per (feature, value) of `features` (+ linear in dense)."""
    torch.manual_seed(0)
    cards = [data.cardinalities[f] for f in features]
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]])

    def inputs(split):
        s = data.split(split)
        ids = np.asarray(s.sparse)[:, features].astype(np.int64) + offsets
        return torch.from_numpy(np.array(s.dense)), torch.from_numpy(ids), torch.from_numpy(np.array(s.labels))

    weights = torch.zeros(int(sum(cards)), requires_grad=True)
    linear = torch.nn.Linear(data.num_dense, 1)

    def score(dense, ids):
        return weights[ids].sum(1) + (linear(dense).squeeze(1) if use_dense else 0)

    dense, ids, y = inputs("train")
    opt = torch.optim.Adam([weights, *linear.parameters()], lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(score(dense, ids), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dense, ids, y = inputs("test")
    with torch.no_grad():
        return auc(y.numpy(), score(dense, ids).numpy())


@pytest.fixture
def one_thread():
    """Small models run faster on one thread, and a shared machine stays responsive."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_planted_signal(made, one_thread):
    data = PreparedData.open(made / "a")
    test = data.split("test")
    teacher = Teacher.build(tuple(c - 1 for c in data.cardinalities), seed=7)
    ceiling = auc(np.asarray(test.labels),
                  teacher.logits(standardise(np.asarray(test.dense)), np.asarray(test.sparse, np.int64)))
    assert ceiling > 0.82  # the labels follow the teacher
    signal = [f for f, r in enumerate(roles()) if r != "noise"]
    noise = [f for f, r in enumerate(roles()) if r == "noise"]
    assert _fit_auc(data, signal, steps=100, use_dense=True) > 0.58  # beats the constant predictor (0.5)
    assert _fit_auc(data, noise, steps=60, use_dense=False) < 0.53  # noise features carry no signal


def test_synth_cli_and_errors(tmp_path):
    run = CliRunner().invoke
    r = run(main, ["data", "synth", "--rows", "500", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert PreparedData.open(tmp_path / "s").meta["source"]["options"]["rows"] == 500
    r = run(main, ["data", "synth", "--rows", "500", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and r.stderr.splitlines()[-1].endswith("already exists (use --force to replace it)")
    (tmp_path / "raw.tsv").write_text("x")
    r = run(main, ["data", "synth", "--rows", "5", "--out", str(tmp_path / "t"), "--raw-tsv", str(tmp_path / "raw.tsv")])
    assert r.exit_code == 2 and not (tmp_path / "t").exists()
    r = run(main, ["data", "synth", "--rows", "0", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "--rows" in r.stderr
