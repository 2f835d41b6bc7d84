"""The attention-head kind of moe-lora run: config checks, units, and resume/shards/Ray giving one
table."""

import warnings

import pandas as pd
import pytest

from moe_lora import cli
from moe_lora.config import ConfigError
from moe_lora.experiment import experiment_from_dict, load_experiment
from moe_lora.head_study import HeadStudy
from moe_lora.runs import run_frame, units

TINY = """
kind = "attention_head"
name = "tiny_head"
seed = 1
[head]
steps = 40
patience = 10
starts = 1
n_test = 64
[variations.sigmoid]
gating = "sigmoid"
[study]
sizes = [4, 8]
seeds = 2
seeds_per_unit = 1
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_head.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert cli.main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    return pd.read_parquet(out / "results.parquet")


@pytest.mark.slow
def test_units_and_table(config, reference):
    study = load_experiment(config)
    assert (
        isinstance(study, HeadStudy) and len(units(study)) == 2 * 2 * 2 * 2
    )  # sizes x variations x students x seeds
    assert set(reference["variation"]) == {"headline", "sigmoid"} and set(reference["student"]) == {
        "lora",
        "learned_generator",
    }
    assert (
        len(reference) == 16
        and not reference.duplicated(["variation", "student", "n", "seed"]).any()
    )
    assert set(reference.loc[reference.variation == "sigmoid", "gating"]) == {"sigmoid"}
    pd.testing.assert_frame_equal(run_frame(study, progress=False), reference)


@pytest.mark.slow
def test_shards_give_the_unsharded_table(config, reference, tmp_path):
    for i in range(2):
        assert (
            cli.main(["run", str(config), "--out", str(tmp_path), "--shard", f"{i}/2", "--quiet"])
            == 0
        )
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results.parquet"), reference)


@pytest.mark.slow
def test_rates_and_plot_of_a_study(config, reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert cli.main(["rates", str(out)]) == 0
    assert "data_efficiency" in capsys.readouterr().out and (out / "improvement.csv").exists()
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "tiny_head_data_efficiency.png").stat().st_size > 1000
    assert (tmp_path / "fig" / "data" / "tiny_head" / "data_efficiency.csv").exists()


@pytest.mark.slow
def test_ray_run_of_a_study_gives_the_local_table(config, reference, tmp_path):
    ray = pytest.importorskip("ray")  # the ray extra

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        assert (
            cli.main(["run", str(config), "--out", str(tmp_path), "--backend", "ray", "--quiet"])
            == 0
        )
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results.parquet"), reference)


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"kind": "transformer"}, r"kind: unknown experiment kind 'transformer'"),
        (
            {"kind": "attention_head", "study": {"sizes": [4], "seeds": 2}, "head": {"rank": 20}},
            r"head: .*rank",
        ),
        (
            {"kind": "attention_head", "study": {"sizes": [4], "seeds": 2}, "head": {"N": 0}},
            r"head: .*N",
        ),
        (
            {
                "kind": "attention_head",
                "study": {"sizes": [4], "seeds": 2},
                "head": {"sigma": -1.0},
            },
            r"head: .*sigma",
        ),
        (
            {"kind": "attention_head", "study": {"sizes": [4], "seeds": 2}, "head": {"colour": 1}},
            r"head\.colour: unknown key",
        ),
        (
            {
                "kind": "attention_head",
                "study": {"sizes": [4], "seeds": 2},
                "variations": {"x": {"rank_true": 9}},
            },
            r"variations\.x: ",
        ),
        (
            {"kind": "attention_head", "study": {"sizes": [1, 4], "seeds": 2}},
            r"study\.sizes: expected sizes >= 2",
        ),
        (
            {"kind": "attention_head", "study": {"sizes": [4]}},
            r"study\.seeds: missing required key",
        ),
        (
            {"kind": "attention_head", "study": {"sizes": [4], "seeds": 2, "seeds_per_unit": 0}},
            r"study\.seeds_per_unit: seeds_per_unit must be an integer >= 1, got 0",
        ),
        (
            {
                "kind": "attention_head",
                "study": {"sizes": [4], "seeds": 2},
                "head": {"learning_rates": [1e-2, 0.0]},
            },
            r"head: learning_rates must be positive and finite, got 0.0",
        ),
        ({"kind": "attention_head"}, r"study: missing required table \[study\]"),
        (
            {"kind": "attention_head", "study": {"sizes": [4], "seeds": 2, "grain": 1}},
            r"study\.grain: unknown key",
        ),
        (
            {"kind": "attention_head", "study": {"sizes": [4], "seeds": 2, "students": ["gpt"]}},
            r"study\.students",
        ),
    ],
)
def test_bad_study_configs_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        experiment_from_dict(raw)
