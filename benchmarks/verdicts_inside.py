"""The truths of the "well inside the thresholds" verdict runs (simulations/verdicts_inside_*.toml).

Rule, fixed before those runs: per family (tanh, sigmoid, gelu, linear), four truths whose
separation, gate strength and expert separation are all >= INSIDE = 0.6 (1.2 x the 0.5 of
verdicts_identifiable_s*.toml). They are the seeds 0-3 truths that already pass (a truth is keyed by
seed and family only, so it and its data are those of verdicts_identifiable_s{seed}), completed by
the first seeds from 4 on at which a truth passing INSIDE is drawn. Vanilla runs on each new tanh
truth. Prints, per family, the seeds 0-3 truths with whether they pass, the completion seeds, and
whether each committed verdicts_inside config draws exactly the truth listed.

    python benchmarks/verdicts_inside.py > benchmarks/results/verdicts_inside.txt

``--pool`` then reads the committed runs of those truths (figures/data/verdicts_identifiable_s*,
verdicts_identifiable_vanilla_s*, verdicts_inside_*), keeps each family's rows, and judges them by
the runs' own [rates] rules, one truth at a time and pooled over the family's four
(``moe_lora.verdicts.pooled_table``, as ``moe-lora verdicts --pool`` does):

    python benchmarks/verdicts_inside.py --pool \
        --out figures/data/verdicts_inside_pooled_verdicts.csv

``--setting d2`` applies the same rule to today's setting (d = 2, r = 1, p = 2, exact flat sets;
``simulations/verdicts.toml``, whose one truth per family is seed 0's) for tanh and sigmoid, the two
families whose D fell too slowly there, with vanilla on each tanh truth; this rule was also fixed
before its runs (``simulations/verdicts_inside_d2_*.toml``). gelu and linear were added to it later,
unchanged, before their own runs. Seed 0's truths are kept where they
pass (their runs are ``verdicts`` and ``verdicts_vanilla``); the new truths are the first seeds from
1 on:

    python benchmarks/verdicts_inside.py --setting d2 > benchmarks/results/verdicts_inside_d2.txt
    python benchmarks/verdicts_inside.py --setting d2 --pool \
        --out figures/data/verdicts_inside_d2_pooled_verdicts.csv
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSIDE = 0.6
PER_FAMILY = 4


@dataclasses.dataclass(frozen=True)
class Setting:
    """Where the rule is applied: the base config, its families, the seeds whose committed runs are
    candidates (drawn at the base thresholds), and the names of the new configs and runs."""

    base: str
    families: tuple[str, ...]
    candidates: int  # seeds 0 .. candidates - 1 have committed runs
    prefix: str  # new configs: simulations/{prefix}_{family}_s{seed}.toml
    runs: tuple[str, str]  # candidate runs (shared, vanilla): figures/data/{run}_s{seed}, or
    # figures/data/{run} where seed 0 alone is a candidate


SETTINGS = {
    "d3": Setting(
        "verdicts_identifiable_s0.toml",
        ("tanh", "sigmoid", "gelu", "linear"),
        4,
        "verdicts_inside",
        ("verdicts_identifiable", "verdicts_identifiable_vanilla"),
    ),
    "d2": Setting(
        "verdicts.toml",
        ("tanh", "sigmoid", "gelu", "linear"),
        1,
        "verdicts_inside_d2",
        ("verdicts", "verdicts_vanilla"),
    ),
}


def _truth(cfg, family: str, seed: int, threshold: float | None):
    from moe_lora.experiment import Experiment

    truth = dataclasses.replace(cfg.truth, through=(family,))
    if threshold is not None:
        truth = dataclasses.replace(
            truth,
            min_separation=threshold,
            min_gate_strength=threshold,
            min_expert_separation=threshold,
        )
    exp = Experiment(dataclasses.replace(cfg, seed=seed, estimators=(family,), truth=truth))
    return next(iter(exp.draw_truths().values()))


def _stats(t) -> str:
    return f"sep {t.separation:.3f}, gate {t.gate_strength:.3f}, experts {t.expert_separation:.3f}"


def _passes(t) -> bool:
    return min(t.separation, t.gate_strength, t.expert_separation) >= INSIDE


def truth_seeds(setting: Setting, verbose: bool = True) -> dict[str, list[int]]:
    """Per family, the seeds of its four truths by the rule above (printing each step)."""
    from moe_lora.config import ConfigError, load_config

    say = print if verbose else (lambda *a, **k: None)
    base = load_config(ROOT / "simulations" / setting.base)
    out = {}
    for family in setting.families:
        kept = []
        say(f"{family}:")
        for seed in range(setting.candidates):
            t = _truth(base, family, seed, None)
            ok = _passes(t)
            kept += [seed] if ok else []
            say(f"  seed {seed} (threshold 0.5): {_stats(t)} -> {'kept' if ok else 'replaced'}")
        seed = setting.candidates
        while len(kept) < PER_FAMILY:
            try:
                t = _truth(base, family, seed, INSIDE)
            except ConfigError:
                say(f"  seed {seed}: no truth at {INSIDE}")
            else:
                kept.append(seed)
                say(f"  seed {seed} (threshold {INSIDE}): {_stats(t)} -> added")
                for name in (family, "vanilla") if family == "tanh" else (family,):
                    path = ROOT / "simulations" / f"{setting.prefix}_{name}_s{seed}.toml"
                    same = _same(_committed_truth(path), t) if path.exists() else "no config"
                    say(f"    {path.name} draws this truth: {same}")
            seed += 1
        say(f"  truths: seeds {kept}")
        out[family] = kept
    return out


def run_dirs(setting: Setting, seeds: dict[str, list[int]]) -> dict[str, list[Path]]:
    """Per estimator (the families and vanilla, on the tanh truths), its committed runs."""
    data = ROOT / "figures" / "data"

    def run(family: str, seed: int) -> Path:
        if seed < setting.candidates:
            shared, vanilla = setting.runs
            arm = vanilla if family == "vanilla" else shared
            return data / (f"{arm}_s{seed}" if setting.candidates > 1 else arm)
        return data / f"{setting.prefix}_{family}_s{seed}"

    out = {f: [run(f, s) for s in seeds[f]] for f in setting.families}
    out["vanilla"] = [run("vanilla", s) for s in seeds["tanh"]]
    return out


def pool(setting: Setting, out: Path | None) -> None:
    """The verdicts of each estimator's four truths, per truth and pooled; printed, and saved."""
    import pandas as pd

    from moe_lora.runs import load_results
    from moe_lora.runs.store import experiment_of
    from moe_lora.verdicts import format_verdicts, pooled_table, summary_rows

    tables = []
    for estimator, dirs in run_dirs(setting, truth_seeds(setting, verbose=False)).items():
        missing = [str(d) for d in dirs if not (d / "results.parquet").exists()]
        if missing:
            print(f"{estimator}: not pooled, runs missing: {', '.join(missing)}")
            continue
        runs = []
        for d in dirs:
            df, manifest = load_results(d)
            rates = experiment_of(manifest).config.rates
            runs.append((d, df[df["estimator"] == estimator], rates, manifest["name"]))
        tables.append(pooled_table(runs).assign(run=setting.prefix))
    if not tables:
        raise SystemExit("no estimator has all its runs committed")
    table = pd.concat(tables, ignore_index=True)
    if out:
        table.to_csv(out, index=False)
    print(format_verdicts(table))
    print()
    print(format_verdicts(summary_rows(table)))


def _committed_truth(path: Path):
    from moe_lora.config import load_config
    from moe_lora.experiment import Experiment

    (truth,) = Experiment(load_config(path)).draw_truths().values()
    return truth


def _same(a, b) -> bool:
    leaves = zip(jax.tree_util.tree_leaves(a.atoms), jax.tree_util.tree_leaves(b.atoms))
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", action="store_true", help="pool the committed runs' verdicts")
    ap.add_argument("--out", type=Path, help="with --pool: where the verdict rows go (CSV)")
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="d3")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    if args.pool:
        pool(SETTINGS[args.setting], args.out)
    else:
        truth_seeds(SETTINGS[args.setting])
