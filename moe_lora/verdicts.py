"""Verdicts: a measured slope against a prediction and an alternative, by a rule fixed before the
run.

A rule (a ``[[rates.verdicts]]`` entry of the config, read before any fit) names a metric, the
estimators it covers, a prediction and an alternative. Each is a reference curve of n
(``REFERENCE_CURVES``: ``"sqrt_log_n_over_n"``, ``"inv_log_n"``, ...) or a number, the exponent
of a power law. A curve's exponent is not its slope over a finite range: sqrt(log n / n) has a
local log-log slope of about -0.43 over 1e2..1e4, not -0.5. So both are turned into the
least-squares slope of log curve(n) against log n over the sizes of the fit range
(``local_slope``), exactly as the measured slope is computed.

The measured slope and its bootstrap interval come from ``moe_lora.rates.curve_slope`` over the
config's fit range (``[rates] n_min, n_max``) with the config's statistic (``[rates] statistic``).
Then (``verdict``):

* agrees: the interval contains the prediction and excludes the alternative;
* disagrees: the interval excludes the prediction;
* undecided: otherwise (it contains both, or the curve has too few points).

A disagreeing row also says on which side of the prediction the interval lies (``side``):
the theory's rates are upper bounds, O(sqrt(log n / n)), so a slope steeper than the
prediction's does not contradict the bound, and a shallower one does.

Each rule is applied per truth (a truth is a (seed, label) pair of a study, and a run of its
own where several runs are read together) and pooled over the truths of each estimator: the
statistic at each n over all replicates of all its truths, its interval a hierarchical
bootstrap (``hierarchical_slopes``: resample the truths, then the replicates within each, at
every n; at least ``POOLED_DRAWS`` draws), so the interval carries the variation between truths
as well as the noise within them. Per-truth rows stay beside the pooled one.

A verdict is **borderline** when it changes with the bootstrap's seed: every row is judged at
the ``STABILITY_SEEDS`` seeds 0, 1, ..., 4; the row reports seed 0's interval and verdict, and
``borderline`` is true when any of the five verdicts differs from it (``verdicts_by_seed``
lists them). Five seeds catch a verdict whose interval ends within Monte-Carlo error of a
reference: such a verdict flips at some seed with high probability, and one that never flips
is decided by more than the bootstrap's own noise.

This module is pure (tables in, tables out); ``moe_lora.verdict_runs`` reads run directories.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from .rates import (
    cell_statistic,
    curve_slope,
    loglog_slope,
    loglog_slopes,
    member_statistic,
    percentile_interval,
    value_cube,
)
from .slopes import SlopeSettings, settings
from .table import single_truths

#: Reference curves of n a prediction or an alternative may name.
REFERENCE_CURVES: dict[str, Callable] = {
    "sqrt_log_n_over_n": lambda n: np.sqrt(np.log(n) / n),
    "inv_sqrt_n": lambda n: n**-0.5,
    "inv_log_n": lambda n: 1 / np.log(n),
    "inv_quarter_n": lambda n: n**-0.25,
    "constant": lambda n: np.ones_like(n),
}
AGREES, DISAGREES, UNDECIDED = "agrees", "disagrees", "undecided"
#: Least bootstrap draws of a pooled interval (the config's ``[rates] bootstrap`` if larger).
POOLED_DRAWS = 10_000
#: Bootstrap seeds at which every verdict is judged; it is borderline if they disagree.
STABILITY_SEEDS = 5
#: The columns that name one truth of a table: its seed (a study's truth axis), its label, and
#: its run where several runs are read together (``pooled_table``).
TRUTH_COLUMNS = ("source", "seed", "truth")


def check_reference(where: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` names a reference curve or is a finite number."""
    if isinstance(value, bool) or not (
        value in REFERENCE_CURVES or (isinstance(value, (int, float)) and math.isfinite(value))
    ):
        raise ValueError(
            f"{where}: expected one of {sorted(REFERENCE_CURVES)} or a number (a power-law "
            f"exponent), got {value!r}"
        )


