"""A search against the budget less the LUT's own error, so that the derived model holds it as measured.

`run_search_within` derives the margin the LUT leaves at the serving batch size
for the measured statistic the user holds (`lut.margin`: p50 by default, or
p90), runs the search unchanged against `budget / (1 + margin)`, and adds to
summary.json what it did:

    "budget_margin": {"quantile", "requested_budget_ms", "margin", "effective_budget_ms",
                      "batch_size", "references", "source", "level"}
    "lut_ids":       the ids the LUT's embedding rows were timed with

The rest of summary.json (`latency_budget_ms`, `budget_used`, `within_budget`,
`budget_status`) is the search's own, against the effective budget.
"""

from __future__ import annotations

from pathlib import Path

from dnas_hw import distributed
from dnas_hw.files import write_json_atomic
from lut.margin import DEFAULT_QUANTILE, Margin, budget_margin
from lut.table import Lut
from search.config import SearchConfig
from search.run import SUMMARY, run_search



def run_search_within(
    data_dir,
    space,
    lut: Lut,
    *,
    budget_us: float,
    batch_size: int,
    out,
    config: SearchConfig,
    resume: bool = False,
    budget_quantile: str = DEFAULT_QUANTILE,
    incumbents: dict | None = None,
) -> dict:
    """`search.run.run_search` against `budget_us` less the LUT's margin for `budget_quantile`; returns
    summary.json's content with `budget_margin` and `lut_ids` added (see the module docstring)."""
    margin = budget_margin(lut, batch_size, budget_quantile)
    summary = run_search(data_dir, space, lut, budget_us=margin.effective_budget_us(budget_us), batch_size=batch_size,
                         out=out, config=config, resume=resume, incumbents=incumbents)
    if "stopped_after_epoch" in summary or not distributed.is_main():
        return summary
    return record_margin(summary, out, margin, budget_us, lut)


def record_margin(summary: dict, out, margin: Margin, budget_us: float, lut: Lut) -> dict:
    """`summary` with `budget_margin` (for the requested `budget_us`) and `lut_ids` added, rewritten
    to `out`/summary.json when they were not there yet."""
    extra = {"budget_margin": margin.to_dict(budget_us), "lut_ids": lut.id_source.describe()}
    if any(summary.get(k) != v for k, v in extra.items()):
        summary = {**summary, **extra}
        write_json_atomic(Path(out) / SUMMARY, summary)
    return summary
