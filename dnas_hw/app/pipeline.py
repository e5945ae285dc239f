"""`dnas-hw pipeline`: data -> LUT -> one front search of the budgets -> retrain -> export -> bench -> report.

Run folder `RUN/`, one subfolder per stage::

    pipeline.json            the options that decide the data, the LUT and the models (a rerun must agree)
    data/                    synthetic prepared data (absent when --data names a folder)
    lut/lut.csv, .meta.json  the LUT (from the LUT cache when one fits, else profiled into it), its
                             embedding lookups timed with the data's own ids (--ids data) or spread ids
    search/<budget>/         one search run folder per latency budget (arch.json, search_log.csv, ...),
                             searched against the budget less the LUT's margin for --budget-quantile;
                             the budgets are the points of one front search (search/front.json: the
                             supernet trained once for all of them)
    train/<model>/           model.pt and metrics.json of each searched arch and reference, retrained
    export/<model>.onnx      the exported model
    bench/<model>.json       its measured latency (`dnas-hw bench` JSON, with the LUT's ids)
    results.json             one record per model (what report.md shows)
    report.md, *.png         the report

A stage whose outputs exist is not redone, so a second run (or a run after a
kill) redoes only what is missing; the searches and trainings it calls resume
from their last finished epoch.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from dnas_hw.data.ids import DATA, KINDS, IdSource, id_source
from dnas_hw.dlrm.arch import Arch, dlrm_kaggle_reference
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.errors import UserError
from dnas_hw.files import check_writable, read_json, removed_if_left_empty, write_json_atomic
from dnas_hw.space import get_space
from lut.margin import DEFAULT_QUANTILE, QUANTILES

# Defaults sized so that `make demo` finishes in under 10 minutes on a 2-core CPU
# (measured; see docs/workflow.md).
DEFAULT_ROWS = 150_000
DEFAULT_SPACE = "dlrm-kaggle"
DEFAULT_BATCH_SIZE = 64
DEFAULT_SEARCH_EPOCHS = 3
DEFAULT_TRAIN_EPOCHS = 1
# Default budgets: the DLRM Kaggle reference config's LUT latency, and half of it. The
# searched model must beat the hand-designed one at its own latency, and come close at half.
DEFAULT_BUDGET_SHARES_OF_REFERENCE = (1.0, 0.5)
# A space that cannot express the reference (dlrm-tiny, a user's): these fractions of the way from
# its smallest to its largest arch's latency, on a log scale (latencies of archs spread over
# orders of magnitude, mostly near the small end).
FALLBACK_BUDGET_FRACTIONS = (0.25, 0.5)
REFERENCE = "dlrm-kaggle-reference"
REFERENCES = (REFERENCE, "space-smallest", "space-largest")


@dataclass(frozen=True)
class PipelineOptions:
    out: Path
    data_dir: Path | None = None  # None: synthetic data of `rows` rows in RUN/data
    rows: int = DEFAULT_ROWS
    space: str = DEFAULT_SPACE
    budgets_us: tuple[float, ...] = ()  # searched beside the defaults (DEFAULT_BUDGET_SHARES_OF_REFERENCE)
    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    search_epochs: int = DEFAULT_SEARCH_EPOCHS
    train_epochs: int = DEFAULT_TRAIN_EPOCHS
    seed: int = 0
    lut_cache: Path | None = None  # None: default_lut_cache()
    # The ids the LUT's lookups and the bench's calls replay: the data's own (as served) or spread (the worst case).
    ids: str = DATA
    budget_quantile: str = DEFAULT_QUANTILE  # the measured latency each budget holds (`lut.margin`)

    def identity(self) -> dict[str, Any]:
        """What decides the run's data, LUT and models; budgets may be added on a rerun."""
        d = asdict(self)
        for k in ("out", "budgets_us", "lut_cache"):
            d.pop(k)
        d["data_dir"] = str(Path(self.data_dir).resolve()) if self.data_dir else None
        if self.data_dir:
            d.pop("rows")
        return d


