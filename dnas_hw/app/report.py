"""The pipeline's report: `report.md` and three PNG plots, from `results.json`'s content.

Plots (matplotlib, Agg backend, no display needed):

- `pareto.png`: measured latency against test logloss for every model; the
  searched archs (each labelled with how it compares with the DLRM reference),
  joined as the searched front (one supernet when the budgets were one front
  search), the references (DLRM Kaggle config, the space's smallest and
  largest archs), the Pareto front over all of them, and the budgets;
- `arch_probs.png`: architecture probabilities after each search epoch, one row
  per budget, one panel per slot kind (mean over the slots of that kind);
- `predicted_vs_measured.png`: the LUT's prediction against the measurement.
"""

from __future__ import annotations

import collections
import datetime as _dt
from pathlib import Path
from typing import Any

from dnas_hw.files import atomic_path, read_json, write_text_atomic

PLOTS = ("pareto.png", "arch_probs.png", "predicted_vs_measured.png")
PROBS_LOG = "arch_probs_epochs.json"
SLOT_KINDS = ("bottom", "bottom_depth", "top", "top_depth", "emb_dim", "emb_rows", "interaction", "interaction_dim")
REFERENCE = "dlrm-kaggle-reference"
REFERENCE_MARKERS = {REFERENCE: "s", "space-smallest": "v", "space-largest": "^"}


def against_reference(model: dict, reference: dict) -> str:
    """How a searched model compares with the DLRM reference, measured: `beats`, `matches`, or what it lacks."""
    faster = model["measured_p50_ms"] <= reference["measured_p50_ms"]
    better = model["test_logloss"] < reference["test_logloss"]
    if faster and better:
        return "beats the reference (lower logloss at no more latency)"
    if better:
        return "more accurate than the reference, but slower"
    if faster:
        return "faster than the reference, but less accurate"
    return "loses to the reference (slower and less accurate)"


def write_report(run: Path, results: dict[str, Any]) -> None:
    """Write RUN/report.md and RUN/{PLOTS}, each atomically."""
    import matplotlib

    matplotlib.use("Agg")
    models = results["models"]
    _save(run / "pareto.png", plot_pareto(models, results["batch_size"], one_supernet=bool(results.get("front"))))
    _save(run / "arch_probs.png", plot_arch_probs([m for m in models if m["kind"] == "searched"]))
    _save(run / "predicted_vs_measured.png", plot_predicted_vs_measured(models, results["batch_size"]))
    write_text_atomic(run / "report.md", markdown(results))


