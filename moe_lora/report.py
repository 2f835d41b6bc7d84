"""``moe-lora report DIR``: one self-contained report of a study's run directory.

``DIR/report.md`` with its figures beside it (``DIR/report/*.png``):

* the config and its truths (the truth axis: seed, family, the drawn truth's margins);
* the verdict table, pooled and per truth, with each rule (``moe_lora.verdicts``): the pooled
  interval is the hierarchical bootstrap, and a verdict that changes with the bootstrap seed is
  marked borderline;
* the headline figure: the mean D and L2 error against n of every truth (thin) and pooled over
  the truths (thick), per estimator and setting;
* the fit diagnostics per estimator and setting: certified fraction, fits stopped at the
  iteration cap, and the restarts (``n_restarts``, ``saturated`` where the table records them);
* the exact commands that reproduce it.

Everything is read from the run directory (``manifest.json`` and the results table); nothing
is recomputed but the verdicts' bootstraps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figures import METRIC_LABELS, estimator_color
from .runs import load_results
from .runs.store import experiment_of
from .table import single_truths
from .verdict_runs import load_run
from .verdicts import STABILITY_SEEDS, Run, format_verdicts, truth_summary_of, verdicts_by

#: Config keys an extension may change from the runs it extends: more sizes of the same truths.
EXTENSION_FREE = ("name", "description", "execution", "rates", "estimators")


def _computed(config: dict) -> dict:
    """The part of a recorded config that an extension shares with the runs it extends."""
    part = {k: v for k, v in config.items() if k not in EXTENSION_FREE}
    part["data"] = {k: v for k, v in part.get("data", {}).items() if k != "sizes"}
    # which truths are drawn (families, seeds) is checked truth by truth, on the drawn truths
    part["truth"] = {
        k: v for k, v in part.get("truth", {}).items() if k not in ("through", "seeds", "draws")
    }
    return part


def _resolved(manifest: dict) -> dict:
    """A manifest's config with every default filled in, read as the computation that made it."""
    return experiment_of(manifest).config.to_dict()


def extended_run(run: Run, manifest: dict, bases) -> tuple[Run, list[str]]:
    """``run`` (an extension: more sizes of some truths of earlier runs) with the rows of its
    ``bases`` (run directories) for the same truths, estimators and settings, read as one table.

    Each base must describe the same computation but for its sizes, estimators, truth axis, name,
    description, ``[execution]`` and ``[rates]``, hold every truth of the extension (the same
    recorded truth where both manifests record it) and no size of the extension. The rules are
    the extension's.

    Raises:
        ValueError: a base that differs, lacks a truth or repeats a size.
    """
    keys = ["seed", "truth", "estimator", "extra"]
    own = run.table[keys].drop_duplicates()
    frames, names = [run.table], []
    for base in bases:
        df, m = load_results(base)
        if _computed(_resolved(m)) != _computed(_resolved(manifest)):
            raise ValueError(
                f"{base} describes another computation than {run.where} (only the sizes, the "
                "estimators and truth axis, name, description, [execution] and [rates] may differ)"
            )
        for seed, label in own[["seed", "truth"]].drop_duplicates().itertuples(index=False):
            mine = truth_summary_of(run.truths, seed, label)
            theirs = truth_summary_of(m.get("truths"), seed, label)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(
                    f"{base} drew another truth {label!r} at seed {seed} than {run.where}"
                )
        rows = df.merge(own, on=keys)
        if rows.empty:
            continue
        if set(rows["n"]) & set(run.table["n"]):
            raise ValueError(f"{base} has sizes of {run.where}: an extension adds sizes")
        frames.append(rows)
        names.append(m["name"])
    joined = pd.concat(frames, ignore_index=True)
    found = joined.groupby(keys).size().index
    lacking = [k for k in own.itertuples(index=False, name=None) if k not in found]
    if len(frames) == 1:
        raise ValueError(f"none of {list(map(str, bases))} holds a truth of {run.where}")
    if lacking:
        raise ValueError(f"{run.where}: the bases lack {lacking}")
    return run._replace(table=joined), names


#: Figures of the report, file stem -> what it shows.
FIGURES = {"headline": "mean D and L2 error against n, per truth and pooled"}