@dataclass(frozen=True)
class Candidate:
    """A model the pipeline trains, exports and benches: a searched arch or a reference point."""

    name: str
    kind: str  # "searched" or "reference"
    arch: Arch
    budget_us: float | None = None
    search: dict[str, Any] = field(default_factory=dict)  # the search's summary.json


def default_lut_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dnas-hw" / "luts"


def budget_label(budget_us: float) -> str:
    """`850.0` -> `0.85ms`: a budget as folder names and the report show it (as `search.front.budget_label`
    names a front's points, not imported here: this module loads without torch)."""
    return f"{budget_us / 1000:g}ms"


_STARTED = [time.perf_counter()]


def say(stage: str, text: str) -> None:
    """One progress line on stderr, with the seconds since the pipeline started."""
    click.echo(f"[{time.perf_counter() - _STARTED[0]:6.1f}s {stage}] {text}", err=True)


# --------------------------------------------------------------------------- stages


def stage_data(run: Path, opts: PipelineOptions) -> Path:
    """The prepared-data folder: --data as given, else synthetic rows made once in RUN/data."""
    if opts.data_dir is not None:
        say("data", f"using {opts.data_dir}")
        return Path(opts.data_dir)
    folder = run / "data"
    if (folder / "meta.json").is_file():
        say("data", f"{folder}: done earlier")
        return folder
    from contextlib import ExitStack

    from dnas_hw.data.synth import SynthOptions, synth
    from dnas_hw.progress import progress

    with ExitStack() as stack:
        synth(folder, SynthOptions(opts.rows, opts.seed), force=True,
              progress=lambda stage: stack.enter_context(progress(opts.rows, stage, "rows")).update)
    say("data", f"{folder}: {opts.rows:,} synthetic rows")
    return folder


def lut_cache_path(cache: Path, space: SearchSpace, opts: PipelineOptions, ids: IdSource) -> Path:
    """The cache entry for this machine's CPU, the target, the space (by fingerprint) and the ids (the data's
    fingerprint: the same synthetic rows made again share an entry)."""
    from profiler.environment import machine_info

    cpu = hashlib.sha256(str(machine_info()["cpu"]).encode()).hexdigest()[:8]
    source = f"data{ids.fingerprint}" if ids.kind == DATA else ids.kind
    return cache / f"{opts.backend}-{opts.device}-t{opts.threads}-cpu{cpu}-{space.fingerprint()}-{source}.csv"


def stage_lut(run: Path, space: SearchSpace, opts: PipelineOptions, ids: IdSource) -> Path:
    """RUN/lut/lut.csv covering the space at the serving batch size, its lookups timed with `ids`; profiled
    only when no cached LUT covers it."""
    from lut.table import Lut, meta_path, overhead_call

    target = run / "lut" / "lut.csv"
    if target.is_file() and meta_path(target).is_file():
        say("lut", f"{target}: done earlier")
        return target
    needed = space.op_calls() | {overhead_call(space.num_dense, space.num_sparse)}
    cached = lut_cache_path(Path(opts.lut_cache or default_lut_cache()), space, opts, ids)
    if not (cached.is_file() and not Lut.load(cached).missing(needed, opts.batch_size)):
        from profiler.run import profile_to_lut

        say("lut", f"profiling {len(needed)} keys of space {space.name} into the cache {cached}")
        profile_to_lut(space, cached, backend=opts.backend, device=opts.device, threads=opts.threads,
                       batch_sizes=[opts.batch_size], resume=True, ids=ids)
    else:
        say("lut", f"reusing the cached LUT {cached}")
    lut = Lut.load(cached)
    lut.check_target(backend=opts.backend, device=opts.device, threads=opts.threads)
    lut.check_ids(ids)
    lut.require(needed, opts.batch_size)
    lut.save(target)
    return target


def round_up(value: float, digits: int = 3) -> float:
    """`value` rounded up to `digits` significant digits (budgets that read well in folder names)."""
    step = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return float(f"{math.ceil(value / step - 1e-9) * step:.{digits}g}")