def _save(path: Path, fig) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- plots


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency and logloss (lower is better), by latency."""
    front, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def plot_pareto(models: list[dict], batch_size: int, one_supernet: bool = False):
    """`one_supernet`: the searched archs are the points of one front search (labelled so)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    searched = [m for m in models if m["kind"] == "searched"]
    reference = next((m for m in models if m["name"] == REFERENCE), None)
    if len(searched) > 1:
        line = sorted((m["measured_p50_ms"], m["test_logloss"]) for m in searched)
        ax.plot([x for x, _ in line], [y for _, y in line], color="tab:blue", linewidth=1.5, alpha=0.6, zorder=2,
                label="searched front" + (" (one supernet)" if one_supernet else ""))
    for i, m in enumerate(searched):
        c = colors[i % len(colors)]
        ax.axvline(m["budget_ms"], color=c, linestyle="--", linewidth=0.8)
        verdict = f": {against_reference(m, reference).split(' (')[0]}" if reference else ""
        ax.scatter(m["measured_p50_ms"], m["test_logloss"], color=c, marker="o", s=60, zorder=3,
                   label=f"searched, budget {m['budget_ms']:g} ms{verdict}")
    for m in models:
        if m["kind"] == "reference":
            ax.scatter(m["measured_p50_ms"], m["test_logloss"], color="black", marker=REFERENCE_MARKERS.get(m["name"], "x"),
                       s=60, zorder=3, label=m["name"])
    front = pareto_front([(m["measured_p50_ms"], m["test_logloss"]) for m in models])
    ax.step([x for x, _ in front], [y for _, y in front], where="post", color="gray", linewidth=1, label="Pareto front")
    _latency_axis(ax.xaxis, ax.set_xscale, [m["measured_p50_ms"] for m in models])
    ax.set_xlabel(f"measured latency, p50 at batch {batch_size} (ms)")
    ax.set_ylabel("test logloss")
    ax.set_title("Latency against accuracy (dashed: budgets)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: no point hidden under it
    ax.grid(alpha=0.3)
    return fig


def _latency_axis(axis, set_scale, values: list[float]) -> None:
    """Log scale when latencies span more than a factor of 8, with plain (not 10^k) tick labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if values and max(values) > 8 * min(values):
        set_scale("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _choice_label(kind: str, choice: str, choices: list[str]) -> str:
    """emb_rows choices are per-feature row counts: label them by rank, `size 1 (largest)`, `size 2`, ..."""
    if kind != "emb_rows":
        return choice
    rank = sorted((int(c) for c in choices), reverse=True).index(int(choice)) + 1
    return "size 1 (largest)" if rank == 1 else f"size {rank}"


def mean_probs_by_kind(probs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """`{slot: {choice: p}}` -> `{kind: {choice label: mean p over the kind's slots}}`."""
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: collections.Counter = collections.Counter()
    for slot, dist in probs.items():
        kind = slot.split(".")[0]
        counts[kind] += 1
        for choice, p in dist.items():
            sums[kind][_choice_label(kind, choice, list(dist))] += p
    return {k: {c: s / counts[k] for c, s in sums[k].items()} for k in sums}


def plot_arch_probs(searched: list[dict]):
    import matplotlib.pyplot as plt

    rows = max(len(searched), 1)
    fig, axes = plt.subplots(rows, len(SLOT_KINDS), figsize=(3.2 * len(SLOT_KINDS), 2.6 * rows), squeeze=False)
    for r, m in enumerate(searched):
        path = Path(m["search_dir"]) / PROBS_LOG
        epochs = read_json(path, "per-epoch probabilities") if path.is_file() else []
        by_epoch = [(e["epoch"], mean_probs_by_kind(e["probs"])) for e in epochs]
        for c, kind in enumerate(SLOT_KINDS):
            ax = axes[r][c]
            labels = list(dict.fromkeys(lbl for _, d in by_epoch for lbl in d.get(kind, {})))
            for lbl in labels:
                ax.plot([e for e, _ in by_epoch], [d.get(kind, {}).get(lbl, 0.0) for _, d in by_epoch], marker=".", label=lbl)
            ax.set_ylim(0, 1)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{kind} (budget {m['budget_ms']:g} ms)", fontsize=9)
            ax.set_xlabel("search epoch", fontsize=8)
            if c == 0:
                ax.set_ylabel("mean probability", fontsize=8)
            if labels:
                ax.legend(fontsize=6, loc="best")
            else:
                ax.text(0.5, 0.5, "no per-epoch\nprobabilities", ha="center", va="center", transform=ax.transAxes)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_predicted_vs_measured(models: list[dict], batch_size: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    priced = [m for m in models if m["predicted_ms"] is not None]
    xs = [m["predicted_ms"] for m in priced]
    ys = [m["measured_p50_ms"] for m in priced]
    for m, x, y in zip(priced, xs, ys):
        marker = "o" if m["kind"] == "searched" else REFERENCE_MARKERS.get(m["name"], "x")
        ax.scatter(x, y, marker=marker, s=50, zorder=3)
        ax.annotate(m["name"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if xs:
        lo, hi = min(xs + ys) * 0.8, max(xs + ys) * 1.25
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1, label="measured = predicted")
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.15, label="+-10%")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _latency_axis(ax.xaxis, ax.set_xscale, xs + ys)
        _latency_axis(ax.yaxis, ax.set_yscale, xs + ys)
        ax.legend(fontsize=8)
    ax.set_xlabel(f"LUT prediction at batch {batch_size} (ms)")
    ax.set_ylabel("measured p50 (ms)")
    ax.set_title("Predicted against measured latency")
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- markdown


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _finalist_note(model: dict) -> str:
    """' (finalist `incumbent ...`: ...)' where the search returned another finalist than its own arch
    (`search.finalists`); empty otherwise."""
    chosen = model.get("chosen_finalist")
    if not chosen or chosen == "search":
        return ""
    return f" (finalist `{chosen}`: it trained to a lower logloss on held-out train rows than the search's own arch)"


def _arch_line(arch: dict) -> str:
    dims = collections.Counter(arch["emb_dims"])
    dims_text = ", ".join(f"{n} of dim {d}" for d, n in sorted(dims.items()))
    return (f"bottom MLP {'-'.join(map(str, [arch['num_dense'], *arch['bottom_mlp']]))}, "
            f"interaction {arch['interaction']} at width {arch['bottom_mlp'][-1]}, top MLP {'-'.join(map(str, [*arch['top_mlp'], 1]))}; "
            f"embedding tables: {dims_text}; {sum(arch['emb_rows']):,} rows in all")


def markdown(results: dict[str, Any]) -> str:
    models = results["models"]
    meta = results.get("lut_meta", {})
    b = results["batch_size"]
    lines = [
        "# dnas-hw pipeline report",
        "",
        f"- data: `{results['data']}`",
        f"- space: `{results['space']}`, bound to the data's cardinalities",
        f"- LUT: `{results['lut']}` ({meta.get('backend')} on {meta.get('device')}, {meta.get('threads')} thread(s), "
        f"CPU {meta.get('cpu_model', meta.get('cpu', 'n/a'))})",
        f"- embedding ids of the LUT and of the measurements: {meta.get('ids', {}).get('description', 'spread')}",
        f"- serving batch size: {b}; latencies are per call at that batch size, measured with `dnas-hw bench` on "
        f"{results['options']['backend']}; each budget holds the measured "
        f"{results['options'].get('budget_quantile', 'p50')}, searched against the budget less the LUT's margin",
        f"- written {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "",
        "## Searched models, one row per latency budget",
        "",
        f"| budget ms | searched against ms | LUT predicted ms | measured p50 ms | measured p90 ms "
        f"| within budget (measured {results['options'].get('budget_quantile', 'p50')}) "
        "| test logloss | test AUC | parameters | embedding MB | search | supernet NE |",
        "| ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    searched = [m for m in models if m["kind"] == "searched"]
    for m in searched:
        ne = m.get("supernet_normalized_entropy")
        lines.append(
            f"| {_ms(m['budget_ms'])} | {_ms(m.get('searched_against_ms'))} | {_ms(m['predicted_ms'])} "
            f"| {_ms(m['measured_p50_ms'])} | {_ms(m['measured_p90_ms'])} "
            f"| {'yes' if m['within_budget'] else '**no**'} | {m['test_logloss']:.4f} | {m['test_auc']:.4f} "
            f"| {m['params']:,} | {m['embedding_bytes'] / 2**20:.1f} | {m['search_status']} "
            f"| {'n/a' if ne is None else format(ne, '.3f')} |"
        )
    lines += ["", "Supernet NE: the supernet's held-out logloss at the searched arch over the base rate's (normalized "
                  "entropy); at 1 or more its shared weights predict no better than a constant, and the arch was chosen "
                  "by weights that cannot tell candidates apart."]
    unlearned = [m for m in searched if (m.get("supernet_normalized_entropy") or 0.0) >= 1.0]
    if unlearned:
        lines += ["", f"**The supernet did not learn this data** (NE >= 1 at the {len(unlearned)} budget(s) "
                      f"{', '.join(_ms(m['budget_ms']) + ' ms' for m in unlearned)}): give the search more rows "
                      "(docs/search.md, Known limits)."]
    front = results.get("front")
    if front:
        tested = {m["budget_ms"]: m for m in models if m["kind"] == "searched"}
        lines += [
            "",
            f"## The front: {len(front['points'])} budgets from one supernet",
            "",
            f"The supernet was trained once for all budgets ({front['elapsed_s']:.0f} s; each budget its own "
            f"logits, {front['arch_updates_per_batch']} updated per arch batch). Supernet validation logloss: "
            "the shared weights at the point's choices, before retraining.",
            "",
            "| budget ms | searched against ms | LUT predicted ms | supernet val logloss | retrained test logloss |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for pt in front["points"]:
            m = tested.get(pt["budget_ms"])
            lines.append(f"| {_ms(pt['budget_ms'])} | {_ms(pt['searched_against_ms'])} | {_ms(pt['predicted_latency_ms'])} "
                         f"| {pt['supernet_val_logloss']:.4f} | {m['test_logloss']:.4f} |" if m else
                         f"| {_ms(pt['budget_ms'])} | {_ms(pt['searched_against_ms'])} | {_ms(pt['predicted_latency_ms'])} "
                         f"| {pt['supernet_val_logloss']:.4f} | n/a |")
    reference = next((m for m in models if m["name"] == REFERENCE), None)
    if reference is not None:
        lines += [
            "",
            "## Searched models against the DLRM Kaggle reference",
            "",
            "| budget ms | measured p50 ms: searched / reference | test logloss: searched / reference "
            "| test AUC: searched / reference | verdict |",
            "| ---: | ---: | ---: | ---: | --- |",
        ]
        for m in (m for m in models if m["kind"] == "searched"):
            lines.append(
                f"| {_ms(m['budget_ms'])} | {_ms(m['measured_p50_ms'])} / {_ms(reference['measured_p50_ms'])} "
                f"| {m['test_logloss']:.4f} / {reference['test_logloss']:.4f} | {m['test_auc']:.4f} / {reference['test_auc']:.4f} "
                f"| {against_reference(m, reference)} |"
            )
    lines += [
        "",
        "## Reference points",
        "",
        "| model | LUT predicted ms | measured p50 ms | test logloss | test AUC | parameters | embedding MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in (m for m in models if m["kind"] == "reference"):
        lines.append(
            f"| {m['name']} | {_ms(m['predicted_ms'])} | {_ms(m['measured_p50_ms'])} | {m['test_logloss']:.4f} "
            f"| {m['test_auc']:.4f} | {m['params']:,} | {m['embedding_bytes'] / 2**20:.1f} |"
        )
    if any(m["predicted_ms"] is None for m in models if m["kind"] == "reference"):
        lines += ["", "LUT predicted n/a: the arch has ops outside the space (e.g. the DLRM reference in a space without its widths)."]
    lines += ["", "## Architectures", ""]
    lines += [f"- **{m['name']}**{_finalist_note(m)}: {_arch_line(m['arch'])}" for m in models]
    lines += [
        "",
        "## Plots",
        "",
        "Latency against test logloss: the searched front, the DLRM reference, the space's smallest and largest archs, "
        "the Pareto front over all of them and the budgets (dashed):",
        "",
        "![pareto](pareto.png)",
        "",
        "Architecture probabilities after each search epoch (mean over the slots of each kind):",
        "",
        "![arch probabilities](arch_probs.png)",
        "",
        "LUT prediction against measurement (band: +-10%):",
        "",
        "![predicted vs measured](predicted_vs_measured.png)",
        "",
        "## Files",
        "",
        "`results.json` (everything above), `search/front.json` (the front, when the budgets were searched as one), "
        "`search/<budget>/` (arch.json, arch_probs.json, arch_probs_epochs.json, "
        "search_log.csv, summary.json), `train/<model>/` (model.pt, metrics.json), `export/<model>.onnx`, "
        "`bench/<model>.json`, `lut/lut.csv`.",
        "",
    ]
    return "\n".join(lines)
