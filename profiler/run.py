"""Running a profile: measure every key a space needs, flush rows as they come, write the LUT atomically.

Files, for `--out LUT.csv`:

- `LUT.partial.csv` (+ `LUT.partial.meta.json`): rows appended and synced to
  disk as soon as they are measured, a block of ops at a time (the ops whose
  rounds are interleaved, `blocks`), so a killed run loses at most the block in
  flight (seconds of work);
- `LUT.csv` + `LUT.meta.json`: written (each atomically) when every key is
  measured; the partial files are then removed.

`resume=True` keeps the rows of `LUT.partial.csv` and of an existing `LUT.csv`
(measured for the same backend, device, threads and space) and measures only
the keys still missing, for example new batch sizes.

The partial file holds raw op measurements; the final LUT's op rows are those
times their op kind's in-model factor at that batch size (`profiler.overhead`),
recorded with the fit in `LUT.meta.json`: `in_model_factor` is
`{batch size: {op kind: factor}}` (all kinds equal where the common factor won;
LUTs written before per-kind factors hold one number per batch size, which
applies to every kind), `model_overhead` `{batch size: [reference points]}`,
`in_model_fit` `{batch size: {"method": "common" or "per-kind", "loo_error":
{method: leave-one-out median relative error}}}`, and `whole_arch_correction`
`{batch size: {"method", "terms", "loo_error"}}` (`lut.correction`), fitted on
the same references.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Sequence

import click
import torch

from dnas_hw.data.ids import DATA, IdSource, mismatch
from dnas_hw.errors import UserError
from dnas_hw.files import atomic_path, check_writable, output_lock, read_json, write_json_atomic
from dnas_hw.memory import require_memory
from dnas_hw.ops import OpCall
from dnas_hw.progress import progress
from dnas_hw.timing import TimingStats
from lut.correction import correction_meta
from lut.table import COLUMNS, OVERHEAD_OP, TARGET_FIELDS, Lut, LutError, meta_path, overhead_call
from profiler.environment import lut_meta
from profiler.keys import all_keys, space_calls, table_features
from profiler.overhead import measure_in_model
from profiler.runners import BACKENDS, DEVICES
from profiler.timers import op_timer

Key = tuple[str, str, int]

# A block of ops timed together, their rounds interleaved (`OpTimer.measure_block`): at most this many ops, and
# at most this many bytes of weights and tables held at once (a block's ops are all built before timing starts).
# The more ops, the further apart an op's rounds: with 16, a slow spell of the shared machine that outlasted a
# block's ~10 s put all four 1728-wide torch layers 9-13% high in a `lut_fidelity.py` run (docs/profiling.md).
BLOCK_OPS = 48
BLOCK_BYTES = 1 << 30


def blocks(todo: Sequence[tuple[OpCall, list[int]]], seed: int = 0) -> list[list[tuple[OpCall, list[int]]]]:
    """`todo` in a seeded random order, cut into blocks of at most `BLOCK_OPS` ops and `BLOCK_BYTES` bytes
    (one op at least). The order is shuffled so that ops of one family (say every layer 1728 wide) do not share a
    block, and one slow spell cannot put all of them high: the errors of an arch's ops stay independent."""
    shuffled = list(todo)
    random.Random(f"profile-blocks:{seed}").shuffle(shuffled)
    out: list[list] = []
    size = 0
    for item in shuffled:
        nbytes = 4 * item[0].num_params()
        if not out or len(out[-1]) >= BLOCK_OPS or size + nbytes > BLOCK_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += nbytes
    return out


def partial_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    stem = out.name[: -len(".csv")] if out.name.endswith(".csv") else out.name
    return out.with_name(stem + ".partial.csv")


# The finest latency a row records. An op timed at or under its null call's cost (the timer's resolution) would
# get a median of zero, which makes the op free to the search and which a LUT refuses.
RESOLUTION_US = 0.001


def row(key: Key, stats: TimingStats) -> dict:
    op, params, b = key
    if op != OVERHEAD_OP and stats.p50_us < RESOLUTION_US:
        stats = TimingStats(max(stats.p10_us, 0.0), RESOLUTION_US, max(stats.p90_us, RESOLUTION_US), stats.repeats)
    return {
        "op": op, "params": params, "batch_size": int(b),
        "p10_us": round(stats.p10_us, 4), "p50_us": round(stats.p50_us, 4), "p90_us": round(stats.p90_us, 4),
        "repeats": int(stats.repeats),
    }


def stats_of(r: dict) -> TimingStats:
    return TimingStats(float(r["p10_us"]), float(r["p50_us"]), float(r["p90_us"]), int(r["repeats"]))


