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

Each rule is applied per truth and pooled over the truths of each estimator (the statistic at
each n over all replicates of all its truths; bootstrap over those rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from .rates import curve_slope
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


def judge(
    df: pd.DataFrame,
    metric: str,
    prediction,
    alternative,
    *,
    statistic: str = "mean",
    n_min=None,
    n_max=None,
    bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Slope, interval, the two references' local slopes over the same sizes, and the verdict of one
    curve."""
    check_reference("prediction", prediction)
    check_reference("alternative", alternative)
    res = curve_slope(
        df, metric, statistic, n_min=n_min, n_max=n_max, bootstrap=bootstrap, level=level, seed=seed
    )
    sizes = np.sort(
        df.loc[(df["n"] >= (n_min or 0)) & (df["n"] <= (n_max or np.inf)), "n"].unique()
    )
    pred = local_slope(prediction, sizes) if len(sizes) >= 2 else np.nan
    alt = local_slope(alternative, sizes) if len(sizes) >= 2 else np.nan
    return res | dict(
        metric=metric,
        statistic=statistic,
        prediction=prediction,
        prediction_slope=pred,
        alternative=alternative,
        alternative_slope=alt,
        verdict=verdict(res["ci_low"], res["ci_high"], pred, alt) if len(sizes) >= 2 else UNDECIDED,
        # Which side of the prediction a disagreeing interval lies on: the theory's rates are
        # upper bounds (O(.)), so "steeper" does not contradict them, "shallower" does.
        side="steeper" if res["ci_high"] < pred else "shallower" if res["ci_low"] > pred else "",
    )


def verdict_table(
    df: pd.DataFrame,
    rules,
    *,
    statistic: str = "mean",
    n_min=None,
    n_max=None,
    bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (rule, estimator, extra, truth) and one pooled row per (rule, estimator, extra).

    ``rules``: dicts with ``label``, ``metric``, ``prediction``, ``alternative`` and optionally
    ``estimators`` (default: all) and ``extra`` (L - L* settings; default: all). Rows of drawn
    truths only (no minimax ``delta`` families).
    """
    table = single_truths(df)
    rows = []
    for rule in rules:
        sel = table
        if rule.get("estimators"):
            sel = sel[sel["estimator"].isin(rule["estimators"])]
        if rule.get("extra") is not None:
            sel = sel[sel["extra"].isin(np.atleast_1d(rule["extra"]))]
        kw = dict(
            statistic=rule.get("statistic", statistic),
            n_min=n_min,
            n_max=n_max,
            bootstrap=bootstrap,
            level=level,
            seed=seed,
        )
        for (est, extra), sub in sel.groupby(["estimator", "extra"], sort=True):
            truths = sorted(sub["truth"].unique())
            head = {"rule": rule["label"], "estimator": est, "extra": int(extra)}
            for truth in truths:
                res = judge(
                    sub[sub["truth"] == truth],
                    rule["metric"],
                    rule["prediction"],
                    rule["alternative"],
                    **kw,
                )
                rows.append(head | {"truth": truth, "truths": 1} | res)
            if len(truths) > 1:
                pooled = sub.drop(columns="delta", errors="ignore")
                res = judge(pooled, rule["metric"], rule["prediction"], rule["alternative"], **kw)
                rows.append(head | {"truth": "pooled", "truths": len(truths)} | res)
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
    for r in table.itertuples():
        rng = f"{r.n_min:.3g}..{r.n_max:.3g} ({r.points} sizes)" if r.points else "none"
        lines.append(
            f"| {r.rule} | {r.estimator} | {r.extra} | {r.truth} | {r.slope:.2f} [{r.ci_low:.2f}, "
            f"{r.ci_high:.2f}] | "
            f"{rng} | {r.prediction} ({r.prediction_slope:.2f}) | {r.alternative} "
            f"({r.alternative_slope:.2f}) | "
            f"**{r.verdict}**{f' ({r.side})' if r.side else ''} |"
        )
    return "\n".join(lines)


def statistic_header(table: pd.DataFrame) -> str:
    stats = sorted(set(table["statistic"])) if len(table) else []
    return "/".join(stats) or "mean"


def _load(run_dir, config=None):
    """(results table, the [rates] section to read it by, run name) of one run directory.

    ``config`` (a TOML path): read the rules from it instead of the run's recorded config; it
    must describe the same computation (every section but ``[rates]`` equal), so rules added to a
    committed config after its run was computed, but before its results were read, can be applied.
    """
    from .experiment import load_experiment
    from .runs import load_results
    from .runs.store import computed_part, experiment_of

    df, manifest = load_results(run_dir)
    recorded = experiment_of(manifest).config
    if config is not None:
        given = load_experiment(config).config
        if computed_part(given) != computed_part(recorded):
            raise ValueError(
                f"{config} describes another computation than the one recorded in "
                f"{run_dir}/manifest.json "
                "(only [rates] may differ)"
            )
        recorded = given
    return df, recorded.rates, manifest["name"]


def verdicts_by(df: pd.DataFrame, rates) -> pd.DataFrame:
    """``verdict_table`` of a results table by the rules, statistic and fit range of a config's
    ``[rates]`` section (``moe_lora.config.RatesSection``)."""
    return verdict_table(
        df,
        rates.verdicts,
        statistic=rates.statistic,
        n_min=rates.n_min,
        n_max=rates.n_max,
        bootstrap=rates.bootstrap,
        level=rates.level,
    )


def run_verdicts(run_dir, config=None) -> pd.DataFrame:
    """The verdict table of one run directory, by the rules of its config's ``[rates]`` (see
    ``_load``)."""
    df, rates, name = _load(run_dir, config)
    return verdicts_by(df, rates).assign(run=name)


def pooled_verdicts(run_dirs, name: str, configs=None) -> pd.DataFrame:
    """The verdict table of several runs with the same rules, read as one table: truths are
    relabelled ``<run>/<truth>``, so runs that differ only in seed give several truths per
    estimator, judged one by one and pooled."""
    configs = list(configs or [None] * len(run_dirs))
    runs = [(d, *_load(d, c)) for d, c in zip(run_dirs, configs)]
    return pooled_table(runs).assign(run=name)


def pooled_table(runs) -> pd.DataFrame:
    """The verdict table of several loaded runs with the same rules, read as one table.

    ``runs``: (where, results table, ``[rates]`` section, run name) per run. Truths are relabelled
    ``<run name>/<truth>``, so runs that differ only in seed give several truths per estimator,
    judged one by one and pooled (``pooled_verdicts``, ``benchmarks/verdicts_extend.py``).
    """
    frames, rates = [], None
    for where, df, r, run in runs:
        if rates is not None and r != rates:
            raise ValueError(
                f"{where}: its [rates] section differs from the first run's; pooled runs need the "
                "same rules"
            )
        rates = r
        frames.append(df.assign(truth=run + "/" + df["truth"].astype(str)))
    return verdicts_by(pd.concat(frames, ignore_index=True), rates)


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per (run, rule, estimator, extra): the pooled row where there are several truths, else the
    one truth's."""
    keys = ["run", "rule", "estimator", "extra"]
    pooled = table[table["truth"] == "pooled"]
    single = table[~table.set_index(keys).index.isin(pooled.set_index(keys).index)]
    return pd.concat([single, pooled]).sort_index(kind="stable")


def command(
    dirs, out=None, configs=None, summary: bool = False, pool: str | None = None, rules=None
) -> int:
    """``moe-lora verdicts DIR... [--config CONFIG...] [--summary] [--pool NAME]``: every run's
    rules, one markdown table (``summary``: pooled rows only where a rule covers several truths;
    ``pool``: the runs read as one, ``pooled_verdicts``; ``rules``: print only the rules with these
    labels); DIR/verdicts.csv each (every row), or, pooled,
    ``<first DIR>/../<NAME>_verdicts.csv``."""
    from pathlib import Path

    configs = list(configs or [None] * len(dirs))
    if len(configs) != len(dirs):
        raise ValueError(
            f"--config: expected one config per run directory ({len(dirs)}), got {len(configs)}"
        )
    if pool:
        table = pooled_verdicts(dirs, pool, configs)
        table.to_csv(Path(dirs[0]).parent / f"{pool}_verdicts.csv", index=False)
    else:
        tables = []
        for d, c in zip(dirs, configs):
            t = run_verdicts(d, c)
            if t.empty:
                raise ValueError(f"{d}: its config has no [[rates.verdicts]] rules")
            t.to_csv(Path(d) / "verdicts.csv", index=False)
            tables.append(t)
        table = pd.concat(tables, ignore_index=True)
    shown = summary_rows(table) if summary else table
    if rules:
        unknown = set(rules) - set(table["rule"])
        if unknown:
            raise ValueError(
                f"--rule: no rule labelled {sorted(unknown)}; the rules are "
                f"{sorted(set(table['rule']))}"
            )
        shown = shown[shown["rule"].isin(rules)]
    text = format_verdicts(shown)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0