def local_slope(reference, sizes) -> float:
    """Least-squares log-log slope of a reference curve (a name or an exponent) over ``sizes``.

    >>> round(local_slope("sqrt_log_n_over_n", np.geomspace(100, 1e4, 9)), 2)
    -0.43
    >>> local_slope(-0.25, [100, 1000])
    -0.25
    """
    check_reference("reference", reference)
    n = np.asarray(sizes, float)
    if n.ndim != 1 or len(n) < 2:
        raise ValueError(f"local_slope needs at least two sizes, got {sizes!r}")
    y = REFERENCE_CURVES[reference](n) if isinstance(reference, str) else n ** float(reference)
    x = np.log(n) - np.log(n).mean()
    return float(((np.log(y) - np.log(y).mean()) * x).sum() / (x @ x))


def verdict(ci_low: float, ci_high: float, prediction: float, alternative: float) -> str:
    """The rule: agrees / disagrees / undecided (module docstring).

    >>> pred, alt = -0.45, -0.25
    >>> lows, highs = (-0.6, -0.3, -0.5), (-0.4, -0.1, -0.2)
    >>> tuple(verdict(lo, hi, pred, alt) for lo, hi in zip(lows, highs))
    ('agrees', 'disagrees', 'undecided')
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return UNDECIDED
    if not ci_low <= prediction <= ci_high:
        return DISAGREES
    return UNDECIDED if ci_low <= alternative <= ci_high else AGREES


def _references(df: pd.DataFrame, prediction, alternative, s: SlopeSettings):
    """(sizes in range, prediction's local slope, alternative's local slope)."""
    check_reference("prediction", prediction)
    check_reference("alternative", alternative)
    sizes = np.sort(df.loc[s.in_range(df["n"]), "n"].unique())
    if len(sizes) < 2:
        return sizes, np.nan, np.nan
    return sizes, local_slope(prediction, sizes), local_slope(alternative, sizes)


def _decide(res: dict, sizes, pred: float, alt: float, seeds: list[tuple[float, float]]) -> dict:
    """The verdict of seed 0's interval (in ``res``), and the verdicts of every seed's."""
    decided = [verdict(lo, hi, pred, alt) if len(sizes) >= 2 else UNDECIDED for lo, hi in seeds]
    return dict(
        prediction_slope=pred,
        alternative_slope=alt,
        verdict=decided[0],
        # Which side of the prediction a disagreeing interval lies on: the theory's rates are
        # upper bounds (O(.)), so "steeper" does not contradict them, "shallower" does.
        side="steeper" if res["ci_high"] < pred else "shallower" if res["ci_low"] > pred else "",
        borderline=len(set(decided)) > 1,
        verdicts_by_seed=",".join(decided),
    )


def _row(res: dict, metric, statistic, prediction, alternative, decided: dict) -> dict:
    """A verdict row in the table's column order."""
    return (
        res
        | dict(
            metric=metric,
            statistic=statistic,
            prediction=prediction,
            prediction_slope=decided.pop("prediction_slope"),
            alternative=alternative,
            alternative_slope=decided.pop("alternative_slope"),
        )
        | decided
    )


def judge(
    df: pd.DataFrame,
    metric: str,
    prediction,
    alternative,
    *,
    slopes: SlopeSettings | None = None,
    stability_seeds: int = STABILITY_SEEDS,
    **overrides,
) -> dict:
    """Slope, interval, the two references' local slopes over the same sizes, and the verdict of
    one truth's curve (its replicates resampled at every n), judged at ``stability_seeds``
    bootstrap seeds from ``slopes.seed`` on (module docstring, "borderline"). ``slopes``: the
    statistic, fit range and bootstrap (``SlopeSettings``, or its fields as keywords)."""
    s = settings(slopes, overrides)
    sizes, pred, alt = _references(df, prediction, alternative, s)
    runs = [
        curve_slope(df, metric, slopes=s.replace(seed=s.seed + k)) for k in range(stability_seeds)
    ]
    res = runs[0]
    decided = _decide(res, sizes, pred, alt, [(r["ci_low"], r["ci_high"]) for r in runs])
    return _row(res, metric, s.statistic, prediction, alternative, decided)


