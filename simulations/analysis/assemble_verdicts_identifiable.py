"""Assemble figures/data/verdicts_identifiable from its committed single-seed slices (no fit).

    python simulations/analysis/assemble_verdicts_identifiable.py
    moe-lora report figures/data/verdicts_identifiable

Each slice must be held by the study (``Experiment.holds``); the rows are concatenated and
sorted, the manifest records the slices' provenance and the truths keyed ``<label>@seed=<k>``.

Its inputs, figures/data/verdicts_identifiable_s0..s3 and verdicts_identifiable_vanilla_s0..s3,
were removed after assembly (the study holds every row of them); to rerun it, check them out of
git history first: ``git checkout c97bb7c -- 'figures/data/verdicts_identifiable_*s[0-3]/*'``.
"""

import datetime
import json
import warnings
from pathlib import Path

import pandas as pd

from moe_lora.kinds import load_experiment
from moe_lora.runs import load_results
from moe_lora.runs.store import experiment_of
from moe_lora.table import sort_rows

PROVENANCE = ("package_version", "git_commit", "created", "libraries", "x64", "units")
ASSEMBLED = (
    "from the committed single-seed runs named in 'slices', each the slice of this study at its "
    "seed (issue 34; tests/test_reproduce.py); no unit was recomputed"
)


def main(data: Path = Path("figures/data")) -> Path:
    study = load_experiment("simulations/verdicts_identifiable.toml")
    names = [f"verdicts_identifiable_{arm}s{k}" for arm in ("", "vanilla_") for k in range(4)]
    frames, slices, truths = [], {}, {}
    for name in names:
        df, m = load_results(data / name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert study.holds(experiment_of(m)), name
        frames.append(df)
        slices[name] = {k: m[k] for k in PROVENANCE if k in m}
        for label, t in m["truths"].items():
            key = f"{label}@seed={m['seed']}"
            assert truths.get(key, t) == t, key
            truths[key] = t
    table = sort_rows(pd.concat(frames, ignore_index=True))
    assert not table.duplicated(list(study.key_columns)).any()
    out = data / study.name
    out.mkdir(exist_ok=True)
    manifest = {
        "name": study.name,
        "seed": study.seed,
        "kind": "sweep",
        "config": study.config.to_dict(),
        "assembled": ASSEMBLED,
        "slices": slices,
        "truths": truths,
        "units": len(study.units()),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    table.to_parquet(out / "results.parquet", index=False)
    table.to_csv(out / "results.csv", index=False)
    return out


if __name__ == "__main__":
    print(main())
