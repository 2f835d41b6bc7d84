"""The committed tables are reproduced: the cheapest unit of every committed sweep, recomputed
from the config its manifest records, gives the committed rows.

What "reproduced" can mean depends on the arithmetic that made a run. A fit is bit-for-bit
deterministic for a given code and machine (the same unit computed twice gives the same bits;
``test_a_unit_computed_twice_is_bit_for_bit_the_same``), but over-specified fits are near-singular
least-squares problems: a change in the order of floating-point operations (the closed-form
Jacobian of the issue "Performance", a reordered line inside the LM loop) moves their end points
by round-off amplified along near-flat directions. So for every committed run:

- the data are the same (the risk at the truth, the truth's summaries: relative 1e-12);
- every fit ends at the same minimum value to within half the statistical scale sigma^2 / n of
  the risk. The precision rule (``stat_tol = 0.1``) stops once the predicted decrease is below
  0.1 sigma^2 / n, so two runs of it may stop that far apart; measured, the committed runs made
  with earlier arithmetic differ from today's by at most 0.12 sigma^2 / n (verdicts, n = 100),
  and by about 1e-6 relative where the gradient test stops.

Runs made before the closed-form Jacobian record no ``fit.jacobian``; they were computed with
``jax.jacfwd``, so they are recomputed with it.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moe_lora.config import manifest_config
from moe_lora.kinds import experiment_from_dict, load_experiment
from moe_lora.runs import load_results

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (ROOT / "figures" / "data").glob("*/manifest.json"))
#: Rows x fits of the cheapest unit above which a run is left out of the recomputation (the
#: n = 1e5 and 1e6 extensions: one unit is 8 fits at n >= 1e5, a minute to several each on 2
#: cores); their configs are those of the runs they extend, which are checked, with other sizes.
MAX_COST = 200_000
DATA_COLUMNS = [
    "risk_truth",
    "truth_separation",
    "truth_gate_strength",
    "truth_expert_separation",
]


def _experiment(run_dir: Path):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    raw = manifest["config"]
    raw.setdefault("fit", {}).setdefault("jacobian", "jacfwd")
    return experiment_from_dict(manifest_config(raw), manifest["name"])


def _cheapest(exp):
    return min(exp.units(), key=lambda u: (u.n * u.fits, u.id))


def _paired(computed: pd.DataFrame, committed: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    both = computed.merge(committed, on=keys, suffixes=("", "_committed"))
    assert len(both) == len(computed) > 0
    return both


def test_every_committed_sweep_is_checked():
    names = {p.name for p in COMMITTED if _affordable(p)}
    assert {"quick", "verdicts", "verdicts_vanilla", "overspecified"} <= names
    assert {p.name for p in COMMITTED} - names <= {
        p.name
        for p in COMMITTED
        if p.name.startswith("verdicts_identifiable_1e5") or "_1e6" in p.name
    }


def _affordable(run_dir: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        unit = _cheapest(_experiment(run_dir))
    return unit.n * unit.fits <= MAX_COST


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:config keys renamed:FutureWarning")  # manifests of old runs
@pytest.mark.parametrize("run_dir", [d for d in COMMITTED if _affordable(d)], ids=lambda p: p.name)
def test_the_cheapest_unit_of_each_committed_sweep_is_reproduced(run_dir):
    exp = _experiment(run_dir)
    rows, _, _ = exp.context().compute(_cheapest(exp))
    both = _paired(rows, load_results(run_dir)[0], list(exp.key_columns))
    for column in DATA_COLUMNS:
        np.testing.assert_allclose(both[column], both[column + "_committed"], rtol=1e-12)
    scale = both["sigma"] ** 2 / both["n"]
    gap = (both["risk"] - both["risk_committed"]).abs() / scale
    assert gap.max() <= 0.5, gap.max()


@pytest.mark.slow
def test_a_unit_computed_twice_is_bit_for_bit_the_same():
    exp = _experiment(ROOT / "figures" / "data" / "verdicts_vanilla")
    unit = _cheapest(exp)
    first = exp.context().compute(unit)[0]
    second = exp.context().compute(unit)[0]
    pd.testing.assert_frame_equal(first, second, check_exact=True)


# --------------------------------------------------------------------------------------------
# Studies: every committed single-seed run is the slice of its seed of one study config


STUDIES = {
    p.stem: p
    for p in sorted((ROOT / "simulations").glob("*.toml"))
    if "[[truth.draws]]" in p.read_text()
}
#: Committed sweeps whose config is its own (no truth axis), under the same name in simulations/.
STANDALONE = {
    "exact",
    "minimax",
    "minimax_maps",
    "minimax_shared_gate",
    "overspecified",
    "overspecified_stat",
    "quick",
    "verdicts_inside_d2_1e6_sigmoid_s4",
}


def _recorded(run_dir: Path):
    """The experiment a committed run's manifest records, read with today's defaults (what the
    config it was run from computes today)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return experiment_from_dict(manifest_config(manifest["config"]), manifest["name"])


