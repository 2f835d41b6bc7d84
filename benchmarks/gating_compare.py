r"""Softmax against sigmoid gating on the same truths and data: the committed runs side by side.

    python benchmarks/gating_compare.py > benchmarks/results/gating_compare.txt

For each seed k, estimator (tanh, vanilla) and n: the sigmoid arm (``gating_sigmoid_s{k}``,
``gating_sigmoid_vanilla_s{k}``) against the softmax arm (the tanh rows of
``verdicts_identifiable_small_s{k}``, and ``verdicts_identifiable_small_vanilla_s{k}``): the
certified fraction, the median excess risk (risk - risk of the truth on the same data, in units of
sigma^2 / n; negative: the fit is at least as good a least-squares fit as the truth), the median D,
and the ratio of the sigmoid arm's median D (and median L2 error) to the softmax arm's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ARMS = {
    "tanh": ("gating_sigmoid_s{k}", "verdicts_identifiable_small_s{k}"),
    "vanilla": ("gating_sigmoid_vanilla_s{k}", "verdicts_identifiable_small_vanilla_s{k}"),
}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    excess = (df["risk"] - df["risk_truth"]) * df["n"] / df["sigma"] ** 2
    g = df.assign(excess=excess).groupby("n")
    return pd.DataFrame(
        {
            "certified": g["certified"].mean(),
            "excess": g["excess"].median(),
            "D": g["D"].median(),
            "l2": g["l2_error"].median(),
        }
    )


def main(data: Path) -> None:
    rows = []
    for est, (sig, soft) in ARMS.items():
        for k in range(4):
            a = pd.read_parquet(data / sig.format(k=k) / "results.parquet")
            b = pd.read_parquet(data / soft.format(k=k) / "results.parquet")
            a, b = summary(a[a.estimator == est]), summary(b[b.estimator == est])
            for n in a.index:
                rows.append(
                    dict(
                        estimator=est,
                        seed=k,
                        n=n,
                        cert_sigmoid=a.certified[n],
                        cert_softmax=b.certified[n],
                        excess_sigmoid=a.excess[n],
                        excess_softmax=b.excess[n],
                        D_sigmoid=a.D[n],
                        D_softmax=b.D[n],
                        D_ratio=a.D[n] / b.D[n],
                        l2_ratio=a.l2[n] / b.l2[n],
                    )
                )
    t = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(t.round(3).to_string(index=False))
        print()
        print("Per estimator, over seeds and sizes: range of the median-D and median-L2 ratios")
        print(
            t.groupby("estimator")[["D_ratio", "l2_ratio", "cert_sigmoid", "excess_sigmoid"]]
            .agg(["min", "max"])
            .round(3)
            .to_string()
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("figures/data"))
    main(ap.parse_args().data)
