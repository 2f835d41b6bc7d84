"""Empirical convergence rates: log-log slopes of a loss against n with bootstrap intervals.

For one curve (truth, estimator, setting, metric) the statistic at each n is the mean or the
median of the metric over replicates; the slope is the least-squares slope of log(statistic)
against log(n) over the fit range. Under ``minimax`` the statistic at each n is the worst
(largest) mean over a family of truths (the ``delta`` column): an empirical minimax risk.

``sample_complexity`` inverts a loss curve: the smallest n at which it reaches a loss eps.
``sample_complexity_fit`` inverts the power law fitted over the fit range instead, with a
bootstrap interval: monotone in eps, never extrapolated.

Confidence intervals are percentile bootstraps over replicates: replicates are resampled with
replacement independently at every n (and every truth of a family), the statistic and the
slope recomputed, ``bootstrap`` times.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .slopes import STATISTICS as STATISTICS
from .slopes import SlopeSettings, settings
from .table import families, single_truths

METRICS = ("D", "l2_error")
#: The pieces of D in the results table (``moe_lora.simulate.decompose``).
D_TERMS = ("D", "D_mass", "D_singleton", "D_multi", "D_S", "D_V")


def loglog_slope(n, y) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (log n, log y).

    >>> n = np.array([1e2, 1e3, 1e4]); round(loglog_slope(n, 3 * n ** -0.5)[0], 12)
    -0.5
    """
    n, y = np.asarray(n, float), np.asarray(y, float)
    if n.shape != y.shape or n.ndim != 1 or len(n) < 2:
        raise ValueError(
            f"Expected two 1-d arrays of equal length >= 2, got shapes {n.shape} and {y.shape}"
        )
    if np.any(n <= 0) or np.any(~(y > 0)):
        raise ValueError("log-log slope needs positive n and y")
    slope, intercept = np.polyfit(np.log(n), np.log(y), 1)
    return float(slope), float(intercept)