def hierarchical_slopes(
    cube: np.ndarray, sizes, statistic: str, draws: int, rng: np.random.Generator
) -> np.ndarray:
    """Slopes of ``draws`` hierarchical bootstrap resamples of a pooled curve.

    Each resample draws T truths with replacement from the T of ``cube``, then, for each drawn
    truth and each n, its replicates with replacement (as many as it has there); the statistic
    at each n is taken over all the drawn replicates of all the drawn truths, and the log-log
    slope refitted. Vectorised in blocks of draws.

    Args:
        cube: values, shape (T truths, N sizes, R replicates), missing replicates NaN at the end.
        sizes: the N sample sizes.
        statistic: ``"mean"`` or ``"median"``.
        draws: number of resamples.
        rng: the generator.

    Returns:
        Shape (draws,): the slopes (NaN where a resampled statistic is not positive).

    >>> cube = np.stack([np.tile(k * np.array([1.0, 0.1])[:, None], 3) for k in (1.0, 2.0)])
    >>> np.round(hierarchical_slopes(cube, [10, 100], "mean", 4, np.random.default_rng(0)), 9)
    array([-1., -1., -1., -1.])
    """
    T, N, R = cube.shape
    counts = (~np.isnan(cube)).sum(-1)  # (T, N)
    log_n = np.log(np.asarray(sizes, float))
    out = np.empty(draws)
    block = max(1, 2_000_000 // max(T * N * R, 1))
    for start in range(0, draws, block):
        B = min(block, draws - start)
        truths = rng.integers(0, T, size=(B, T))  # (B, T)
        c = counts[truths]  # (B, T, N)
        reps = (rng.random((B, T, N, R)) * np.maximum(c, 1)[..., None]).astype(int)
        values = cube[truths[..., None, None], np.arange(N)[None, None, :, None], reps]
        values = np.where(np.arange(R) < c[..., None], values, np.nan)  # (B, T, N, R)
        pooled = values.transpose(0, 2, 1, 3).reshape(B, N, T * R)
        with np.errstate(all="ignore"):
            stat = np.nanmedian(pooled, -1) if statistic == "median" else np.nanmean(pooled, -1)
            out[start : start + B] = loglog_slopes(log_n, np.log(stat))
    return out


def judge_pooled(
    df: pd.DataFrame,
    metric: str,
    prediction,
    alternative,
    *,
    truth_columns=("seed", "truth"),
    slopes: SlopeSettings | None = None,
    stability_seeds: int = STABILITY_SEEDS,
    **overrides,
) -> dict:
    """``judge`` of the curve pooled over the truths of ``df`` (told apart by ``truth_columns``):
    the statistic at each n over every replicate of every truth; the interval of a hierarchical
    bootstrap (``hierarchical_slopes``) with ``slopes.bootstrap`` draws, at least
    ``POOLED_DRAWS``."""
    s = settings(slopes, overrides)
    statistic = s.statistic
    sizes, pred, alt = _references(df, prediction, alternative, s)
    draws = max(int(s.bootstrap), POOLED_DRAWS)
    sel = df[s.in_range(df["n"])]
    base = dict(
        n_min=int(sizes.min()) if len(sizes) else None,
        n_max=int(sizes.max()) if len(sizes) else None,
        points=len(sizes),
        bootstrap_draws=draws,
    )
    nan = dict(slope=np.nan, ci_low=np.nan, ci_high=np.nan, intercept=np.nan)
    cube, stat = None, None
    if len(sizes) >= 2 and metric in sel:
        truths = [
            value_cube(sub.drop(columns="delta", errors="ignore"), metric, sizes)[0]
            for _, sub in sel.groupby(list(truth_columns), sort=True, dropna=False)
        ]
        R = max(t.shape[-1] for t in truths)
        cube = np.stack(
            [np.pad(t, ((0, 0), (0, R - t.shape[-1])), constant_values=np.nan) for t in truths]
        )
        values = cube.transpose(1, 0, 2).reshape(len(sizes), -1)
        stat = cell_statistic(values[None, :, :], statistic)
    intervals = []
    if stat is None or not np.all(stat > 0):
        res = base | nan
        intervals = [(np.nan, np.nan)] * stability_seeds
    else:
        slope, intercept = loglog_slope(sizes, stat)
        for k in range(stability_seeds):
            resampled = hierarchical_slopes(
                cube, sizes, statistic, draws, np.random.default_rng(s.seed + k)
            )
            intervals.append(percentile_interval(resampled, s.level))
        res = base | dict(
            slope=slope, ci_low=intervals[0][0], ci_high=intervals[0][1], intercept=intercept
        )
    decided = _decide(res, sizes, pred, alt, intervals)
    return _row(res, metric, statistic, prediction, alternative, decided)


def verdict_table(
    df: pd.DataFrame,
    rules,
    *,
    slopes: SlopeSettings | None = None,
    stability_seeds: int = STABILITY_SEEDS,
    **overrides,
) -> pd.DataFrame:
    """One row per (rule, estimator, extra, truth) and one pooled row per (rule, estimator,
    extra) with several truths.

    ``rules``: dicts with ``label``, ``metric``, ``prediction``, ``alternative`` and optionally
    ``estimators`` (default: all) and ``extra`` (L - L* settings; default: all). A truth is one
    value of the ``TRUTH_COLUMNS`` the table has (``seed`` and ``truth`` of a study; ``source``,
    the run, where several runs are pooled, ``pooled_table``): a group-by, never a relabelling.
    Rows of drawn truths only, except under a rule with ``worst_case = true``: one row per
    (estimator, extra, seed, family) on the worst statistic over the family's members and its
    drawn truth (``family_rows``), with ``worst_delta``. ``slopes``: the statistic (a
    rule's own ``statistic`` replaces it), fit range and bootstrap (``SlopeSettings``, or its
    fields as keywords). Per-truth intervals resample replicates with ``slopes.bootstrap``
    draws; the pooled one is hierarchical (``judge_pooled``).
    """
    s = settings(slopes, overrides)
    table = single_truths(df)
    truth_columns = [c for c in TRUTH_COLUMNS if c in table]
    rows = []
    for rule in rules:
        if rule.get("worst_case"):
            rows += _worst_case_rows(df, rule, s, stability_seeds)
            continue
        sel = table
        if rule.get("estimators"):
            sel = sel[sel["estimator"].isin(rule["estimators"])]
        if rule.get("extra") is not None:
            sel = sel[sel["extra"].isin(np.atleast_1d(rule["extra"]))]
        kw = dict(
            slopes=s.replace(statistic=rule.get("statistic", s.statistic)),
            stability_seeds=stability_seeds,
        )
        args = (rule["metric"], rule["prediction"], rule["alternative"])
        for (est, extra), sub in sel.groupby(["estimator", "extra"], sort=True):
            head = {"rule": rule["label"], "estimator": est, "extra": int(extra)}
            groups = list(sub.groupby(truth_columns, sort=True, dropna=False))
            for keys, one in groups:
                ids = dict(zip(truth_columns, keys))
                res = judge(one, *args, **kw)
                rows.append(head | ids | {"truths": 1} | res)
            if len(groups) > 1:
                res = judge_pooled(sub, *args, truth_columns=truth_columns, **kw)
                rows.append(head | {"truth": "pooled", "truths": len(groups)} | res)
    return pd.DataFrame(rows)


def format_verdicts(table: pd.DataFrame, level: float = 0.95) -> str:
    """A markdown table of ``verdict_table`` rows: the measured slope with its interval against the
    two references' local slopes over the same fit range."""
    lines = [
        f"| rule | estimator | L - L* | truth | {statistic_header(table)} slope ({level:.0%} "
        "interval) | fit range | "
        "prediction (local slope) | alternative (local slope) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        rng = f"{r['n_min']:.3g}..{r['n_max']:.3g} ({r['points']} sizes)" if r["points"] else "none"
        notes = ", ".join(x for x in (r["side"], "borderline" if r.get("borderline") else "") if x)
        lines.append(
            f"| {r['rule']} | {r['estimator']} | {r['extra']} | {truth_name(r)} | "
            f"{r['slope']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {rng} | "
            f"{r['prediction']} ({r['prediction_slope']:.2f}) | {r['alternative']} "
            f"({r['alternative_slope']:.2f}) | **{r['verdict']}**"
            f"{f' ({notes})' if notes else ''} |"
        )
    return "\n".join(lines)


def truth_name(row) -> str:
    """A verdict row's truth as text: ``tanh seed 3`` (a study), ``run/tanh seed 3`` (pooled runs),
    ``pooled (4 truths)``.

    >>> truth_name({"truth": "tanh", "seed": 3}), truth_name({"truth": "pooled", "truths": 4})
    ('tanh seed 3', 'pooled (4 truths)')
    """
    if row["truth"] == "pooled":
        return f"pooled ({row['truths']} truths)"
    seed = row.get("seed")
    text = (
        str(row["truth"]) if seed is None or pd.isna(seed) else f"{row['truth']} seed {int(seed)}"
    )
    source = row.get("source")
    return text if source is None or pd.isna(source) else f"{source}/{text}"


def statistic_header(table: pd.DataFrame) -> str:
    stats = sorted(set(table["statistic"])) if len(table) else []
    return "/".join(stats) or "mean"


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per (run, rule, estimator, extra): the pooled row where there are several truths, else the
    one truth's."""
    keys = ["run", "rule", "estimator", "extra"]
    pooled = table[table["truth"] == "pooled"]
    single = table[~table.set_index(keys).index.isin(pooled.set_index(keys).index)]
    return pd.concat([single, pooled]).sort_index(kind="stable")


def family_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of every (estimator, family) the table holds: an estimator's fits of the members
    of a family of truths (``delta`` set) and of the drawn truth the family was made from (same
    ``through``, ``delta`` NaN), over which a worst case is taken. Empty without a family."""
    if "delta" not in df or df["delta"].isna().all():
        return df.iloc[:0]
    axis = [c for c in ("seed", "estimator", "through") if c in df]
    fitted = df.loc[df["delta"].notna(), axis].drop_duplicates()
    return df[df.set_index(axis).index.isin(fitted.set_index(axis).index)]


def worst_deltas(df: pd.DataFrame, metric: str, s: SlopeSettings) -> str:
    """The member attaining the worst case at each n of the fit range of one family's rows
    (``family_rows`` of one estimator, seed and family): ``"n:delta"`` pairs, ``drawn`` for the
    drawn truth itself.

    >>> rows = pd.DataFrame({"n": [10, 10, 100, 100], "delta": [np.nan, 0.5] * 2,
    ...                      "D": [1.0, 2.0, 0.5, 0.1]})
    >>> worst_deltas(rows, "D", SlopeSettings())
    '10:0.5,100:drawn'
    """
    sel = df[s.in_range(df["n"])]
    sizes = np.sort(sel["n"].unique())
    groups = sorted(sel["delta"].fillna(-1).unique())
    worst = np.nanargmax(member_statistic(value_cube(sel, metric, sizes), s.statistic), axis=0)
    name = lambda g: "drawn" if g == -1 else f"{g:g}"  # noqa: E731
    return ",".join(f"{n:g}:{name(groups[g])}" for n, g in zip(sizes, worst))


def _worst_case_rows(df, rule, s: SlopeSettings, stability_seeds: int) -> list[dict]:
    """The rows of a ``worst_case`` rule: per (estimator, extra, seed, family) the slope of the
    worst statistic at each n over the family's members and its drawn truth
    (``moe_lora.rates.cell_statistic``), judged like one truth's curve, with the member that
    attains it at each n (``worst_delta``)."""
    sel = family_rows(df)
    if rule.get("estimators"):
        sel = sel[sel["estimator"].isin(rule["estimators"])]
    if rule.get("extra") is not None:
        sel = sel[sel["extra"].isin(np.atleast_1d(rule["extra"]))]
    s = s.replace(statistic=rule.get("statistic", s.statistic))
    args = (rule["metric"], rule["prediction"], rule["alternative"])
    rows = []
    axis = [c for c in ("estimator", "extra", "seed", "through") if c in sel]
    for keys, sub in sel.groupby(axis, sort=True):
        ids = dict(zip(axis, keys))
        res = judge(sub, *args, slopes=s, stability_seeds=stability_seeds)
        rows.append(
            {"rule": rule["label"], "estimator": ids["estimator"], "extra": int(ids["extra"])}
            | ({"seed": ids["seed"]} if "seed" in ids else {})
            | {"truth": f"{ids['through']} (worst case)", "truths": sub["delta"].nunique() + 1}
            | res
            | {"worst_delta": worst_deltas(sub, rule["metric"], s)}
        )
    return rows


def verdicts_by(df: pd.DataFrame, rates, **kwargs) -> pd.DataFrame:
    """``verdict_table`` of a results table by the rules and slope settings of a config's
    ``[rates]`` section (``moe_lora.config.RatesSection.slopes``)."""
    return verdict_table(df, rates.verdicts, slopes=rates.slopes(), **kwargs)


class Run(NamedTuple):
    """A loaded run to pool: where it is, its table, its ``[rates]``, its name and its truths'
    summaries (the manifest's ``truths``, None if unknown)."""

    where: object
    table: pd.DataFrame
    rates: object
    name: str
    truths: dict | None = None


def truth_summary_of(truths: dict | None, seed, label: str):
    """The manifest's summary of the truth ``label`` drawn at ``seed`` (None if not recorded)."""
    if not truths:
        return None
    return truths.get(f"{label}@seed={seed}", truths.get(str(label)))


def check_distinct_truths(runs) -> None:
    """Refuse to pool runs that hold the same truth for the same estimator and setting: the same
    run name, the same (truth label, seed), or the same recorded truth summary. Pooling them
    would count its replicates twice and narrow the interval."""
    seen: dict = {}
    names = [r.name for r in runs]
    for name in set(names):
        if names.count(name) > 1:
            raise ValueError(
                f"pooled runs: the run {name!r} is given {names.count(name)} times; a run is one "
                "truth per seed and label, pooled once"
            )
    for r in runs:
        t = single_truths(r.table)
        seeds = t["seed"] if "seed" in t else pd.Series(np.nan, index=t.index)
        keys = pd.DataFrame(
            {"estimator": t["estimator"], "extra": t["extra"], "seed": seeds, "truth": t["truth"]}
        ).drop_duplicates()
        for est, extra, s, label in keys.itertuples(index=False):
            summary = truth_summary_of(r.truths, s, label)
            ids = [("label and seed", (est, extra, label, s))]
            if summary is not None:
                ids.append(("summary", (est, extra, json.dumps(summary, sort_keys=True))))
            for what, key in ids:
                if key in seen and seen[key] != r.name:
                    raise ValueError(
                        f"pooled runs: {seen[key]!r} and {r.name!r} hold the same truth "
                        f"({label!r} at seed {s}, same {what}) for {est} (L - L* = {extra}); "
                        "pooling it twice would count its replicates twice. Pool each truth once."
                    )
                seen[key] = r.name


def pooled_table(runs, **kwargs) -> pd.DataFrame:
    """The verdict table of several loaded runs with the same rules, read as one table.

    ``runs``: ``Run`` (or (where, table, ``[rates]``, name[, truths]) tuples) per run. Each run's
    rows keep its name in a ``source`` column, so its truths are told apart from the others' by
    a group-by (``verdict_table``); runs that hold the same truth are refused
    (``check_distinct_truths``).
    """
    runs = [Run(*r) for r in runs]
    rates = None
    for r in runs:
        if rates is not None and r.rates != rates:
            raise ValueError(
                f"{r.where}: its [rates] section differs from the first run's; pooled runs need "
                "the same rules"
            )
        rates = r.rates
    check_distinct_truths(runs)
    frames = [r.table.assign(source=r.name) for r in runs]
    return verdicts_by(pd.concat(frames, ignore_index=True), rates, **kwargs)
