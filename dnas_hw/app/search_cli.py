"""`dnas-hw search`: find the most accurate arch of a space under a latency budget."""

from __future__ import annotations

from pathlib import Path

import click

from dnas_hw.app.cli_types import DURATION_US, config_options
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
@config_options(SearchConfig, hidden=("stop_after",))
def search(data_dir, space_name, lut_path, budget_us, batch_size, out, resume, backend, device, threads, force, **knobs) -> None:
    """Search SPACE on DATA for the best arch whose LUT latency at --batch-size fits --latency-budget.

    Under `torchrun --nproc_per_node N -m dnas_hw.app.cli search ...` the N processes
    search data-parallel (--train-batch-size is the global batch) and rank 0 writes.
    Every `search.config.SearchConfig` field is an option (--epochs, --weight-lr, ...).
    """
    from dnas_hw import distributed
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.space import get_space
    from lut.table import Lut
    from search.run import run_search

    config = SearchConfig.from_dict({k: v for k, v in knobs.items() if v is not None})
    lut = Lut.load(lut_path)
    lut.check_target(force=force, backend=backend, device=device, threads=threads)
    space = get_space(space_name, cardinalities=PreparedData.open(data_dir).cardinalities)
    with distributed.session():
        summary = run_search(data_dir, space, lut, budget_us=budget_us, batch_size=batch_size, out=out, config=config, resume=resume)
        if not distributed.is_main() or "stopped_after_epoch" in summary:
            return
    click.echo(
        f"arch predicted {summary['predicted_latency_ms']:.3f}ms at batch {summary['batch_size']} "
        f"(budget {summary['latency_budget_ms']:.3f}ms, {summary['budget_used']:.0%} used; {summary['budget_status']})"
    )
    click.echo(f"wrote {Path(out) / 'arch.json'}, arch_probs.json, search_log.csv, summary.json")
