"""Write files so that an interrupted run never leaves something that looks complete.

Every output goes to a temporary name beside its destination and is renamed into
place at the end (rename is atomic on one file system). Commands check that
their outputs can be written before they start work (`check_writable`), a
write that fails anyway (a full disk) is a `UserError` naming the output, and
a long job holds a lock on its output (`output_lock`) so that two runs never
write one output at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import math
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


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, kind: str = "file") -> None:
    """Refuse, before any work, an output `path` (a "file" or a "folder") that cannot be written.

    Creates nothing: it finds the folder the output would be written into (the
    nearest one that exists), checks it is a folder, and creates and removes a
    probe file there, which finds a read-only file system, missing permission
    or a path under a regular file, whatever the user's privileges.
    """
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file to write")
    if kind == "folder" and os.path.lexists(path) and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder")
    # A folder output is written beside itself (a temporary sibling renamed into place) and into itself.
    where = path if kind == "folder" and path.is_dir() else _nearest_existing(path.parent)
    if not where.is_dir():
        raise UserError(f"{path}: cannot be written: {where} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dnas-hw-probe.", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{path}: cannot be written ({e.strerror or e})") from None


def write_error(path: str | os.PathLike, error: BaseException) -> UserError:
    """The one-line error for a failed write of `path` (a full disk, a file grown over its limit)."""
    reason = getattr(error, "strerror", None) or first_line(error)
    return UserError(f"{path}: cannot write ({reason})")


def _is_write_failure(error: BaseException, tmp: Path) -> bool:
    """An OSError of writing the temporary `tmp` (or a file in it); not one of reading some input."""
    if not isinstance(error, OSError) or error.errno == errno.EPIPE:
        return False
    name = getattr(error, "filename", None)
    return name is None or str(name).startswith(str(tmp))


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: JSON has no NaN (`null` is what readers accept)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(finite_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success it is renamed to `path`.

    On any failure the temporary file is removed; a failed write of it is a `UserError` naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_mkstemp_like_open(path))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if _is_write_failure(e, tmp):
            raise write_error(path, e) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path`.

    An existing `path` is an error unless `force`. The output is locked while it
    is written (`output_lock`, which also removes what a killed run left). On any
    failure the temporary folder is removed, so nothing half-written is left
    behind; a failed write into it is a `UserError` naming `path`.
    """
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to replace it)")
    with output_lock(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the output from other users
        try:
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except OSError as e:
            if _is_write_failure(e, tmp):
                raise write_error(path, e) from None
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def removed_if_left_empty(folder: str | os.PathLike) -> Iterator[None]:
    """On failure inside the block, remove `folder` if the block created it and left it empty."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                folder.rmdir()  # fails, as it should, when the folder holds anything
        raise


# Outputs this process holds the lock of, with how many `output_lock` blocks hold each.
_HELD: dict[Path, int] = {}


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries (`.NAME.*.tmp`, files or folders) that a killed writer of `path` left beside it.

    Only called by the holder of `path`'s lock: no live process is writing them.
    """
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold `PATH.lock` (an exclusive `flock`, released when the process ends however it ends) while writing `path`.

    A second process asking for it gets a `UserError` naming the holder's pid,
    instead of both doing the same work and overwriting each other. Nested
    blocks of one process on one output share the lock. Once held, temporaries
    a killed writer of `path` left are removed; the lock file is removed on release.
    """
    shown, path = Path(path), Path(os.path.abspath(path))
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    lock = lock_path(path)
    created = []  # parent folders made for the lock, removed again if left empty
    for parent in reversed([p for p in lock.parents if not p.exists()]):
        try:
            parent.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"{shown}: cannot be written ({e.strerror or e})") from None
        created.append(parent)
    fd = _acquire(lock, shown)
    _HELD[path] = 1
    try:
        _remove_stale_temporaries(path)
        yield
    finally:
        del _HELD[path]
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()


def _acquire(lock: Path, path: Path) -> int:
    """An open descriptor of `lock`, exclusively locked and holding this pid."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as e:
            raise UserError(f"{path}: cannot be written ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{path} is being written by another process (pid {holder})") from None
        # The holder before us removes the file on release: lock the file that is at `lock` now.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON a user handed us; a missing or malformed file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def save_torch_atomic(path: str | os.PathLike, fmt: str, payload: dict[str, Any]) -> None:
    """`torch.save({"format": fmt, **payload})` to `path`, atomically."""
    import torch  # here, as in load_torch: the commands that never load torch (`data prepare`, `lut show`) use this module

    with atomic_path(path) as tmp:
        try:
            torch.save({"format": fmt, **payload}, tmp)
        except RuntimeError:  # torch reports a failed write (a full disk) as a RuntimeError with C++ details
            raise UserError(f"{path}: cannot write (the write stopped part-way: is the disk full?)") from None


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
