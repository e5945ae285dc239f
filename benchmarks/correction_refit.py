"""The whole-arch correction refitted offline on a `lut_fidelity.py` run: before against after on the same measurements.

A profile keeps the correction only where it cuts the references' leave-one-out
error by `profiler.correction_fit.MIN_GAIN`. For each LUT of a
`lut_fidelity.py` output folder and each batch size, this refits the in-model
fit and the correction from the reference points recorded in `LUT.meta.json`
at each `--min-gain` (0: the best candidate kept whenever it helps left-out
references at all) and scores the result on the run's 50 measured archs (its
`<backend>-<device>-b<B>.json` reports): within 10%, median |error|, Spearman,
bias, for the plain sum the LUT holds and for each refit. With `--references`,
the fit is also made from the first N references only: a profile with 32 drawn
references holds the 16-reference draw as its first 17 (`profiler.overhead.reference_archs`),
so the reference count is compared on one host state. No timing: seconds.

    .venv/bin/python benchmarks/correction_refit.py DIR [--min-gain 0.2,0] [--references 17,33]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dnas_hw.space import get_space
from dnas_hw.timing import TimingStats
from lut.correction import arch_features
from lut.table import Lut
from profiler.overhead import PERCENTILES, fit_in_model
from profiler.validate import fidelity, sample_archs


def refit_scores(lut: Lut, report: dict, min_gain: float, references: int | None = None) -> dict:
    """The fit at `min_gain` from `lut`'s recorded references (the first `references` of them: the
    smallest arch, then the drawn ones in their draw's order), scored on `report`'s measured archs."""
    b = int(report["batch_size"])
    space = get_space(lut.meta["space"])
    archs = sample_archs(space, report["samples"], seed=1)  # lut_fidelity.py validates seed 1
    measured = np.array([r["measured_ms"] * 1000 for r in report["archs"]])
    folded = lut.meta["in_model_factor"][str(b)]
    raw = []  # per arch: {op kind: raw p50 sum}, the LUT's folded factor divided out
    for a in archs:
        sums: dict[str, float] = {}
        for _, c in a.ops().named():
            factor = folded if isinstance(folded, (int, float)) else folded[c.op]
            sums[c.op] = sums.get(c.op, 0.0) + lut.latency_us(c, b) / factor
        raw.append(sums)
    refs = lut.meta["model_overhead"][str(b)][:references]
    fit = fit_in_model([TimingStats(r["whole_us"], r["whole_us"], r["whole_p90_us"], 1) for r in refs],
                       [{p: r["ops_us"] for p in PERCENTILES} for r in refs],
                       features=[r["features"] for r in refs], caches=lut.meta.get("caches"), min_gain=min_gain)
    additive = np.array([fit.overhead.p50_us + sum(fit.factors.get(k, 1.0) * v for k, v in o.items()) for o in raw])
    multiplier = np.array([fit.correction.multiplier(arch_features(c for _, c in a.ops().named()))
                           if fit.correction else 1.0 for a in archs])
    terms = [t.to_meta() for t in fit.correction.terms] if fit.correction else []
    return {"min_gain": min_gain, "references": len(refs), "loo_error": fit.correction_loo_error, "terms": terms,
            **fidelity(additive * multiplier, measured)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a lut_fidelity.py --out folder")
    ap.add_argument("--min-gain", default="0.2,0")
    ap.add_argument("--references", default=None,
                    help="refit from the first N recorded references for each N (e.g. 17,33: a 32-sample profile "
                         "read as the 16-sample one it contains), at the first --min-gain")
    args = ap.parse_args()
    gains = [float(g) for g in args.min_gain.split(",")]
    counts = [int(n) for n in args.references.split(",")] if args.references else []
    print(f"{'report':28} {'fit':>14} {'within10':>8} {'med|err|%':>9} {'spearman':>8} {'bias%':>6}  terms")
    for path in sorted(args.run.glob("*-b*.json")):
        report = json.loads(path.read_text())
        lut = Lut.load(report["lut"])
        print(f"{path.name:28} {'as profiled':>14} {report['within_10pct']:8.0%} {report['median_abs_error_pct']:9.2f} "
              f"{report['spearman']:8.3f} {report['mean_error_pct']:+6.1f}")
        for g in gains:
            print_refit(f"min_gain {g}", refit_scores(lut, report, g))
        for n in counts:
            r = refit_scores(lut, report, gains[0], references=n)
            print_refit(f"{r['references']} references", r)


def print_refit(label: str, r: dict) -> None:
    """One refit's row under its report's."""
    terms = ", ".join(f"{t['feature']}@{t['knot']:.3g} {t['coef']:+.3f}" for t in r["terms"]) or "none kept"
    print(f"{'':28} {label:>14} {r['within_10pct']:8.0%} {r['median_abs_error_pct']:9.2f} "
          f"{r['spearman']:8.3f} {r['mean_error_pct']:+6.1f}  {terms}")


if __name__ == "__main__":
    main()
