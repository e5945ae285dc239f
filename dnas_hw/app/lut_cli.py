"""`dnas-hw lut show | predict | validate | merge`: read, use and check latency tables."""

from __future__ import annotations

import json

import click

from dnas_hw.app.cli_types import INT_LIST


def resolve_space(space_name: str, data_dir: str | None):
    """A built-in space or TOML file, bound to the cardinalities of a prepared data folder when given."""
    from dnas_hw.space import get_space

    if data_dir is None:
        return get_space(space_name)
    from dnas_hw.data.folder import PreparedData

    return get_space(space_name, PreparedData.open(data_dir).cardinalities)


SPACE_HELP = "Built-in space (dlrm-kaggle, dlrm-tiny, ...) or a .toml file."
DATA_HELP = "Prepared data folder: bind the space to its per-feature cardinalities and replay its ids (--ids)."
IDS_HELP = ("Ids of the timed embedding lookups: data (replayed from the --data folder's train rows, its real "
            "frequency skew) or spread (over each table without repeats, the worst case) "
            "[default: data with --data, else spread].")


@click.group()
def lut() -> None:
    """Inspect, use and validate latency lookup tables (LUT.csv + LUT.meta.json)."""


@lut.command()
@click.argument("lut_path", metavar="LUT.csv", type=click.Path())
@click.option("--top", default=10, show_default=True, type=int, help="How many of the slowest ops to list.")
def show(lut_path, top) -> None:
    """Summary of a LUT: where it was measured, keys, batch sizes, slowest ops."""
    from lut.table import OVERHEAD_OP, Lut

    table = Lut.load(lut_path)
    m = table.meta
    rows = table.rows
    ops = rows[rows["op"] != OVERHEAD_OP]
    click.echo(f"{lut_path}")
    click.echo(f"  backend   {m.get('backend')} {m.get('backend_version', '')}")
    click.echo(f"  device    {m.get('device')} ({m.get('device_name', '?')}), {m.get('threads')} thread(s)")
    click.echo(f"  measured  {m.get('date', '?')}, space {m.get('space', '?')} ({m.get('space_hash', '?')})")
    click.echo(f"  ids       {table.id_source.describe()}")
    click.echo(f"  keys      {len(ops.drop_duplicates(['op', 'params']))} ops, {len(rows)} rows; batch sizes {table.batch_sizes()}")
    counts = ops.drop_duplicates(["op", "params"])["op"].value_counts().sort_index()
    click.echo("  ops       " + ", ".join(f"{op} x{n}" for op, n in counts.items()))
    for b in table.batch_sizes():
        at = rows[rows["batch_size"] == b]
        over = at[at["op"] == OVERHEAD_OP]["p50_us"]
        overhead = f"{over.iloc[0]:.1f} us" if len(over) else "missing"
        click.echo(f"  batch {b}: model overhead {overhead}; {_in_model_fit(m, b)}{_correction(m, b)}; slowest ops (p50):")
        for r in at[at["op"] != OVERHEAD_OP].nlargest(top, "p50_us").itertuples():
            click.echo(f"    {r.p50_us:12.1f} us  {r.op}{r.params}")


def _in_model_fit(meta: dict, batch_size: int) -> str:
    """The in-model factors folded into the rows at `batch_size`, with the fit that chose them where recorded."""
    factors = meta.get("in_model_factor", {}).get(str(batch_size))
    if factors is None:
        return "no in-model factor"
    if isinstance(factors, (int, float)) or len(set(factors.values())) == 1:
        value = factors if isinstance(factors, (int, float)) else next(iter(factors.values()))
        text = f"in-model factor {value:.3f}"
    else:
        text = "in-model factors " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(factors.items()))
    fit = meta.get("in_model_fit", {}).get(str(batch_size))
    if fit:
        errors = ", ".join(f"{m} {e:.1%}" for m, e in sorted(fit["loo_error"].items()))
        text += f" ({fit['method']} fit" + (f"; leave-one-out error {errors})" if errors else ")")
    return text


def _correction(meta: dict, batch_size: int) -> str:
    """The whole-arch correction at `batch_size` (`lut.correction`), where the profile fitted one."""
    entry = meta.get("whole_arch_correction", {}).get(str(batch_size))
    if not entry:
        return ""
    errors = ", ".join(f"{m} {e:.1%}" for m, e in sorted(entry["loo_error"].items()))
    terms = " + ".join(f"{t['coef']:+.3f} log2({t['feature']} / {t['knot']:.4g})" for t in entry["terms"])
    kept = f"whole-arch correction x (1 {terms})" if entry["method"] == "corrected" else "no whole-arch correction"
    return f"; {kept}" + (f" (leave-one-out error {errors})" if errors else "")


