"""Figures of a sweep's tidy results table (one row per truth, estimator, setting, n, replicate).

Every function is a pure function of the table: it draws on a ``matplotlib.figure.Figure`` (no
pyplot, no global state, nothing shown) and returns it; nothing is written here (the ``moe-lora
plot`` command saves PDF and PNG files). In Jupyter a Figure displays itself as a cell's last value.
Panels are (truth, setting) with settings ``extra = L - L*`` as columns; each
estimator has one colour in every figure. NaN and non-positive values are dropped from log plots.

- Figure 1, ``loss_D``: Voronoi loss D against n, log-log, one line per estimator: mean over
  replicates with a 10-90% quantile band, medians as markers, the fitted slope of the mean with its
  bootstrap interval in the legend, and reference curves sqrt(log n / n) and 1 / log n.
- Figure 2, ``loss_l2``: the same for the L2 error ||f_G_n - f_G*||.
- Figure 3, ``sample_complexity``: n(eps) against 1 / eps, from each curve's power law fitted over
  the fit range and inverted, with a bootstrap band; drawn only where eps spans a decade.
- Figure 4, ``minimax``: for a family of truths (``delta`` column), the worst mean loss over the
  family at each n (thick), each truth's mean curve (thin) and the minimax slope.
- Supporting figure, ``diagnostics``: certified and converged fractions, median smallest mixture
  weight, fraction of fits with a multi-atom Voronoi cell and median iterations, against n.

Figures 1-3 use the single truths (``delta`` NaN), figure 4 the families; ``run_figures`` makes
every figure that applies, keyed by its file stem (prefixed by the experiment name when the
table has one). For explorations: ``figure_mixture``, ``figure_curves``, ``figure_cells`` and
``figure_valley``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, NullFormatter
from matplotlib.transforms import ScaledTranslation

from . import rates
from .palette import ESTIMATOR_COLORS, estimator_marker, estimator_order
from .palette import estimator_color as estimator_color
from .slopes import SlopeSettings, settings
from .table import cell_patterns, dead_atoms, families, multi_cell, pooled_truth, single_truths

METRIC_LABELS = {
    "D": "Voronoi loss D",
    "l2_error": "L2 error ||f_G_n - f_G*||",
    "D_unaligned": "unaligned Voronoi loss D",
}
_STEMS = {"D": "loss_D", "l2_error": "loss_l2"}
_MARKERS = "osD^vP*X"


# --------------------------------------------------------------------------------------------
# Shared helpers: panels, curves, references, legends, files (colours: moe_lora.palette)


def _estimators(df: pd.DataFrame) -> list[str]:
    """Estimators of ``df``: known ones in the canonical order, then the others alphabetically."""
    return estimator_order(df["estimator"].unique())


def _setting(extra) -> str:
    extra = int(extra)
    return "exact (L = L*)" if extra == 0 else f"over-specified (L = L* + {extra})"


def _grid(nrows: int, ncols: int, *, sharey="row", w: float = 4.4, h: float = 3.4):
    fig = Figure(
        figsize=(max(w * ncols, 6.8), h * nrows), layout="constrained"
    )  # room for the title
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)


def _panels(df: pd.DataFrame, key: str, title: str, xlabel: str, ylabel: str):
    """Figure with one panel per (``key`` value, extra): rows ``key``, columns settings.

    Returns the figure and a list of (axes, key value, extra, rows of that panel); empty panels
    are switched off. Panels are log-log with titles, x labels and first-column y labels.
    """
    rows, cols = sorted(df[key].unique()), sorted(df["extra"].unique())
    fig, axes = _grid(len(rows), len(cols))
    panels = []
    for i, r in enumerate(rows):
        for j, x in enumerate(cols):
            ax, sub = axes[i, j], df[(df[key] == r) & (df["extra"] == x)]
            if sub.empty:
                ax.set_axis_off()
                continue
            ax.set(xscale="log", yscale="log", xlabel=xlabel, title=f"{title} {r}, {_setting(x)}")
            ax.title.set_fontsize(9)
            ax.grid(True, which="major", alpha=0.3)
            ax.xaxis.set_minor_formatter(
                LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4))
            )  # 3, 20 on short ranges
            if j == 0:
                ax.set_ylabel(ylabel)
            panels.append((ax, r, x, sub))
    return fig, panels


def _curve(sub: pd.DataFrame, metric: str, by=("n",)) -> pd.DataFrame:
    """Mean, median, 10% and 90% quantiles of the positive values of ``metric`` per ``by``."""
    v = sub.loc[(sub[metric] > 0) & (sub["n"] > 0), [*by, metric]]
    g = v.groupby(list(by))[metric]
    return pd.DataFrame(
        {"mean": g.mean(), "median": g.median(), "lo": g.quantile(0.1), "hi": g.quantile(0.9)}
    )


def _references(ax, n, anchors) -> None:
    """Grey sqrt(log n / n) (dashed) and 1 / log n (dotted) through the highest first point.

    Args:
        ax: the panel.
        n: the sizes of the panel.
        anchors: (n0, y0) first points of the panel's curves; the largest y0 is used.
    """
    n = np.asarray(n, float)
    n = n[n > 1]
    anchors = [a for a in anchors if a[0] > 1 and a[1] > 0]
    if not len(n) or not anchors:
        return
    n0, y0 = max(anchors, key=lambda a: a[1])
    grid = np.geomspace(n.min(), n.max(), 60)
    for f, ls, label in (
        (lambda m: np.sqrt(np.log(m) / m), "--", "sqrt(log n / n)"),
        (lambda m: 1 / np.log(m), ":", "1 / log n"),
    ):
        ax.plot(grid, y0 * f(grid) / f(n0), ls=ls, color="0.45", lw=1.2, label=label)


def _slope_label(est: str, slopes: pd.DataFrame | None, **where) -> str:
    """``est`` with the slope and interval of the matching ``slope_table`` row, if any."""
    if slopes is None or slopes.empty:
        return est
    m = np.ones(len(slopes), bool)
    for k, v in where.items():
        m &= (slopes[k] == v).to_numpy()
    row = slopes[m]
    if row.empty or not np.isfinite(row["slope"].iloc[0]):
        return est
    r = row.iloc[0]
    return f"{est}: slope {r.slope:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


def _legend(ax, *extra_handles) -> None:
    """The panel's legend, below the panel so that it never hides a curve."""
    handles, labels = ax.get_legend_handles_labels()
    handles += list(extra_handles)
    labels += [h.get_label() for h in extra_handles]
    below = ax.transAxes + ScaledTranslation(
        0, -0.48, ax.figure.dpi_scale_trans
    )  # under the n label
    ax.legend(
        handles,
        labels,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, 0),
        bbox_transform=below,
        ncols=2,
        frameon=False,
    )