def default_budgets_us(lut, space: SearchSpace, batch_size: int) -> tuple[tuple[float, ...], str]:
    """(budgets, how they were chosen): DEFAULT_BUDGET_SHARES_OF_REFERENCE of the DLRM reference
    config's LUT latency on the space's tables, rounded up (so the reference itself fits the budget
    named after it); for a space without the reference, FALLBACK_BUDGET_FRACTIONS of its range."""
    from lut.predict import predict

    reference = predicted_us(lut, dlrm_kaggle_reference(space.cardinalities), batch_size)
    if reference is not None:
        return (tuple(round_up(reference * share) for share in DEFAULT_BUDGET_SHARES_OF_REFERENCE),
                "the DLRM reference's LUT latency and half of it")
    lo = predict(lut, space.smallest(), batch_size).total_us
    hi = predict(lut, space.largest(), batch_size).total_us
    budgets = (round_up(lo * (hi / lo) ** f) for f in FALLBACK_BUDGET_FRACTIONS)
    return tuple(dict.fromkeys(budgets)), f"space {space.name} lacks the DLRM reference: from its latency range"


def stage_search(run: Path, data_dir: Path, space: SearchSpace, lut, budget_us: float, opts: PipelineOptions) -> Candidate:
    from search.config import SearchConfig
    from search.margin import run_search_within
    from search.run import SUMMARY

    folder = run / "search" / budget_label(budget_us)
    if (folder / SUMMARY).is_file():
        say("search", f"{folder}: done earlier")
        summary = read_json(folder / SUMMARY, "search summary")
    else:
        say("search", f"budget {budget_label(budget_us)} at batch {opts.batch_size} -> {folder}")
        # The supernet's weights and every retraining use `dnas-hw train`'s recipe (the defaults of both configs).
        config = SearchConfig(epochs=opts.search_epochs, seed=opts.seed)
        summary = run_search_within(data_dir, space, lut, budget_us=budget_us, batch_size=opts.batch_size, out=folder,
                                    config=config, resume=True, budget_quantile=opts.budget_quantile)
    return Candidate(f"budget-{budget_label(budget_us)}", "searched", Arch.load(folder / "arch.json"), budget_us, summary)


def stage_searches(run: Path, data_dir: Path, space: SearchSpace, lut, budgets: tuple[float, ...],
                   opts: PipelineOptions) -> list[Candidate]:
    """One searched candidate per budget. The budgets without a finished search go through one front
    search (`search.front`: the supernet trained once, RUN/search/front.json, a run folder
    RUN/search/<budget>/ per point); one budget alone, or budgets added after a front, are searched
    one at a time (`stage_search`)."""
    from search.front import FRONT, run_front
    from search.run import SUMMARY

    folder = run / "search"
    todo = [b for b in budgets if not (folder / budget_label(b) / SUMMARY).is_file()]
    if len(todo) > 1 and not (folder / FRONT).is_file():
        from search.config import SearchConfig

        say("search", f"one front of {len(todo)} budgets ({', '.join(budget_label(b) for b in todo)}) "
                      f"at batch {opts.batch_size} -> {folder}")
        front = run_front(data_dir, space, [lut], budgets_us=list(todo), batch_size=opts.batch_size, out=folder,
                          config=SearchConfig(epochs=opts.search_epochs, seed=opts.seed), resume=True,
                          budget_quantile=opts.budget_quantile)
        say("search", f"front of {len(todo)} budgets searched in {front['elapsed_s']:.0f} s")
    return [stage_search(run, data_dir, space, lut, b, opts) for b in budgets]


def front_record(run: Path) -> dict[str, Any] | None:
    """RUN/search/front.json's points as the report shows them, or None without a front."""
    path = run / "search" / "front.json"
    if not path.is_file():
        return None
    front = read_json(path, "front")
    keep = ("name", "budget_ms", "searched_against_ms", "predicted_latency_ms", "within_budget", "supernet_val_logloss")
    return {"elapsed_s": front["elapsed_s"], "arch_updates_per_batch": front["arch_updates_per_batch"],
            "points": [{k: p[k] for k in keep} for p in front["points"]]}


def references(space: SearchSpace, cardinalities) -> list[Candidate]:
    """The DLRM Kaggle reference config on the data's tables, and the space's smallest and largest archs."""
    archs = (dlrm_kaggle_reference(cardinalities), space.smallest(), space.largest())
    return [Candidate(name, "reference", arch) for name, arch in zip(REFERENCES, archs)]