def truth_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per drawn truth of a table: seed, label, its margins, and who fits it."""
    df = single_truths(df)
    seeds = ["seed"] if "seed" in df else []
    margins = [
        c for c in ("truth_separation", "truth_gate_strength", "truth_expert_separation") if c in df
    ]
    rows = []
    for keys, sub in df.groupby([*seeds, "truth"], sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append(
            dict(zip([*seeds, "truth"], keys))
            | {c.removeprefix("truth_"): float(sub[c].iloc[0]) for c in margins}
            | {"estimators": ", ".join(sorted(sub["estimator"].unique()))}
        )
    return pd.DataFrame(rows)


def fit_diagnostics(df: pd.DataFrame) -> pd.DataFrame:
    """Per (estimator, extra): fits, certified fraction, fraction stopped at the iteration cap,
    and, where the table records them, the mean restarts and the fraction of saturated fits
    (every restart near the best: more restarts would not have changed the answer)."""
    df = single_truths(df)
    rows = []
    for (est, extra), sub in df.groupby(["estimator", "extra"], sort=True):
        row = {"estimator": est, "extra": int(extra), "fits": len(sub)}
        if "certified" in sub:
            row["certified"] = float(sub["certified"].mean())
        if "stop_reason" in sub:
            row["at_cap"] = float((sub["stop_reason"] == "max_iter").mean())
        if "n_restarts" in sub:
            row["restarts"] = float(sub["n_restarts"].mean())
        if "saturated" in sub:
            row["saturated"] = float(sub["saturated"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def figure_study(df: pd.DataFrame, metrics=("D", "l2_error")) -> Figure:
    """Mean of each metric against n, log-log: one thin line per truth (seed, label), the mean
    pooled over the truths thick; one column per (estimator, L - L*)."""
    df = single_truths(df)
    metrics = [m for m in metrics if m in df]
    curves = list(df.groupby(["estimator", "extra"], sort=True))
    fig = Figure(figsize=(max(3.6 * len(curves), 5.0), 3.0 * len(metrics)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(metrics), len(curves), squeeze=False))
    truth_columns = [c for c in ("seed", "truth") if c in df]
    for j, ((est, extra), sub) in enumerate(curves):
        color = estimator_color(est)
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            for _, one in sub.groupby(truth_columns, sort=True):
                mean = one.groupby("n")[metric].mean()
                ax.plot(mean.index, mean.to_numpy(), color=color, lw=0.8, alpha=0.45)
            pooled = sub.groupby("n")[metric].mean()
            ax.plot(pooled.index, pooled.to_numpy(), color=color, lw=2.2, marker="o", ms=3)
            ax.set(xscale="log", yscale="log", xlabel="n")
            ax.grid(True, which="major", alpha=0.3)
            if i == 0:
                truths = sub.groupby(truth_columns).ngroups
                ax.set_title(f"{est}, L - L* = {extra} ({truths} truths)", fontsize=9)
            if j == 0:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    fig.suptitle(
        "Mean over replicates: each truth (thin), pooled over the truths (thick)", fontsize=9
    )
    return fig


def provenance(manifest: dict) -> str:
    """Where a run's rows come from: its package version and commit, or, for a study assembled
    from committed single-seed runs, those runs and their commits."""
    slices = manifest.get("slices")
    if not slices:
        return (
            f"package {manifest.get('package_version')}, commit `{manifest.get('git_commit')}`, "
            f"created {manifest.get('created')}"
        )
    commits = sorted({str(v.get("git_commit"))[:10] for v in slices.values()})
    return (
        f"assembled from {len(slices)} committed single-seed runs, each its slice at one seed "
        f"({', '.join(sorted(slices))}; commits {', '.join(commits)})"
    )


def config_text(config: dict) -> str:
    """A resolved config (``Config.to_dict()``) in TOML layout, values as JSON (for reading; the
    manifest is the record).

    >>> print(config_text({"seed": 1, "data": {"sizes": [100, 1000]}, "bound": None}))
    seed = 1
    <BLANKLINE>
    [data]
    sizes = [100, 1000]
    """
    lines = [
        f"{k} = {json.dumps(v)}"
        for k, v in config.items()
        if k not in ("name", "description") and v is not None and not isinstance(v, dict)
    ]
    for section, body in config.items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"]
            lines += [
                f"{k} = {json.dumps(v)}"
                for k, v in body.items()
                if v is not None and (section, k) != ("rates", "verdicts")  # listed as rules
            ]
    return "\n".join(lines)


def _markdown(table: pd.DataFrame, floats: str = "{:.3g}") -> str:
    """A plain markdown table."""
    if table.empty:
        return "(none)"
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        cells = [floats.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rules(rates) -> str:
    lines = [
        f"Fit range n in [{rates.n_min or 'min'}, {rates.n_max or 'max'}], statistic "
        f"{rates.statistic} (a rule may name its own), {rates.level:.0%} intervals.",
        "",
    ]
    for rule in rates.verdicts:
        where = ", ".join(
            f"{k} = {rule[k]}" for k in ("estimators", "extra", "statistic") if rule.get(k)
        )
        lines.append(
            f"- **{rule['label']}**: {rule['metric']} against prediction `{rule['prediction']}`, "
            f"alternative `{rule['alternative']}`{f' ({where})' if where else ''}"
        )
    return "\n".join(lines)


def write_report(run_dir, *, config_path=None, extends=()) -> Path:
    """Write ``run_dir/report.md`` and its figures (``run_dir/report/``); returns the report's
    path. ``config_path``: the TOML the study was run from, named in the commands (default
    ``simulations/<name>.toml``). ``extends``: run directories whose rows of the same truths
    the study extends to more sizes (``extended_run``); the report reads them together."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    extends = [Path(b) for b in extends]
    joined = []
    if extends:
        run, joined = extended_run(run, manifest, extends)
    df = run.table
    config = manifest["config"]
    name = manifest["name"]
    config_path = config_path or f"simulations/{name}.toml"
    figures = run_dir / "report"
    figures.mkdir(exist_ok=True)
    headline = figure_study(df)
    headline.savefig(figures / "headline.png", dpi=130)

    verdicts = verdicts_by(df, run.rates) if run.rates.verdicts else pd.DataFrame()
    if not verdicts.empty:
        verdicts.assign(run=name).to_csv(run_dir / "verdicts.csv", index=False)
        borderline = int(verdicts["borderline"].sum())
        pooled = verdicts[verdicts["truth"] == "pooled"]
        verdict_text = (
            _rules(run.rates)
            + "\n\n"
            + format_verdicts(verdicts, level=run.rates.level)
            + f"\n\n{borderline} of {len(verdicts)} verdicts are borderline: they change across "
            f"the bootstrap seeds 0-{STABILITY_SEEDS - 1} (`moe_lora.verdicts`)."
        )
        if len(pooled):
            verdict_text += (
                " Pooled intervals resample the truths, then the replicates within each "
                f"(hierarchical bootstrap, {int(pooled['bootstrap_draws'].max())} draws)."
            )
    else:
        verdict_text = "This config fixes no verdict rules (`[[rates.verdicts]]`)."
    seeds = sorted(df["seed"].unique()) if "seed" in df else [manifest.get("seed")]
    draws = (config.get("truth") or {}).get("draws")
    axis = (
        "\n".join(
            f"- through `{d['through']}` at seeds {d['seeds']}, fitted by {d['estimators']}"
            for d in draws
        )
        if draws
        else f"- every family at seed {manifest.get('seed')} (a run made before the truth axis)"
    )
    text = f"""# Study `{name}`

{config.get("description", "")}

Run directory `{run_dir}`; {provenance(manifest)}.{_extension_note(joined)} {len(df)} fits,
truth seeds {[int(s) for s in seeds]}.

## Config and truths

The truth axis:

{axis}

{_markdown(truth_table(df))}

The resolved config (`manifest.json`, every default filled in):

```toml
{config_text(config)}
```

## Verdicts

{verdict_text}

## Headline figure

![{FIGURES["headline"]}](report/headline.png)

## Fit diagnostics

Certified: the fit passed the stationarity check; at cap: stopped at `fit.max_iter`; restarts
and saturated where the table records them.

{_markdown(fit_diagnostics(df), "{:.2f}")}

## Reproduce

```
moe-lora run {config_path} --out {run_dir}
moe-lora report {run_dir}{"".join(f" --extends {b}" for b in extends)}
```

The first command resumes: with every unit present it recomputes nothing. To recompute from
scratch, run into an empty directory and compare the tables.
"""
    path = run_dir / "report.md"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# The README's verdict block, from the canonical studies' reports