def loglog_slopes(log_n: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of many curves at once: log_y has shape (..., N)."""
    x = log_n - log_n.mean()
    return ((log_y - log_y.mean(-1, keepdims=True)) * x).sum(-1) / (x @ x)


def value_cube(df: pd.DataFrame, metric: str, sizes: np.ndarray) -> np.ndarray:
    """Values as an array (G truths, N sizes, R replicates), NaN-padded."""
    groups = sorted(df["delta"].fillna(-1).unique()) if "delta" in df else [-1]
    R = int(df.groupby(["n"] + (["delta"] if "delta" in df else []), dropna=False).size().max())
    cube = np.full((len(groups), len(sizes), R), np.nan)
    delta = df["delta"].fillna(-1).to_numpy() if "delta" in df else np.full(len(df), -1.0)
    for g, dv in enumerate(groups):
        for i, n in enumerate(sizes):
            v = df.loc[(delta == dv) & (df["n"].to_numpy() == n), metric].to_numpy(float)
            cube[g, i, : len(v)] = v
    return cube


def member_statistic(cube: np.ndarray, statistic: str) -> np.ndarray:
    """(..., G, N, R) -> (..., G, N): per member of the family and n, the mean/median over
    replicates."""
    with np.errstate(all="ignore"):
        return np.nanmedian(cube, -1) if statistic == "median" else np.nanmean(cube, -1)


def cell_statistic(cube: np.ndarray, statistic: str) -> np.ndarray:
    """(..., G, N, R) -> (..., N): per-n mean/median, then the worst over the family G."""
    return np.max(member_statistic(cube, statistic), -2)


def bootstrap_indices(rng: np.random.Generator, draws: int, replicates: int) -> np.ndarray:
    """``draws`` resamples (with replacement) of ``replicates`` indices, shape (draws, replicates).

    The paired bootstrap: one row of indices picks the same replicates (seeds) in every cell it is
    applied to, so the differences and ratios between cells keep their pairing. Used where every
    cell holds the same replicates (``moe_lora.head.statistics``, ``moe_lora.headline``);
    ``bootstrap_resample`` draws each cell separately where cells may miss replicates.

    >>> bootstrap_indices(np.random.default_rng(0), 2, 3).shape
    (2, 3)
    """
    return rng.integers(0, replicates, size=(draws, replicates))


def bootstrap_resample(cube: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` bootstrap resamples of the last axis of ``cube``, each cell separately.

    The replicates present in a cell (not NaN; they come first along the last axis, as
    ``value_cube`` lays them out) are drawn with replacement, as many as the axis is long; a cell
    with none stays NaN. With ``bootstrap_indices``, the package's bootstraps.

    Args:
        cube: values, shape (..., R), missing replicates NaN at the end of the last axis.
        draws: number of resamples.
        rng: the generator (``np.random.default_rng(seed)``).

    Returns:
        Shape (draws, ..., R).

    >>> cube = np.array([[1.0, 2.0, np.nan]])
    >>> b = bootstrap_resample(cube, 4, np.random.default_rng(0))
    >>> b.shape, bool(np.isin(b, [1.0, 2.0]).all())
    ((4, 1, 3), True)
    """
    counts = (~np.isnan(cube)).sum(-1)  # replicates present per cell
    idx = (rng.random((draws, *cube.shape)) * np.maximum(counts, 1)[None, ..., None]).astype(int)
    return np.take_along_axis(np.broadcast_to(cube, (draws, *cube.shape)), idx, -1)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``samples`` (NaN, NaN if none)."""
    samples = samples[np.isfinite(samples)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha]) if len(samples) else (np.nan, np.nan)
    return float(lo), float(hi)


def _in_range(df: pd.DataFrame, metric: str, s: SlopeSettings):
    """The sizes of one curve in the fit range of ``s``, with their cube and statistic (both
    None for fewer than two sizes)."""
    if metric not in df:
        raise ValueError(f"Unknown metric {metric!r}; the table has no such column")
    sel = df[s.in_range(df["n"])]
    sizes = np.sort(sel["n"].unique())
    if len(sizes) < 2:
        return sizes, None, None
    cube = value_cube(sel, metric, sizes)
    return sizes, cube, cell_statistic(cube, s.statistic)


def _bootstrap_lines(cube: np.ndarray, sizes, s: SlopeSettings):
    """(slopes, intercepts) of the log-log line refitted to ``s.bootstrap`` resamples of
    ``cube`` (``bootstrap_resample``, generator ``default_rng(s.seed)``)."""
    boot = bootstrap_resample(cube, s.bootstrap, np.random.default_rng(s.seed))
    log_n = np.log(np.asarray(sizes, float))
    with np.errstate(all="ignore"):
        log_y = np.log(cell_statistic(boot, s.statistic))
        b = loglog_slopes(log_n, log_y)
    return b, log_y.mean(-1) - b * log_n.mean()


def _with_statistic(s: SlopeSettings, statistic: str | None) -> SlopeSettings:
    return s if statistic is None else s.replace(statistic=statistic)


def curve_slope(
    df: pd.DataFrame,
    metric: str,
    statistic: str | None = None,
    *,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> dict:
    """Slope and bootstrap interval of one curve; ``df`` holds the rows of that curve only.

    ``slopes``: the statistic, fit range and bootstrap (``moe_lora.slopes.SlopeSettings``; its
    fields may also be given as keywords, and ``statistic`` positionally). Several truths
    (distinct ``delta``) make it a minimax curve: worst statistic over them.
    """
    s = _with_statistic(settings(slopes, overrides), statistic)
    sizes, cube, stat = _in_range(df, metric, s)
    nan = dict(slope=np.nan, ci_low=np.nan, ci_high=np.nan, intercept=np.nan)
    base = dict(
        n_min=int(sizes.min()) if len(sizes) else None,
        n_max=int(sizes.max()) if len(sizes) else None,
        points=len(sizes),
    )
    if stat is None or not np.all(stat > 0):
        return base | nan
    slope, intercept = loglog_slope(sizes, stat)
    lo, hi = percentile_interval(_bootstrap_lines(cube, sizes, s)[0], s.level)
    return base | dict(slope=slope, ci_low=lo, ci_high=hi, intercept=intercept)


def slope_table(
    df: pd.DataFrame,
    *,
    metrics=METRICS,
    statistics=STATISTICS,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> pd.DataFrame:
    """One row per (curve, metric, statistic): slope, bootstrap CI, fit range, certified fraction.

    ``slopes``: fit range and bootstrap (``SlopeSettings``, or its fields as keywords); every
    statistic of ``statistics`` is fitted, whatever ``slopes.statistic`` says.

    Curves are (seed, truth, estimator, extra) over the rows without ``delta`` (the drawn
    truths; ``seed`` where the table has it);
    if the table holds families of truths (``delta`` values), also (through, estimator, extra)
    over each whole family with the worst mean (median) over its members at each n: statistic
    ``"minimax-mean"`` (``"minimax-median"``), with ``truth`` set to ``through``.

    Raises:
        ValueError: ``n_min > n_max``, or no curve has a slope (no two sizes in the fit range).
            A slope through only two sizes gets a ``UserWarning``: it has no residual to judge it.
    """
    s = settings(slopes, overrides)
    rows = []
    # A study's truths are (seed, truth) pairs: each seed's curve is its own.
    axis = ["seed"] if "seed" in df else []
    curves = [
        (
            single_truths(df).drop(columns="delta", errors="ignore"),
            [*axis, "truth", "estimator", "extra"],
            "",
        )
    ]
    if not families(df).empty:
        curves.append(
            (df.assign(truth=df["through"]), [*axis, "truth", "estimator", "extra"], "minimax-")
        )
    for frame, group, prefix in curves:
        for keys, sub in frame.groupby(group, sort=True):
            in_range = sub[s.in_range(sub["n"])]
            per_n = ["n", "truth"] if not prefix else ["n", "delta"]
            extra = {
                "replicates": int(in_range.groupby(per_n, dropna=False).size().min())
                if len(in_range)
                else 0,
                "certified_fraction": float(in_range["certified"].mean())
                if len(in_range)
                else np.nan,
            }
            for metric in metrics:
                for st in statistics:
                    res = curve_slope(sub, metric, st, slopes=s)
                    rows.append(
                        dict(zip(group, keys))
                        | {"metric": metric, "statistic": prefix + st}
                        | res
                        | extra
                    )
    table = pd.DataFrame(rows)
    _check_slopes(table, s.n_min, s.n_max)
    return table


def _check_slopes(table: pd.DataFrame, n_min, n_max) -> None:
    """Refuse a slope table without a single slope; warn of slopes through two sizes."""
    if not len(table):
        return  # no curve at all (an empty results table): nothing to judge
    if table["slope"].isna().all():
        sizes = "all sizes" if n_min is None and n_max is None else f"n in [{n_min}, {n_max}]"
        raise ValueError(
            f"rates: no slope: no curve has two sizes with positive values in the fit range "
            f"({sizes}); widen [rates] n_min/n_max or run more sizes"
        )
    two = table[(table["points"] == 2) & table["slope"].notna()]
    if len(two):
        warnings.warn(
            f"{len(two)} of {len(table)} slopes are fitted through only 2 sizes (no residual: "
            "read their intervals with care)",
            UserWarning,
            stacklevel=3,
        )


def format_slope_table(table: pd.DataFrame, level: float = 0.95) -> str:
    """A fixed-width text rendering of ``slope_table``."""
    head = (
        f"{'truth':10s} {'estimator':9s} {'L-L*':>4s} {'metric':8s} {'statistic':14s} "
        f"{'slope':>7s} "
        f"{int(level * 100)}% CI{'':9s} {'n range':>15s} {'R':>3s} {'cert':>5s}"
    )
    lines = [head, "-" * len(head)]
    several = "seed" in table and table["seed"].nunique() > 1
    for r in table.itertuples(index=False):
        ci = f"[{r.ci_low:6.3f}, {r.ci_high:6.3f}]"
        rng = f"{r.n_min}-{r.n_max}" if r.n_min is not None else "-"
        truth = f"{r.truth} s{r.seed}" if several else r.truth
        lines.append(
            f"{truth:10s} {r.estimator:9s} {r.extra:>4d} {r.metric:8s} {r.statistic:14s} "
            f"{r.slope:7.3f} {ci:17s} "
            f"{rng:>15s} {r.replicates:>3d} {r.certified_fraction:5.2f}"
        )
    return "\n".join(lines)


#: ``crossing`` statuses: reached inside the grid, already reached at the smallest n
#: (n(eps) <= n_min, left-censored), not reached by the largest n (n(eps) > n_max,
#: right-censored).
REACHED, LEFT_CENSORED, RIGHT_CENSORED = "reached", "left-censored", "right-censored"


def crossing(n, loss, eps) -> tuple[np.ndarray, np.ndarray]:
    """Where a loss curve first drops to ``eps``: (n(eps), status) for every eps.

    log(loss) is interpolated linearly in log(n) between consecutive sizes, and n(eps) is the
    first crossing. A curve already at or below ``eps`` at its smallest size only says
    n(eps) <= n_min (status ``LEFT_CENSORED``, n(eps) returned as n_min); one that never reaches
    ``eps`` only says n(eps) > n_max (``RIGHT_CENSORED``, n_max returned). There is no
    extrapolation. Non-positive or NaN points are dropped.

    Args:
        n: sample sizes (distinct).
        loss: the loss (e.g. the mean over replicates) at each size.
        eps: target losses, a scalar or an array.

    Returns:
        Two arrays shaped like ``eps``: n(eps) (or the censoring bound) and the status.

    >>> n = np.array([1e2, 1e3, 1e4])
    >>> ne, status = crossing(n, n ** -0.5, [0.2, 10 ** -1.25, 1e-3])
    >>> [round(float(v), 6) for v in ne], status.tolist()
    ([100.0, 316.227766, 10000.0], ['left-censored', 'reached', 'right-censored'])
    """
    n, loss = np.asarray(n, float), np.asarray(loss, float)
    keep = (n > 0) & (loss > 0)
    order = np.argsort(n[keep])
    sizes = n[keep][order]
    ln, ll = np.log(sizes), np.log(loss[keep][order])
    e = np.asarray(eps, float)
    out = np.full(e.shape, np.nan)
    status = np.full(e.shape, RIGHT_CENSORED, dtype=object)
    if not len(sizes):
        return out, status
    for k, le in np.ndenumerate(np.log(np.where(e > 0, e, np.nan))):
        hit = np.flatnonzero(ll <= le)
        if not len(hit):
            out[k] = sizes[-1]
            continue
        i = hit[0]
        if i == 0:
            out[k], status[k] = sizes[0], LEFT_CENSORED
            continue
        t = (le - ll[i - 1]) / (ll[i] - ll[i - 1])
        out[k], status[k] = np.exp(ln[i - 1] + t * (ln[i] - ln[i - 1])), REACHED
    return out, status


def sample_complexity(n, loss, eps):
    """n(eps), the smallest n at which a loss curve first drops to ``eps``; NaN where the grid
    does not contain the crossing (censored: see ``crossing``).

    Args:
        n: sample sizes (distinct).
        loss: the loss at each size.
        eps: a target loss, scalar or array.

    Returns:
        n(eps), a float for scalar ``eps``, else an array shaped like ``eps``.

    >>> n = np.array([1e2, 1e3, 1e4])
    >>> [round(float(v), 6) for v in sample_complexity(n, n ** -0.5, [0.2, 10 ** -1.25, 1e-3])]
    [nan, 316.227766, nan]
    """
    ne, status = crossing(n, loss, eps)
    out = np.where(status == REACHED, ne, np.nan)
    return float(out) if out.ndim == 0 else out


#: The least span of eps, in decades, over which ``sample_complexity_fit`` is worth drawing: below
#: it eps^-2, eps^-4 and exp(eps^-1/2) cannot be told apart.
MIN_SPAN_DECADES = 1.0


def sample_complexity_fit(
    df: pd.DataFrame,
    metric: str,
    statistic: str | None = None,
    *,
    points: int = 30,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> pd.DataFrame:
    """n(eps) of one curve from its fitted power law, with a bootstrap interval.

    The ``statistic`` at each n in [n_min, n_max] is fitted by log y = a + b log n (the line of
    ``curve_slope``), and inverted: n(eps) = exp((log eps - a) / b), monotone in eps. eps runs over
    ``points`` log-spaced values between the fitted line's values at the ends of the fit range, so
    nothing is extrapolated. Every bootstrap resample (replicates redrawn at each n, as in
    ``curve_slope``) refits the line and inverts it; the interval is the percentile interval of
    n(eps) over the resamples whose slope is negative. A curve that does not fall (b >= 0), or has
    fewer than two sizes in range, gives an empty frame.

    Args:
        df: the rows of one curve.
        metric: the loss column.
        statistic: ``"mean"`` or ``"median"`` over replicates (default ``slopes.statistic``).
        points: eps values.
        slopes: fit range, resamples, interval level and bootstrap seed (``SlopeSettings``, or
            its fields as keywords).

    Returns:
        One row per eps: ``eps``, ``n`` (the fitted line's n(eps)), ``n_low``, ``n_high``, and per
        curve ``slope``, ``span_decades`` (log10 of the eps range: the decades of 1/eps covered),
        ``n_min``, ``n_max``.

    >>> d = pd.DataFrame({"n": [100, 10_000] * 2, "D": [1.0, 0.1, 1.0, 0.1]})
    >>> t = sample_complexity_fit(d, "D", points=3, bootstrap=10)
    >>> t[["eps", "n"]].round(6).values.tolist(), float(t["span_decades"].iloc[0])
    ([[1.0, 100.0], [0.316228, 1000.0], [0.1, 10000.0]], 1.0)
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    columns = ["eps", "n", "n_low", "n_high", "slope", "span_decades", "n_min", "n_max"]
    s = _with_statistic(settings(slopes, overrides), statistic)
    sizes, cube, stat = _in_range(df, metric, s)
    if stat is None or not np.all(stat > 0):
        return pd.DataFrame(columns=columns)
    slope, intercept = loglog_slope(sizes, stat)
    if not slope < 0:
        return pd.DataFrame(columns=columns)
    log_n = np.log(sizes.astype(float))
    ends = intercept + slope * log_n[[0, -1]]  # the fitted line at the ends of the fit range
    log_eps = np.linspace(ends[0], ends[1], points)
    b, a = _bootstrap_lines(cube, sizes, s)
    with np.errstate(all="ignore"):
        log_nb = (log_eps[None, :] - a[:, None]) / b[:, None]
    log_nb = log_nb[b < 0]
    alpha = (1 - s.level) / 2
    if len(log_nb):
        lo, hi = np.nanquantile(log_nb, [alpha, 1 - alpha], axis=0)
    else:
        lo = hi = np.full(points, np.nan)
    return pd.DataFrame(
        {
            "eps": np.exp(log_eps),
            "n": np.exp((log_eps - intercept) / slope),
            "n_low": np.exp(lo),
            "n_high": np.exp(hi),
            "slope": slope,
            "span_decades": float((ends[0] - ends[1]) / np.log(10)),
            "n_min": int(sizes[0]),
            "n_max": int(sizes[-1]),
        }
    )


def local_slopes(df: pd.DataFrame, metric: str, statistic: str = "mean") -> pd.DataFrame:
    """Slopes of log(statistic) between consecutive sizes of one curve: where the decay bends.

    ``df`` holds the rows of one curve. Returns one row per pair of consecutive sizes:
    ``n_low``, ``n_high``, ``n_mid`` (their geometric mean) and ``slope``.

    >>> d = pd.DataFrame({"n": [100, 400, 1600], "D": [1.0, 1.0, 0.5]})
    >>> local_slopes(d, "D")["slope"].round(3).tolist()
    [0.0, -0.5]
    """
    if statistic not in STATISTICS:
        raise ValueError(f"Unknown statistic {statistic!r}; expected one of {STATISTICS}")
    if metric not in df:
        raise ValueError(f"Unknown metric {metric!r}; the table has no such column")
    g = df.groupby("n")[metric]
    stat = (g.median() if statistic == "median" else g.mean()).sort_index()
    n, y = stat.index.to_numpy(float), stat.to_numpy(float)
    with np.errstate(all="ignore"):
        slope = np.diff(np.log(y)) / np.diff(np.log(n))
    return pd.DataFrame(
        {
            "n_low": n[:-1].astype(int),
            "n_high": n[1:].astype(int),
            "n_mid": np.sqrt(n[:-1] * n[1:]),
            "slope": slope,
        }
    )


def asymptotic_onset(
    df: pd.DataFrame,
    metric: str,
    target: float,
    statistic: str | None = None,
    *,
    min_points: int = 3,
    tol: float = 0.05,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> dict:
    """The smallest size from which one curve decays at the rate ``target`` (e.g. -0.5).

    For each size n_k in increasing order, the slope over [n_k, largest n] and its bootstrap
    interval are fitted (``curve_slope``, with ``slopes``' statistic and bootstrap; its n_min
    is each n_k in turn); the onset is the first n_k whose interval, widened by
    ``tol`` on each side, contains ``target``, with at least ``min_points`` sizes in the range
    (without the widening, a curve of one replicate per size, whose interval is a point, could
    never qualify). A curve that is flat at small
    n and steepens later (the pre-asymptotic regime) gets a later onset.

    Returns:
        ``{"onset": n_k or NaN if no range qualifies, "slope", "ci_low", "ci_high", "points"}``
        of the qualifying range (of the last range tried if none qualifies). With few sizes or
        replicates the intervals are wide and the onset early: read it with the interval.
    """
    if not (isinstance(min_points, (int, np.integer)) and min_points >= 2):
        raise ValueError(f"min_points must be an integer >= 2, got {min_points!r}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    s = _with_statistic(settings(slopes, overrides), statistic)
    sizes = np.sort(df["n"].unique())
    res = {"slope": np.nan, "ci_low": np.nan, "ci_high": np.nan, "points": 0}
    onset = np.nan
    for k in range(len(sizes) - min_points + 1):
        res = curve_slope(df, metric, slopes=s.replace(n_min=int(sizes[k])))
        if res["ci_low"] - tol <= target <= res["ci_high"] + tol:
            onset = int(sizes[k])
            break
    return {"onset": onset} | {key: res[key] for key in ("slope", "ci_low", "ci_high", "points")}


def onset_table(
    df: pd.DataFrame, by, metric: str, target: float, statistic: str | None = None, **kwargs
) -> pd.DataFrame:
    """``asymptotic_onset`` of every curve of ``df``, one row per group of the ``by`` columns.

    >>> d = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4, "n": [100, 400, 1600, 6400] * 2,
    ...                   "D": [1, 1, 0.5, 0.25] + [1, 0.5, 0.25, 0.125]})
    >>> onset_table(d, "g", "D", -0.5, min_points=2, bootstrap=10)[["g", "onset"]].values.tolist()
    [['a', 400], ['b', 100]]
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = [
        dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        | asymptotic_onset(sub, metric, target, statistic, **kwargs)
        for keys, sub in df.groupby(by, sort=False)
    ]
    return pd.DataFrame(rows)


def term_slopes(
    df: pd.DataFrame,
    ranges,
    *,
    terms=D_TERMS,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> pd.DataFrame:
    """Slope and bootstrap interval of every piece of D, for every curve and size range.

    Args:
        df: results table rows of drawn truths (``table.single_truths``).
        ranges: (n_min, n_max) pairs; None leaves an end open.
        terms: the columns to fit (``D_TERMS`` by default; missing ones are skipped).
        slopes: statistic and bootstrap (``SlopeSettings``, or its fields as keywords); the
            fit range is each of ``ranges`` in turn.

    Returns:
        One row per (truth, estimator, extra, term, range): ``slope``, ``ci_low``, ``ci_high``,
        the range actually covered (``n_min``, ``n_max``, ``points``). A term that is zero at some
        size in the range (no multi-atom cell, say) has no log-log slope: NaN.

    >>> n = np.repeat([100, 1000, 10000], 4)
    >>> d = pd.DataFrame({"truth": "t", "estimator": "e", "extra": 1, "n": n,
    ...                   "D": n ** -0.5, "D_mass": 2 * n ** -1.0})
    >>> s = term_slopes(d, [(None, None)], terms=("D", "D_mass"), bootstrap=20)
    >>> s[["term", "slope"]].round(3).values.tolist()
    [['D', -0.5], ['D_mass', -1.0]]
    """
    s = settings(slopes, overrides)
    rows = []
    for (truth, est, extra), sub in df.groupby(["truth", "estimator", "extra"], sort=True):
        for term in (t for t in terms if t in df):
            for lo, hi in ranges:
                res = curve_slope(sub, term, slopes=s.replace(n_min=lo, n_max=hi))
                rows.append(
                    {
                        "truth": truth,
                        "estimator": est,
                        "extra": extra,
                        "term": term,
                        "statistic": s.statistic,
                    }
                    | res
                )
    return pd.DataFrame(rows)


def local_slope_table(
    df: pd.DataFrame,
    metric: str,
    statistic: str | None = None,
    *,
    window: int = 3,
    slopes: SlopeSettings | None = None,
    **overrides,
) -> pd.DataFrame:
    """Slopes of one curve over sliding windows of ``window`` consecutive sizes, with intervals.

    Where ``local_slopes`` differences neighbours, this fits each window by least squares and
    bootstraps it (``curve_slope``), so a trend of the local slope against n (toward -0.5, or
    not) can be read with its uncertainty. ``n_mid`` is the window's geometric mean size.

    >>> n = np.repeat([100, 400, 1600, 6400], 3)
    >>> d = pd.DataFrame({"n": n, "D": n ** np.where(n < 1000, -0.25, -0.5)})
    >>> local_slope_table(d, "D", window=2, bootstrap=10)["points"].tolist()
    [2, 2, 2]
    """
    if not (isinstance(window, (int, np.integer)) and window >= 2):
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    s = _with_statistic(settings(slopes, overrides), statistic)
    sizes = np.sort(df["n"].unique())
    rows = []
    for k in range(len(sizes) - window + 1):
        lo, hi = int(sizes[k]), int(sizes[k + window - 1])
        res = curve_slope(df, metric, slopes=s.replace(n_min=lo, n_max=hi))
        rows.append({"n_mid": float(np.exp(np.mean(np.log(sizes[k : k + window]))))} | res)
    return pd.DataFrame(rows)
