"""benchmarks/train_throughput.py runs facebookresearch/dlrm beside ours when given a checkout:
the reference's own ms/it is read from its output (here a stand-in script prints it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stand_in(tmp_path: Path, body: str) -> Path:
    (tmp_path / "dlrm_s_pytorch.py").write_text(body)
    return tmp_path


def test_the_timed_iterations_are_the_last_report(bench, tmp_path):
    # Prints what dlrm_s_pytorch.py prints with --print-time, after checking the arguments it is given.
    checkout = stand_in(tmp_path, (
        "import sys\n"
        "args = dict(a.split('=', 1) for a in sys.argv[1:] if '=' in a)\n"
        "assert args['--num-batches'] == '20' and args['--print-freq'] == '10', args\n"
        "assert args['--mini-batch-size'] == '128' and args['--arch-interaction-op'] == 'dot', args\n"
        "assert args['--arch-embedding-size'] == '-'.join(['100000'] * 26), args\n"
        "print('Finished training it 10/20 of epoch 0, 12.50 ms/it, loss 0.7')\n"
        "print('Finished training it 20/20 of epoch 0, 7.25 ms/it, loss 0.6')\n"
    ))
    reference = bench.Reference(str(checkout), batch_size=128, lr=0.1, seed=0, python=sys.executable)
    assert reference.ms_per_iter(10) == 7.25


def test_a_missing_or_failing_reference_is_one_clear_error(bench, tmp_path):
    with pytest.raises(click.UsageError, match="dlrm_s_pytorch.py"):
        bench.Reference(str(tmp_path), 128, 0.1, 0)
    checkout = stand_in(tmp_path, "import sys\nsys.exit('No module named sklearn')\n")
    with pytest.raises(click.ClickException, match="sklearn"):
        bench.Reference(str(checkout), 128, 0.1, 0, sys.executable).ms_per_iter(10)
