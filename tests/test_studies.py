"""The truth axis of a sweep config (``[truth] seeds``, ``[[truth.draws]]``): one config, one run
directory, every truth seed a slice that is bit for bit the config of that seed alone."""

import json

import pandas as pd
import pytest

from moe_lora.config import Config, ConfigError
from moe_lora.experiment import Experiment, TruthLabel

BASE = {
    "name": "study",
    "estimators": ["tanh", "vanilla"],
    "model": {"d": 2, "gate_scale": 3.0},
    "truth": {"min_separation": 0.3},
    "data": {"sigma": 0.05, "sizes": [60], "replicates": 2, "n_eval": 50},
    "fit": {"extra_components": [1], "max_iter": 20},
    "execution": {"replicates_per_unit": 1},
}


def _with(**truth):
    return {**BASE, "truth": BASE["truth"] | truth}


def test_seeds_resolve_to_one_draw_per_family_and_round_trip():
    cfg = Config.from_dict(_with(seeds=[1, 3]))
    assert cfg.truth.draws == (
        {"through": "tanh", "seeds": [1, 3], "estimators": ["tanh", "vanilla"]},
    )
    assert Config.from_dict(cfg.to_dict()) == cfg
    # No truth axis: the config's seed is the one truth seed (every committed config).
    assert Config.from_dict(BASE | {"seed": 4}).truth.draws[0]["seeds"] == [4]


