"""The step size tuned per fit against the untuned 1e-2, paired seed by seed on the same data.

    python benchmarks/head_lr_compare.py

Reads ``figures/data/attention_head_lr/results.parquet`` (tuned; ``attention_head_lr.toml``)
and ``figures/data/attention_head_sweeps/results.parquet`` (untuned; same key, seeds and sizes, so
each seed sees the same data in both). Prints, per variation, student and n: the median function
error untuned and tuned, the median paired log-ratio log(tuned / untuned), and how often each
step size was kept. Writes the table to ``benchmarks/results/head_lr_compare.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path("figures/data")
KEYS = ["variation", "student", "n", "seed"]


def compare(tuned: pd.DataFrame, untuned: pd.DataFrame, metric: str = "function_error"):
    """One row per (variation, student, n) present in both tables."""
    both = tuned[KEYS + [metric, "learning_rate"]].merge(
        untuned[KEYS + [metric]], on=KEYS, suffixes=("_tuned", "_untuned")
    )
    rows = []
    for (variation, student, n), g in both.groupby(KEYS[:3], sort=False):
        log_ratio = np.log(g[f"{metric}_tuned"] / g[f"{metric}_untuned"])
        kept = g["learning_rate"].value_counts()
        rows.append(
            {
                "variation": variation,
                "student": student,
                "n": n,
                "seeds": len(g),
                "untuned_median": g[f"{metric}_untuned"].median(),
                "tuned_median": g[f"{metric}_tuned"].median(),
                "log_ratio_median": log_ratio.median(),
                "tuned_better": int((log_ratio < 0).sum()),
                **{
                    f"kept_{r:g}": int(kept.get(r, 0))
                    for r in sorted(tuned["learning_rate"].unique())
                },
            }
        )
    return pd.DataFrame(rows)


def main():
    tuned = pd.read_parquet(DATA / "attention_head_lr" / "results.parquet")
    untuned = pd.read_parquet(DATA / "attention_head_sweeps" / "results.parquet")
    table = compare(tuned, untuned)
    out = Path("benchmarks/results/head_lr_compare.csv")
    table.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.precision", 4):
        print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
