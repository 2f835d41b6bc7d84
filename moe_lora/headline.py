r"""The headline figure of the claim: vanilla against a shared map on the same truth and the same
data.

Two panels, the Voronoi loss D and the L2 error against n (log-log). Per estimator: the mean over
replicates (solid) with a bootstrap 95% interval of the mean (band), and the median (dashed) with
its bootstrap 95% interval (error bars). The legend gives each mean curve's slope over the
declared fit range (``[rates] n_min, n_max`` of the run) with its interval. Reference curves are
anchored at the largest n, not at the first, pre-asymptotic point: C sqrt(log n / n) through the
shared map's mean there (the polynomial prediction) and C / log n through vanilla's (the
slower-than-polynomial one).

    python -m moe_lora.headline figures/data/verdicts figures/data/verdicts_vanilla \
        --truth tanh --out figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figures import METRIC_LABELS, estimator_color
from .palette import estimator_marker
from .rates import bootstrap_indices, curve_slope
from .slopes import SlopeSettings, settings
from .table import single_truths


def _intervals(values: np.ndarray, rng, boot: int = 1000, level: float = 0.95):
    """(mean, lo, hi, median, lo, hi) with percentile-bootstrap intervals over replicates."""
    draws = values[bootstrap_indices(rng, boot, len(values))]
    a = (1 - level) / 2
    m, md = draws.mean(1), np.median(draws, 1)
    return (
        values.mean(),
        *np.quantile(m, [a, 1 - a]),
        np.median(values),
        *np.quantile(md, [a, 1 - a]),
    )


def figure_headline(
    df: pd.DataFrame,
    *,
    truth: str,
    estimators=("vanilla", "tanh"),
    slopes: SlopeSettings | None = None,
    **overrides,
) -> Figure:
    """D and L2 against n for ``estimators`` fitted to one ``truth`` (module docstring).

    ``slopes``: the fit range and bootstrap of the slopes in the legend (``SlopeSettings``, or
    its fields as keywords; the statistic is the mean); its seed also seeds the bands."""
    fit = settings(slopes, overrides).replace(statistic="mean")
    seed = fit.seed
    df = single_truths(df)
    df = df[(df["truth"] == truth) & df["estimator"].isin(estimators)]
    missing = [e for e in estimators if e not in set(df["estimator"])]
    if missing:
        raise ValueError(f"figure_headline: no rows of estimator(s) {missing} on truth {truth!r}")
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("D", "l2_error")):
        ends = {}
        for est in estimators:
            sub = df[df["estimator"] == est]
            sizes = np.sort(sub["n"].unique())
            stats = np.array(
                [_intervals(sub.loc[sub["n"] == n, metric].to_numpy(float), rng) for n in sizes]
            )
            color = estimator_color(est)
            s = curve_slope(sub, metric, slopes=fit)
            ax.plot(
                sizes,
                stats[:, 0],
                color=color,
                marker=estimator_marker(est),
                ms=3.5,
                lw=1.6,
                label=f"{est} mean: slope {s['slope']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] "
                f"(n >= {s['n_min']})",
            )
            ax.fill_between(sizes, stats[:, 1], stats[:, 2], color=color, alpha=0.18, lw=0)
            ax.errorbar(
                sizes,
                stats[:, 3],
                yerr=[stats[:, 3] - stats[:, 4], stats[:, 5] - stats[:, 3]],
                color=color,
                ls="--",
                lw=1.0,
                marker="s",
                ms=2.5,
                capsize=1.5,
                alpha=0.8,
                label=f"{est} median",
            )
            ends[est] = (sizes[-1], stats[-1, 0])
        grid = np.geomspace(df["n"].min(), df["n"].max(), 80)
        shared = next((e for e in estimators if e != "vanilla"), None)
        for est, f, ls, name in (
            (shared, lambda m: np.sqrt(np.log(m) / m), "--", "C sqrt(log n / n)"),
            ("vanilla", lambda m: 1 / np.log(m), ":", "C / log n"),
        ):
            if est in ends:
                n0, y0 = ends[est]
                ax.plot(
                    grid,
                    y0 * f(grid) / f(n0),
                    ls=ls,
                    color="0.35",
                    lw=1.1,
                    label=f"{name}, through {est} at n = {n0:.3g}",
                )
        ax.set(xscale="log", yscale="log", xlabel="n", ylabel=METRIC_LABELS.get(metric, metric))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper right")
    fig.suptitle(
        f"Over-specified fits on the {truth} truth, same data: mean (band: 95% bootstrap interval) "
        "and median (bars: 95% interval)",
        fontsize=9,
    )
    return fig


def main(argv=None) -> int:
    from .runs import load_results
    from .runs.store import experiment_of

    ap = argparse.ArgumentParser(
        prog="python -m moe_lora.headline", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "dirs", nargs="+", help="run directories (or figures/data/<name>) holding the estimators"
    )
    ap.add_argument("--truth", default="tanh")
    ap.add_argument(
        "--seed", type=int, help="only the truth drawn at this seed (a study holds several)"
    )
    ap.add_argument("--estimators", nargs="+", default=["vanilla", "tanh"])
    ap.add_argument("--out", default="figures")
    ap.add_argument("--name", default="headline")
    args = ap.parse_args(argv)
    frames, rates = [], None
    for d in args.dirs:
        df, manifest = load_results(d)
        if args.seed is not None:
            df = df[df["seed"] == args.seed]
        frames.append(df)
        rates = rates or experiment_of(manifest).config.rates
    fig = figure_headline(
        pd.concat(frames, ignore_index=True),
        truth=args.truth,
        estimators=args.estimators,
        slopes=SlopeSettings(n_min=rates.n_min, n_max=rates.n_max),
    )
    from .palette import save_figure

    save_figure(fig, args.out, args.name)
    print(Path(args.out) / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
