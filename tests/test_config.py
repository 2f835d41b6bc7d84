"""Experiment configs: every bad key, type or combination fails before any work, naming the key."""

import copy
import warnings

import pytest

from moe_lora.config import Config, ConfigError
from moe_lora.experiment import Experiment, TruthLabel, load_experiment

BASE = {
    "name": "tiny",
    "estimators": ["vanilla", "tanh"],
    "model": {"d": 2, "r": 1, "gate_scale": 3.0},
    "truth": {"components": 2, "min_separation": 0.5, "min_gate_strength": 0.5},
    "data": {"sigma": 0.02, "sizes": [60, 120], "replicates": 2, "n_eval": 200},
    "fit": {"extra_components": [1], "max_iter": 30},
    "execution": {"replicates_per_unit": 1},
}


def _with(path: str, value):
    cfg = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return cfg


_DELETE = object()


def test_base_config_resolves_with_defaults():
    exp = Experiment.from_dict(BASE)
    assert (
        exp.sizes == (60, 120)
        and exp.config.truth.through == ("tanh",)
        and exp.extra_components == (1,)
    )
    assert exp.pairs() == [(TruthLabel("tanh"), "vanilla"), (TruthLabel("tanh"), "tanh")]
    assert exp.config.fit.damping == "marquardt" and exp.config.model.gating == "softmax"
    assert (
        exp.fit_config(1).n_components == 3
        and exp.config.replicates_per_unit == 1
        and exp.config.execution.replicates_per_batch == 1
    )
    # A resolved config (as stored in a manifest) reads back to the same experiment.
    assert Config.from_dict(exp.config.to_dict()) == exp.config
    assert Config.from_dict(exp.config.to_dict()).to_dict() == exp.config.to_dict()