def stage_train(run: Path, data_dir: Path, cand: Candidate, opts: PipelineOptions) -> Path:
    from dnas_hw.train import TrainConfig, train_arch

    folder = run / "train" / cand.name
    if (folder / "metrics.json").is_file() and (folder / "model.pt").is_file():
        say("train", f"{folder}: done earlier")
    else:
        say("train", f"{cand.name}: {cand.arch.num_params():,} parameters -> {folder}")
        # resume: continue from the last finished epoch; force: a run killed after writing
        # model.pt but before metrics.json is finished again (its state holds every epoch).
        config = TrainConfig(epochs=opts.train_epochs, seed=opts.seed)
        train_arch(data_dir, cand.arch, folder, config, resume=True, force=(folder / "model.pt").is_file())
    return folder


def stage_export(run: Path, cand: Candidate, checkpoint: Path) -> Path:
    from dnas_hw.export import export_checkpoint

    path = run / "export" / f"{cand.name}.onnx"
    if path.is_file():
        say("export", f"{path}: done earlier")
    else:
        result = export_checkpoint(checkpoint, path, seed=0)
        say("export", f"{path}: parity max abs diff {max(result.max_abs_diff.values()):.1e}")
    return path


def stage_bench(run: Path, cand: Candidate, onnx_path: Path, checkpoint: Path, opts: PipelineOptions,
                ids: IdSource) -> dict:
    from dnas_hw.app.bench import bench

    path = run / "bench" / f"{cand.name}.json"
    if path.is_file():
        say("bench", f"{path}: done earlier")
        return read_json(path, "bench report")
    report = bench(onnx_path, [opts.batch_size], opts.backend, opts.device, opts.threads,
                   checkpoint=checkpoint if opts.backend == "torch" else None, seed=opts.seed, ids=ids)
    write_json_atomic(path, report)
    say("bench", f"{cand.name}: p50 {report['results'][0]['p50_us'] / 1000:.3f} ms at batch {opts.batch_size}")
    return report


# --------------------------------------------------------------------------- the run


def check_identity(run: Path, opts: PipelineOptions) -> dict[str, Any]:
    """RUN/pipeline.json: written on the first run; a rerun with other deciding options is refused."""
    path = run / "pipeline.json"
    mine = opts.identity()
    if path.is_file():
        saved = read_json(path, "pipeline options")
        stored = saved.get("options", {})
        differ = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
        if differ:
            shown = ", ".join(f"{k}={stored.get(k)!r} (now {mine.get(k)!r})" for k in differ[:4])
            raise UserError(f"{run} was made with other options: {shown}; use a new --out")
        return saved
    saved = {"options": mine}
    write_json_atomic(path, saved)
    return saved


def predicted_us(lut, arch: Arch, batch_size: int) -> float | None:
    """The LUT's latency for `arch`, or None when the LUT lacks its keys (an arch outside the space)."""
    from lut.predict import predict
    from lut.table import LutMissError

    try:
        return predict(lut, arch, batch_size).total_us
    except LutMissError:
        return None


def record(cand: Candidate, lut, metrics: dict, bench_report: dict, opts: PipelineOptions, run: Path) -> dict[str, Any]:
    """What the report says about one model."""
    measured = bench_report["results"][0]
    return {
        "name": cand.name,
        "kind": cand.kind,
        "budget_ms": cand.budget_us / 1000 if cand.budget_us else None,
        "predicted_ms": (p / 1000) if (p := predicted_us(lut, cand.arch, opts.batch_size)) is not None else None,
        "measured_p50_ms": measured["p50_us"] / 1000,
        "measured_p90_ms": measured["p90_us"] / 1000,
        # The statistic the budget holds (--budget-quantile), as measured.
        "within_budget": (measured[f"{opts.budget_quantile}_us"] <= cand.budget_us) if cand.budget_us else None,
        "searched_against_ms": cand.search.get("budget_margin", {}).get("effective_budget_ms"),
        "budget_margin": cand.search.get("budget_margin", {}).get("margin"),
        "test_logloss": metrics["test"]["logloss"],
        "test_auc": metrics["test"]["auc"],
        "params": cand.arch.num_params(),
        "embedding_bytes": cand.arch.embedding_bytes(),
        "arch": cand.arch.to_dict(),
        "search_dir": str(run / "search" / budget_label(cand.budget_us)) if cand.budget_us else None,
        "search_status": cand.search.get("budget_status"),
        # The supernet's held-out logloss at the arch over the base rate's (`search.run.supernet_learned`).
        "supernet_normalized_entropy": cand.search.get("supernet_heldout", {}).get("normalized_entropy"),
        # Which finalist the search returned (`search.finalists`): its own arch, a switch of it, or an incumbent.
        "chosen_finalist": cand.search.get("chosen_finalist"),
    }


