"""The exploration helpers behind the notebooks: variants, paired refits, grids, the activation
check, cells, onsets, figures."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import moe_lora as ml
from moe_lora import rates
from moe_lora.config import ConfigError, with_values
from moe_lora.experiment import Experiment
from moe_lora.figures import figure_cells, figure_curves, figure_mixture, figure_valley
from moe_lora.model import mixture_on_grid
from moe_lora.parameterization import derivative_family
from moe_lora.runs import run_estimator, run_frame, run_variants
from moe_lora.table import cell_patterns, dead_atoms, value_valley

TINY = {
    "name": "tiny",
    "seed": 3,
    "estimators": ["vanilla", "tanh"],
    "model": {"d": 2, "gate_scale": 3.0},
    "truth": {"min_separation": 0.5, "min_gate_strength": 0.5},
    "data": {"sigma": 0.05, "sizes": [60, 120], "replicates": 2, "n_eval": 200},
    "fit": {"extra_components": [1], "max_iter": 30},
}


def _assert_same_rows(a, b):
    """Equal values; columns only some fits have (weight_2 for L = 3) are NaN elsewhere in a mixed
    table."""
    a, b = (
        a.dropna(axis=1, how="all").reset_index(drop=True),
        b.dropna(axis=1, how="all").reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(a, b, check_dtype=False, check_like=True)


@pytest.fixture(scope="module")
def table():
    return run_frame(Experiment.from_dict(TINY), progress=False)


def test_with_values_sets_dotted_keys_on_a_copy():
    out = with_values(TINY, {"data.sigma": 0.1, "seed": 7, "minimax.deltas": [0.5]})
    assert out["data"]["sigma"] == 0.1 and out["seed"] == 7 and out["minimax"] == {"deltas": [0.5]}
    assert TINY["data"]["sigma"] == 0.05 and "minimax" not in TINY
    with pytest.raises(ConfigError, match="expected 'key' or 'section.key'"):
        with_values(TINY, {"a.b.c": 1})
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        with_values(TINY, {"seed.x": 1})


@pytest.mark.slow
def test_run_variants_shares_truth_and_keys_and_names_bad_values(table):
    cfg = with_values(TINY, {"estimators": ["tanh"], "data.sizes": [60]})
    df = run_variants(cfg, "data.sigma", [0.05, 0.2], progress=False)
    assert df.attrs["variant_key"] == "data.sigma" and list(df.columns[:1]) == ["variant"]
    assert (
        sorted(df["variant"].unique()) == [0.05, 0.2] and (df.groupby("variant").size() == 2).all()
    )
    assert df.groupby("variant")["truth_separation"].first().nunique() == 1  # the same truth
    # The sigma = 0.05 run is the plain run of that config, row for row.
    plain = table[(table.estimator == "tanh") & (table.n == 60)].reset_index(drop=True)
    same = df[df["variant"] == 0.05].drop(columns="variant").reset_index(drop=True)
    _assert_same_rows(same, plain)
    assert (
        df.loc[df.variant == 0.2, "risk_truth"].to_numpy() > same["risk_truth"].to_numpy()
    ).all()  # more noise
    with pytest.raises(ConfigError, match=r"data.sigma = -1.0: data.sigma"):
        run_variants(cfg, "data.sigma", [-1.0], progress=False)
    with pytest.raises(
        ConfigError, match=r"model.gate_scale = 0.01: \[truth\]"
    ):  # no truth that strong
        run_variants(cfg, "model.gate_scale", [0.01], progress=False)
    with pytest.raises(ValueError, match="no values given"):
        run_variants(cfg, "data.sigma", [], progress=False)


def test_run_estimator_is_paired_with_the_experiment(table):
    exp = Experiment.from_dict(TINY)
    again = run_estimator(exp, exp.model("vanilla"), "vanilla", extra=1)
    mine = table[(table.estimator == "vanilla") & (table.extra == 1)].reset_index(drop=True)
    _assert_same_rows(again, mine)  # same data and starts: the same fits, bit for bit
    wide = run_estimator(
        exp, ml.make_model(exp.spec, ml.Vanilla(bound=50.0)), "wide", extra=1, sizes=[60]
    )
    assert set(wide["estimator"]) == {"wide"} and list(wide["n"]) == [60, 60]
    # Same data: the risk at the truth agrees (to round-off: the truth's raw parameters depend on
    # the bound).
    np.testing.assert_allclose(wide["risk_truth"], mine.loc[mine.n == 60, "risk_truth"], rtol=1e-12)
    with pytest.raises(ValueError, match="extra=0 is not a setting"):
        run_estimator(exp, exp.model("vanilla"), "v", extra=0)
    with pytest.raises(ValueError, match="Unknown truth 'relu'"):
        run_estimator(exp, exp.model("vanilla"), "v", extra=1, truth="relu")
    with pytest.raises(ValueError, match="differs from the experiment's"):
        run_estimator(
            exp, ml.make_model(ml.ModelSpec(d=3, d_out=1, r=1), ml.Vanilla()), "v", extra=1
        )


def test_mixture_on_grid_is_the_model_on_a_grid():
    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    model = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
    truth = ml.draw_truth(jax.random.key(2), model, 3, min_separation=0.5, min_gate_strength=0.5)
    view = mixture_on_grid(spec, model.base, truth.atoms, num=7, lim=0.5)
    assert (
        view.gates.shape == (7, 7, 3)
        and view.experts.shape == (7, 7, 3, 1)
        and view.f.shape == (7, 7, 1)
    )
    np.testing.assert_allclose(view.gates.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        view.f[..., 0], np.einsum("abl,abl->ab", view.gates, view.experts[..., 0]), rtol=1e-12
    )
    X = jnp.array([[view.x1[2, 5], view.x2[2, 5]]])
    np.testing.assert_allclose(
        view.f[2, 5], ml.regression_function(spec, model.base, truth.atoms, X)[0], rtol=1e-12
    )
    assert view.x1.min() == -0.5 and view.x2.max() == 0.5
    assert isinstance(figure_mixture(view), Figure)
    with pytest.raises(ValueError, match="expected d = 2, got d = 3"):
        mixture_on_grid(ml.ModelSpec(d=3, d_out=1, r=1), None, None)
    with pytest.raises(ValueError, match="num must be an integer >= 2"):
        mixture_on_grid(spec, model.base, truth.atoms, num=1)


def test_derivative_family_separates_smooth_from_piecewise_linear_activations():
    verdict = {a: derivative_family(a) for a in ml.ACTIVATIONS}
    assert {a for a, f in verdict.items() if f.independent} == {"tanh", "sigmoid", "gelu"}
    assert verdict["identity"].rank == 2 and verdict["relu"].rank < verdict["relu"].size == 6
    assert verdict["tanh"].relative_smallest > 1e-5 and verdict["identity"].relative_smallest == 0
    assert derivative_family("tanh", scales=(0.5, 1.0, 1.5)).size == 9
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        derivative_family("swish")
    with pytest.raises(ValueError, match="scales must be distinct"):
        derivative_family("tanh", scales=(1.0, 1.0))


def test_cells_dead_atoms_and_the_valley_table():
    df = pd.DataFrame(
        {
            "estimator": ["vanilla", "tanh"],
            "extra": [1, 1],
            "n": [100, 100],
            "replicate": [0, 0],
            "certified": [True, False],
            "min_weight": [1e-5, 0.2],
            "weight_0": [0.5, 0.4],
            "weight_1": [1e-5, 0.2],
            "weight_2": [0.5, 0.4],
            "value_norm_0": [1.0, 1.0],
            "value_norm_1": [300.0, 2.0],
            "value_norm_2": [1.5, 0.5],
            "cell_0": [0, 0],
            "cell_1": [0, 1],
            "cell_2": [1, 0],
            "cell_size_0": [2, 2],
            "cell_size_1": [1, 1],
        }
    )
    assert dead_atoms(df).tolist() == [1, 0] and dead_atoms(df, threshold=0.3).tolist() == [1, 1]
    assert cell_patterns(df).tolist() == ["2+1", "2+1"]
    atoms = value_valley(df)
    assert (
        len(atoms) == 6
        and atoms.loc[(atoms.estimator == "vanilla") & (atoms.atom == 1), "value_norm"].item()
        == 300.0
    )
    assert set(atoms.columns) >= {"weight", "value_norm", "cell", "atom", "n"}
    assert isinstance(figure_cells(df), Figure) and isinstance(figure_valley(atoms), Figure)
    with pytest.raises(ValueError, match="Unknown column 'variant'"):
        figure_valley(atoms, hue="variant")


def test_onset_is_later_for_a_curve_that_bends_later():
    rng = np.random.default_rng(0)
    sizes = np.array([100, 400, 1600, 6400, 25600])
    rows = []
    for label, curve in (
        ("early", sizes**-0.5),
        ("late", np.minimum(1.0, (sizes / 1600.0) ** -0.5)),
    ):
        for n, y in zip(sizes, curve):
            rows += [{"curve": label, "n": n, "D": y * f} for f in rng.lognormal(0, 0.05, 16)]
    df = pd.DataFrame(rows)
    table = rates.onset_table(df, "curve", "D", -0.5, bootstrap=200)
    onset = dict(zip(table["curve"], table["onset"]))
    assert onset["early"] == 100 and onset["late"] == 1600
    local = rates.local_slopes(df[df.curve == "late"], "D")
    assert local["slope"].iloc[0] == pytest.approx(0, abs=0.05) and local["slope"].iloc[
        -1
    ] == pytest.approx(-0.5, abs=0.05)
    never = rates.asymptotic_onset(df[df.curve == "early"], "D", -2.0, bootstrap=200)
    assert np.isnan(never["onset"])
    with pytest.raises(ValueError, match="min_points must be an integer >= 2"):
        rates.asymptotic_onset(df, "D", -0.5, min_points=1)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        rates.asymptotic_onset(df, "D", -0.5, tol=-1)


def test_figure_curves_draws_one_line_per_hue(table):
    fig = figure_curves(table, "D", hue="estimator", panel="replicate")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert any(lab.startswith("vanilla: slope") for lab in labels) and any(
        lab.startswith("tanh: slope") for lab in labels
    )
    with pytest.raises(ValueError, match="Unknown column 'factor'"):
        figure_curves(table, "D", panel="factor")
    with pytest.raises(ValueError, match="Unknown metric 'E'"):
        figure_curves(table, "E")