def _stem(df: pd.DataFrame, base: str) -> str:
    """``base``, prefixed with ``<experiment>_`` when the table holds a single experiment."""
    if "experiment" in df and df["experiment"].nunique() == 1:
        return f"{df['experiment'].iloc[0]}_{base}"
    return base


def _check_metric(df: pd.DataFrame, metric: str) -> None:
    if metric not in df:
        raise ValueError(f"Unknown metric {metric!r}; the table has no such column")


# --------------------------------------------------------------------------------------------
# Figures


def figure_loss(
    df: pd.DataFrame, metric: str, *, slopes: pd.DataFrame | None = None
) -> Figure | None:
    """Figure 1 (``metric="D"``) or 2 (``"l2_error"``): loss against n per (truth, setting).

    Family rows (``delta`` not NaN) are left out; they are figure 4.

    Args:
        df: the results table.
        metric: the loss column.
        slopes: ``rates.slope_table`` rows; those with statistic ``"mean"`` label the legend.
            Computed from ``df`` when None.

    Returns:
        The Figure (None when the table has no single truth).
    """
    _check_metric(df, metric)
    df = single_truths(df)
    if df.empty:
        return None
    if slopes is None:
        slopes = rates.slope_table(df, metrics=(metric,), statistics=("mean",))
    fig, panels = _panels(df, "truth", "truth", "n", METRIC_LABELS.get(metric, metric))
    for ax, truth, extra, sub in panels:
        anchors = []
        for est in _estimators(sub):
            c, color = _curve(sub[sub["estimator"] == est], metric), estimator_color(est)
            if c.empty:
                continue
            n = c.index.to_numpy(float)
            ax.fill_between(n, c["lo"], c["hi"], color=color, alpha=0.15, lw=0)
            ax.plot(
                n,
                c["mean"],
                color=color,
                lw=1.8,
                marker=estimator_marker(est),
                ms=4,
                label=_slope_label(
                    est,
                    slopes,
                    truth=truth,
                    estimator=est,
                    extra=extra,
                    metric=metric,
                    statistic="mean",
                ),
            )
            ax.plot(n, c["median"], color=color, ls="none", marker="x", ms=5)
            anchors.append((n[0], c["mean"].iloc[0]))
        _references(ax, sub["n"].unique(), anchors)
        _legend(
            ax, Line2D([], [], color="0.3", ls="none", marker="x", label="median (band: 10-90%)")
        )
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} against n: mean over replicates, log-log")
    return fig