#: The studies whose reports make the README's verdict block: (setting, run directory name).
CANONICAL = (
    ("d = 2, r = 1, p = 2 (exact flat sets for tanh, sigmoid, gelu)", "verdicts_inside_d2"),
    ("d = 3, r = 1, p = 2 (none found)", "verdicts_inside"),
)
#: The README's markers around the block.
README_MARKERS = ("<!-- moe-lora report: verdict summary -->", "<!-- end -->")
_ORDER = ("tanh", "sigmoid", "gelu", "linear", "relu", "vanilla")


def _extension_note(names) -> str:
    if not names:
        return ""
    return (
        f" Read with the rows of the same truths, estimators and settings in {', '.join(names)}"
        " (it extends them to more sizes; `--extends`), as one table: the verdicts, figure and "
        "diagnostics below are of the joined table."
    )


def _cell(row) -> str:
    notes = [x for x in (row["side"], "borderline" if row.get("borderline") else "") if x]
    notes = [x for x in notes if isinstance(x, str)]
    return (
        f"{row['slope']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] **{row['verdict']}**"
        + (f", {', '.join(notes)}" if notes else "")
    )


def _split(rows: pd.DataFrame) -> str:
    """How the per-truth mean-rule verdicts split, e.g. '2 agree, 2 shallower'."""
    plain = {"agrees": "agree", "undecided": "undecided"}
    words = rows.apply(
        lambda r: r["side"] if r["verdict"] == "disagrees" else plain[r["verdict"]], axis=1
    )
    return ", ".join(f"{k} {w}" for w, k in words.value_counts().items())