def _is_slice(run, study) -> bool:
    return study.holds(run)


def _sweeps():
    return [
        d
        for d in COMMITTED
        if json.loads((d / "manifest.json").read_text()).get("kind", "sweep") == "sweep"
    ]


def test_every_committed_single_seed_run_is_a_slice_of_one_study():
    studies = {name: load_experiment(path) for name, path in STUDIES.items()}
    assert len(studies) >= 9 and all(len(s.seeds) >= 1 for s in studies.values())
    slices = {}
    for run_dir in _sweeps():
        run = _recorded(run_dir)
        hits = [name for name, study in studies.items() if _is_slice(run, study)]
        if run_dir.name in STANDALONE:
            assert hits == [] and (ROOT / "simulations" / f"{run_dir.name}.toml").exists()
            continue
        assert len(hits) == 1, (run_dir.name, hits)
        slices.setdefault(hits[0], []).append(run_dir.name)
    assert set(slices) == set(studies)
    # The two studies of the README's verdicts, and the study their d = 3 truths were drawn from,
    # are committed as one run directory each (their single-seed runs removed once joined).
    for name in ("verdicts_inside_d2", "verdicts_inside", "verdicts_identifiable"):
        assert slices[name] == [name] and len(studies[name].seeds) > 1


def _single_seed(study, unit):
    """The config of ``unit``'s seed, family and estimator alone, as the single-seed configs the
    studies replaced were written: top-level ``seed``, ``truth.through``, no truth axis."""
    raw = study.config.to_dict()
    del raw["truth"]["draws"]
    raw["truth"]["through"] = [unit.truth.through]
    raw["estimators"] = [unit.estimator]
    raw["seed"], raw["name"] = unit.seed, f"{study.name}_s{unit.seed}"
    return experiment_from_dict(raw, raw["name"])


def _cheapest_units():
    """Per study, its cheapest unit within ``MAX_COST`` (None if there is none)."""
    out = []
    for path in STUDIES.values():
        study = load_experiment(path)
        unit = _cheapest(study)
        if unit.n * unit.fits <= MAX_COST:
            out.append(path)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("study_path", _cheapest_units(), ids=lambda p: Path(p).stem)
def test_the_cheapest_unit_of_a_study_is_bit_for_bit_its_seeds_config_alone(study_path):
    """The rows of a study's unit are bit for bit those of the single-seed config of its seed
    (computed today), the form of every config the studies replaced; where such a run is still
    committed on its own, its recorded config is that config (``test_every_committed_single_
    seed_run_is_a_slice_of_one_study``), and its rows are checked above, to round-off."""
    study = load_experiment(study_path)
    unit = _cheapest(study)
    alone = _single_seed(study, unit)
    assert study.holds(alone) and alone.seeds == (unit.seed,)
    (single,) = [u for u in alone.units() if u.id == unit.id]
    rows = study.context().compute(unit)[0]
    expected = alone.context().compute(single)[0]
    assert (rows["seed"] == unit.seed).all()
    pd.testing.assert_frame_equal(
        rows.drop(columns="experiment"), expected.drop(columns="experiment"), check_exact=True
    )