class PartialFile:
    """`LUT.partial.csv`: rows appended one line at a time, flushed and synced."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict]:
        """The complete rows already written (a line cut short by a kill is skipped)."""
        if not self.path.is_file():
            return []
        rows = []
        with open(self.path, newline="") as f:
            for r in csv.DictReader(f):
                try:
                    rows.append(row((r["op"], r["params"], int(r["batch_size"])), stats_of(r)))
                except (TypeError, ValueError, KeyError):
                    continue
        return rows

    def start(self, meta: dict, rows: Sequence[dict]) -> None:
        """A fresh file holding `rows` (the ones kept on resume) and its metadata."""
        write_json_atomic(meta_path(self.path), meta)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def append_rows(self, rows: Sequence[dict]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        meta_path(self.path).unlink(missing_ok=True)


def _check_args(backend: str, device: str, threads: int, batch_sizes: Sequence[int]) -> list[int]:
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: use one of {list(BACKENDS)}")
    if device not in DEVICES:
        raise UserError(f"device {device!r}: use one of {list(DEVICES)}")
    if device == "cuda" and backend == "torch":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device here")
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads must be a positive integer, got {threads!r}")
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise UserError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    return sizes


def op_factor(factors: dict, op: str, batch_size: int) -> float:
    """The in-model factor of op kind `op` at `batch_size` from the metadata's `in_model_factor`
    (`{batch size: {kind: factor}}`, or one number per batch size in LUTs written before per-kind factors)."""
    at_b = factors[str(batch_size)]
    return float(at_b) if isinstance(at_b, (int, float)) else float(at_b[op])


def scaled(r: dict, factors: dict) -> dict:
    """A raw op row with its latencies multiplied by its kind's in-model factor."""
    key = (r["op"], r["params"], int(r["batch_size"]))
    factor = op_factor(factors, r["op"], key[2])
    return row(key, TimingStats(*(factor * float(r[p]) for p in ("p10_us", "p50_us", "p90_us")), int(r["repeats"])))


# The in-model fit's metadata, `{batch size: ...}` each, carried over from earlier runs by `--resume`.
FIT_FIELDS = ("in_model_factor", "model_overhead", "in_model_fit", "whole_arch_correction")


def _kept_rows(sources: Sequence[Path], meta: dict) -> tuple[dict[Key, dict], set[Key], dict[str, dict]]:
    """Rows of earlier runs for the same target and space: `(rows, keys still raw, {fit field: {batch size: ...}})`.

    Rows of a finished `LUT.csv` carry the in-model factor already; rows of a
    partial file are raw measurements.
    """
    kept: dict[Key, dict] = {}
    raw: set[Key] = set()
    fit: dict[str, dict] = {field: {} for field in FIT_FIELDS}
    for path in sources:
        if not path.is_file():
            continue
        old = read_json(meta_path(path), "LUT metadata")
        for field in (*TARGET_FIELDS, "space_hash"):
            if str(old.get(field)) != str(meta[field]):
                raise UserError(
                    f"{path}: measured with {field}={old.get(field)}, this profile has {field}={meta[field]}; "
                    f"use another --out"
                )
        differ = mismatch(IdSource.from_meta(old.get("ids"), str(path)), IdSource.from_meta(meta["ids"], "ids"), str(path))
        if differ:
            raise UserError(f"{differ}; use another --out")
        is_partial = path.name.endswith(".partial.csv")
        rows = PartialFile(path).read() if is_partial else Lut.load(path).rows.to_dict("records")
        for r in rows:
            key = (r["op"], r["params"], int(r["batch_size"]))
            kept[key] = row(key, stats_of(r))
            if is_partial and r["op"] != OVERHEAD_OP:
                raw.add(key)
        for field in FIT_FIELDS:
            fit[field].update(old.get(field, {}))
    return kept, raw, fit


def profile_to_lut(
    space,
    out: str | os.PathLike,
    *,
    backend: str,
    device: str,
    threads: int,
    batch_sizes: Sequence[int],
    resume: bool = False,
    seed: int = 0,
    force: bool = False,
    ids: IdSource | None = None,
) -> Lut:
    """Measure every (op, shape) key of `space` at `batch_sizes` into the LUT `out`; returns it.

    `ids`: where embedding lookups (and the whole reference models) get their
    ids (`dnas_hw.data.ids`; None: spread over each table), recorded in the
    metadata's `ids`. A data source must be the data `space` is bound to.

    Prints the number of keys before it starts and shows a progress bar (keys
    done, rate, time left). See the module docstring for the files and `resume`.
    A finished LUT at `out` is kept unless `resume` (measure what it lacks) or
    `force` (measure it all again). The output is locked while the profile runs,
    so a second profile of it fails at once instead of measuring every key too.
    """
    sizes = _check_args(backend, device, threads, batch_sizes)
    ids = ids or IdSource()
    if ids.kind == DATA:
        _check_bound(space, ids)
    out = Path(out)
    if out.exists() and not (resume or force):
        raise UserError(f"{out}: already exists (use --resume to measure only the keys it lacks, --force to measure again)")
    check_writable(out, "file")
    largest = max((c for c in space_calls(space)), key=lambda c: c.num_params(), default=None)
    if largest is not None:
        require_memory(4 * largest.num_params(), f"the largest op of space {space.name} ({largest})")
    with output_lock(out):
        return _profile(space, out, backend, device, threads, sizes, resume, seed, ids)