def run_pipeline(opts: PipelineOptions) -> dict[str, Any]:
    """Run (or complete) the pipeline in `opts.out`; returns results.json's content.

    Search and training run on `opts.threads` torch threads too (restored on return).
    On a shared machine, more threads than free cores made a DLRM training step 18x
    slower (threads spinning for busy cores; docs/workflow.md).
    """
    import torch

    if opts.batch_size < 1 or opts.threads < 1 or opts.search_epochs < 2 or opts.train_epochs < 1:
        raise UserError("batch size, threads and training epochs must be positive, and search epochs at least 2")
    if opts.budget_quantile not in QUANTILES:
        raise UserError(f"budget quantile {opts.budget_quantile!r}: use one of {', '.join(QUANTILES)}")
    if opts.ids not in KINDS:
        raise UserError(f"ids {opts.ids!r}: use one of {', '.join(KINDS)}")
    before = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        return _run_stages(opts)
    finally:
        torch.set_num_threads(before)


def _run_stages(opts: PipelineOptions) -> dict[str, Any]:
    from dnas_hw.app.report import write_report
    from dnas_hw.data.folder import PreparedData
    from lut.table import Lut

    started = _STARTED[0] = time.perf_counter()
    run = Path(opts.out)
    # Every input is checked before pipeline.json records the options: a typo must not bind the folder to them.
    check_writable(run, "folder")
    get_space(opts.space)
    if opts.data_dir is not None:
        get_space(opts.space, cardinalities=PreparedData.open(opts.data_dir).cardinalities)
    with removed_if_left_empty(run):
        run.mkdir(parents=True, exist_ok=True)
        saved = check_identity(run, opts)
    data_dir = stage_data(run, opts)
    data = PreparedData.open(data_dir)
    space = get_space(opts.space, cardinalities=data.cardinalities)
    ids = id_source(opts.ids, data_dir)
    lut = Lut.load(stage_lut(run, space, opts, ids))
    defaults = tuple(saved.get("default_budgets_us") or ())
    if not defaults:
        defaults, how = default_budgets_us(lut, space, opts.batch_size)
        write_json_atomic(run / "pipeline.json", {**saved, "default_budgets_us": list(defaults)})
        say("budgets", f"{how}: {', '.join(budget_label(b) for b in defaults)}")
    budgets = tuple(dict.fromkeys(defaults + tuple(opts.budgets_us)))
    candidates = stage_searches(run, data_dir, space, lut, budgets, opts)
    candidates += references(space, data.cardinalities)
    records = []
    for cand in candidates:
        train_dir = stage_train(run, data_dir, cand, opts)
        onnx_path = stage_export(run, cand, train_dir / "model.pt")
        bench_report = stage_bench(run, cand, onnx_path, train_dir / "model.pt", opts, ids)
        records.append(record(cand, lut, read_json(train_dir / "metrics.json", "metrics"), bench_report, opts, run))
    results = {
        "options": opts.identity(),
        "data": str(data_dir),
        "space": space.name,
        "lut": str(run / "lut" / "lut.csv"),
        "lut_meta": lut.meta,
        "batch_size": opts.batch_size,
        "budgets_ms": [b / 1000 for b in budgets],
        "models": records,
        "front": front_record(run),
    }
    write_json_atomic(run / "results.json", results)
    write_report(run, results)
    say("pipeline", f"done in {time.perf_counter() - started:.0f} s: {run / 'report.md'}")
    return results
