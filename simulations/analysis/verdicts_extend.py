r"""Verdicts of committed runs extended by runs of the same truths at more sizes.

Each run is paired with an extension; the two must describe the same computation except for
``[data] sizes``, ``name``, ``description`` and ``[execution]``, the extension may fit a subset
of the run's estimators, and every truth it draws must be the run's (all checked), so their
tables are one experiment's: truths and data follow the estimator's name, not its place in the
config, and data at each n are keyed by ``fold_in(key, n)``. The tables are concatenated and
judged by the run's ``[rates]`` rules (``moe_lora.verdicts.verdict_table``); several pairs (runs
that differ in seed) are pooled over their truths, as ``moe-lora verdicts --pool`` does. The
markdown table is printed and the rows saved as CSV. An extension may be several directories
joined by commas (runs of the same sizes that fit different estimators).

    d=figures/data/verdicts_identifiable
    python simulations/analysis/verdicts_extend.py ${d}_small_s0 ${d}_1e5_s0 ${d}_small_s1 \
        ${d}_1e5_s1 \
        ${d}_small_s2 ${d}_1e5_s2 ${d}_small_s3 ${d}_1e5_s3 --summary \
        --out verdicts_identifiable_1e5_pooled_verdicts.csv

(That table is now the report of the 1e5 study, read with the study it extends:
``moe-lora report figures/data/verdicts_identifiable_1e5 --extends
figures/data/verdicts_identifiable_small``; its pooled intervals are hierarchical.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from moe_lora.runs import load_results
from moe_lora.runs.store import experiment_of
from moe_lora.verdicts import format_verdicts, pooled_table, verdicts_by

FREE = ("name", "description", "execution", "rates")


def _comparable(config) -> dict:
    part = {k: v for k, v in config.to_dict().items() if k not in FREE + ("estimators",)}
    part["data"] = {k: v for k, v in part["data"].items() if k != "sizes"}
    # Which truths are drawn follows the estimators (a subset is checked truth by truth).
    part["truth"] = {k: v for k, v in part["truth"].items() if k != "through"}
    return part


def _frame(first: Path, others: list[Path]):
    df, manifest = load_results(first)
    config = experiment_of(manifest).config
    frames = [df]
    for other in others:
        more, m = load_results(other)
        theirs = experiment_of(m).config
        if _comparable(theirs) != _comparable(config):
            raise ValueError(
                f"{other} describes another computation than {first} (only the sizes, name, "
                "description and [execution] may differ)"
            )
        if not set(theirs.estimators) <= set(config.estimators):
            raise ValueError(
                f"{other} fits estimators {sorted(set(theirs.estimators) - set(config.estimators))}"
                f" that {first} does not"
            )
        truths = manifest.get("truths", {})
        if any(truths.get(label) != t for label, t in m.get("truths", {}).items()):
            raise ValueError(f"{other} drew other truths than {first} (manifest.json, truths)")
        frames.append(more)
    return pd.concat(frames, ignore_index=True), config, manifest["name"]


def extended(pairs: list[tuple[Path, Path]]) -> pd.DataFrame:
    """The verdict table of each (run, extension) pair read as one run; with several pairs (runs
    that differ in seed), truths are relabelled ``<run>/<truth>`` and pooled, as
    ``moe-lora verdicts --pool`` does."""
    runs = []
    for first, other in pairs:
        df, config, name = _frame(first, [Path(p) for p in str(other).split(",")])
        runs.append((first, df, config.rates, name))
    if len(runs) == 1:
        return verdicts_by(runs[0][1], runs[0][2])
    return pooled_table(runs)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs", type=Path, nargs="+", help="RUN EXTENSION[,EXTENSION] [RUN EXTENSION ...]"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument("--summary", action="store_true", help="pooled rows only (several pairs)")
    args = ap.parse_args()
    if len(args.runs) % 2:
        ap.error(f"expected pairs RUN EXTENSION, got {len(args.runs)} directories")
    pairs = list(zip(args.runs[::2], args.runs[1::2]))
    table = extended(pairs)
    if args.out:
        table.to_csv(args.out, index=False)
    shown = table[table["truth"] == "pooled"] if args.summary and len(pairs) > 1 else table
    print(format_verdicts(shown))
