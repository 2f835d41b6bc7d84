"""What the statistical-precision stopping rule changes: two runs of one sweep compared fit by fit.

The two runs must differ only in ``fit.stat_tol`` (same seed, truths, data and starts; e.g.
``simulations/overspecified.toml`` and ``simulations/overspecified_stat.toml``), so every
replicate is paired. Printed per (truth, estimator, n): median iterations under each rule,
certified fractions, mean D under each rule with its Monte Carlo standard error, and the paired
mean change of D with its standard error; then totals of iterations and unit time.

    moe-lora run simulations/overspecified_stat.toml            # the tight run is committed
    python benchmarks/stopping_rule.py figures/data/overspecified runs/overspecified_stat

A change of mean D is "within MC error" when |mean D_stat - mean D_tight| <= 2 x the Monte Carlo
standard error of mean D_tight (sd / sqrt(replicates)). Output also goes to
``benchmarks/results/stopping_rule.csv``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KEY = ["truth", "estimator", "extra", "n", "replicate"]


def unit_seconds(run: Path) -> float | None:
    path = run / "timings.jsonl"
    if not path.exists():
        return None
    return sum(
        json.loads(line)["seconds"] for line in path.read_text().splitlines() if line.strip()
    )


def compare(tight: pd.DataFrame, stat: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-cell summary, fit-by-fit pairs) of two runs that differ only in ``fit.stat_tol``."""
    both = tight[KEY + ["D", "iterations", "certified", "risk"]].merge(
        stat[KEY + ["D", "iterations", "certified", "risk", "sigma"]],
        on=KEY,
        suffixes=("_tight", "_stat"),
        validate="one_to_one",
    )
    if len(both) != len(tight) or len(both) != len(stat):
        raise SystemExit(
            f"the runs do not pair up: {len(tight)} and {len(stat)} fits, {len(both)} in common"
        )
    both["dD"] = both.D_stat - both.D_tight
    both["drisk"] = (both.risk_stat - both.risk_tight) * both.n / both.sigma**2

    def summary(g):
        R = len(g)
        se_tight = g.D_tight.std(ddof=1) / np.sqrt(R)
        return pd.Series(
            dict(
                replicates=R,
                it_tight=g.iterations_tight.median(),
                it_stat=g.iterations_stat.median(),
                cert_tight=g.certified_tight.mean(),
                cert_stat=g.certified_stat.mean(),
                D_tight=g.D_tight.mean(),
                D_stat=g.D_stat.mean(),
                se_tight=se_tight,
                dD=g.dD.mean(),
                se_dD=g.dD.std(ddof=1) / np.sqrt(R),
                within=abs(g.D_stat.mean() - g.D_tight.mean()) <= 2 * se_tight,
                drisk=g.drisk.median(),
            )
        )

    return both.groupby(["truth", "estimator", "extra", "n"]).apply(
        summary, include_groups=False
    ).reset_index(), both


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "tight", type=Path, help="run (or figures/data) directory with the gradient test only"
    )
    ap.add_argument("stat", type=Path, help="run directory with fit.stat_tol set")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "stopping_rule.csv"
    )
    args = ap.parse_args()
    tight, stat = (pd.read_parquet(d / "results.parquet") for d in (args.tight, args.stat))
    cfg = [json.loads((d / "manifest.json").read_text())["config"] for d in (args.tight, args.stat)]
    print(
        f"tight: {args.tight} (stat_tol {cfg[0]['fit'].get('stat_tol', 0)}), stat: {args.stat} "
        f"(stat_tol {cfg[1]['fit']['stat_tol']})"
    )
    table, both = compare(tight, stat)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(
        f"\ntotal iterations: tight {both.iterations_tight.sum()}, stat "
        f"{both.iterations_stat.sum()} "
        f"(ratio {both.iterations_tight.sum() / both.iterations_stat.sum():.1f}x)"
    )
    print(
        f"certified: tight {both.certified_tight.mean():.1%}, stat "
        f"{both.certified_stat.mean():.1%} of {len(both)} fits"
    )
    print(
        f"mean D within 2 MC standard errors of the tight rule's in {table.within.sum()} of "
        f"{len(table)} cells"
    )
    print(
        "median (risk_stat - risk_tight) n / sigma^2 per cell: "
        f"{table.drisk.min():.3g} .. {table.drisk.max():.3g}"
    )
    secs = [unit_seconds(d) for d in (args.tight, args.stat)]
    if all(s is not None for s in secs):
        print(
            f"unit time: tight {secs[0]:.0f} s, stat {secs[1]:.0f} s (ratio "
            f"{secs[0] / secs[1]:.1f}x)"
        )
    elif secs[1] is not None:
        print(
            f"unit time of the stat run: {secs[1]:.0f} s (the tight directory has no timings.jsonl)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
