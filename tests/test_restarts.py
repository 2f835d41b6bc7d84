"""Truth-free starts, screened multi-start and the oracle diagnostic (issues 35 and 36)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml
from moe_lora.config import ConfigError
from moe_lora.model import FieldError, regression_function
from moe_lora.parameterization import atoms

SPEC = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
TANH = ml.make_model(SPEC, ml.nonlinear("tanh"), key=jax.random.key(1))
TRUTH = ml.draw_truth(jax.random.key(2), TANH, 2, min_separation=0.5, min_gate_strength=0.5)
DATA = ml.sample_dataset(jax.random.key(4), TRUTH, 400, 0.05)
X_EVAL = ml.sample_inputs(jax.random.key(3), 200, 2)
LM = ml.LevenbergMarquardt(max_iter=200, stat_tol=0.1)


def _config(**init):
    return ml.FitConfig(n_components=3, finisher=LM, init=ml.InitConfig(**init))


def test_levenberg_marquardt_in_rounds_is_one_run():
    """start, then advance in rounds of 7 iterations to max_iter, ends where run ends."""
    resid = lambda t: jnp.array([10.0 * (t[1] - t[0] ** 2), 1.0 - t[0], 0.1 * t[1]])
    lm = ml.LevenbergMarquardt(max_iter=60, gtol=1e-12)
    theta, stats = lm.run(resid, jnp.array([-1.2, 1.0]))
    state = lm.start(resid, jnp.array([-1.2, 1.0]))
    for budget in range(7, 70, 7):
        state = lm.advance(state, budget, resid)
        assert int(state.k) <= budget
    np.testing.assert_array_equal(state.theta, theta)
    assert lm.stats(state) == stats


def test_screen_keeps_the_best_restarts_by_risk_on_the_screening_rows():
    starts = ml.random_starts(jax.random.key(5), TANH, 3, 6, 1.0)
    config = _config(restarts=6, screen=ml.Screen("subsample", rows=100, iters=30, keep=2))
    fit = jax.jit(lambda s: ml.screened_fit(TANH, DATA, s, config))(starts)
    # The same screening by hand: every start 30 iterations on the first 100 rows.
    sub = ml.Dataset(DATA.X[:100], DATA.Y[:100])
    one = dataclasses.replace(config, finisher=dataclasses.replace(LM, max_iter=30))
    screened = [
        ml.fit_least_squares(TANH, sub, jax.tree.map(lambda x, i=i: x[i : i + 1], starts), one)
        for i in range(6)
    ]
    sub_risks = np.array([float(f.stats.risk) for f in screened])
    expected = sorted(np.argsort(sub_risks, kind="stable")[:2].tolist())
    assert sorted(np.asarray(fit.finished).tolist()) == expected
    assert int(jnp.sum(jnp.isfinite(fit.restart_risks))) == 2
    assert float(fit.stats.risk) == float(jnp.nanmin(fit.restart_risks))
    assert int(fit.restart) in expected


@pytest.mark.parametrize("kind", ["subsample", "halving"])
def test_a_screen_that_keeps_every_restart_finishes_every_restart(kind):
    """keep >= restarts: no screening round; every start fitted on all rows, as unscreened."""
    starts = ml.random_starts(jax.random.key(6), TANH, 3, 3, 1.0)
    screened = ml.screened_fit(TANH, DATA, starts, _config(screen=ml.Screen(kind, keep=3)))
    plain = ml.fit_least_squares(TANH, DATA, starts, _config(screen=None))
    # Restarts one after another (screened) and vmapped (plain) round differently; the
    # precision rule stops each within 0.1 sigma^2 / n of its minimum.
    scale = 0.05**2 / 400
    gap = np.abs(np.asarray(screened.restart_risks) - np.asarray(plain.restart_risks)) / scale
    assert gap.max() < 0.1, gap
    assert int(screened.restart) == int(plain.restart)


def test_split_starts_keep_the_fitted_function():
    """Split with no perturbation, start j is the (L - 1)-component fit with atom j in two
    copies sharing its weight: the same regression function."""
    params = ml.init_params(jax.random.key(7), TANH, 2, 1.0)
    starts = ml.split_starts(jax.random.key(8), TANH, params, 0.0)
    assert starts.c.shape == (2, 3)
    f = regression_function(SPEC, TANH.base, atoms(TANH, params), DATA.X)
    for j in range(2):
        start = jax.tree.map(lambda x, j=j: x[j], starts)
        g = regression_function(SPEC, TANH.base, atoms(TANH, start), DATA.X)
        np.testing.assert_allclose(g, f, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("starts", ["random", "split", "mix"])
def test_truth_free_estimates_never_read_the_truth(starts):
    """The estimate and its restarts are the same whatever truth the record is scored against:
    a truth enters only certification and the scores."""
    config = _config(starts=starts, restarts=3, screen=ml.Screen(rows=100, iters=20, keep=2))
    fit = ml.estimate(jax.random.key(9), TANH, DATA, config)
    assert fit.restart_risks.shape == (ml.InitConfig(starts=starts, restarts=3).candidates(3),)
    again = ml.estimate(jax.random.key(9), TANH, DATA, config)
    np.testing.assert_array_equal(fit.restart_risks, again.restart_risks)
    with pytest.raises(ValueError, match="truth-free"):
        ml.estimate(jax.random.key(9), TANH, DATA, _config(starts="oracle"))


def test_the_oracle_diagnostic_is_the_oracle_start_fit_and_never_the_estimate():
    run = lambda init: ml.simulate_replicates(
        jax.random.key(10),
        TRUTH,
        TANH,
        400,
        sigma=0.05,
        replicates=2,
        config=dataclasses.replace(_config(), init=init),
        X_eval=X_EVAL,
    )
    screen = ml.Screen(rows=100, iters=20, keep=2)
    with_oracle = run(ml.InitConfig(restarts=4, screen=screen, oracle=True))
    without = run(ml.InitConfig(restarts=4, screen=screen))
    oracle = run(ml.InitConfig(starts="oracle"))
    # The estimate does not change when the oracle fit runs beside it.
    np.testing.assert_array_equal(with_oracle.risk, without.risk)
    np.testing.assert_array_equal(with_oracle.D, without.D)
    assert bool(jnp.all(jnp.isnan(without.risk_oracle)))
    # The diagnostic is what an oracle-start config fits on the same data.
    np.testing.assert_allclose(with_oracle.risk_oracle, oracle.risk, rtol=1e-10)
    np.testing.assert_allclose(with_oracle.D_oracle, oracle.D, rtol=1e-8)
    np.testing.assert_array_equal(with_oracle.n_restarts, 4)
    assert bool(jnp.all(with_oracle.n_near_best >= 1))
    assert bool(jnp.all(with_oracle.D_ambiguity_min <= with_oracle.D))
    assert bool(jnp.all(with_oracle.D <= with_oracle.D_ambiguity_max))


def test_saturation_counts_two_restarts_at_the_best_risk():
    """Restarts that all start at one point reach one minimum: every one is near-best, the fit
    is saturated and its D-ambiguity is nil."""
    config = dataclasses.replace(
        _config(restarts=3, screen=None), init=ml.InitConfig(restarts=3, random_scale=0.0)
    )
    rec = ml.simulate_replicates(
        jax.random.key(11), TRUTH, TANH, 400, sigma=0.05, replicates=1, config=config, X_eval=X_EVAL
    )
    assert int(rec.n_near_best[0]) == 3 and bool(rec.saturated[0])
    np.testing.assert_allclose(rec.D_ambiguity_min, rec.D_ambiguity_max, rtol=1e-8)


def test_bad_start_settings_are_refused():
    with pytest.raises(FieldError, match="starts='oracle' only"):
        ml.InitConfig(near_truth=2)
    with pytest.raises(FieldError, match="Unknown starts 'truth'"):
        ml.InitConfig(starts="truth")
    with pytest.raises(FieldError, match="Unknown kind 'thirds'"):
        ml.Screen("thirds")
    with pytest.raises(FieldError, match="needs L >= 2"):
        ml.FitConfig(n_components=1, init=ml.InitConfig(starts="split"))
    with pytest.raises(FieldError, match="a diagnostic beside truth-free starts"):
        ml.InitConfig(starts="oracle", oracle=True)
    raw = {
        "estimators": ["tanh"],
        "model": {"d": 2},
        "truth": {"components": 1},
        "data": {"sigma": 0.1, "sizes": [100], "replicates": 1},
        "fit": {"starts": "split"},
    }
    with pytest.raises(ConfigError, match=r"fit\.starts: 'split' splits an \(L - 1\)"):
        ml.config.Config.from_dict(raw)
