"""docs/extending.md runs: its Python samples, in order, in one fresh interpreter.

The samples share one namespace, as a reader pasting them into one session
would. A TOML sample whose first line is `# <file>.toml` is written to that file
first. They run in a temporary folder with a link to `examples/`, in a
subprocess, so the ops and families the guide registers never reach the
registries of the other tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
BLOCK_MARK = "### dnas-hw docs block"


def samples(kind: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```kind block of the guide."""
    text = GUIDE.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == kind]


def test_the_guide_has_samples_of_each_extension_point():
    python = " ".join(body for _, body in samples("python"))
    for needle in ("register_op(", "get_space(", "register_family(", "profile_to_lut(", "train_arch(", "export_checkpoint("):
        assert needle in python, needle


@pytest.mark.slow
def test_every_python_sample_of_the_guide_runs(tmp_path):
    for line, body in samples("toml"):
        name = body.splitlines()[0].removeprefix("#").strip()
        assert name.endswith(".toml"), f"docs/extending.md:{line}: a TOML sample starts with '# <file>.toml'"
        (tmp_path / name).write_text(body)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = "\n".join(f"print({BLOCK_MARK!r}, {line}, flush=True)\n{body}" for line, body in samples("python"))
    (tmp_path / "guide.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "DNAS_HW_PLUGINS"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "guide.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    started = re.findall(rf"{BLOCK_MARK} (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"the sample at docs/extending.md:{started[-1] if started else '?'} failed:\n{result.stderr[-3000:]}"
    )
    assert len(started) == len(samples("python"))
