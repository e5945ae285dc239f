"""Shared fixtures: tiny data and an architecture that trains on it in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnas_hw.dlrm.arch import Arch


@pytest.fixture(scope="session", autouse=True)
def torch_on_one_thread_for_the_session():
    """Every test runs torch on one thread (a test that needs more sets it and puts it back):
    the tests' models are tiny, and on 2 shared cores a second OpenMP thread only waits
    (the fast subset took 15% more CPU and 13% more wall time with torch's default of 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module. The 2 cores are shared: with other jobs
    running, two OpenMP threads wait on each other and tiny models train 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A prepared-data folder of 3,000 synthetic rows (planted teacher, seed 0). Read-only: copy it to change it."""
    from dnas_hw.data.synth import SynthOptions, synth

    out = tmp_path_factory.mktemp("data") / "synth"
    synth(out, SynthOptions(rows=3000, seed=0))
    return out


@pytest.fixture(scope="session")
def tiny_arch() -> Arch:
    """A small DLRM for the 13 + 26 features of Criteo-shaped data: mixed dims, hashed tables of <= 64 rows."""
    return Arch(
        num_dense=13,
        bottom_mlp=(16, 8),
        emb_dims=tuple(8 if f % 3 else 4 for f in range(26)),
        emb_rows=tuple(64 - f for f in range(26)),
        interaction="dot",
        top_mlp=(16,),
    )


@pytest.fixture
def tiny_arch_file(tmp_path, tiny_arch) -> Path:
    """`tiny_arch` as a JSON file, as `dnas-hw train --arch` reads it."""
    path = tmp_path / "arch.json"
    tiny_arch.save(path)
    return path


@pytest.fixture(scope="session")
def dcn():
    """The DCN-v2 example family (examples/dcn). Imported here, not at collection: its ops
    join the global registry, and tests/test_ops.py collects every registered op."""
    import importlib

    return importlib.import_module("examples.dcn")


@pytest.fixture(scope="session")
def dcn_tiny(dcn):
    """The `dcn-tiny` space."""
    from dnas_hw.space import get_space

    return get_space("dcn-tiny")


@pytest.fixture
def stop_training_in_second_epoch(monkeypatch):
    """A switch for `dnas_hw.train.train_epoch`: `stop_training_in_second_epoch(True)` makes it raise
    KeyboardInterrupt (as a kill would stop the run) when epoch index 1 starts; `(False)` puts the real one back."""
    import dnas_hw.train

    real_epoch = dnas_hw.train.train_epoch

    def killed_in_second_epoch(model, optimizers, split, config, epoch, **kw):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(model, optimizers, split, config, epoch, **kw)

    def switch(stopped: bool) -> None:
        monkeypatch.setattr(dnas_hw.train, "train_epoch", killed_in_second_epoch if stopped else real_epoch)

    return switch
