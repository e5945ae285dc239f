"""The `dnas-hw` group: --version, and --help on every registered command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from dnas_hw import __version__
from dnas_hw.app.cli import main


def command_paths(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command, as its argument path (`("data", "synth")`)."""
    paths = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        paths.append(prefix + (name,))
        if isinstance(command, click.Group):
            paths += command_paths(command, prefix + (name,))
    return paths


def test_the_commands_of_the_issues_that_landed_are_registered():
    assert {("train",), ("data",)} <= set(command_paths())


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_help_on_every_command(path):
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(main, [*path, flag], prog_name="dnas-hw")
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: dnas-hw {' '.join(path)} ")
        assert "Show this message and exit." in result.output
    command = main
    for name in path:
        command = command.get_command(click.Context(command), name)
    assert (command.help or "").strip(), f"dnas-hw {' '.join(path)} has no help text"


def test_version_and_help_through_the_console_script():
    script = Path(sys.executable).with_name("dnas-hw")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"dnas-hw, version {__version__}"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for path in command_paths():
        if len(path) == 1:
            assert f"  {path[0]} " in result.stdout


@pytest.mark.slow
def test_a_user_error_is_one_line_on_stderr_with_exit_code_2(tmp_path):
    script = Path(sys.executable).with_name("dnas-hw")
    args = ["train", "--data", tmp_path / "no-data", "--arch", tmp_path / "no-arch.json", "--out", tmp_path / "run"]
    result = subprocess.run([script, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'no-arch.json'}: arch file not found"]
    assert result.stdout == "" and not (tmp_path / "run").exists()


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["trian"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_train_threads_sets_torchs_thread_count(synth_dir, tiny_arch_file, tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        args = ["train", "--data", synth_dir, "--arch", tiny_arch_file, "--out", tmp_path / "run", "--threads", "1"]
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (result.output, result.exception)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