def _check_bound(space, ids: IdSource) -> None:
    """A data source's features must be those the space is bound to (the ids replayed must fit its tables)."""
    from dnas_hw.data.folder import PreparedData

    data = PreparedData.open(ids.path)
    if (space.num_dense, tuple(space.cardinalities)) != (data.num_dense, tuple(data.cardinalities)):
        raise UserError(f"space {space.name} is not bound to {ids.path}'s features: give the same folder as --data")


def _profile(space, out: Path, backend: str, device: str, threads: int, sizes: list[int], resume: bool, seed: int,
             ids: IdSource) -> Lut:
    partial = PartialFile(partial_path(out))
    meta = lut_meta(space, backend=backend, device=device, threads=threads, batch_sizes=sizes, seed=seed)
    meta["ids"] = ids.to_meta()
    if resume:
        done, raw, fit = _kept_rows([out, partial.path], meta)
        meta["batch_sizes"] = sorted(set(sizes) | {b for _, _, b in done})
    else:
        if partial.path.is_file():
            click.echo(f"note: discarding the unfinished profile in {partial.path} (use --resume to keep its rows)", err=True)
        done, raw, fit = {}, set(), {field: {} for field in FIT_FIELDS}

    calls = space_calls(space)
    overhead = overhead_call(space.num_dense, space.num_sparse)
    todo = [(c, [b for b in sizes if c.key(b) not in done]) for c in calls]
    todo = [(c, bs) for c, bs in todo if bs]
    overhead_todo = [b for b in sizes if overhead.key(b) not in done]
    missing = sum(len(bs) for _, bs in todo) + len(overhead_todo)
    click.echo(
        f"space {space.name}: {len(calls)} ops x {len(sizes)} batch size(s) + {len(sizes)} model-overhead row(s) = "
        f"{len(all_keys(space, sizes))} keys; {missing} to measure ({backend}, {device}, {threads} thread(s); "
        f"ids {ids.describe()})"
    )

    meta.update(fit)
    factors = fit["in_model_factor"]
    partial.start(meta, list(done.values()))
    timer = op_timer(backend, device, threads, ids=ids, table_features=table_features(space) if ids.kind == DATA else None)
    with progress(missing, "profile", "keys") as bar:
        for block in blocks(todo, seed):
            bar.update(0, status=f"{len(block)} ops from {block[0][0]}"[:60])
            measured = timer.measure_block(block, space.num_sparse, seed)
            for (call, _), by_batch in zip(block, measured):
                for b, stats in by_batch.items():
                    done[call.key(b)] = row(call.key(b), stats)
                    raw.add(call.key(b))
            partial.append_rows([done[call.key(b)] for (call, bs) in block for b in bs])
            bar.update(sum(len(bs) for _, bs in block))
        if overhead_todo:
            fits = measure_in_model(
                space, lambda c, b: stats_of(done[c.key(b)]), backend=backend, device=device, threads=threads,
                batch_sizes=overhead_todo, seed=seed, status=lambda text: bar.update(0, status=text), ids=ids,
            )
            for b, in_model in fits.items():
                factors[str(b)] = in_model.fit.factors
                meta["model_overhead"][str(b)] = in_model.references
                meta["in_model_fit"][str(b)] = {"method": in_model.fit.method, "loo_error": in_model.fit.loo_error}
                if in_model.fit.correction_loo_error:
                    meta["whole_arch_correction"][str(b)] = correction_meta(in_model.fit.correction,
                                                                            in_model.fit.correction_loo_error)
            partial.start(meta, list(done.values()))  # the factors first: the overhead rows are only valid with them
            for b, in_model in fits.items():
                done[overhead.key(b)] = row(overhead.key(b), in_model.fit.overhead)
            partial.append_rows([done[overhead.key(b)] for b in fits])
            bar.update(len(overhead_todo))
    for key in raw:
        done[key] = scaled(done[key], factors)
    try:
        lut = Lut.from_records(list(done.values()), meta, str(out))
    except LutError as e:
        raise UserError(f"{out}: {e}") from None
    lut.save(out)
    partial.remove()
    click.echo(f"wrote {out} ({len(lut.rows)} rows) and {meta_path(out)}")
    return lut
