"""`data prepare`: raw Criteo files -> a prepared-data folder, streaming in chunks.

One pass reads, parses, splits, maps categorical values to ids and appends to
the output arrays, a chunk of lines at a time. `--min-count` adds a counting
pass over the train rows first; `--split days` adds a fast line count of the
last file (its size decides where the test and val rows start).

Memory is bounded by the chunk size, plus the vocabulary with `--min-count`.
Chunks are parsed on a small pool of threads (numpy releases the GIL), in
order, so the output does not depend on timing.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from dnas_hw.data import criteo
from dnas_hw.data.criteo import Rows
from dnas_hw.data.folder import MAX_CARDINALITY
from dnas_hw.data.splits import TRAIN, DaysSplit, RandomSplit
from dnas_hw.data.vocab import VOCAB_FILE, HashIds, VocabCounter, Vocabulary
from dnas_hw.data.writer import FolderWriter
from dnas_hw.errors import UserError
from dnas_hw.files import atomic_dir, check_writable, output_lock

# Progress callback: (bytes of input consumed, rows parsed) since the last call.
Progress = Callable[[int, int], None]

DEFAULT_CHUNK_ROWS = 1 << 12  # ~1 MB of text: the parser's arrays stay in the CPU cache


@dataclass(frozen=True)
class PrepareOptions:
    hash_size: int | None = None  # exactly one of hash_size, min_count and vocab_from
    min_count: int | None = None
    split: str = "days"  # "days" | "random"
    val_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0  # used by the random split only
    on_bad_row: str = "error"  # "error" | "skip"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    threads: int = 2
    vocab_from: Path | None = None  # a folder prepared with --min-count: reuse its vocabulary

    def check(self) -> None:
        if sum(x is not None for x in (self.hash_size, self.min_count, self.vocab_from)) != 1:
            raise UserError("give exactly one of --hash-size, --min-count and --vocab")
        if self.hash_size is not None and not 2 <= self.hash_size <= MAX_CARDINALITY:
            raise UserError(
                f"--hash-size must be between 2 and {MAX_CARDINALITY:,} (ids are stored as int32), got {self.hash_size:,}"
            )
        if self.min_count is not None and self.min_count < 1:
            raise UserError(f"--min-count must be at least 1, got {self.min_count}")
        if self.split not in ("days", "random"):
            raise UserError(f"--split must be days or random, got {self.split!r}")
        if not (0 <= self.val_frac <= 1 and 0 <= self.test_frac <= 1 and self.val_frac + self.test_frac < 1):
            raise UserError(f"--val-frac {self.val_frac} and --test-frac {self.test_frac}: need fractions summing below 1")
        if self.on_bad_row not in ("error", "skip"):
            raise UserError(f"--on-bad-row must be error or skip, got {self.on_bad_row!r}")
        if self.chunk_rows < 1:
            raise UserError(f"--chunk-rows must be positive, got {self.chunk_rows}")
        if self.threads < 1:
            raise UserError(f"--threads must be positive, got {self.threads}")


def _map_ahead(fn: Callable, items: Iterator, threads: int) -> Iterator[tuple]:
    """Yield `(item, fn(item))` in the order of `items`, computed on `threads` threads.

    At most `2 * threads` items are in flight, so memory stays bounded.
    """
    with ThreadPoolExecutor(threads) as pool:
        in_flight: deque = deque()
        for item in items:
            in_flight.append((item, pool.submit(fn, item)))
            if len(in_flight) > 2 * threads:
                item, future = in_flight.popleft()
                yield item, future.result()
        while in_flight:
            item, future = in_flight.popleft()
            yield item, future.result()


def _parsed_chunks(
    paths: list[Path], formats: list[criteo.RawFormat], options: PrepareOptions, progress: Progress
) -> Iterator[tuple[int, int, Rows]]:
    """Yield `(file_index, first_row, rows)` in file order, 0-based `first_row` (a header line is no row).

    With `on_bad_row="error"` the first bad row raises its `file:line: reason`.
    """
    for file_index, (path, raw_format) in enumerate(zip(paths, formats)):
        blocks = criteo.read_line_blocks(path, options.chunk_rows, raw_format=raw_format)
        row = 0
        for (block, nbytes), rows in _map_ahead(lambda b: criteo.parse_lines(b[0]), blocks, options.threads):
            if options.on_bad_row == "error" and rows.bad.any():
                raise criteo.first_bad_row(path, raw_format.header_lines + row + 1, block, rows.bad)
            yield file_index, row, rows
            row += len(rows)
            progress(nbytes, len(rows))


def _splitter(paths: list[Path], formats: list[criteo.RawFormat], options: PrepareOptions):
    if options.split == "random":
        return RandomSplit(options.val_frac, options.test_frac, options.seed)
    return DaysSplit(len(paths), criteo.count_lines(paths[-1], raw_format=formats[-1]))


def _count_vocabulary(paths, formats, options, splitter, progress):
    counter = VocabCounter(criteo.NUM_SPARSE)
    for file_index, first_line, rows in _parsed_chunks(paths, formats, options, progress):
        train = (splitter.assign(file_index, first_line, len(rows)) == TRAIN) & ~rows.bad
        counter.add(rows.hashes[train], rows.missing[train])
    return counter.build(options.min_count)


def prepare(
    paths: list[Path],
    out: Path,
    options: PrepareOptions,
    *,
    force: bool = False,
    progress: Callable[[str], Progress] | None = None,
) -> dict:
    """Prepare raw Criteo `paths` (in day order) into the folder `out`; returns its meta.

    `progress(stage)` opens a progress callback for one pass over the input
    (stages "count" and "write").
    """
    paths = [Path(p) for p in paths]
    options.check()
    formats = criteo.check_inputs(paths)
    out = Path(out)
    if out.exists() and not force:  # fail before a long pass, not after it
        raise UserError(f"{out}: already exists (use --force to replace it)")
    check_writable(out, "folder")
    with output_lock(out):
        return _prepare(paths, formats, out, options, force, progress or (lambda stage: lambda nbytes, nrows: None))


def _prepare(paths, formats, out: Path, options: PrepareOptions, force: bool, open_progress) -> dict:
    splitter = _splitter(paths, formats, options)
    if options.hash_size is not None:
        mapper = HashIds(options.hash_size, criteo.NUM_SPARSE)
    elif options.vocab_from is not None:
        mapper = Vocabulary.load(Path(options.vocab_from) / VOCAB_FILE, criteo.NUM_SPARSE)
    else:
        mapper = _count_vocabulary(paths, formats, options, splitter, open_progress("count"))

    with atomic_dir(out, force) as tmp, ExitStack() as stack:
        if isinstance(mapper, Vocabulary):
            mapper.save(tmp / VOCAB_FILE)
        writer = stack.enter_context(FolderWriter(tmp, criteo.NUM_DENSE, criteo.NUM_SPARSE))
        skipped = 0
        for file_index, first_line, rows in _parsed_chunks(paths, formats, options, open_progress("write")):
            codes = splitter.assign(file_index, first_line, len(rows))
            if rows.bad.any():
                skipped += int(rows.bad.sum())
                codes, rows = codes[~rows.bad], rows.select(~rows.bad)
            writer.append(codes, rows.dense, mapper.ids(rows.hashes, rows.missing), rows.labels)
        if sum(writer.rows(s) for s in ("train", "val", "test")) == 0:
            raise UserError(f"{paths[0]}: no valid rows in the input ({skipped} bad rows skipped)")
        source = {
            "kind": "criteo",
            "files": [str(p) for p in paths],
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "threads"},
            "seed": options.seed if options.split == "random" else None,
        }
        return writer.finish(
            mapper.cardinalities(), skipped, source, split=splitter.describe(), ids=mapper.describe()
        )
