"""The raw Criteo format: reading files in chunks of lines and parsing them.

A raw row is 40 tab-separated fields: `label` (0 or 1), `I1..I13` (integers,
possibly negative), `C1..C26` (32-bit hashes written as hex, 8 characters in
the published files); an empty field is missing. Rows whose trailing empty
fields were stripped (fewer than 40 fields) are padded with missing fields.

The same rows as CSV with a header line `label,I1,...,I13,C1,...,C26` (the
samples of DeepCTR and many notebooks) are read too: `sniff` finds the
delimiter and the header from the first line, the header is skipped and
commas are read as tabs.

Parsing is vectorised over a whole chunk: the positions of tabs and newlines
give every field's start and end, and each field is decoded from an 8-byte
window ending at its end (see `swar`). No Python code runs per row or field,
except to explain the first bad row of a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dnas_hw.data import swar
from dnas_hw.errors import UserError

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
DENSE_NAMES = tuple(f"I{i + 1}" for i in range(NUM_DENSE))
SPARSE_NAMES = tuple(f"C{i + 1}" for i in range(NUM_SPARSE))
HEADER = ("label", *DENSE_NAMES, *SPARSE_NAMES)

# Fields are decoded through windows of up to 16 bytes that end at the field's
# end; a row's first field may be that close to the start of the buffer.
_PAD = 16
_TAB, _LF, _CR, _MINUS, _ZERO, _ONE = 9, 10, 13, ord("-"), ord("0"), ord("1")
_MAX_DENSE_DIGITS = 16
_MAX_HEX_DIGITS = 8


def log_counts(counts: np.ndarray) -> np.ndarray:
    """The dense transform: non-negative integer counts -> float32 log(1 + x).

    The one definition, so that `data synth` and `data prepare` agree bit for bit.
    """
    return np.log1p(counts.astype(np.float32))


@dataclass
class Rows:
    """The parsed rows of one chunk, `n` rows (bad rows included, flagged).

    labels:  float32 [n]       0.0 / 1.0
    dense:   float32 [n, 13]   log(1 + max(x, 0)), missing -> 0
    hashes:  uint32  [n, 26]   the categorical value as a number (0 if missing)
    missing: bool    [n, 26]   the categorical field was empty
    bad:     bool    [n]       the row is malformed (see `explain_bad_line`)
    """

    labels: np.ndarray
    dense: np.ndarray
    hashes: np.ndarray
    missing: np.ndarray
    bad: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, mask: np.ndarray) -> "Rows":
        return Rows(self.labels[mask], self.dense[mask], self.hashes[mask], self.missing[mask], self.bad[mask])


@dataclass(frozen=True)
class LineBlock:
    """Whole lines: `data[start:stop]`, each ending in LF at the positions `newlines`.

    `data` (uint8) starts with `_PAD` filler bytes and is shared by the blocks
    of one read, so cutting blocks copies nothing; bytes before `start` are
    never decoded, only read through windows and masked off.
    """

    data: np.ndarray
    start: int
    stop: int
    newlines: np.ndarray  # int64 [lines], positions in `data`

    @classmethod
    def of(cls, text: bytes) -> "LineBlock":
        """A block of whole lines from text (a missing final LF is added)."""
        data = np.frombuffer(b"0" * _PAD + text + (b"" if text.endswith(b"\n") else b"\n"), np.uint8)
        return cls(data, _PAD, len(data), np.flatnonzero(data == _LF))

    def __len__(self) -> int:
        return len(self.newlines)

    def line(self, i: int) -> bytes:
        """Line i of the block, without its LF."""
        begin = self.start if i == 0 else int(self.newlines[i - 1]) + 1
        return self.data[begin : int(self.newlines[i])].tobytes()


@dataclass(frozen=True)
class RawFormat:
    """How a raw file is written: its field delimiter, and the length of its header line (0: none)."""

    delimiter: int = _TAB
    header_bytes: int = 0

    @property
    def header_lines(self) -> int:
        return int(self.header_bytes > 0)


_SNIFF_BYTES = 1 << 16
_BOM = b"\xef\xbb\xbf"


def sniff(path: Path) -> RawFormat:
    """The delimiter (tab, or comma when the first line has commas and no tab) and header of a raw file.

    A first line whose first field is `label` (any case, quoted or not) is a
    header; it must name the 40 columns in the raw order, since the columns
    are read by position.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    first = head.split(b"\n", 1)[0]
    delimiter = _TAB if b"\t" in first or b"," not in first else ord(",")
    names = [n.strip().strip(b'"').decode("utf-8", errors="replace").lower()
             for n in first.removeprefix(_BOM).rstrip(b"\r").split(bytes([delimiter]))]
    kind = "CSV" if delimiter != _TAB else "tab-separated"
    if names[0] != "label":
        if delimiter != _TAB and not _INTEGER.fullmatch(names[0]):
            raise UserError(
                f"{path}: CSV whose first line is not the header label,I1..I13,C1..C26 (it starts with "
                f"{names[0][:20]!r}); give the raw Criteo columns in that order"
            )
        return RawFormat(delimiter, 0)
    if names != [n.lower() for n in HEADER]:
        shown = ",".join(names[:4]) + (",..." if len(names) > 4 else "")
        raise UserError(
            f"{path}: {kind} header with columns {shown} ({len(names)} of them); expected "
            f"label,I1..I13,C1..C26 in that order"
        )
    if b"\n" not in head:
        raise UserError(f"{path}: a {kind} header and no rows")
    return RawFormat(delimiter, len(first) + 1)