def verdict_summary(table: pd.DataFrame) -> list[dict]:
    """Per estimator, its D rules of a study's verdict table: the pooled mean-rule and
    median-rule rows and how the truths' mean-rule verdicts split. No verdict is typed: each cell
    is a row of the table."""
    table = table.fillna({"side": ""})
    d = table[table["metric"] == "D"]
    out = []
    for est in _ORDER:
        rows = d[d["estimator"] == est]
        pooled = rows[rows["truth"] == "pooled"]
        if pooled.empty:
            continue
        mean = pooled[pooled["statistic"] == "mean"].iloc[0]
        median = pooled[pooled["statistic"] == "median"].iloc[0]
        per_truth = rows[(rows["truth"] != "pooled") & (rows["statistic"] == "mean")]
        out.append(
            {
                "estimator": est,
                "prediction": f"{mean['prediction']} ({mean['prediction_slope']:.2f})",
                "alternative": f"{mean['alternative']} ({mean['alternative_slope']:.2f})",
                "mean": _cell(mean),
                "median": _cell(median),
                "truths": f"{int(mean['truths'])}: {_split(per_truth)}",
            }
        )
    return out


def readme_verdicts(data_dir) -> str:
    """The README's verdict block: ``verdict_summary`` of each canonical study's
    ``verdicts.csv`` (written by ``moe-lora report``)."""
    lines = [
        "| setting | estimator | pooled mean D slope | pooled median D slope "
        "| per truth (mean rule) | prediction (local slope) | alternative (local slope) |",
        "|---|---|---|---|---|---|---|",
    ]
    ranges, draws = set(), set()
    for setting, name in CANONICAL:
        table = pd.read_csv(Path(data_dir) / name / "verdicts.csv")
        ranges |= set(table[["n_min", "n_max", "points"]].itertuples(index=False, name=None))
        draws |= set(table["bootstrap_draws"].dropna().astype(int))
        for r in verdict_summary(table):
            lines.append(
                f"| {setting} | {r['estimator']} | {r['mean']} | {r['median']} | {r['truths']} "
                f"| {r['prediction']} | {r['alternative']} |"
            )
    lines += [
        "",
        "Fit ranges (n_min, n_max, sizes): "
        + "; ".join(f"{a:.3g}..{b:.3g} ({k})" for a, b, k in sorted(ranges))
        + f". Pooled intervals: hierarchical bootstrap, {', '.join(map(str, sorted(draws)))} "
        "draws; borderline: the verdict changes across bootstrap seeds 0-4. Studies: "
        + ", ".join(f"[{name}](figures/data/{name}/report.md)" for _, name in CANONICAL)
        + ".",
    ]
    return "\n".join(lines)
