"""Statistics of a head-study table: paired log-ratios, improvements, data efficiency, rate slopes.

Every statistic compares a reference student (``"lora"``) with each other student in the table,
per variation, on the same seeds (the students see the same data, so seeds are paired and
resampled together). Intervals are percentile bootstraps over seeds.

Data efficiency is read two ways:

* ``n_ratio`` (the statistic to quote): fit a power law e = C n^-alpha to each student's error
  (the median over seeds unless stated) on n >= ``fit_min_n``, and solve for the n at which the
  candidate's fitted curve reaches the reference's fitted error at n_max; ``n_ratio`` is that n over
  n_max. It moves smoothly with the data (an extrapolation where it leaves the grid), so it is not
  knife-edged.
* ``fraction``, the earlier crossing statistic (``crossing_fraction``): the smallest grid n at which
  the candidate's curve reaches the reference's error at n_max. It flips to "not reached" whenever
  the two curves coincide at n_max, so it is kept only for comparison with the first study.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..rates import bootstrap_indices
from ..slopes import SlopeSettings, settings

REFERENCE = "lora"
STATISTICS = {"mean": np.mean, "median": np.median}
#: The declared default fit range of the power laws: n >= FIT_MIN_N (fixed before the rerun).
FIT_MIN_N = 16
#: The head study's rate slopes (``rate_slopes``): the median over seeds on n >= FIT_MIN_N, 2000
#: bootstrap draws; the other settings are ``SlopeSettings``' defaults.
HEAD_SLOPES = SlopeSettings(statistic="median", n_min=FIT_MIN_N, bootstrap=2000)


def _by_variation(table):
    if "variation" not in table:
        return [("headline", table)]
    return [(v, table[table["variation"] == v]) for v in pd.unique(table["variation"])]


def _candidates(table, reference=REFERENCE):
    students = list(pd.unique(table["student"]))
    if reference not in students:
        raise ValueError(f"The table lacks the reference student {reference!r}; it has {students}")
    others = [s for s in students if s != reference]
    if not others:
        raise ValueError(
            f"The table has only the reference student {reference!r}; expected another to compare"
        )
    return others


def _cube(table: pd.DataFrame, metric: str, students):
    """(ns, seeds, array[student, n, seed]) of one variation's metric; every (student, n) needs the
    same seeds.

    Sizes that not every student has are left out (a study stopped part way)."""
    table = table[table["student"].isin(students)]
    complete = table.groupby("n")["student"].nunique()
    table = table[table["n"].isin(complete[complete == len(students)].index)]
    wide = table.pivot_table(index=["student", "n"], columns="seed", values=metric, aggfunc="first")
    ns = np.sort(table["n"].unique())
    cube = np.stack([wide.loc[s].reindex(ns).to_numpy(float) for s in students])
    if np.isnan(cube).any():
        raise ValueError("The table is not complete: every (student, n) needs the same seeds")
    return ns, wide.columns.to_numpy(), cube


def _boot(cube, n_boot, rng, statistic):
    idx = bootstrap_indices(rng, n_boot, cube.shape[-1])
    return STATISTICS[statistic](cube[..., idx], axis=-1)  # ..., n, boot


def _interval(samples, level, axis=-1):
    if np.isnan(samples).all():
        return np.array([math.nan, math.nan])
    return np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=axis)


def crossing_fraction(ns, reference, candidate) -> float:
    """The smallest n where the candidate's curve reaches the reference's error at the largest n,
    over that n.

    Log-log interpolated between grid points. Returns ns[0] / ns[-1] when the candidate is already
    there at the smallest n (an upper bound), and ``inf`` when it never gets there on the grid.

    Example:
        >>> round(crossing_fraction([10, 100], [1.0, 0.1], [0.5, 0.05]), 3)
        0.5
    """
    ns, target, rep = np.asarray(ns, float), reference[-1], np.asarray(candidate, float)
    reached = np.nonzero(rep <= target)[0]
    if reached.size == 0:
        return math.inf
    i = reached[0]
    if i == 0:
        return ns[0] / ns[-1]
    x0, x1, y0, y1 = np.log(ns[i - 1]), np.log(ns[i]), np.log(rep[i - 1]), np.log(rep[i])
    return float(np.exp(x0 + (np.log(target) - y0) / (y1 - y0) * (x1 - x0)) / ns[-1])


def power_law(ns, errors) -> tuple[float, float]:
    """(log C, slope) of the least-squares line log e = log C + slope log n.

    Example:
        >>> [round(x, 6) for x in power_law([10, 100, 1000], [1.0, 0.1, 0.01])]
        [2.302585, -1.0]
    """
    slope, intercept = np.polyfit(
        np.log(np.asarray(ns, float)), np.log(np.asarray(errors, float)), 1
    )
    return float(intercept), float(slope)


def equal_error_ratio(ns, reference, candidate, fit_min_n: int = FIT_MIN_N) -> float:
    """n_ratio: the n at which the candidate's fitted power law reaches the reference's fitted error
    at n_max, over n_max (below 1: the candidate needs less data). ``nan`` if a fitted slope is not
    negative.

    Example:
        >>> round(equal_error_ratio([16, 160, 1600], [1.0, 0.1, 0.01], [0.5, 0.05, 0.005]), 6)
        0.5
    """
    ns = np.asarray(ns, float)
    use = ns >= fit_min_n
    if use.sum() < 2:
        raise ValueError(
            f"Need at least two sizes n >= fit_min_n={fit_min_n} for a power law; got sizes "
            f"{ns.tolist()}"
        )
    c_ref, s_ref = power_law(ns[use], np.asarray(reference)[use])
    c_can, s_can = power_law(ns[use], np.asarray(candidate)[use])
    if not (s_ref < 0 and s_can < 0):
        return math.nan
    log_target = c_ref + s_ref * np.log(ns[use][-1])
    return float(np.exp((log_target - c_can) / s_can) / ns[use][-1])


def data_efficiency(
    table: pd.DataFrame,
    *,
    metric: str = "function_error",
    statistic: str = "median",
    fit_min_n: int = FIT_MIN_N,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per variation and candidate student: ``n_ratio`` and the power-law slopes, with bootstrap
    intervals, and the earlier crossing ``fraction`` beside them (see the module docstring).

    Returns:
        DataFrame with columns variation, metric, statistic, reference, candidate, fit_min_n,
        n_ratio, n_ratio_lo, n_ratio_hi, slope_reference, slope_candidate, fraction, fraction_lo,
        fraction_hi, censored, reference_at_max, candidate_at_max, seeds.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for variation, part in _by_variation(table):
        for candidate in _candidates(part):
            ns, seeds, cube = _cube(part, metric, (REFERENCE, candidate))
            center = STATISTICS[statistic](cube, axis=-1)
            boot = _boot(cube, n_boot, rng, statistic)
            use = ns >= fit_min_n
            if use.sum() >= 2:
                ratio = equal_error_ratio(ns, center[0], center[1], fit_min_n)
                ratios = np.array(
                    [
                        equal_error_ratio(ns, boot[0, :, b], boot[1, :, b], fit_min_n)
                        for b in range(n_boot)
                    ]
                )
                slopes = (
                    power_law(ns[use], center[0][use])[1],
                    power_law(ns[use], center[1][use])[1],
                )
            else:  # a variation with fewer than two sizes in the fit range has no power law
                ratio, ratios, slopes = math.nan, np.full(n_boot, math.nan), (math.nan, math.nan)
            frac = crossing_fraction(ns, center[0], center[1])
            fracs = np.array(
                [crossing_fraction(ns, boot[0, :, b], boot[1, :, b]) for b in range(n_boot)]
            )
            # inverted_cdf picks observed values: an interval end can be inf ("not reached") without
            # NaNs
            f_lo, f_hi = np.quantile(
                fracs, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf"
            )
            rows.append(
                dict(
                    variation=variation,
                    metric=metric,
                    statistic=statistic,
                    reference=REFERENCE,
                    candidate=candidate,
                    fit_min_n=fit_min_n,
                    n_ratio=ratio,
                    n_ratio_lo=_interval(ratios, level)[0],
                    n_ratio_hi=_interval(ratios, level)[1],
                    slope_reference=slopes[0],
                    slope_candidate=slopes[1],
                    fraction=frac,
                    fraction_lo=f_lo,
                    fraction_hi=f_hi,
                    censored="not reached"
                    if math.isinf(frac)
                    else ("at most" if frac == ns[0] / ns[-1] else ""),
                    reference_at_max=center[0, -1],
                    candidate_at_max=center[1, -1],
                    seeds=len(seeds),
                )
            )
    return pd.DataFrame(rows)


def improvement(
    table: pd.DataFrame,
    *,
    metric: str = "function_error",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per variation, candidate and n: the candidate against the reference, paired by seed.

    Columns: variation, candidate, n, metric; ``reference_mean``, ``candidate_mean`` and
    ``improvement`` = 1 - candidate_mean / reference_mean with its interval (lo, hi); the same of
    medians (``improvement_median``); the per-seed log-ratios log(e_candidate / e_reference):
    their mean and median with intervals, and ``wins``, the seeds where the candidate's error is
    lower; and ``underfit_reference``, ``underfit_candidate``, the flagged fits (if recorded).
    Positive improvement and negative log-ratio: the candidate's error is lower.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for variation, part in _by_variation(table):
        for candidate in _candidates(part):
            pair = (REFERENCE, candidate)
            ns, seeds, cube = _cube(part, metric, pair)
            idx = bootstrap_indices(rng, n_boot, cube.shape[-1])
            resampled = cube[..., idx]  # student, n, boot, seed
            logr = np.log(cube[1] / cube[0])  # n, seed
            logr_boot = logr[:, idx]
            under = None
            if "underfit" in part:
                under = _cube(
                    part.assign(underfit=part["underfit"].astype(float)), "underfit", pair
                )[2].sum(-1)
            for i, n in enumerate(ns):
                row = dict(
                    variation=variation,
                    candidate=candidate,
                    n=int(n),
                    metric=metric,
                    seeds=len(seeds),
                )
                for stat in ("mean", "median"):
                    f = STATISTICS[stat]
                    ref, can = f(cube[0, i]), f(cube[1, i])
                    gain = 1 - f(resampled[1, i], axis=-1) / f(resampled[0, i], axis=-1)
                    suffix = "" if stat == "mean" else "_median"
                    lo, hi = _interval(gain, level)
                    row |= {
                        f"reference_{stat}": ref,
                        f"candidate_{stat}": can,
                        f"improvement{suffix}": 1 - can / ref,
                        f"lo{suffix}": lo,
                        f"hi{suffix}": hi,
                    }
                    lr_lo, lr_hi = _interval(f(logr_boot[i], axis=-1), level)
                    row |= {
                        f"log_ratio_{stat}": f(logr[i]),
                        f"log_ratio_{stat}_lo": lr_lo,
                        f"log_ratio_{stat}_hi": lr_hi,
                    }
                row["wins"] = int((logr[i] < 0).sum())
                if under is not None:
                    row["underfit_reference"], row["underfit_candidate"] = (
                        int(under[0, i]),
                        int(under[1, i]),
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def error_bands(
    table: pd.DataFrame,
    *,
    metric: str = "function_error",
    statistic: str = "median",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per variation, student and n: the statistic of the error over seeds (column ``center``),
    bootstrap interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for variation, part in _by_variation(table):
        students = list(pd.unique(part["student"]))
        ns, _, cube = _cube(part, metric, students)
        center, boot = STATISTICS[statistic](cube, axis=-1), _boot(cube, n_boot, rng, statistic)
        lo, hi = _interval(boot, level)
        for s, student in enumerate(students):
            for i, n in enumerate(ns):
                rows.append(
                    dict(
                        variation=variation,
                        student=student,
                        n=int(n),
                        statistic=statistic,
                        center=center[s, i],
                        lo=lo[s, i],
                        hi=hi[s, i],
                    )
                )
    return pd.DataFrame(rows)


def rate_slopes(
    table: pd.DataFrame,
    *,
    metrics=("function_error", "gate_error", "value_error"),
    slopes: SlopeSettings | None = None,
    **overrides,
) -> pd.DataFrame:
    """Per variation, student and metric: the log-log slope of the error's statistic over seeds on
    n_min <= n <= n_max, with a bootstrap interval (seeds resampled, paired across students).

    ``slopes``: the statistic, fit range and bootstrap (``SlopeSettings``; default
    ``HEAD_SLOPES``), or its fields as keywords.

    Returns columns variation, student, metric, statistic, n_min, n_max, slope, lo, hi, seeds.
    """
    fit = settings(HEAD_SLOPES if slopes is None else slopes, overrides)
    statistic, n_boot, level = fit.statistic, fit.bootstrap, fit.level
    rng = np.random.default_rng(fit.seed)
    rows = []
    for variation, part in _by_variation(table):
        students = list(pd.unique(part["student"]))
        for metric in metrics:
            ns, seeds, cube = _cube(part, metric, students)
            use = fit.in_range(ns)
            if use.sum() < 2:  # no slope from fewer than two sizes
                continue
            x = np.log(ns[use])
            center = STATISTICS[statistic](cube[:, use], axis=-1)
            boot = _boot(cube[:, use], n_boot, rng, statistic)  # student, n, boot
            for s, student in enumerate(students):
                slope = np.polyfit(x, np.log(center[s]), 1)[0]
                slopes = np.polyfit(x, np.log(boot[s]), 1)[0]
                lo, hi = _interval(slopes, level)
                rows.append(
                    dict(
                        variation=variation,
                        student=student,
                        metric=metric,
                        statistic=statistic,
                        n_min=int(ns[use][0]),
                        n_max=int(ns[use][-1]),
                        slope=slope,
                        lo=lo,
                        hi=hi,
                        seeds=len(seeds),
                    )
                )
    return pd.DataFrame(rows)
