"""Running the `dnas-hw` CLI in-process and checking its one-line errors, for the test modules that need both."""

from __future__ import annotations

from click.testing import CliRunner

from dnas_hw.app.cli import main


def run(*args) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `dnas-hw ARGS...`; each arg is passed as str()."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def last_error_line(code: int, out: str, needle: str) -> None:
    """Exit code 2, the last line `error: ...` naming `needle` (progress lines may come before it), no traceback."""
    assert code == 2, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and needle in lines[-1], out
    assert "Traceback" not in out


def one_error_line(code: int, out: str, needle: str) -> None:
    """As `last_error_line`, and that line is all the output."""
    assert code == 2, out
    assert len([line for line in out.splitlines() if line.strip()]) == 1, out
    last_error_line(code, out, needle)