def test_draws_choose_their_seeds_and_estimators():
    draws = [
        {"through": "tanh", "seeds": [1, 3]},
        {"through": "gelu", "seeds": [3, 5], "estimators": ["gelu"]},
    ]
    exp = Experiment.from_dict({**_with(draws=draws), "estimators": ["tanh", "gelu", "vanilla"]})
    assert exp.seeds == (1, 3, 5)
    assert [(str(t), t.seed, e) for t, e in exp.pairs()] == [
        ("tanh", 1, "tanh"),
        ("tanh", 1, "vanilla"),
        ("tanh", 3, "tanh"),
        ("tanh", 3, "vanilla"),
        ("gelu", 3, "gelu"),
        ("gelu", 5, "gelu"),
    ]
    assert Config.from_dict(exp.config.to_dict()) == exp.config


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        ({"seeds": []}, r"truth.seeds: expected distinct integer seeds"),
        ({"seeds": [1, 1]}, r"truth.seeds: expected distinct integer seeds"),
        ({"seeds": [1.5]}, r"truth.seeds\[\]: expected an integer"),
        (
            {"seeds": [1], "draws": [{"through": "tanh", "seeds": [1]}]},
            "either here or in",
        ),
        ({"draws": [{"through": "tanh"}]}, r"draws\[0\]: .*missing keys \['seeds'\]"),
        (
            {"draws": [{"through": "tanh", "seeds": [1], "estimators": ["gelu"]}]},
            r"draws\[0\].estimators: 'gelu' cannot fit",
        ),
        (
            {"draws": [{"through": "tanh", "seeds": [1]}, {"through": "tanh", "seeds": [2, 1]}]},
            r"draws\[1\].seeds: the truth through 'tanh' at seed 1 is listed twice",
        ),
        (
            {"draws": [{"through": "tanh", "seeds": [1], "estimators": ["tanh"]}]},
            "'vanilla' fits no truth",
        ),
    ],
)
def test_bad_truth_axes_are_refused_naming_the_key(truth, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(_with(**truth))


def test_unit_ids_name_the_seed_and_are_unique():
    exp = Experiment.from_dict(_with(seeds=[1, 3]))
    ids = [u.id for u in exp.units()]
    assert len(set(ids)) == len(ids) == 2 * 2 * 2
    assert ids[0] == "s1__tanh__tanh__L+1__n60__r0-0"
    assert {u.seed for u in exp.units()} == {1, 3}


def test_each_seed_of_a_study_is_bit_for_bit_the_config_of_that_seed_alone():
    study = Experiment.from_dict(_with(seeds=[1, 3]))
    context = study.context()
    for seed in study.seeds:
        alone = Experiment.from_dict(BASE | {"seed": seed, "name": "alone"})
        mine = [u for u in study.units() if u.seed == seed]
        assert [u.id for u in alone.units()] == [u.id for u in mine]
        own = alone.context()
        for unit, single in zip(mine, alone.units()):
            rows = context.compute(unit)[0]
            expected = own.compute(single)[0]
            assert (rows["seed"] == seed).all() and (rows["experiment"] == "study").all()
            pd.testing.assert_frame_equal(
                rows.drop(columns="experiment"),
                expected.drop(columns="experiment"),
                check_exact=True,
            )


def test_manifest_names_each_truth_with_its_seed():
    study = Experiment.from_dict(_with(seeds=[1, 3]))
    names = set(study.truth_summaries(study.draw_truths()))
    assert names == {"tanh@seed=1", "tanh@seed=3"}
    alone = Experiment.from_dict(BASE | {"seed": 2})
    assert set(alone.truth_summaries(alone.draw_truths())) == {"tanh"}  # as before the axis
    assert TruthLabel.parse("tanh", seed=2) == next(iter(alone.draw_truths()))


def test_a_run_made_before_the_truth_axis_loads_with_its_manifests_seed(tmp_path):
    from moe_lora.runs import load_results

    exp = Experiment.from_dict(BASE | {"seed": 7})
    old = pd.DataFrame({"experiment": ["old"], "truth": ["tanh"], "estimator": ["tanh"]})
    old.to_parquet(tmp_path / "results.parquet")
    config = exp.config.to_dict()
    del config["truth"]["draws"], config["truth"]["seeds"]  # an old manifest's [truth]
    manifest = {"name": "old", "seed": 7, "kind": "sweep", "config": config}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    df, _ = load_results(tmp_path)
    assert list(df.columns[:3]) == ["experiment", "seed", "truth"] and df["seed"].tolist() == [7]


def test_a_slice_is_read_by_the_rules_of_its_study(tmp_path):
    import tomllib

    from moe_lora.verdict_runs import load_run

    rule = {"label": "D", "metric": "D", "prediction": "inv_sqrt_n", "alternative": -0.25}
    alone = Experiment.from_dict(BASE | {"seed": 3})
    manifest = {"name": "alone", "seed": 3, "kind": "sweep", "config": alone.config.to_dict()}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    pd.DataFrame({"seed": [3], "truth": ["tanh"], "D": [1.0]}).to_parquet(
        tmp_path / "results.parquet"
    )
    study = tmp_path / "study.toml"
    study.write_text(
        "estimators = ['tanh', 'vanilla']\n[model]\nd = 2\ngate_scale = 3.0\n"
        "[truth]\nmin_separation = 0.3\nseeds = [1, 3]\n"
        "[data]\nsigma = 0.05\nsizes = [60]\nreplicates = 2\nn_eval = 50\n"
        "[fit]\nextra_components = [1]\nmax_iter = 20\n[execution]\nreplicates_per_unit = 1\n"
        f"[[rates.verdicts]]\n{chr(10).join(f'{k} = {json.dumps(v)}' for k, v in rule.items())}\n"
    )
    assert tomllib.loads(study.read_text())["truth"]["seeds"] == [1, 3]
    assert load_run(tmp_path, study).rates.verdicts == (rule,)
    other = tmp_path / "other.toml"
    other.write_text(study.read_text().replace("seeds = [1, 3]", "seeds = [1, 2]"))
    with pytest.raises(ValueError, match="must be a slice of the study"):
        load_run(tmp_path, other)


def test_the_slope_table_has_a_curve_per_truth_seed():
    import numpy as np

    from moe_lora.rates import format_slope_table, slope_table

    n = np.repeat([100, 1000, 10000], 4)
    rows = [
        pd.DataFrame(
            {
                "seed": s,
                "truth": "tanh",
                "estimator": "tanh",
                "extra": 1,
                "n": n,
                "D": n**slope,
                "l2_error": n**-0.5,
                "certified": True,
            }
        )
        for s, slope in ((1, -0.5), (3, -0.25))
    ]
    table = slope_table(pd.concat(rows), statistics=("mean",), bootstrap=10, seed=5)
    d = table[table["metric"] == "D"]
    assert d["seed"].tolist() == [1, 3] and d["slope"].round(6).tolist() == [-0.5, -0.25]
    assert "tanh s3" in format_slope_table(table)
