"""Commands start at once: the CLI imports a command's module only when it runs, and the
commands that need no model (`--help`, `data prepare`, `data show`, `lut show`) never import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from dnas_hw.app.cli import COMMANDS, main
from test_lut_table import save_toy

# Runs the CLI in a fresh interpreter and prints which heavy modules it imported.
PROBE = """
import json, sys
from dnas_hw.app.cli import main
try:
    main(sys.argv[1:], prog_name="dnas-hw")
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules)}))
"""


def run_fresh(*args) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def raw_criteo(path: Path, rows: int = 40) -> Path:
    """`rows` lines of Criteo's raw format: label, 13 counts, 26 hex ids (some empty)."""
    lines = []
    for i in range(rows):
        dense = [str(i * (j + 1) % 97) if (i + j) % 5 else "" for j in range(13)]
        sparse = [f"{(i * 7919 + j * 104729) % 65536:08x}" if (i + j) % 7 else "" for j in range(26)]
        lines.append("\t".join([str(int(i % 3 == 0)), *dense, *sparse]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_importing_the_cli_imports_no_command():
    code = "import sys, dnas_hw.app.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'numpy', 'lut', 'search', 'profiler')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_help_data_and_lut_show_never_import_torch(tmp_path):
    assert run_fresh("--help") == {"code": 0, "heavy": []}
    raw = raw_criteo(tmp_path / "train.txt")
    assert run_fresh("data", "prepare", raw, "--out", tmp_path / "data", "--hash-size", 100) == {"code": 0, "heavy": []}
    assert run_fresh("data", "show", tmp_path / "data") == {"code": 0, "heavy": []}
    lut = save_toy(tmp_path / "toy.csv")
    assert run_fresh("lut", "show", lut) == {"code": 0, "heavy": []}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_summary_in_the_group_help_is_the_commands_own(name):
    where, summary = COMMANDS[name]
    command = main.get_command(click.Context(main), name)
    assert command is not None and f"{command.callback.__module__}:{command.name}" == where
    for limit in (45, 80, 1000):
        assert click.Command(name, help=summary).get_short_help_str(limit) == command.get_short_help_str(limit)