def _complexity_references(ax, inv_eps: np.ndarray, anchor: tuple[float, float]) -> None:
    """Grey C eps^-2 (dashed), C eps^-4 (dash-dot) and exp(C eps^-1/2) (dotted) over the panel's
    1/eps range, through ``anchor`` = (1/eps, n), a drawn curve's point at the largest n."""
    if not len(inv_eps):
        return
    x0, n0 = anchor
    grid = np.geomspace(min(inv_eps), max(inv_eps), 60)
    curves = (
        (lambda x: n0 * (x / x0) ** 2, "--", "C eps^-2"),
        (lambda x: n0 * (x / x0) ** 4, "-.", "C eps^-4"),
        (lambda x: np.exp(np.log(n0) * np.sqrt(x / x0)), ":", "exp(C eps^-1/2)"),
    )
    for f, ls, label in curves:
        ax.plot(grid, f(grid), ls=ls, color="0.45", lw=1.1, label=label)


def figure_sample_complexity(
    df: pd.DataFrame,
    metric: str = "D",
    *,
    points: int = 30,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> Figure | None:
    """Figure 3: sample complexity n(eps) against 1 / eps per (truth, setting), log-log.

    Each estimator's n(eps) is its fitted power law inverted (``rates.sample_complexity_fit``
    over the fit range [n_min, n_max]), with a 95% bootstrap band: monotone, never extrapolated,
    not a staircase of a noisy statistic. A curve is drawn only where its eps spans at least
    ``rates.MIN_SPAN_DECADES`` (one decade of 1/eps): over less, eps^-2, eps^-4 and
    exp(eps^-1/2) cannot be told apart. The others are named in the legend with their span.
    Grey references C eps^-2, C eps^-4 and exp(C eps^-1/2) pass through a drawn curve's point at
    the largest n (the one of largest 1/eps). Family rows are left out.

    Args:
        df: the results table.
        metric: the loss column.
        points: number of eps values per curve.
        slopes: the statistic (vanilla's means are driven by a heavy tail), the fit range (the
            config's ``[rates]``) and the band's bootstrap (``SlopeSettings``, or its fields as
            keywords).

    Returns:
        The Figure; None when the table has no single truth or no curve spans a decade.
    """
    _check_metric(df, metric)
    s = settings(slopes, overrides)
    statistic = s.statistic
    df = single_truths(df)
    if df.empty:
        return None
    fits = {
        keys: rates.sample_complexity_fit(sub, metric, points=points, slopes=s)
        for keys, sub in df.groupby(["truth", "extra", "estimator"])
    }
    drawn = {
        k for k, t in fits.items() if len(t) and t["span_decades"].iloc[0] >= rates.MIN_SPAN_DECADES
    }
    if not drawn:
        return None
    # Only panels with a drawn curve: the others are named in a note, not left empty.
    shown = {(truth, extra) for truth, extra, _ in drawn}
    hidden = sorted({(truth, extra) for truth, extra, _ in fits} - shown)
    pairs = pd.MultiIndex.from_arrays([df["truth"], df["extra"]])
    fig, panels = _panels(
        df[pairs.isin(list(shown))], "truth", "truth", "1 / eps", f"n(eps), {statistic} {metric}"
    )
    for ax, truth, extra, sub in panels:
        anchors, inv_eps, skipped = [], [], []
        for est in _estimators(sub):
            t = fits.get((truth, extra, est))
            if (truth, extra, est) not in drawn:
                span = t["span_decades"].iloc[0] if t is not None and len(t) else 0.0
                skipped.append(f"{est} ({span:.2f})")
                continue
            color, x = estimator_color(est), 1 / t["eps"].to_numpy()
            ax.fill_between(x, t["n_low"], t["n_high"], color=color, alpha=0.15, lw=0)
            ax.plot(
                x,
                t["n"],
                color=color,
                lw=1.8,
                marker=estimator_marker(est),
                markevery=max(1, len(x) // 6),
                ms=4,
                label=f"{est}: n ~ eps^{1 / t['slope'].iloc[0]:.2f}",
            )
            anchors.append((x[-1], float(t["n"].iloc[-1])))
            inv_eps += list(x)
        _complexity_references(ax, np.asarray(inv_eps), max(anchors))
        extra_handles = []
        if skipped:
            label = "not drawn, eps spans < 1 decade: " + ", ".join(skipped)
            extra_handles.append(Line2D([], [], color="none", label=label))
        _legend(ax, *extra_handles)
    if hidden:
        names = "; ".join(f"truth {truth}, {_setting(extra)}" for truth, extra in hidden)
        fig.supxlabel(f"no curve's eps spans a decade of 1 / eps (not drawn): {names}", fontsize=8)
    fig.suptitle(f"Sample complexity, fitted power law of the {statistic} {metric} (95% band)")
    return fig


def figure_minimax(
    df: pd.DataFrame, metric: str = "D", *, slopes: pd.DataFrame | None = None
) -> Figure | None:
    """Figure 4: worst mean loss over a family of truths against n, per (through, setting).

    Thick lines with markers: max over ``delta`` of the mean over replicates; thin faint lines:
    each member's mean curve. A family is the members with a ``delta`` and their drawn truth
    (``delta`` NaN, counted as delta = 1).

    Args:
        df: the results table.
        metric: the loss column.
        slopes: ``rates.slope_table`` rows; those with statistic ``"minimax-mean"`` label the
            legend. Computed from the family rows when None.

    Returns:
        The Figure (None when the table has no family).
    """
    _check_metric(df, metric)
    df = families(df)
    if df.empty:
        return None
    if slopes is None:
        slopes = rates.slope_table(df, metrics=(metric,), statistics=("mean",))
    fig, panels = _panels(
        df, "through", "family", "n", f"{METRIC_LABELS.get(metric, metric)}, worst over delta"
    )
    for ax, through, extra, sub in panels:
        anchors = []
        for est in _estimators(sub):
            per = _curve(sub[sub["estimator"] == est], metric, by=("delta", "n"))["mean"].unstack(
                "delta"
            )
            if per.empty:
                continue
            color, n = estimator_color(est), per.index.to_numpy(float)
            for d in per:
                ok = per[d].notna().to_numpy()
                ax.plot(n[ok], per[d][ok], color=color, lw=0.8, alpha=0.3)
            worst = per.max(axis=1)
            ax.plot(
                n,
                worst,
                color=color,
                lw=2.4,
                marker="o",
                ms=4,
                label=_slope_label(
                    est,
                    slopes,
                    truth=through,
                    estimator=est,
                    extra=extra,
                    metric=metric,
                    statistic="minimax-mean",
                ),
            )
            anchors.append((n[0], worst.iloc[0]))
        _references(ax, sub["n"].unique(), anchors)
        _legend(ax, Line2D([], [], color="0.3", lw=0.8, alpha=0.4, label="each delta (mean)"))
    fig.suptitle(
        f"Empirical minimax risk: worst mean {METRIC_LABELS.get(metric, metric)} over the family, "
        "log-log"
    )
    return fig


def figure_diagnostics(df: pd.DataFrame) -> Figure:
    """Supporting figure: fit diagnostics against n, one column per setting (extra).

    Rows: certified fraction (solid) and converged fraction (dashed); median smallest fitted
    mixture weight (log scale); fraction of fits with a multi-atom Voronoi cell; median
    iterations. One line per (truth, estimator), families pooled over delta as
    ``<through>@delta=*``. Missing columns leave their row empty.

    Args:
        df: the results table.

    Returns:
        The Figure.
    """
    d = df.assign(_multi=multi_cell(df), truth=pooled_truth(df))
    rows = [
        (
            "fraction certified (solid)\n/ converged (dashed)",
            [("certified", "mean", "-"), ("converged", "mean", "--")],
            False,
        ),
        ("median smallest weight", [("min_weight", "median", "-")], True),
        ("fraction with a\nmulti-atom cell", [("_multi", "mean", "-")], False),
        ("median iterations", [("iterations", "median", "-")], False),
    ]
    extras, truths = sorted(d["extra"].unique()), sorted(d["truth"].unique())
    fig, axes = _grid(len(rows), len(extras), w=4.4, h=2.6)
    for j, extra in enumerate(extras):
        axes[0, j].set_title(_setting(extra), fontsize=9)
        axes[-1, j].set_xlabel("n")
        for i, (ylabel, series, logy) in enumerate(rows):
            ax = axes[i, j]
            ax.set(xscale="log", yscale="log" if logy else "linear")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, alpha=0.3)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            for (truth, est), sub in d[d["extra"] == extra].groupby(["truth", "estimator"]):
                marker = _MARKERS[truths.index(truth) % len(_MARKERS)]
                for col, agg, ls in series:
                    if col not in sub:
                        continue
                    v = sub.loc[sub["n"] > 0, ["n", col]].astype(float)
                    v = v[v[col] > 0] if logy else v.dropna()
                    y = v.groupby("n")[col].agg(agg)
                    ax.plot(
                        y.index, y, color=estimator_color(est), ls=ls, marker=marker, ms=3.5, lw=1.3
                    )
    handles = [
        Line2D(
            [],
            [],
            color=estimator_color(e),
            marker=_MARKERS[truths.index(t) % len(_MARKERS)],
            label=f"truth {t} / {e}",
        )
        for t, e in d[["truth", "estimator"]]
        .drop_duplicates()
        .sort_values(["truth", "estimator"])
        .itertuples(index=False)
    ]
    # Four labels per row fit the figure's width when they are short; family labels are not.
    per_row = 4 if max(len(h.get_label()) for h in handles) < 24 else 2
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(len(handles), per_row), fontsize=8
    )
    fig.suptitle("Fit diagnostics against n")
    return fig


