r"""Vanilla's median D over a shared map's, per n, on the same truth and data.

    d=figures/data/verdicts_inside
    python simulations/analysis/verdicts_ratio.py ${d}_tanh_s4,${d}_1e6_tanh_s4 \
        ${d}_vanilla_s4,${d}_1e6_vanilla_s4

Each argument is one or more committed run directories (comma-separated) whose tables are joined,
as ``verdicts_extend.py`` joins a run and its extension. The two must hold the same
truth (checked on the truth label and its statistics in the manifests). Prints, per n from
``--n-min`` (default 1000, the verdict rules' fit range), the median D of each, their ratio and
the fraction of certified fits of each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from moe_lora.runs import load_results


def _joined(arg: str) -> tuple[pd.DataFrame, dict]:
    tables, truths = [], {}
    for d in arg.split(","):
        df, manifest = load_results(Path(d))
        tables.append(df)
        truths.update(manifest["truths"])
    return pd.concat(tables, ignore_index=True), truths


def main(shared: str, vanilla: str, n_min: float) -> None:
    a, ta = _joined(shared)
    b, tb = _joined(vanilla)
    (label,) = set(a["truth"].astype(str)) & set(b["truth"].astype(str)) or {None}
    if label is None or ta[label] != tb[label]:
        raise SystemExit(f"{shared} and {vanilla} do not hold the same truth")
    (est,) = set(a["estimator"])
    a, b = a[a["n"] >= n_min], b[b["n"] >= n_min]
    med = pd.DataFrame(
        {
            est: a.groupby("n")["D"].median(),
            "vanilla": b.groupby("n")["D"].median(),
            f"certified {est}": a.groupby("n")["certified"].mean(),
            "certified vanilla": b.groupby("n")["certified"].mean(),
        }
    ).dropna()
    med["ratio"] = med["vanilla"] / med[est]
    print(f"truth {label}: median D of vanilla over {est}'s, n >= {n_min:g}")
    print(med.to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"ratio range: {med['ratio'].min():.2f} to {med['ratio'].max():.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shared", help="the shared map's run directories, comma-separated")
    ap.add_argument("vanilla", help="vanilla's run directories, comma-separated")
    ap.add_argument("--n-min", type=float, default=1000.0)
    args = ap.parse_args()
    main(args.shared, args.vanilla, args.n_min)
