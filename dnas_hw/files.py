"""Write files so that an interrupted run never leaves something that looks complete.

Every output goes to a temporary name beside its destination and is renamed into
place at the end (rename is atomic on one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from dnas_hw.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mkstemp_like_open(path: Path) -> str:
    """A temporary file beside `path`, with the permissions `open()` would give (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return tmp


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _mkstemp_like_open(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success it is renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _mkstemp_like_open(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path`.

    An existing `path` is an error unless `force`. On any failure the temporary
    folder is removed, so nothing half-written is left behind.
    """
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the output from other users
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON a user handed us; a missing or malformed file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def save_torch_atomic(path: str | os.PathLike, fmt: str, payload: dict[str, Any]) -> None:
    """`torch.save({"format": fmt, **payload})` to `path`, atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save({"format": fmt, **payload}, tmp)


def load_torch(path: str | os.PathLike, fmt: str, what: str) -> dict[str, Any]:
    """A file written by `save_torch_atomic(path, fmt, ...)`, read with `weights_only=True` (no pickle
    code runs). A missing, truncated or foreign file is a `UserError` naming `what` it should be."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: unreadable {what} ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise UserError(f"{path}: not a {what} (expected format {fmt!r})")
    return payload


def first_line(error: Exception, limit: int = 120) -> str:
    """An exception's message cut to one line (some torch errors have an empty message)."""
    lines = str(error).splitlines()
    return lines[0][:limit] if lines else "no message"
