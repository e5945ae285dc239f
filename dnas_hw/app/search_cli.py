"""`dnas-hw search`: find the most accurate arch of a space under a latency budget."""

from __future__ import annotations

from pathlib import Path

import click

from dnas_hw.app.cli_types import DURATION_US, config_options
from lut.margin import DEFAULT_QUANTILE, QUANTILES
from search.config import SearchConfig


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Prepared data folder (dnas-hw data prepare/synth).")
@click.option("--space", "space_name", required=True, help="Built-in space (dlrm-kaggle, dlrm-tiny) or a .toml file.")
@click.option("--lut", "lut_path", required=True, type=click.Path(), help="Latency LUT CSV (dnas-hw profile).")
@click.option("--latency-budget", "budget_us", required=True, type=DURATION_US, help="Budget at the serving batch size, e.g. 0.8ms or 800us.")
@click.option("--batch-size", required=True, type=int, help="Serving batch size the budget and the LUT rows refer to.")
@click.option("--out", required=True, type=click.Path(), help="Run folder (arch.json, arch_probs.json, search_log.csv, summary.json).")
@click.option("--resume", is_flag=True, help="Continue an interrupted search in --out from its last finished epoch (a finished one gives its result, if run with the same options).")
@click.option("--backend", default=None, help="Refuse a LUT not measured with this backend.")
@click.option("--device", default=None, help="Refuse a LUT not measured on this device.")
@click.option("--threads", default=None, type=int, help="Refuse a LUT not measured with this thread count.")
@click.option("--force", is_flag=True, help="Use a LUT whose target differs from --backend/--device/--threads.")
@click.option("--budget-quantile", default=DEFAULT_QUANTILE, show_default=True, type=click.Choice(QUANTILES),
              help="The measured latency the budget holds: p50 (the median) or p90; the search aims at the budget "
                   "less the LUT's own error margin for it (summary.json: budget_margin).")
@config_options(SearchConfig, hidden=("stop_after",))
def search(data_dir, space_name, lut_path, budget_us, batch_size, out, resume, backend, device, threads, force,
           budget_quantile, **knobs) -> None:
    """Search SPACE on DATA for the best arch whose LUT latency at --batch-size fits --latency-budget.

    The search aims at the budget less the margin by which the LUT under-predicted
    whole models it was not fitted to (lut.margin), so that the derived model's
    measured p50 (or p90) stays within the budget.
    Under `torchrun --nproc_per_node N -m dnas_hw.app.cli search ...` the N processes
    search data-parallel (--train-batch-size is the global batch) and rank 0 writes.
    Every `search.config.SearchConfig` field is an option (--epochs, --weight-lr, ...).
    """
    from dnas_hw import distributed
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.data.ids import data_source, mismatch
    from dnas_hw.space import get_space
    from lut.margin import budget_margin
    from lut.table import Lut
    from search.margin import run_search_within

    config = SearchConfig.from_dict({k: v for k, v in knobs.items() if v is not None})
    lut = Lut.load(lut_path)
    lut.check_target(force=force, backend=backend, device=device, threads=threads)
    space = get_space(space_name, cardinalities=PreparedData.open(data_dir).cardinalities)
    margin = budget_margin(lut, batch_size, budget_quantile)
    with distributed.session():
        summary = run_search_within(data_dir, space, lut, budget_us=budget_us, batch_size=batch_size, out=out,
                                    config=config, resume=resume, budget_quantile=budget_quantile)
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
