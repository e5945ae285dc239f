"""`dnas-hw search`: find the most accurate arch of a space under a latency budget."""

from __future__ import annotations

from pathlib import Path

import click

from dnas_hw.app.cli_types import DURATION_LIST, config_options
from lut.margin import DEFAULT_QUANTILE, QUANTILES
from search.config import SearchConfig


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Prepared data folder (dnas-hw data prepare/synth).")
@click.option("--space", "space_name", required=True, help="Built-in space (dlrm-kaggle, dlrm-tiny) or a .toml file.")
@click.option("--lut", "lut_paths", required=True, multiple=True, type=click.Path(),
              help="Latency LUT CSV (dnas-hw profile); repeat it for several targets (one arch per budget and LUT).")
@click.option("--latency-budget", "budgets_us", required=True, type=DURATION_LIST,
              help="Budget at the serving batch size, e.g. 0.8ms or 800us; several (0.5ms,1ms,2ms) search one front.")
@click.option("--batch-size", required=True, type=int, help="Serving batch size the budget and the LUT rows refer to.")
@click.option("--out", required=True, type=click.Path(),
              help="Run folder (arch.json, arch_probs.json, search_log.csv, summary.json); for a front, front.json and one such folder per point.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search in --out from its last finished epoch (a finished one gives its result, if run with the same options).")
@click.option("--backend", default=None, help="Refuse a LUT not measured with this backend.")
@click.option("--device", default=None, help="Refuse a LUT not measured on this device.")
@click.option("--threads", default=None, type=int, help="Refuse a LUT not measured with this thread count.")
@click.option("--force", is_flag=True, help="Use a LUT whose target differs from --backend/--device/--threads.")
@click.option("--budget-quantile", default=DEFAULT_QUANTILE, show_default=True, type=click.Choice(QUANTILES),
              help="The measured latency the budget holds: p50 (the median) or p90; the search aims at the budget "
                   "less the LUT's own error margin for it (summary.json: budget_margin).")
@click.option("--allow-same-target", is_flag=True, help="A front: search several LUTs of one backend, device and thread count.")
@click.option("--front-arch-updates", type=click.IntRange(min=1), default=None,
              help="A front: heads (targets) whose logits each arch batch updates, in turn [default: 2, or 1 for a front of one].")
@click.option("--incumbent", "incumbent_paths", multiple=True, type=click.Path(),
              help="An arch JSON of the space (e.g. the model served today) that starts a finalist at every budget; repeatable.")
@config_options(SearchConfig, hidden=("stop_after",))
def search(data_dir, space_name, lut_paths, budgets_us, batch_size, out, resume, backend, device, threads, force,
           budget_quantile, allow_same_target, front_arch_updates, incumbent_paths, **knobs) -> None:
    """Search SPACE on DATA for the best arch whose LUT latency at --batch-size fits --latency-budget.

    The search aims at the budget less the margin by which the LUT under-predicted
    whole models it was not fitted to (lut.margin), so that the derived model's
    measured p50 (or p90) stays within the budget.
    Under `torchrun --nproc_per_node N -m dnas_hw.app.cli search ...` the N processes
    search data-parallel (--train-batch-size is the global batch) and rank 0 writes.
    Every `search.config.SearchConfig` field is an option (--epochs, --weight-lr, ...).

    Several budgets (--latency-budget 0.5ms,1ms,2ms) or LUTs (--lut a.csv --lut b.csv) search
    one front: the supernet is trained once, with one set of logits per (budget, LUT), and
    --out gets front.json and one run folder per point (search.front).

    The derived arch competes with finalists (search.finalists): itself with another interaction
    kind, width or MLP depth, the DLRM Kaggle reference and every --incumbent, each within the budget
    and trained one pass; the best on held-out train rows is returned.
    """
    from dnas_hw import distributed
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.data.ids import data_source, mismatch
    from dnas_hw.errors import UserError
    from dnas_hw.family import load_arch
    from dnas_hw.space import get_space
    from lut.margin import budget_margin
    from lut.table import Lut
    from search.margin import run_search_within

    config = SearchConfig.from_dict({k: v for k, v in knobs.items() if v is not None})
    luts = [Lut.load(path) for path in lut_paths]
    for lut in luts:
        lut.check_target(force=force, backend=backend, device=device, threads=threads)
    space = get_space(space_name, cardinalities=PreparedData.open(data_dir).cardinalities)
    incumbents = {Path(p).stem: load_arch(p) for p in incumbent_paths}
    if len(incumbents) < len(incumbent_paths):
        raise UserError("--incumbent: two files of one name; give each incumbent its own file name")
    if len(luts) > 1 or len(budgets_us) > 1:
        return _front(data_dir, space, luts, budgets_us, batch_size, out, config, resume, budget_quantile,
                      allow_same_target, front_arch_updates, incumbents)
    (lut,), (budget_us,), (lut_path,) = luts, budgets_us, lut_paths
    margin = budget_margin(lut, batch_size, budget_quantile)
    with distributed.session():
        summary = run_search_within(data_dir, space, lut, budget_us=budget_us, batch_size=batch_size, out=out,
                                    config=config, resume=resume, budget_quantile=budget_quantile, incumbents=incumbents)
        if not distributed.is_main() or "stopped_after_epoch" in summary:
            return
    # Said after the search, not before: an error in the search's own checks must stay the only line.
    differ = mismatch(lut.id_source, data_source(data_dir), lut_path)
    if differ:
        click.echo(f"note: {differ}: its tables are not priced as this data serves them "
                   f"(profile with --data {data_dir})", err=True)
    click.echo(f"budget {budget_us / 1000:.3f}ms, {margin.describe()}: searched against "
               f"{summary['latency_budget_ms']:.3f}ms")
    click.echo(
        f"arch predicted {summary['predicted_latency_ms']:.3f}ms at batch {summary['batch_size']} "
        f"({summary['budget_used']:.0%} of {summary['latency_budget_ms']:.3f}ms used; {summary['budget_status']})"
    )
    click.echo(f"wrote {Path(out) / 'arch.json'}, arch_probs.json, search_log.csv, summary.json")


def _front(data_dir, space, luts, budgets_us, batch_size, out, config, resume, quantile, allow_same_target, arch_updates,
           incumbents) -> None:
    """Several budgets or LUTs: one front search (search.front), one line per point."""
    from dnas_hw.data.ids import data_source, mismatch
    from search.front import run_front

    front = run_front(data_dir, space, luts, budgets_us=list(budgets_us), batch_size=batch_size, out=out, config=config,
                      resume=resume, budget_quantile=quantile, allow_same_target=allow_same_target, arch_updates=arch_updates,
                      incumbents=incumbents)
    if "stopped_after_epoch" in front:
        return
    for lut in luts:
        differ = mismatch(lut.id_source, data_source(data_dir), lut.path)
        if differ:
            click.echo(f"note: {differ}: its tables are not priced as this data serves them "
                       f"(profile with --data {data_dir})", err=True)
    for p in front["points"]:
        click.echo(f"{p['name']}: budget {p['budget_ms']:.3f}ms, searched against {p['searched_against_ms']:.3f}ms "
                   f"(margin {p['margin']:.1%}); arch predicted {p['predicted_latency_ms']:.3f}ms ({p['budget_status']}); "
                   f"supernet val logloss {p['supernet_val_logloss']:.4f}")
    click.echo(f"wrote {Path(out) / 'front.json'} and {len(front['points'])} run folders "
               f"({', '.join(p['name'] for p in front['points'])}) in {front['elapsed_s']:.0f} s")
