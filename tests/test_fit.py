"""Least-squares fits: gradients, the finishers, recovery of the truth, certification."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import moe_lora as ml
from moe_lora.optimize import CONVERGED, PRECISE
from moe_lora.parameterization import canonicalize

SPEC = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
TANH = ml.make_model(SPEC, ml.nonlinear("tanh"), key=jax.random.key(1))
ESTIMATORS = {
    "vanilla": ml.make_model(SPEC, ml.Vanilla()),
    "linear": ml.make_model(SPEC, ml.linear(), key=jax.random.key(1)),
    "mlp-tanh": TANH,
}
X_EVAL = ml.sample_inputs(jax.random.key(3), 1000, 2)


def _truth_for(estimator):
    # Vanilla's family contains the tanh truth; a shared estimator fits a truth drawn through
    # itself.
    through = TANH if isinstance(estimator.parameterization, ml.Vanilla) else estimator
    return ml.draw_truth(jax.random.key(2), through, 2, min_separation=0.5, min_gate_strength=0.5)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_risk_gradient_matches_central_differences(name):
    model = ESTIMATORS[name]
    truth = _truth_for(model)
    data = ml.sample_dataset(jax.random.key(4), truth, 200, 0.1)
    params = ml.init_params(jax.random.key(5), model, 3, 0.7)
    theta, unravel = jax.flatten_util.ravel_pytree(params)
    # Jitted once: the central differences are 2 x (parameters) evaluations of one compiled risk.
    risk = jax.jit(lambda t: ml.empirical_risk(model, unravel(t), data))
    grad = jax.grad(risk)(theta)
    eps = 1e-6
    fd = jnp.array(
        [(risk(theta + eps * e) - risk(theta - eps * e)) / (2 * eps) for e in jnp.eye(theta.size)]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-10)


def _rosenbrock(t):
    return jnp.array([10.0 * (t[1] - t[0] ** 2), 1.0 - t[0]])


@pytest.mark.parametrize("damping", ["levenberg", "marquardt"])
def test_levenberg_marquardt_solves_rosenbrock(damping):
    lm = ml.LevenbergMarquardt(max_iter=200, gtol=1e-10, damping=damping)
    theta, stats = lm.run(_rosenbrock, jnp.array([-1.2, 1.0]))
    np.testing.assert_allclose(theta, [1.0, 1.0], atol=1e-8)
    assert int(stats.stop_reason) == CONVERGED and int(stats.iterations) < 50


def test_marquardt_damping_is_invariant_to_parameter_scaling():
    # Marquardt's mu diag(J^T J) makes the iterates equivariant under theta = s * u (up to the
    # floor, set tiny here): the same path in u as in theta. Levenberg's mu I is not.
    s = jnp.array([10.0, 0.1])
    scaled = lambda u: _rosenbrock(s * u)
    t0 = jnp.array([-1.2, 1.0])
    paths = {}
    for damping in ("levenberg", "marquardt"):
        lm = ml.LevenbergMarquardt(max_iter=10, gtol=1e-300, damping=damping, floor=1e-15)
        paths[damping] = (lm.run(_rosenbrock, t0)[0], s * lm.run(scaled, t0 / s)[0])
    np.testing.assert_allclose(*paths["marquardt"], rtol=1e-7)
    assert not np.allclose(*paths["levenberg"], rtol=1e-2)


def test_levenberg_marquardt_rejects_unknown_damping():
    with pytest.raises(ValueError, match="'gauss'.*'levenberg' or 'marquardt'"):
        ml.LevenbergMarquardt(damping="gauss")


def test_optax_finisher_and_stop_reasons():
    theta, stats = ml.OptaxFinisher(optax.lbfgs(), max_iter=500, gtol=1e-10).run(
        _rosenbrock, jnp.array([-1.2, 1.0])
    )
    np.testing.assert_allclose(theta, [1.0, 1.0], atol=1e-6)
    assert int(stats.stop_reason) == CONVERGED
    _, capped = ml.LevenbergMarquardt(max_iter=2, gtol=1e-14).run(
        _rosenbrock, jnp.array([-1.2, 1.0])
    )
    assert ml.STOP_REASONS[int(capped.stop_reason)] == "max_iter" and int(capped.iterations) == 2


# The fast tier recovers with vanilla and a nonlinear shared map; the linear map (the same
# shared-estimator code path) in the slow tier.
@pytest.mark.parametrize(
    "name", [n if n != "linear" else pytest.param(n, marks=pytest.mark.slow) for n in ESTIMATORS]
)
def test_exact_specified_fits_recover_the_truth(name):
    """Recovery at n = 2e4, sigma = 0.01, strong gates: every fit certified, D < 0.1, L2 < 5 sigma /
    sqrt(n). From the oracle start: this checks the finisher in the truth's basin. The truth-free
    default (32 random starts screened on 1000 rows) left one of these two vanilla fits 3.8
    sigma^2 / n above the truth's risk, a local minimum (docs/optimizer.md, "Truth-free starts");
    the truth-free search is tested in tests/test_restarts.py."""
    model = ESTIMATORS[name]
    truth = _truth_for(model)
    n, sigma = 20_000, 0.01
    rec = ml.simulate_replicates(
        jax.random.key(4),
        truth,
        model,
        n,
        sigma=sigma,
        replicates=2,
        config=ml.FitConfig(n_components=2, init=ml.InitConfig(starts="oracle")),
        X_eval=X_EVAL,
    )
    assert bool(jnp.all(rec.certified)), rec
    assert bool(jnp.all(rec.risk <= rec.risk_truth))
    assert float(jnp.max(rec.D)) < 0.1
    assert float(jnp.max(rec.l2_error)) < 5 * sigma / np.sqrt(n)
    np.testing.assert_array_equal(rec.cell_size, np.ones((2, 2)))


@pytest.mark.parametrize("name", ["vanilla", "mlp-tanh"])
def test_overspecified_fits_never_beat_by_the_truth(name):
    """With one extra component the least-squares risk is at most the risk at the truth."""
    model = ESTIMATORS[name]
    truth = _truth_for(model)
    config = ml.FitConfig(
        n_components=3,
        init=ml.InitConfig(starts="oracle", near_truth=2, random=1),
        finisher=ml.LevenbergMarquardt(max_iter=1000),
    )
    rec = ml.simulate_replicates(
        jax.random.key(6),
        truth,
        model,
        1000,
        sigma=0.02,
        replicates=3,
        config=config,
        X_eval=X_EVAL,
    )
    assert bool(jnp.all(rec.risk <= rec.risk_truth * (1 + 1e-10)))
    assert rec.restart_risks.shape == (3, 3)
    np.testing.assert_array_equal(rec.risk, rec.restart_risks.min(axis=1))
    np.testing.assert_array_equal(rec.cell_size.sum(axis=1), 3)
    # The record flags every fit; certified means converged and no worse than the truth.
    np.testing.assert_array_equal(
        rec.converged, (rec.stop_reason == CONVERGED) | (rec.stop_reason == PRECISE)
    )
    np.testing.assert_array_equal(
        rec.certified, rec.converged & (rec.risk <= rec.risk_truth * (1 + ml.simulate.RISK_SLACK))
    )


def test_split_truth_keeps_the_mixture_weights():
    model = ESTIMATORS["vanilla"]
    truth = _truth_for(model)
    true_params = ml.truth_in(model, truth)
    start = ml.split_truth(jax.random.key(0), model, true_params, 5, 0.0)
    a = ml.atoms(model, start)
    pi = jax.nn.softmax(a.c)
    pi_star = jax.nn.softmax(truth.atoms.c)
    # Components 0, 2, 4 copy true atom 0; 1, 3 copy atom 1.
    np.testing.assert_allclose([pi[0] + pi[2] + pi[4], pi[1] + pi[3]], pi_star, rtol=1e-10)
    X = ml.sample_inputs(jax.random.key(1), 50, 2)
    np.testing.assert_allclose(
        ml.regression_function(SPEC, model.base, a, X),
        ml.regression_function(SPEC, model.base, truth.atoms, X),
        atol=1e-12,
    )


def test_split_truth_keeps_the_sigmoid_weights():
    spec = ml.ModelSpec(d=2, d_out=1, r=1, gating="sigmoid", gate_scale=3.0)
    model = ml.make_model(spec, ml.Vanilla())
    truth = ml.draw_truth(
        jax.random.key(2),
        ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1)),
        2,
        min_separation=0.5,
        min_gate_strength=0.5,
    )
    start = ml.split_truth(jax.random.key(0), model, ml.truth_in(model, truth), 3, 0.0)
    pi, pi_star = jax.nn.sigmoid(ml.atoms(model, start).c), jax.nn.sigmoid(truth.atoms.c)
    # Components 0 and 2 copy true atom 0: their weights sigmoid(c) sum to its weight.
    np.testing.assert_allclose([pi[0] + pi[2], pi[1]], pi_star, rtol=1e-10)


def test_fit_input_checks():
    model = ESTIMATORS["vanilla"]
    truth = _truth_for(model)
    run = lambda **kw: ml.simulate_replicates(
        jax.random.key(0),
        truth,
        model,
        kw.pop("n", 100),
        sigma=kw.pop("sigma", 0.1),
        replicates=1,
        config=kw.pop("config", ml.FitConfig(n_components=2)),
        X_eval=kw.pop("X_eval", X_EVAL),
    )
    with pytest.raises(
        ValueError, match=r"n_components=1 is below the true number of components L\*=2"
    ):
        run(config=ml.FitConfig(n_components=1))
    with pytest.raises(ValueError, match="sigma must be positive and finite, got -0.1"):
        run(sigma=-0.1)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        run(n=0)
    with pytest.raises(
        ValueError, match=r"Shape mismatch for X_eval: got \(10, 3\), expected \(m, 2\)"
    ):
        run(X_eval=jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match="does not contain a truth"):
        ml.truth_in(ESTIMATORS["linear"], _truth_for(ESTIMATORS["mlp-tanh"]))
    with pytest.raises(ValueError, match="warmup_steps=5 but no warm-up optimizer"):
        ml.FitConfig(n_components=2, warmup_steps=5)
    with pytest.raises(ValueError, match="InitConfig needs at least one restart"):
        ml.InitConfig(starts="oracle", near_truth=0, random=0)


def _fit_problem(n=250):
    model = ESTIMATORS["vanilla"]
    truth = _truth_for(model)
    data = ml.sample_dataset(jax.random.key(4), truth, n, 0.02)
    theta, unravel = jax.flatten_util.ravel_pytree(ml.init_params(jax.random.key(5), model, 3, 0.7))

    def residual(t, X, Y, w):
        f = ml.regression_function(SPEC, model.base, ml.atoms(model, unravel(t)), X)
        return (w[:, None] * (f - Y) / np.sqrt(n)).ravel()

    return residual, theta, (data.X, data.Y, jnp.ones(n))


@pytest.mark.parametrize(
    "chunk_size",
    [
        pytest.param(1, marks=pytest.mark.slow),
        64,
        pytest.param(249, marks=pytest.mark.slow),
        250,
        pytest.param(1000, marks=pytest.mark.slow),
    ],
)
def test_chunked_normal_equations_equal_the_whole_sample(chunk_size):
    # n = 250 is not a multiple of 64 or 249: the zero-padded rows must contribute nothing.
    residual, theta, rows = _fit_problem()
    whole = ml.optimize.normal_equations(residual, theta, rows)
    chunked = ml.optimize.normal_equations(residual, theta, rows, chunk_size)
    J = jax.jacfwd(lambda t: residual(t, *rows))(theta)
    r = residual(theta, *rows)
    for got, want in zip(whole, (r @ r, J.T @ J, J.T @ r)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    for got, want in zip(chunked, whole):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-15)


def test_chunked_levenberg_marquardt_takes_the_same_path():
    residual, theta, rows = _fit_problem()
    lm = ml.LevenbergMarquardt(max_iter=30, gtol=1e-300)
    whole, s_whole = lm.run(residual, theta, data=rows)
    chunked, s_chunked = ml.LevenbergMarquardt(max_iter=30, gtol=1e-300, chunk_size=64).run(
        residual, theta, data=rows
    )
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-9)
    assert int(s_whole.iterations) == int(s_chunked.iterations) == 30


def test_statistical_precision_rule_stops_early_and_where_it_says():
    residual, theta, rows = _fit_problem()
    m = rows[1].size
    tight_theta, tight = ml.LevenbergMarquardt(max_iter=3000, gtol=1e-300).run(
        residual, theta, data=rows
    )
    tol = 0.1
    theta_s, stat = ml.LevenbergMarquardt(max_iter=3000, gtol=1e-300, stat_tol=tol).run(
        residual, theta, data=rows
    )
    assert ml.STOP_REASONS[int(stat.stop_reason)] == "precise"
    assert int(stat.iterations) < int(tight.iterations)
    # At the returned point the Gauss-Newton predicted decrease is below stat_tol * R / m ...
    R, A, g = ml.optimize.normal_equations(residual, theta_s, rows)
    ridge = 1e-9 * jnp.max(jnp.diag(A))
    decrease = g @ jnp.linalg.solve(A + ridge * jnp.eye(A.shape[0]), g)
    assert float(decrease) <= tol * float(R) / m
    # ... and the risk it leaves on the table is of that order, far below sigma^2 / n.
    assert float(stat.risk) - float(tight.risk) <= 10 * tol * float(R) / m
    assert ml.optimize.is_converged(stat.stop_reason)
    with pytest.raises(ValueError, match="stat_tol must be positive, got -1"):
        ml.LevenbergMarquardt(stat_tol=-1)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None, got 0"):
        ml.LevenbergMarquardt(chunk_size=0)


def test_replicate_batches_give_the_same_records():
    # lax.map over batches of 2 (the last one ragged) against one vmapped batch of 3.
    model = ESTIMATORS["mlp-tanh"]
    truth = _truth_for(model)
    run = lambda batch: ml.simulate_replicates(
        jax.random.key(7),
        truth,
        model,
        300,
        sigma=0.02,
        replicates=3,
        config=ml.FitConfig(n_components=2),
        X_eval=X_EVAL,
        batch=batch,
    )
    whole, batched = run(None), run(2)
    # vmapped and mapped code round differently, so paths differ by a few iterations; the
    # converged fits agree.
    assert bool(jnp.all(whole.certified)) and bool(jnp.all(batched.certified))
    np.testing.assert_allclose(batched.iterations, whole.iterations, rtol=0.1)
    np.testing.assert_allclose(batched.risk, whole.risk, rtol=1e-8)
    for field in ("D", "l2_error"):
        np.testing.assert_allclose(getattr(batched, field), getattr(whole, field), rtol=1e-4)
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        run(0)


def test_levenberg_marquardt_agrees_with_minpack():
    """Oracle: scipy's MINPACK Levenberg-Marquardt (least_squares, method="lm") on the same
    exact-specified tanh fit from the same start reaches the same least-squares fit.

    Sigmoid gating, so the problem has no exactly flat direction (softmax's common shift of c
    keeps MINPACK from meeting its tolerances), and a start near the truth at n = 1000, so both
    reach the same isolated minimum (from a start at scale 0.3 and n = 300 they stopped in two
    different local minima: no oracle for either)."""
    from scipy.optimize import least_squares

    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0, gating="sigmoid")
    model = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
    truth = ml.draw_truth(jax.random.key(2), model, 2, min_separation=0.5, min_gate_strength=0.5)
    n = 1000
    data = ml.sample_dataset(jax.random.key(8), truth, n, 0.02)
    start = ml.split_truth(jax.random.key(9), model, truth.params, 2, 0.05)
    theta0, unravel = jax.flatten_util.ravel_pytree(start)
    f = lambda t, X: ml.regression_function(spec, model.base, ml.atoms(model, unravel(t)), X)
    residual = jax.jit(lambda t: ((f(t, data.X) - data.Y) / np.sqrt(n)).ravel())
    jac = jax.jit(jax.jacfwd(residual))

    canonical = lambda t: jax.flatten_util.ravel_pytree(canonicalize(model, unravel(t)))[0]
    ours, stats = ml.LevenbergMarquardt().run(
        residual, theta0, canonical
    )  # gtol 1e-6, as in every fit
    assert ml.STOP_REASONS[int(stats.stop_reason)] == "converged"
    # MINPACK with the exact Jacobian, run to the minimum: at its default tolerances (1e-8) it
    # stops on its relative-reduction test (ftol) in the valley's flattest direction (the
    # Jacobian's singular values span 2e-1 to 9e-6), where the risk agrees to 1e-8 but the
    # parameters do not: 7e-3 from the minimum with scipy 1.14's Fortran MINPACK, 2e-3 with the
    # C translation of scipy >= 1.15. At 1e-12 both end within 2e-4 of ours.
    ref = least_squares(
        lambda t: np.asarray(residual(t)),
        np.asarray(theta0),
        jac=lambda t: np.asarray(jac(t)),
        method="lm",
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
    )
    assert ref.success
    gradient = np.asarray(jac(ref.x)).T @ np.asarray(residual(ref.x))
    assert np.max(np.abs(gradient)) < 1e-10  # the oracle is at a minimum
    risk_ref = 2 * ref.cost  # scipy's cost is half the sum of squares
    np.testing.assert_allclose(float(stats.risk), risk_ref, rtol=1e-8)
    assert float(stats.risk) <= risk_ref * (1 + 1e-9)
    np.testing.assert_allclose(ours, ref.x, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(f(ours, X_EVAL), f(jnp.asarray(ref.x), X_EVAL), atol=1e-5)
    assert float(stats.risk) < float(
        jnp.sum(residual(theta0) ** 2)
    )  # the start was not already the fit