@lut.command()
@click.argument("lut_path", metavar="LUT.csv", type=click.Path())
@click.argument("arch_path", metavar="ARCH.json", type=click.Path())
@click.option("--batch-size", required=True, type=int, help="Batch size to predict at.")
@click.option("--json", "as_json", is_flag=True, help='Print {"predicted_ms": ..., "breakdown": [...]}.')
@click.option("--backend", default=None, help="Refuse a LUT not measured with this backend.")
@click.option("--device", default=None, help="Refuse a LUT not measured on this device.")
@click.option("--threads", default=None, type=int, help="Refuse a LUT not measured with this thread count.")
@click.option("--force", is_flag=True, help="Use a LUT whose target differs from --backend/--device/--threads.")
def predict(lut_path, arch_path, batch_size, as_json, backend, device, threads, force) -> None:
    """Predicted latency of ARCH.json at --batch-size: the sum of its ops' rows plus the model overhead, times the
    LUT's whole-arch correction where it has one."""
    from dnas_hw.family import load_arch
    from lut.predict import predict as predict_arch
    from lut.table import Lut

    table = Lut.load(lut_path)
    table.check_target(force=force, backend=backend, device=device, threads=threads)
    prediction = predict_arch(table, load_arch(arch_path), batch_size)
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
    else:
        click.echo(f"{prediction.total_ms:.4f} ms  (batch {batch_size}, {table.meta.get('backend')} on {table.meta.get('device')})")


@lut.command()
@click.argument("lut_path", metavar="LUT.csv", type=click.Path())
@click.option("--space", "space_name", required=True, help=SPACE_HELP)
@click.option("--data", "data_dir", default=None, type=click.Path(), help=DATA_HELP)
@click.option("--samples", default=50, show_default=True, type=click.IntRange(min=2), help="Random archs to time.")
@click.option("--batch-size", required=True, type=INT_LIST, help="Batch size(s), e.g. 64 or 1,64,512 (one report each).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the arch sample.")
@click.option("--out", required=True, type=click.Path(), help="REPORT.json (with several batch sizes: REPORT.b<B>.json each).")
@click.option("--ids", "ids_choice", default=None, type=click.Choice(["data", "spread"]), help=IDS_HELP)
@click.option("--force", is_flag=True, help="Compare even where the LUT was profiled with other ids than these.")
def validate(lut_path, space_name, data_dir, samples, batch_size, seed, out, ids_choice, force) -> None:
    """Time random archs of the space as whole models on the LUT's backend and compare with its predictions.

    The models see the ids the LUT was profiled with: a LUT of data ids needs the
    same --data, one of spread ids --ids spread (or no --data); --force compares anyway.
    """
    from pathlib import Path

    from dnas_hw.data.ids import id_source
    from dnas_hw.files import check_writable, write_json_atomic
    from lut.table import Lut
    from profiler.validate import validate_many

    sizes = sorted(set(batch_size))
    paths = {b: Path(out) if len(sizes) == 1 else Path(out).with_suffix(f".b{b}.json") for b in sizes}
    for path in paths.values():
        check_writable(path, "file")
    table = Lut.load(lut_path)
    ids = id_source(ids_choice, data_dir)
    differ = table.check_ids(ids, force)
    if differ:
        click.echo(f"warning: {differ} (--force)", err=True)
    space = resolve_space(space_name, data_dir)
    reports = validate_many(table, space, samples=samples, batch_sizes=batch_size, seed=seed, ids=ids)
    for b, report in reports.items():
        path = paths[b]
        write_json_atomic(path, report)
        plain = report.get("additive")
        without = (f" (plain sum, without the whole-arch correction: {plain['median_abs_error_pct']:.2f}%, "
                   f"{plain['within_10pct']:.0%}, {plain['spearman']:.3f})") if plain else ""
        drift = report.get("host_drift")
        drifted = (f"; the LUT's {drift['references']} reference models run {drift['pct']:+.1f}% against the profile, "
                   f"net of that: {drift['net']['median_abs_error_pct']:.2f}%, {drift['net']['within_10pct']:.0%}") if drift else ""
        click.echo(
            f"batch {b}: {report['samples']} archs, median |error| {report['median_abs_error_pct']:.2f}%, "
            f"within 10%: {report['within_10pct']:.0%}, Spearman {report['spearman']:.3f}{without}{drifted} -> {path}"
        )


@lut.command()
@click.argument("lut_paths", metavar="LUT.csv...", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Merged LUT.csv (its .meta.json beside it).")
def merge(lut_paths, out) -> None:
    """Merge LUTs measured on the same backend, device and threads (a key in two of them is an error)."""
    from dnas_hw.files import check_writable
    from lut.table import Lut, merge as merge_luts

    check_writable(out, "file")
    merged = merge_luts([Lut.load(p) for p in lut_paths])
    merged.save(out)
    click.echo(f"wrote {out} ({len(merged.rows)} rows)")
