r"""D taken apart, by size range: slopes with bootstrap intervals of every piece of D, and local
slopes.

Reads a run directory of over-specified fits (default ``runs/verdicts``; units still missing are
left out, and the sizes present are printed) and prints, per (truth, estimator):

* the slope of the mean of D, D_mass, D_singleton, D_multi, D_S, D_V and l2_error over each range
  (all sizes present; n >= 1e3; n >= 1e4), with 95% percentile-bootstrap intervals;
* local slopes of the mean D over sliding windows of 4 consecutive sizes, with intervals;
* the share of D from cells whose atoms share a gate, and the certified fraction, at the largest n.

    python simulations/analysis/verdict_slopes.py [runs/verdicts] [--bootstrap 1000] \
        [--out benchmarks/results/verdict_slopes.csv]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from moe_lora import rates, table
from moe_lora.runs import load_results

TERMS = ("D", "D_mass", "D_singleton", "D_multi", "D_S", "D_V", "l2_error")


def main(run: str, bootstrap: int, out: str | None) -> None:
    df, manifest = load_results(run)
    df = table.single_truths(df)
    sizes = sorted(df["n"].unique())
    print(
        f"{run}: {manifest['name']}, sizes present {sizes}, {len(df)} fits, certified "
        f"{df['certified'].mean():.3f}"
    )
    ranges = [(None, None), (1000, None), (10000, None)]
    slopes = rates.term_slopes(df, ranges, terms=TERMS, bootstrap=bootstrap)
    slopes = slopes[slopes["points"] >= 3]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        show = slopes.assign(
            ci=[f"[{a:.2f}, {b:.2f}]" for a, b in zip(slopes.ci_low, slopes.ci_high)]
        )
        print(
            show[["truth", "estimator", "term", "n_min", "n_max", "points", "slope", "ci"]]
            .round(3)
            .to_string(index=False)
        )
        for (truth, est), sub in df.groupby(["truth", "estimator"]):
            local = rates.local_slope_table(sub, "D", window=4, bootstrap=bootstrap)
            cells = ", ".join(
                f"n~{r.n_mid:.0f}: {r.slope:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                for r in local.itertuples()
            )
            print(f"local slopes of mean D, {truth}/{est}: {cells}")
            top = sub[sub["n"] == sub["n"].max()]
            share = (
                top["D_shared_gate"].sum() / top["D"].sum() if "D_shared_gate" in top else np.nan
            )
            print(
                f"  at n = {top['n'].max()}: mean D {top['D'].mean():.4g} (median "
                f"{top['D'].median():.4g}), "
                f"share of D from shared-gate cells {share:.3f}, fits with a shared gate "
                f"{top['shared_gate'].mean():.2f}, "
                f"certified {top['certified'].mean():.2f}"
            )
    if out:
        slopes.to_csv(out, index=False)
        print(f"saved {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="runs/verdicts")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    main(args.run, args.bootstrap, args.out)
