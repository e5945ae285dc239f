"""`dnas-hw search`: find the most accurate arch of a space under a latency budget."""

from __future__ import annotations

from pathlib import Path

import click

from dnas_hw.cli_types import DURATION_US


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Prepared data folder (dnas-hw data prepare/synth).")
@click.option("--space", "space_name", required=True, help="Built-in space (dlrm-kaggle, dlrm-tiny) or a .toml file.")
@click.option("--lut", "lut_path", required=True, type=click.Path(), help="Latency LUT CSV (dnas-hw profile).")
@click.option("--latency-budget", "budget_us", required=True, type=DURATION_US, help="Budget at the serving batch size, e.g. 0.8ms or 800us.")
@click.option("--batch-size", required=True, type=int, help="Serving batch size the budget and the LUT rows refer to.")
@click.option("--out", required=True, type=click.Path(), help="Run folder (arch.json, arch_probs.json, search_log.csv, summary.json).")
@click.option("--epochs", default=None, type=int, help="Search epochs [default: SearchConfig.epochs].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue an interrupted search in --out from its last finished epoch (a finished one gives its result, if run with the same options).")
@click.option("--train-batch-size", default=None, type=int, help="Supernet training batch size [default: 256].")
@click.option("--warmup-epochs", default=None, type=int, help="Weight-only epochs before the logits move [default: 1].")
@click.option("--weight-optimizer", default=None, type=click.Choice(["sgd", "adagrad", "adam"]),
              help="Optimizer of the supernet's weights; use the one the derived arch will be retrained with [default: SearchConfig].")
@click.option("--weight-lr", default=None, type=float, help="Learning rate of the supernet's weights [default: SearchConfig].")
@click.option("--penalty", default=None, type=click.Choice(["band", "hinge", "linear-log", "fbnet"]), help="Budget term form: band (two-sided, default), hinge (pushes down only), linear-log, fbnet.")
@click.option("--sampling", default=None, type=click.Choice(["per-batch", "per-sample"]), help="One Gumbel draw per batch or per sample.")
@click.option("--hard/--soft", default=None, help="Straight-through one-hot samples (single-path weight steps) or soft mixtures [default: hard].")
@click.option("--enumerate/--straight-through", "enumerate_groups", default=None,
              help="Arch steps: the interaction kind's logit gradient by running every kind (exact), or straight-through like the other slots [default: straight-through].")
@click.option("--temperature-init", default=None, type=float)
@click.option("--temperature-decay", default=None, type=float, help="Per-epoch factor of the temperature.")
@click.option("--flops-weight", default=None, type=float, help="Weight of an expected-FLOPs term (fraction of the largest arch).")
@click.option("--param-bytes-weight", default=None, type=float, help="Weight of an expected parameter-bytes term.")
@click.option("--backend", default=None, help="Refuse a LUT not measured with this backend.")
@click.option("--device", default=None, help="Refuse a LUT not measured on this device.")
@click.option("--threads", default=None, type=int, help="Refuse a LUT not measured with this thread count.")
@click.option("--force", is_flag=True, help="Use a LUT whose target differs from --backend/--device/--threads.")
@click.option("--stop-after", default=None, type=int, hidden=True, help="Stop after this many epochs, as if killed (tests of --resume).")
def search(data_dir, space_name, lut_path, budget_us, batch_size, out, epochs, seed, resume, train_batch_size,
           warmup_epochs, weight_optimizer, weight_lr, penalty, sampling, hard, enumerate_groups, temperature_init,
           temperature_decay, flops_weight, param_bytes_weight, backend, device, threads, force, stop_after) -> None:
    """Search SPACE on DATA for the best arch whose LUT latency at --batch-size fits --latency-budget.

    Under `torchrun --nproc_per_node N -m dnas_hw.cli search ...` the N processes
    search data-parallel (--train-batch-size is the global batch) and rank 0 writes.
    """
    from dnas_hw import distributed
    from dnas_hw.data.folder import PreparedData
    from dnas_hw.space import get_space
    from lut.table import Lut
    from search.config import SearchConfig
    from search.run import run_search

    overrides = {
        "epochs": epochs, "train_batch_size": train_batch_size, "warmup_epochs": warmup_epochs, "penalty": penalty,
        "weight_optimizer": weight_optimizer, "weight_lr": weight_lr,
        "sampling": sampling, "hard": hard, "enumerate_groups": enumerate_groups, "temperature_init": temperature_init, "temperature_decay": temperature_decay,
        "flops_weight": flops_weight, "param_bytes_weight": param_bytes_weight, "stop_after": stop_after,
    }
    config = SearchConfig.from_dict({"seed": seed, **{k: v for k, v in overrides.items() if v is not None}})
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
