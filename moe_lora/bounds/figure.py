"""The lower-bound figure: Le Cam's two-point bound against a sweep, and the implied sample
complexity.

Reads the tidy table of ``moe_lora.bounds.bound_curves`` (and optionally a sweep's results table);
returns a ``matplotlib.figure.Figure`` and saves nothing.

- Panel 1: LB(n) = (1 - c/2) M(c sigma / sqrt(n)) / (2 C) for each estimator (solid), with the
  sweep's measured mean (dashed, circles) and median (dotted, squares) D for the same truth and L.
- Panel 2: the implied sample complexity n(eps) ~ sigma^2 / m(eps)^2 against 1/eps, with reference
  curves eps^-2, eps^-4 and exp(eps^-1/2) (anchored at the first point of the first estimator).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..palette import estimator_color
from .config import L2_FLOOR
from .curves import le_cam_lower_bound


def figure_bound(
    curves: pd.DataFrame,
    sweep: pd.DataFrame | None,
    sigma: float,
    *,
    truth: str | None = None,
    extra: int = 1,
    loss: str = "D",
    c: float = 1.0,
    n: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """Two panels: the two-point lower bound LB(n) with the sweep's D, and n(eps) against 1/eps.

    Args:
        curves: ``bound_curves`` rows (columns truth, estimator, extra, loss, kind, D, l2,
            triangle_constant, ...); rows outside the neighbourhood (``inside`` False) are ignored.
        sweep: a sweep's results (columns truth, estimator, extra, n, D) or ``None``.
        sigma: noise level of the two-point bound (the sweep's sigma).
        truth: truth label to draw; default: the first in ``curves``.
        extra: L - L* to draw.
        loss: loss name to draw (the sweep's D is the loss "D").
        c: eta = c sigma / sqrt(n), 0 < c < 2.
        n: sample sizes of panel 1; default the sweep's sizes, else 1e2..1e6.
        title: figure title; a default names the truth, L and loss.

    Returns:
        The Figure (axes[0]: LB(n); axes[1]: n(eps)).

    Raises:
        ValueError: when no curve matches (truth, extra, loss).
    """
    if truth is None:
        truth = str(curves["truth"].iloc[0])
    sub = curves[(curves["truth"] == truth) & (curves["extra"] == extra) & (curves["loss"] == loss)]
    if "inside" in sub:
        sub = sub[sub["inside"].astype(bool)]
    if sub.empty:
        raise ValueError(
            f"No bound curves for truth={truth!r}, extra={extra}, loss={loss!r}; "
            f"have truths {sorted(curves['truth'].unique())}, extras "
            f"{sorted(curves['extra'].unique())}, "
            f"losses {sorted(curves['loss'].unique())}"
        )
    swept = None
    if sweep is not None:
        swept = sweep[(sweep["truth"] == truth) & (sweep["extra"] == extra)]
    if n is None:
        n = (
            np.unique(swept["n"])
            if swept is not None and not swept.empty
            else np.logspace(2, 6, 25)
        )
    n = np.asarray(n, float)

    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax_lb, ax_n = fig.subplots(1, 2)
    estimators = list(dict.fromkeys(sub["estimator"]))
    for est in estimators:
        rows = sub[sub["estimator"] == est]
        color = estimator_color(est)
        C = float(rows["triangle_constant"].max())
        lb = le_cam_lower_bound(rows["D"], rows["l2"], n, sigma, max(C, 1.0), c)
        ax_lb.plot(
            n,
            np.where(lb > 0, lb, np.nan),
            "-",
            color=color,
            lw=2,
            label=f"{est}: LB(n), C = {C:.2g}",
        )
        if swept is not None:
            runs = swept[swept["estimator"] == est]
            if not runs.empty:
                stats = runs.groupby("n")["D"].agg(["mean", "median"])
                ax_lb.plot(
                    stats.index,
                    stats["mean"],
                    "o--",
                    color=color,
                    ms=4,
                    label=f"{est}: sweep mean D",
                )
                ax_lb.plot(
                    stats.index,
                    stats["median"],
                    "s:",
                    color=color,
                    ms=4,
                    label=f"{est}: sweep median D",
                )
        m = rows[rows["kind"] == "m"]
        if "on_target" in m:
            m = m[m["on_target"].astype(bool)]
        m = m.sort_values("D")
        x = 1 / m["D"].to_numpy()
        y = sigma**2 / np.maximum(m["l2"].to_numpy(), L2_FLOOR) ** 2
        ax_n.plot(x, y, "o-", color=color, ms=4, label=f"{est}: sigma^2 / m(eps)^2")
        floor = m["l2"].to_numpy() <= L2_FLOOR
        if floor.any():
            ax_n.plot(x[floor], y[floor], "x", color=color, ms=9, mew=2)

    ax_lb.set(
        xscale="log",
        yscale="log",
        xlabel="n",
        ylabel=f"{loss}",
        title=f"two-point lower bound LB(n) (sigma = {sigma:g}, c = {c:g})",
    )
    ax_lb.legend(fontsize=7)

    m_all = sub[sub["kind"] == "m"]
    if "on_target" in m_all:
        m_all = m_all[m_all["on_target"].astype(bool)]
    if not m_all.empty:
        inv = 1 / m_all["D"].to_numpy()
        y_all = sigma**2 / np.maximum(m_all["l2"].to_numpy(), L2_FLOOR) ** 2
        low, high = y_all.min() / 10, y_all.max() * 10
        grid = np.logspace(np.log10(inv.min()), np.log10(inv.max()), 60)
        first = m_all.sort_values("D", ascending=False).iloc[0]
        x0, y0 = 1 / first["D"], sigma**2 / max(first["l2"], L2_FLOOR) ** 2
        eps0, eps = 1 / x0, 1 / grid
        for label, f, style in (
            ("eps^-2", lambda e: e**-2.0, "k--"),
            ("eps^-4", lambda e: e**-4.0, "k-."),
            ("exp(eps^-1/2)", lambda e: np.exp(np.minimum(e**-0.5, 700.0)), "k:"),
        ):
            ref = y0 * f(eps) / f(eps0)
            # drawn only inside the data's range, so huge reference values cannot break the log axis
            ax_n.plot(
                grid, np.where((ref >= low) & (ref <= high), ref, np.nan), style, lw=1, label=label
            )
        ax_n.set_ylim(low, high)
    ax_n.set(
        xscale="log",
        yscale="log",
        xlabel="1 / eps",
        ylabel="n(eps) ~ sigma^2 / m(eps)^2",
        title=f"implied sample complexity (x: L2 at the round-off floor {L2_FLOOR:g})",
    )
    ax_n.legend(fontsize=7)
    L_star = int(sub["L_star"].iloc[0]) if "L_star" in sub else None
    radius = f", radius {float(sub['radius'].iloc[0]):g}" if "radius" in sub else ""
    fig.suptitle(
        title
        or f"Lower bounds, truth {truth}, L = L* + {extra}"
        + (f" (L* = {L_star})" if L_star else "")
        + f", loss {loss}{radius}"
    )
    return fig


def run_bound_figures(
    curves: pd.DataFrame, sweep: pd.DataFrame | None, manifest: dict
) -> dict[str, Figure]:
    """``<name>_bound_<truth>_L+<extra>`` -> ``figure_bound`` for loss D, one per (truth, setting)
    of ``curves``, against a run's sweep table (or None) at the noise level of its manifest."""
    sigma = manifest["config"]["data"]["sigma"]
    return {
        f"{manifest['name']}_bound_{truth}_L+{extra}": figure_bound(
            curves, sweep, sigma, truth=truth, extra=int(extra)
        )
        for (truth, extra), _ in curves[curves["loss"] == "D"].groupby(["truth", "extra"])
    }
