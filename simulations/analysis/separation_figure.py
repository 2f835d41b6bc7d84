r"""The theory's picture in one look (issue 37): the README's headline figure.

    python simulations/analysis/separation_figure.py figures/data/minimax_shared_gate \
        figures/data/minimax_maps --bounds figures/data/bounds_identifiable/curves.parquet \
        --out figures

Left: the lower bound's implied sample size n(eps) = sigma^2 / m(eps)^2 for the loss D in the
identifiable setting (d = 3, r = 1, p = 2, L = L* + 1; ``curves.parquet`` is written by
``simulations/analysis/bounds_identifiable.py``), one line per family; vanilla's exact flat
set is drawn as its edge, below which n(eps) is infinite. Right: from ``[minimax]`` runs with
worst-case rules (``simulations/minimax_shared_gate.toml``, ``minimax_maps.toml``), the worst
mean D over each estimator's family and its drawn truth at each n (solid;
``moe_lora.rates.cell_statistic``), with the drawn truth's own mean D (faint, dashed), and the
slope of each worst-case curve from the runs' ``verdicts.csv``, if present. Both panels come
from committed data only; the figure is ``OUT/separation.{pdf,png}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from moe_lora.bounds import L2_FLOOR
from moe_lora.palette import estimator_color, estimator_marker, save_figure
from moe_lora.rates import cell_statistic, value_cube
from moe_lora.runs import load_results
from moe_lora.verdicts import family_rows

SIGMA = 0.02
FAMILIES = ("vanilla", "tanh", "linear", "sigmoid", "gelu")


def _left(ax, curves: pd.DataFrame) -> None:
    d = curves[(curves["loss"] == "D") & (curves["extra"] == 1)]
    for est in FAMILIES:
        g = d[d["estimator"] == est]
        if est == "vanilla":
            g = g[g["truth"] == "tanh"]
        if not len(g):
            continue
        inside = g[g["inside"].astype(bool)]
        m = inside[(inside["kind"] == "m") & inside["on_target"].astype(bool)].sort_values("eps")
        flat = inside[inside["l2"] <= L2_FLOOR]
        edge = float(flat["D"].max()) if len(flat) else 0.0
        finite = m[(m["l2"] > L2_FLOOR) & (m["eps"] > edge)]
        color, marker = estimator_color(est), estimator_marker(est)
        label = f"{est}" + (f": exact flat set, n = inf for eps < {edge:.2g}" if edge else "")
        if len(finite):
            ax.plot(
                finite["eps"], SIGMA**2 / finite["l2"] ** 2, color=color, marker=marker, label=label
            )
            label = None
        if edge:
            ax.axvspan(d["eps"].min() / 2, edge, color=color, alpha=0.12, label=label)
            ax.axvline(edge, color=color, ls=":", lw=1.5)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="eps (loss D)",
        ylabel="n(eps) = sigma^2 / m(eps)^2  (lower bound)",
    )
    ax.set_title("Lower bound, d = 3, r = 1, p = 2, L = L* + 1", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def _worst(sub: pd.DataFrame, metric: str = "D"):
    sizes = np.sort(sub["n"].unique())
    return sizes, cell_statistic(value_cube(sub, metric, sizes), "mean")


def _right(ax, df: pd.DataFrame, verdicts: pd.DataFrame | None) -> None:
    fam = family_rows(df)
    for est in ("vanilla", "tanh", "sigmoid", "gelu", "linear"):
        sub = fam[fam["estimator"] == est]
        if not len(sub):
            continue
        color, marker = estimator_color(est), estimator_marker(est)
        family = (
            "shared-gate"
            if sub["truth"].astype(str).str.contains("shared_gate").any()
            else "merging"
        )
        label = f"{est}: worst case over its {family} family"
        if verdicts is not None:
            rows = verdicts[
                (verdicts["estimator"] == est)
                & verdicts["truth"].astype(str).str.endswith("(worst case)")
                & (verdicts["statistic"] == "mean")
            ]
            if len(rows):
                r = rows.iloc[0]
                label += f" (slope {r['slope']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}])"
        sizes, worst = _worst(sub)
        ax.plot(sizes, worst, color=color, marker=marker, label=label)
        drawn = sub[sub["delta"].isna()]
        sizes, mean = _worst(drawn)
        ax.plot(
            sizes, mean, color=color, alpha=0.35, ls="--", label=f"{est}: the drawn truth alone"
        )
    ax.set(xscale="log", yscale="log", xlabel="n", ylabel="mean D over replicates")
    ax.set_title("Truth-free estimator: worst case over each one's hardest family", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)


def main(run_dirs: list[Path], bounds: Path, out: Path) -> None:
    df = pd.concat([load_results(d)[0] for d in run_dirs], ignore_index=True)
    found = [d / "verdicts.csv" for d in run_dirs if (d / "verdicts.csv").exists()]
    verdicts = pd.concat([pd.read_csv(f) for f in found]) if found else None
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    _left(left, pd.read_parquet(bounds))
    _right(right, df, verdicts)
    fig.suptitle(
        "Vanilla LoRA against the shared maps, d = 3, r = 1, p = 2, L = L* + 1", fontsize=11
    )
    for path in save_figure(fig, out, "separation"):
        print(path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", type=Path, nargs="+", help="[minimax] run directories")
    ap.add_argument("--bounds", type=Path, required=True, help="curves.parquet of the bound units")
    ap.add_argument("--out", type=Path, default=Path("figures"))
    args = ap.parse_args()
    main(args.run_dirs, args.bounds, args.out)
