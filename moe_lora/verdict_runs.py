"""The verdicts of run directories: loading a run's table and rules, and ``moe-lora verdicts``.

The rules themselves, and every computation on a table, are ``moe_lora.verdicts`` (pure); this
module reads run directories (``moe_lora.runs``) and writes ``verdicts.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .kinds import load_experiment
from .runs import load_results
from .runs.store import computed_part, experiment_of
from .verdicts import Run, format_verdicts, pooled_table, summary_rows, verdicts_by


def load_run(run_dir, config=None) -> Run:
    """One run directory as a ``Run``: its table, the ``[rates]`` section to read it by, its name
    and its truths' summaries.

    ``config`` (a TOML path): read the rules from it instead of the run's recorded config; it
    must describe the same computation (every section but ``[rates]`` equal), or a study of
    which the run is a slice (``Experiment.holds``: a single-seed run read by the rules of the
    study that replaced its config, a rule's ``estimators`` picking its rows). The rules of
    ``simulations/verdicts.toml`` were added this way after its run had been read (README,
    "Verdicts").
    """
    df, manifest = load_results(run_dir)
    recorded = experiment_of(manifest)
    rates = recorded.config.rates
    if config is not None:
        given = load_experiment(config)
        same = computed_part(given.config) == computed_part(recorded.config)
        study = hasattr(given, "holds") and given.holds(recorded)
        if not (same or study):
            raise ValueError(
                f"{config} describes another computation than the one recorded in "
                f"{run_dir}/manifest.json (only [rates] may differ, or the run must be a slice of "
                "the study it describes)"
            )
        rates = given.config.rates
    return Run(run_dir, df, rates, manifest["name"], manifest.get("truths"))


def run_verdicts(run_dir, config=None) -> pd.DataFrame:
    """The verdict table of one run directory (a study: per truth and pooled over its truths),
    by the rules of its config's ``[rates]`` (see ``load_run``)."""
    run = load_run(run_dir, config)
    return verdicts_by(run.table, run.rates).assign(run=run.name)


def pooled_verdicts(run_dirs, name: str, configs=None) -> pd.DataFrame:
    """The verdict table of several runs with the same rules, read as one table
    (``moe_lora.verdicts.pooled_table``: each run's truths told apart by its name; runs holding
    the same truth refused)."""
    configs = list(configs or [None] * len(run_dirs))
    return pooled_table([load_run(d, c) for d, c in zip(run_dirs, configs)]).assign(run=name)


def command(
    dirs, out=None, configs=None, summary: bool = False, pool: str | None = None, rules=None
) -> int:
    """``moe-lora verdicts DIR... [--config CONFIG...] [--summary] [--pool NAME]``: every run's
    rules, one markdown table (``summary``: pooled rows only where a rule covers several truths;
    ``pool``: the runs read as one, ``pooled_verdicts``; ``rules``: print only the rules with these
    labels); DIR/verdicts.csv each (every row), or, pooled,
    ``<first DIR>/../<NAME>_verdicts.csv``."""
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