def test_old_key_names_are_read_with_a_warning():
    old = _with("data.chunk", 1)
    del old["execution"]
    old["fit"] = dict(old["fit"], replicate_batch=2, chunk_rows=512)
    with pytest.warns(
        FutureWarning,
        match=r"data\.chunk -> execution\.replicates_per_unit.*"
        r"fit\.chunk_rows -> fit\.rows_per_chunk",
    ):
        exp = Experiment.from_dict(old)
    assert (
        exp.config.replicates_per_unit == 1
        and exp.config.execution.replicates_per_batch == 2
        and exp.config.fit.rows_per_chunk == 512
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Experiment.from_dict(BASE)  # the new names warn about nothing
    both = _with("data.chunk", 1)
    with pytest.raises(
        ConfigError,
        match=r"data\.chunk: renamed execution\.replicates_per_unit, which is also given",
    ):
        Experiment.from_dict(both)


def test_log_spaced_sizes():
    exp = Experiment.from_dict(_with("data.sizes", {"min": 100, "max": 100000, "count": 12}))
    assert len(exp.sizes) == 12 and exp.sizes[0] == 100 and exp.sizes[-1] == 100000


@pytest.mark.parametrize(
    "path, value, match",
    [
        ("colour", 1, "colour: unknown key at top level"),
        ("model.dd", 2, r"model\.dd: unknown key"),
        ("data.sigma", "0.1", r"data\.sigma: expected a number, got '0\.1'"),
        ("data.sigma", -0.1, r"data\.sigma: sigma must be positive and finite, got -0\.1"),
        ("data.replicates", 2.5, r"data\.replicates: expected an integer"),
        ("data.replicates", True, r"data\.replicates: expected an integer"),
        ("data.sizes", [100, 100], r"data\.sizes: expected distinct positive integers"),
        (
            "data.sizes",
            {"min": 100, "max": 10},
            r"data\.sizes: expected a list of sizes or a table",
        ),
        ("data.sizes", _DELETE, r"data\.sizes: missing required key"),
        (
            "execution.replicates_per_unit",
            0,
            r"execution\.replicates_per_unit: replicates_per_unit must be an integer >= 1, got 0",
        ),
        (
            "execution.replicates_per_batch",
            0,
            r"execution\.replicates_per_batch: replicates_per_batch must be an integer >= 1, got 0",
        ),
        ("execution.threads", 2, r"execution\.threads: unknown key"),
        ("data.design", "cauchy", r"data\.design: Unknown design 'cauchy'"),
        ("data.design_scale", 0.0, r"data\.design_scale: scale must be positive"),
        ("model.r", 3, r"model\.r: LoRA rank r=3 exceeds the input dimension d=2"),
        ("model.gating", "relu", r"model\.gating: Unknown gating 'relu'"),
        ("model.gate_scale", -1.0, r"model\.gate_scale: gate_scale must be positive"),
        ("model.d_k", 0, r"model\.d_k: d_k must be a positive integer"),
        ("estimators", ["vanilla", "lora"], r"estimators: unknown estimator 'lora'"),
        ("estimators", ["vanilla", "linear"], None),  # valid: truth drawn through linear
        ("truth.through", ["tanh"], None),
        ("fit.extra_components", [-1], r"fit\.extra_components: expected distinct integers >= 0"),
        ("fit.damping", "gauss", r"fit\.damping"),
        ("fit.near_truth", 0, r"fit\.near_truth: near_truth and random count the starts of"),
        ("fit.starts", "truth", r"fit\.starts: expected one of \['random', 'split', 'mix'"),
        ("fit.starts", "mix", None),
        ("fit.restarts", 0, r"fit\.restarts: restarts must be an integer >= 1"),
        (
            "fit.screen",
            "quarter",
            r"fit\.screen: expected one of \['subsample', 'halving', 'none'\], got 'quarter'",
        ),
        ("fit.screen_keep", 0, r"fit\.screen_keep: keep must be an integer >= 1"),
        ("fit.screen_rows", -5, r"fit\.screen_rows: rows must be an integer >= 0"),
        ("fit.oracle", "yes", r"fit\.oracle"),
        ("fit.random", -1, r"fit\.random: random must be an integer >= 0"),
        ("fit.bound", 0.0, r"fit\.bound: bound must be a positive finite number"),
        ("fit.gtol", -1.0, r"fit\.gtol: gtol must be positive"),
        (
            "fit.stat_tol",
            -0.1,
            r"fit\.stat_tol: expected a finite number >= 0 \(0 turns the rule off\), got -0\.1",
        ),
        ("fit.stat_tol", 0.1, None),
        ("fit.rows_per_chunk", 0, r"fit\.rows_per_chunk: chunk_size must be a positive integer"),
        (
            "minimax",
            {"deltas": [0.5, 2.0]},
            r"minimax\.deltas: expected distinct numbers in \(0, 1\]",
        ),
        ("rates", {"level": 1.5}, r"rates\.level"),
    ],
)
def test_bad_configs_name_the_key(path, value, match):
    cfg = _with(path, value)
    if match is None:
        Experiment.from_dict(cfg)
        return
    with pytest.raises(ConfigError, match=match):
        Experiment.from_dict(cfg)


def test_estimator_without_a_truth_it_contains_is_refused():
    cfg = _with("truth.through", ["linear"])
    with pytest.raises(ConfigError, match=r"estimators: 'tanh' fits no truth"):
        Experiment.from_dict(cfg)


def test_load_experiment_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'estimators = ["vanilla"]\n[model]\nd = 2\n[data]\nsigma = 0.1\nsizes = [10]\nreplicates = '
        '"x"\n'
    )
    with pytest.raises(ConfigError, match=r"bad\.toml: data\.replicates: expected an integer"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="not valid TOML"):
        (tmp_path / "broken.toml").write_text("a = [")
        load_experiment(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_experiment(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    "name", ["quick", "exact", "overspecified", "minimax", "overspecified_stat"]
)
def test_committed_configs_are_valid(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "simulations" / f"{name}.toml"
    if not path.exists():
        pytest.fail(f"missing committed config {path}")
    exp = load_experiment(path)
    assert exp.name == name
    if name == "overspecified_stat":
        # The pair measures the stopping rule alone: everything else must be identical.
        twin = load_experiment(path.with_name("overspecified.toml"))
        assert (
            exp.fit_config(1).finisher.stat_tol == 0.1
            and twin.fit_config(1).finisher.stat_tol is None
        )
        strip = lambda raw: (
            {k: v for k, v in raw.items() if k not in ("name", "description")}
            | {"fit": {k: v for k, v in raw["fit"].items() if k != "stat_tol"}}
        )
        assert strip(exp.config.to_dict()) == strip(twin.config.to_dict())
