"""The closed-form Jacobian (``moe_lora.jacobian``) against ``jax.jacfwd``, and a fit with each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import moe_lora as ml
from moe_lora.jacobian import structured_normal_equations
from moe_lora.optimize import normal_equations

PARAMETERIZATIONS = ["vanilla", "identity", "tanh", "sigmoid", "gelu", "relu"]


def _cases():
    """Every parameterization x gating x chunking; the fast tier keeps every parameterization
    unchunked under softmax gating, and vanilla and tanh in every case (the others are the same
    code path with another activation)."""
    for chunk in (None, 20):
        for gating in ("softmax", "sigmoid"):
            for name in PARAMETERIZATIONS:
                fast = (chunk is None and gating == "softmax") or name in ("vanilla", "tanh")
                yield pytest.param(
                    name,
                    gating,
                    chunk,
                    marks=() if fast else pytest.mark.slow,
                    id=f"{chunk}-{name}-{gating}",
                )


def _problem(name, gating, n=57):
    spec = ml.ModelSpec(d=3, d_out=2, r=2, gating=gating, gate_scale=2.0)
    param = ml.Vanilla() if name == "vanilla" else ml.Shared(activation=name, latent_dim=3)
    k = jax.random.split(jax.random.key(0), 6)
    # A non-default frozen base, so M0 and V0 enter the closed form too.
    base = ml.Base(
        jax.random.normal(k[0], (3, 3)),
        jax.random.normal(k[1], (3, 3)),
        jax.random.normal(k[2], (3, 2)),
    )
    model = ml.make_model(spec, param, key=k[3], base=base)
    theta, unravel = ravel_pytree(ml.init_params(k[4], model, 3, 0.7))
    X = jax.random.uniform(k[5], (n, 3), minval=-1.0, maxval=1.0)
    Y = jax.random.normal(jax.random.fold_in(k[5], 1), (n, 2))
    return model, theta, unravel, (X, Y, jnp.ones(n))


@pytest.mark.parametrize("name, gating, chunk", list(_cases()))
def test_structured_matches_jacfwd(name, gating, chunk):
    model, theta, unravel, rows = _problem(name, gating)
    n = rows[0].shape[0]

    def residual(t, X, Y, weight):
        f = ml.regression_function(model.spec, model.base, ml.atoms(model, unravel(t)), X)
        return (weight[:, None] * (f - Y) / jnp.sqrt(n)).ravel()

    reference = normal_equations(residual, theta, rows, chunk)
    got = structured_normal_equations(model, unravel, n)(theta, rows, chunk)
    for want, have in zip(reference, got):
        np.testing.assert_allclose(
            have, want, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(want)))
        )


@pytest.mark.slow  # whole fits; the linearizations themselves are compared above, in the fast tier
@pytest.mark.parametrize("name", ["vanilla", "tanh"])
def test_fit_same_with_either_jacobian(name):
    """Both linearizations lead LM to the same least-squares fit (to optimizer precision)."""
    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    tanh = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
    truth = ml.draw_truth(jax.random.key(2), tanh, 2, min_separation=0.5, min_gate_strength=0.5)
    estimator = tanh if name == "tanh" else ml.make_model(spec, ml.Vanilla())
    data = ml.sample_dataset(jax.random.key(3), truth, 400, sigma=0.05)
    starts = ml.initial_params(
        jax.random.key(4), estimator, ml.truth_in(estimator, truth), ml.FitConfig(n_components=2)
    )
    finisher = ml.LevenbergMarquardt(max_iter=300)
    fits = [
        ml.fit_least_squares(
            estimator, data, starts, ml.FitConfig(n_components=2, finisher=finisher, jacobian=j)
        )
        for j in ("structured", "jacfwd")
    ]
    # Round-off steers the two runs apart along near-flat directions; their risks agree to a small
    # fraction of the statistical scale sigma^2 / n.
    assert abs(float(fits[0].stats.risk - fits[1].stats.risk)) <= 0.01 * 0.05**2 / 400
    start = jax.tree.map(lambda x: x[0], starts)
    assert float(fits[0].stats.risk) < float(ml.empirical_risk(estimator, start, data))


def test_unknown_jacobian_is_named():
    with pytest.raises(ValueError, match="Unknown jacobian 'jacrev'"):
        ml.FitConfig(n_components=2, jacobian="jacrev")