def read_line_blocks(
    path: Path, chunk_rows: int, read_bytes: int = 1 << 24, raw_format: RawFormat = RawFormat()
) -> Iterator[tuple[LineBlock, int]]:
    """Yield `(block, nbytes)`: blocks of at most `chunk_rows` lines of the file, in order.

    `nbytes` is how many bytes of the file the block covers (for progress); a
    missing LF at the end of the file is added. Each read lands in a fresh
    buffer after the filler and the previous read's partial last line, so
    memory stays near two reads of `read_bytes`, whatever the file size.
    With `raw_format` of a CSV file, its header is skipped and commas become tabs.
    """
    tail = np.empty(0, np.uint8)  # a partial last line, carried to the next read
    with open(path, "rb") as f:
        f.seek(raw_format.header_bytes)
        while True:
            buf = np.empty(_PAD + len(tail) + read_bytes + 1, np.uint8)
            buf[:_PAD] = _ZERO
            buf[_PAD : _PAD + len(tail)] = tail
            got = f.readinto(memoryview(buf)[_PAD + len(tail) : -1])
            end = _PAD + len(tail) + got
            if got == 0:
                break
            if raw_format.delimiter != _TAB:
                new = buf[_PAD + len(tail) : end]
                new[new == raw_format.delimiter] = _TAB
            newlines = np.flatnonzero(buf[_PAD + len(tail) : end] == _LF) + _PAD + len(tail)
            if len(newlines):
                yield from _cut_blocks(buf, newlines, chunk_rows)
            tail = buf[(int(newlines[-1]) + 1 if len(newlines) else _PAD) : end].copy()
    if len(tail):
        buf[_PAD : _PAD + len(tail)] = tail
        buf[_PAD + len(tail)] = _LF
        for block, nbytes in _cut_blocks(buf, np.array([_PAD + len(tail)]), chunk_rows):
            yield block, nbytes - 1


def _cut_blocks(data: np.ndarray, newlines: np.ndarray, chunk_rows: int) -> Iterator[tuple[LineBlock, int]]:
    """Cut `_PAD` filler + whole lines (LFs at `newlines`) into blocks of at most `chunk_rows` lines."""
    for k in range(0, len(newlines), chunk_rows):
        ends = newlines[k : k + chunk_rows]
        start = _PAD if k == 0 else int(newlines[k - 1]) + 1
        stop = int(ends[-1]) + 1
        yield LineBlock(data, start, stop, ends), stop - start