def figure_oracle(df: pd.DataFrame) -> Figure | None:
    """The truth-free estimator against the oracle start on the same data (issue 36).

    Per estimator and setting (columns), single truths: the median D (top) and L2 error
    (bottom) against n of the estimate (solid, with the band between the medians of
    ``D_ambiguity_min`` and ``D_ambiguity_max``: fits within sigma^2 / n of the best restart)
    and of the oracle-start fit recorded beside it (``D_oracle``, dashed; the oracle's L2 is
    not recorded). None when the table has no oracle diagnostic (``D_oracle`` absent or all
    NaN).
    """
    if "D_oracle" not in df or not np.isfinite(df["D_oracle"]).any():
        return None
    d = single_truths(df)
    d = d[np.isfinite(d["D_oracle"])]
    panels = [
        (e, x) for e in _estimators(d) for x in sorted(d.loc[d["estimator"] == e, "extra"].unique())
    ]
    fig, axes = _grid(2, len(panels), sharey="row")
    for j, (est, extra) in enumerate(panels):
        sub, color = d[(d["estimator"] == est) & (d["extra"] == extra)], estimator_color(est)
        top, bottom = axes[0, j], axes[1, j]
        med = sub.groupby("n")[["D", "D_oracle", "D_ambiguity_min", "D_ambiguity_max"]].median()
        top.plot(med.index, med["D"], color=color, marker="o", label="truth-free estimate")
        top.fill_between(
            med.index,
            med["D_ambiguity_min"],
            med["D_ambiguity_max"],
            color=color,
            alpha=0.2,
            label="D-ambiguity (median min..max)",
        )
        top.plot(
            med.index,
            med["D_oracle"],
            color=color,
            ls="--",
            marker="s",
            mfc="none",
            label="oracle start",
        )
        l2 = sub.groupby("n")["l2_error"].median()
        bottom.plot(l2.index, l2, color=color, marker="o")
        top.set_title(f"{est}, {_setting(extra)}", fontsize=9)
        bottom.set_xlabel("n")
        for ax in (top, bottom):
            ax.set(xscale="log", yscale="log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("median D")
    axes[1, 0].set_ylabel("median L2 error (estimate)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Truth-free least-squares estimate against the oracle start, same data")
    return fig


def run_figures(
    df: pd.DataFrame,
    slope_rows: pd.DataFrame | None = None,
    *,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> dict[str, Figure]:
    """Every figure that applies to a run's table, keyed by its file stem.

    Figures 1-3 when the table has single truths (``delta`` NaN), figure 4 when it has a family,
    the diagnostics always, and the estimate against the oracle start where the table records the
    oracle diagnostic. Stems: ``loss_D``, ``loss_l2``, ``sample_complexity`` (and
    ``sample_complexity_median``, each only where a curve's eps spans a decade), ``minimax``,
    ``diagnostics``, ``oracle``, prefixed with ``<experiment>_`` for a single-experiment table.

    Args:
        df: the results table.
        slope_rows: ``rates.slope_table`` rows (statistic ``"mean"`` for single truths,
            ``"minimax-mean"`` for families); computed with ``slopes`` when None.
        slopes: the fit range (the config's ``[rates]``) and bootstrap of the slopes and of the
            sample-complexity fits, whose statistic is each figure's own (``SlopeSettings``, or
            its fields as keywords).

    Returns:
        Stem -> Figure, in drawing order.
    """
    s = settings(slopes, overrides)
    single, family = single_truths(df), families(df)
    metrics = [m for m in ("D", "l2_error") if m in df]
    figures: dict[str, Figure | None] = {}
    if not single.empty:
        rows = (
            slope_rows
            if slope_rows is not None
            else rates.slope_table(single, metrics=metrics, statistics=("mean",), slopes=s)
        )
        for m in metrics:
            figures[_STEMS.get(m, f"loss_{m}")] = figure_loss(single, m, slopes=rows)
        if "D" in df:
            for stem, statistic in (("", "mean"), ("_median", "median")):
                figures[f"sample_complexity{stem}"] = figure_sample_complexity(
                    single, slopes=s.replace(statistic=statistic)
                )
    if not family.empty and "D" in df:
        rows = (
            slope_rows
            if slope_rows is not None
            else rates.slope_table(family, metrics=("D",), statistics=("mean",), slopes=s)
        )
        figures["minimax"] = figure_minimax(family, slopes=rows)
    figures["diagnostics"] = figure_diagnostics(df)
    figures["oracle"] = figure_oracle(df)
    return {_stem(df, stem): fig for stem, fig in figures.items() if fig is not None}


# --------------------------------------------------------------------------------------------
# Figures for exploration (the notebooks)


def figure_mixture(view, *, title: str = "") -> Figure:
    """Gates and experts of a mixture over the input square (``moe_lora.model.mixture_on_grid``).

    Top row: each gate gate_j(X) (0 to 1) and the dominant gate argmax_j gate_j(X); bottom row:
    each expert's first output (V0 + V_j)^T X and the mixture f_G(X).
    """
    L = view.gates.shape[-1]
    fig, axes = _grid(2, L + 1, sharey=True, w=2.9, h=2.7)
    ext = (view.x1.min(), view.x1.max(), view.x2.min(), view.x2.max())
    show = dict(origin="lower", extent=ext, aspect="equal")
    vmax = float(np.abs(view.experts[..., 0]).max()) or 1.0
    for j in range(L):
        im = axes[0, j].imshow(view.gates[..., j], vmin=0, vmax=1, cmap="viridis", **show)
        axes[0, j].set_title(f"gate {j}", fontsize=9)
        ex = axes[1, j].imshow(
            view.experts[..., j, 0], vmin=-vmax, vmax=vmax, cmap="RdBu_r", **show
        )
        axes[1, j].set_title(f"expert {j}", fontsize=9)
    axes[0, L].imshow(
        np.argmax(view.gates, -1), cmap="tab10", vmin=0, vmax=9, interpolation="nearest", **show
    )
    axes[0, L].set_title("dominant gate", fontsize=9)
    axes[1, L].imshow(view.f[..., 0], vmin=-vmax, vmax=vmax, cmap="RdBu_r", **show)
    axes[1, L].set_title("mixture f_G", fontsize=9)
    fig.colorbar(im, ax=axes[0, :L], shrink=0.8, label="gate value")
    fig.colorbar(ex, ax=axes[1, :], shrink=0.8, label="output")
    for ax in axes[1]:
        ax.set_xlabel("x1")
    for ax in axes[:, 0]:
        ax.set_ylabel("x2")
    fig.suptitle(title or "A mixture of experts over the input square")
    return fig


def figure_curves(
    df: pd.DataFrame,
    metric: str = "D",
    *,
    hue: str = "estimator",
    panel: str = "extra",
    statistic: str = "mean",
    title: str = "",
) -> Figure:
    """A loss against n, log-log, one line per ``hue`` value, one panel per ``panel`` value.

    Each line is the mean (or median) over replicates with its least-squares slope in the
    legend; grey references sqrt(log n / n) (dashed) and 1 / log n (dotted) as in figure 1.

    Args:
        df: a results table (``run_frame``, ``run_variants``).
        metric: the loss column.
        hue: the column whose values are lines (``"estimator"``, ``"variant"``, ...).
        panel: the column whose values are panels (``"extra"``, ``"estimator"``, ...); more
            than three panels wrap into rows of two.
        statistic: ``"mean"`` or ``"median"``.
    """
    _check_metric(df, metric)
    for col in (hue, panel):
        if col not in df:
            raise ValueError(f"Unknown column {col!r}; the table has no such column")
    panels = sorted(df[panel].unique(), key=str)
    hues = _estimators(df) if hue == "estimator" else list(dict.fromkeys(df[hue]))
    ncols = len(panels) if len(panels) <= 3 else 2
    nrows = -(-len(panels) // ncols)
    fig, axes = _grid(nrows, ncols, sharey=True, h=4.2)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_axis_off()
    palette = [estimator_color(h) if hue == "estimator" else f"C{i}" for i, h in enumerate(hues)]
    for ax, p in zip(axes.ravel(), panels):
        sub = df[df[panel] == p]
        label = _setting(p) if panel == "extra" else f"{panel} = {p}"
        ax.set(xscale="log", yscale="log", xlabel="n", title=label)
        ax.title.set_fontsize(9)
        ax.grid(True, which="major", alpha=0.3)
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        anchors = []
        for h, color in zip(hues, palette):
            c = _curve(sub[sub[hue] == h], metric)
            if c.empty:
                continue
            n = c.index.to_numpy(float)
            y = c[statistic]
            text = f"{h}"
            if len(n) >= 2 and np.all(y > 0):
                text += f": slope {rates.loglog_slope(n, y)[0]:.2f}"
            ax.plot(n, y, color=color, marker="o", ms=4, lw=1.6, label=text)
            ax.fill_between(n, c["lo"], c["hi"], color=color, alpha=0.12, lw=0)
            anchors.append((n[0], y.iloc[0]))
        _references(ax, sub["n"].unique(), anchors)
        _legend(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{statistic} {METRIC_LABELS.get(metric, metric)}")
    fig.suptitle(
        title
        or f"{METRIC_LABELS.get(metric, metric)} against n "
        f"({statistic} over replicates, band 10-90%)"
    )
    return fig


def figure_cells(df: pd.DataFrame, *, threshold: float = 1e-3, title: str = "") -> Figure:
    """How fitted atoms fill the true atoms' Voronoi cells, per estimator and setting, against n.

    Top row: the fraction of fits with each cell pattern (``moe_lora.table.cell_patterns``: "2+1" =
    two fitted atoms in true atom 0's cell, one in atom 1's), stacked. Bottom row: the fraction
    of fits with a dead atom (weight below ``threshold``) and the median smallest weight.
    """
    d = df.assign(_pattern=cell_patterns(df), _dead=dead_atoms(df, threshold=threshold) > 0)
    combos = (
        d[["estimator", "extra"]]
        .drop_duplicates()
        .sort_values(["extra", "estimator"])
        .itertuples(index=False)
    )
    combos = list(combos)
    patterns = sorted(d["_pattern"].unique())
    fig, axes = _grid(2, len(combos), sharey="row", w=3.4, h=2.9)
    for j, (est, extra) in enumerate(combos):
        sub = d[(d["estimator"] == est) & (d["extra"] == extra)]
        sizes = sorted(sub["n"].unique())
        frac = (
            sub.groupby("n")["_pattern"]
            .value_counts(normalize=True)
            .unstack(fill_value=0.0)
            .reindex(columns=patterns, fill_value=0.0)
        )
        bottom = np.zeros(len(sizes))
        x = np.arange(len(sizes))
        for k, pat in enumerate(patterns):
            axes[0, j].bar(
                x, frac[pat].to_numpy(), bottom=bottom, color=f"C{k}", label=pat, width=0.7
            )
            bottom += frac[pat].to_numpy()
        axes[0, j].set(
            xticks=x,
            xticklabels=[str(s) for s in sizes],
            title=f"{est}, {_setting(extra)}",
            ylim=(0, 1),
        )
        axes[0, j].title.set_fontsize(8)
        dead = sub.groupby("n")["_dead"].mean()
        axes[1, j].plot(
            x,
            dead.to_numpy(),
            marker="o",
            color=estimator_color(est),
            label="fits with a dead atom",
        )
        mw = sub.groupby("n")["min_weight"].median()
        axes[1, j].plot(
            x, mw.to_numpy(), marker="s", ls="--", color="0.4", label="median smallest weight"
        )
        axes[1, j].set(
            xticks=x, xticklabels=[str(s) for s in sizes], xlabel="n", ylim=(-0.02, 1.02)
        )
        axes[1, j].grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("fraction of fits")
    axes[1, 0].set_ylabel("fraction / weight")
    axes[0, -1].legend(
        title="cell sizes",
        fontsize=7,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    axes[1, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title or f"Voronoi cells of the fitted atoms (dead: weight < {threshold:g})")
    return fig


def figure_valley(atoms_df: pd.DataFrame, *, hue: str = "estimator", title: str = "") -> Figure:
    """Weight pi_i against ||V_i|| of every fitted atom (``moe_lora.table.value_valley``), log-log.

    One panel per n, one colour per ``hue`` value. Atoms in vanilla's weight/value valley lie
    along pi ||V|| = const (the grey lines of slope -1): their cell's pi_1 V_1 + pi_2 V_2 is fixed
    by the data while the split between the two is not.
    """
    for col in (hue, "n", "weight", "value_norm"):
        if col not in atoms_df:
            raise ValueError(
                f"Unknown column {col!r}; expected the table of moe_lora.table.value_valley"
            )
    sizes = sorted(atoms_df["n"].unique())
    hues = list(dict.fromkeys(atoms_df[hue]))
    # Known estimators keep their colours; other values take colours no known estimator uses.
    spare = iter(
        c
        for c in ("tab:red", "tab:purple", "tab:olive", "tab:cyan", "tab:pink", "navy")
        if hue != "estimator" or c not in ESTIMATOR_COLORS.values()
    )
    colors = {
        h: estimator_color(h)
        if hue == "estimator" and h in ESTIMATOR_COLORS
        else next(spare, "0.3")
        for h in hues
    }
    fig, axes = _grid(1, len(sizes), sharey=True, w=3.8, h=3.6)
    d = atoms_df[(atoms_df["weight"] > 0) & (atoms_df["value_norm"] > 0)]
    w_lo, w_hi = (d["weight"].min() / 2, min(2 * d["weight"].max(), 2.0)) if len(d) else (1e-3, 1.0)
    v_lo, v_hi = (d["value_norm"].min() / 2, 2 * d["value_norm"].max()) if len(d) else (1e-2, 1e2)
    for ax, n in zip(axes[0], sizes):
        sub = d[d["n"] == n]
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="weight pi_i",
            title=f"n = {n}",
            xlim=(w_lo, w_hi),
            ylim=(v_lo, v_hi),
        )
        ax.title.set_fontsize(9)
        ax.grid(True, alpha=0.3)
        w = np.geomspace(w_lo, w_hi, 20)
        for level in (0.1, 1.0, 10.0):
            ax.plot(w, level / w, color="0.8", lw=0.8, zorder=0)
        for h in hues:
            s = sub[sub[hue] == h]
            ax.scatter(
                s["weight"],
                s["value_norm"],
                s=14,
                alpha=0.7,
                color=colors[h],
                label=str(h),
                edgecolors="none",
            )
    axes[0, 0].set_ylabel("||V_i||")
    axes[0, -1].legend(
        fontsize=7, title=hue, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    )
    fig.suptitle(title or "Fitted atoms: weight against ||V|| (grey: pi ||V|| = 0.1, 1, 10)")
    return fig
