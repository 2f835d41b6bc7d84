"""Two runs of the same config, fit by fit: what changed, and where a run's time went.

For every estimator: the fits paired on (truth, estimator, extra, n, replicate), their total
iterations in each run, the fraction of fits whose D agrees to 1e-6 relative, the median and
largest relative difference of D, the largest relative difference of a cell's mean D (cell:
estimator x n), and the certified fraction in each. Then, from the second run's
``timings.jsonl``, the unit seconds by estimator and by n, and the share of fits at the
iteration cap.

    python benchmarks/compare_runs.py figures/data/verdicts figures/data/verdicts_rerun
    python benchmarks/compare_runs.py figures/data/verdicts_vanilla \\
        figures/data/verdicts_vanilla_rerun
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ["truth", "estimator", "extra", "n", "replicate"]


def compare(first: Path, second: Path) -> str:
    a = pd.read_parquet(first / "results.parquet")
    b = pd.read_parquet(second / "results.parquet")
    both = a.merge(b, on=KEYS, suffixes=("_a", "_b"))
    lines = [f"{first} ({len(a)} fits) against {second} ({len(b)} fits): {len(both)} paired"]
    rel = np.abs(both["D_b"] / both["D_a"] - 1)
    both = both.assign(rel=rel)
    cells = both.groupby(["estimator", "n"])[["D_a", "D_b"]].mean()
    cell_rel = (cells["D_b"] / cells["D_a"] - 1).abs().groupby("estimator").max()
    for est, g in both.groupby("estimator"):
        lines.append(
            f"  {est:8s} iterations {g.iterations_a.sum():>7d} / {g.iterations_b.sum():>7d}; "
            f"D equal to 1e-6: {(g.rel < 1e-6).mean():.0%}; D rel. difference median "
            f"{g.rel.median():.1e}, max {g.rel.max():.2f}; cell mean D max rel. difference "
            f"{cell_rel[est]:.1e}; certified {g.certified_a.mean():.1%} / "
            f"{g.certified_b.mean():.1%}"
        )
    timings = second / "timings.jsonl"
    if timings.exists():
        t = pd.DataFrame([json.loads(line) for line in timings.read_text().splitlines()])
        parts = t["unit"].str.split("__")
        t = t.assign(estimator=parts.str[1], n=parts.str[3].str[1:].astype(int))
        total = t["seconds"].sum()
        lines.append(f"{second}: sum of unit seconds {total:.0f} ({len(t)} units)")
        by_est = t.groupby("estimator")["seconds"].sum().sort_values(ascending=False)
        lines.append(
            "  by estimator: "
            + ", ".join(f"{e} {s:.0f} s ({s / total:.0%})" for e, s in by_est.items())
        )
        by_n = t.groupby("n")["seconds"].sum()
        lines.append(
            "  by n: " + ", ".join(f"{n:g} {s:.0f} s ({s / total:.0%})" for n, s in by_n.items())
        )
        cap = b.assign(cap=b["stop_reason"] == "max_iter").groupby("estimator")["cap"].mean()
        lines.append(
            "  fits at the iteration cap: " + ", ".join(f"{e} {c:.1%}" for e, c in cap.items())
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    args = ap.parse_args()
    print(compare(args.first, args.second))


if __name__ == "__main__":
    main()