def count_lines(path: Path, window: int = 1 << 20, raw_format: RawFormat = RawFormat()) -> int:
    """The number of rows of a raw file (LF count, plus a last line without LF), its header not counted.

    Reads into one reused buffer small enough to stay in cache: about 4x
    faster than counting in freshly allocated `bytes`.
    """
    buf = np.empty(window, np.uint8)
    lines, last = 0, _LF
    with open(path, "rb", buffering=0) as f:
        f.seek(raw_format.header_bytes)
        while got := f.readinto(memoryview(buf)):
            lines += int(np.count_nonzero(buf[:got] == _LF))
            last = buf[got - 1]
    return lines + int(last != _LF)


def _field_bounds(block: LineBlock, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (exclusive) of the 40 fields of every line, and too-long lines.

    Returns `starts, ends` int64 [n, 40] (positions in `buf`) and `too_many`
    bool [n]. Missing trailing fields are empty fields at the line's end.
    """
    newlines = block.newlines
    n = len(newlines)
    line_starts = np.empty(n, np.int64)
    line_starts[0] = block.start
    line_starts[1:] = newlines[:-1] + 1
    line_ends = newlines - (buf[newlines - 1] == _CR)  # tolerate CRLF line ends
    tabs = np.flatnonzero(buf[block.start : block.stop] == _TAB) + block.start
    tabs_per_line = np.diff(np.searchsorted(tabs, newlines), prepend=0)
    too_many = tabs_per_line > NUM_FIELDS - 1

    ends = np.empty((n, NUM_FIELDS), np.int64)
    starts = np.empty_like(ends)
    starts[:, 0] = line_starts
    if len(tabs) == n * (NUM_FIELDS - 1) and not too_many.any():
        # The common case: every line has exactly 40 fields.
        ends[:, :-1] = tabs.reshape(n, NUM_FIELDS - 1)
        ends[:, -1] = line_ends
        np.add(ends[:, :-1], 1, out=starts[:, 1:])
    else:
        ends[:] = line_ends[:, None]
        line_of_tab = np.repeat(np.arange(n), tabs_per_line)
        field_of_tab = np.arange(len(tabs)) - np.repeat(np.cumsum(tabs_per_line) - tabs_per_line, tabs_per_line)
        keep = ~too_many[line_of_tab]
        ends[line_of_tab[keep], field_of_tab[keep]] = tabs[keep]
        # A padded field starts and ends at the line end.
        np.minimum(ends[:, :-1] + 1, ends[:, 1:], out=starts[:, 1:])
    return starts, ends, too_many


def _parse_dense(words: np.ndarray, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Decode integer fields: returns (log1p(max(x, 0)) float32, ok bool), shapes of `starts`."""
    negative = (ends > starts) & (buf[starts] == _MINUS)
    digits = ends - starts - negative
    w = swar.left_fill_zeros(words[ends - 8].astype(np.uint64), np.minimum(digits, 8))
    ok = swar.decimal_ok(w) & (digits <= _MAX_DENSE_DIGITS) & ~(negative & (digits == 0))
    value = swar.decimal_value(w)
    long = np.flatnonzero(digits > 8)
    if len(long):  # rare: more than 8 digits, decode the 8 before the last 8
        e, d = ends.ravel()[long], digits.ravel()[long]
        hw = swar.left_fill_zeros(words[e - 16].astype(np.uint64), np.clip(d - 8, 0, 8))
        ok.ravel()[long] &= swar.decimal_ok(hw)
        value.ravel()[long] += swar.decimal_value(hw) * np.uint64(10**8)
    value[negative] = 0
    return log_counts(value), ok


def _parse_hex(words: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Decode hex fields: returns (value uint32, missing bool, ok bool), shapes of `starts`."""
    length = ends - starts
    w = swar.left_fill_zeros(words[ends - 8].astype(np.uint64), np.minimum(length, _MAX_HEX_DIGITS))
    nibbles, ok = swar.hex_nibbles(w)
    ok &= length <= _MAX_HEX_DIGITS
    return swar.hex_value(nibbles).astype(np.uint32), length == 0, ok


def parse_lines(block: LineBlock | bytes) -> Rows:
    """Parse whole lines in the raw Criteo format (a `LineBlock`, or text for convenience)."""
    if isinstance(block, bytes):
        block = LineBlock.of(block)
    buf = block.data
    # words[i] is the big-endian uint64 made of bytes i..i+7: an 8-byte window
    # at every position, without copying.
    words = np.ndarray((len(buf) - 7,), dtype=">u8", buffer=buf, strides=(1,))
    starts, ends, too_many = _field_bounds(block, buf)

    label_at = starts[:, 0]
    label_byte = buf[label_at]
    label_ok = (ends[:, 0] - label_at == 1) & ((label_byte == _ZERO) | (label_byte == _ONE))
    dense, dense_ok = _parse_dense(words, buf, starts[:, 1 : 1 + NUM_DENSE], ends[:, 1 : 1 + NUM_DENSE])
    hashes, missing, hex_ok = _parse_hex(words, starts[:, 1 + NUM_DENSE :], ends[:, 1 + NUM_DENSE :])
    bad = too_many | ~label_ok
    # Per-row reductions are slow; they are only needed when some field is bad.
    if not dense_ok.all():
        bad |= ~dense_ok.all(axis=1)
    if not hex_ok.all():
        bad |= ~hex_ok.all(axis=1)
    return Rows((label_byte == _ONE).astype(np.float32), dense, hashes, missing, bad)


_INTEGER = re.compile(r"-?[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")


def explain_bad_line(line: bytes) -> str:
    """Why `parse_lines` rejects this line (without its LF), in a few words.

    Written per field in plain Python: it runs once, for the row reported.
    """
    text = line.removesuffix(b"\r").decode("utf-8", errors="replace")  # one CR, as the parser does
    fields = text.split("\t")
    if len(fields) > NUM_FIELDS:
        return f"{len(fields)} fields, expected at most {NUM_FIELDS}"
    fields += [""] * (NUM_FIELDS - len(fields))
    if fields[0] not in ("0", "1"):
        return f"label must be 0 or 1, got {fields[0][:20]!r}"
    for name, value in zip(DENSE_NAMES, fields[1 : 1 + NUM_DENSE]):
        if value and not _INTEGER.fullmatch(value):
            return f"{name}: not an integer: {value[:20]!r}"
        if len(value.lstrip("-")) > _MAX_DENSE_DIGITS:
            return f"{name}: integer with more than {_MAX_DENSE_DIGITS} digits"
    for name, value in zip(SPARSE_NAMES, fields[1 + NUM_DENSE :]):
        if value and not _HEX.fullmatch(value):
            return f"{name}: not a hex value of at most {_MAX_HEX_DIGITS} digits: {value[:20]!r}"
    raise AssertionError(f"row rejected by the parser but not by its explanation: {text[:80]!r}")


def first_bad_row(path: Path, first_line: int, block: LineBlock, bad: np.ndarray) -> UserError:
    """The one-line error for the first bad row of a block (`first_line` is 1-based)."""
    i = int(np.argmax(bad))
    return UserError(f"{path}:{first_line + i}: {explain_bad_line(block.line(i))}")


def check_inputs(paths: list[Path]) -> list[RawFormat]:
    """Every input must exist, be a file and hold at least one byte; returns the format of each (`sniff`)."""
    if not paths:
        raise UserError("no input files given")
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: no such file")
        if not p.is_file():
            raise UserError(f"{p}: not a file")
        if p.stat().st_size == 0:
            raise UserError(f"{p}: empty input file")
        with open(p, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                raise UserError(f"{p}: gzip-compressed; decompress it first (e.g. gunzip -k)")
    return [sniff(p) for p in paths]
