"""Conformance suite over every parameterization x gating: shapes, finiteness, determinism,
compiles.

Every parameterization runs in the fast tier under softmax gating, and vanilla and tanh also under
sigmoid gating; the other sigmoid-gated cases are the same code path with another activation and
run in the slow tier. Each case compiles once: the check that a replicate's result does not
depend on the others reuses the compiled shape (the same replicates in another order); that it
does not depend on the batch size is
tests/test_fit.py::test_replicate_batches_give_the_same_records.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml
from moe_lora.simulate import TRACE_COUNT

PARAMETERIZATIONS = [
    ml.Vanilla(),
    ml.linear(),
    ml.nonlinear("tanh"),
    ml.nonlinear("sigmoid"),
    ml.nonlinear("gelu"),
    ml.nonlinear("relu"),
]
CONFIG = ml.FitConfig(
    n_components=3,
    finisher=ml.LevenbergMarquardt(max_iter=30),
    # Truth-free starts of every kind (4 random and L - 1 = 2 split ones), screened down to 2 on
    # a subsample, with the oracle fit beside them: every column of the record is exercised.
    init=ml.InitConfig(
        starts="mix", restarts=4, screen=ml.Screen(rows=30, iters=5, keep=2), oracle=True
    ),
)
X_EVAL = ml.sample_inputs(jax.random.key(3), 200, 2)


FAST_SIGMOID = ("vanilla", "mlp-tanh")
CASES = [
    pytest.param(
        par,
        gating,
        id=f"{par.name}-{gating}",
        marks=() if gating == "softmax" or par.name in FAST_SIGMOID else pytest.mark.slow,
    )
    for gating in ml.GATINGS
    for par in PARAMETERIZATIONS
]


@pytest.mark.parametrize("par, gating", CASES)
def test_conformance(par, gating):
    spec = ml.ModelSpec(d=2, d_out=1, r=1, gating=gating, gate_scale=2.0)
    model = ml.make_model(spec, par, key=jax.random.key(1))
    truth = ml.draw_truth(jax.random.key(2), model, 2, min_gate_strength=0.05)
    run = lambda key, n, replicates=3: ml.simulate_replicates(
        key, truth, model, n, sigma=0.05, replicates=replicates, config=CONFIG, X_eval=X_EVAL
    )
    before = TRACE_COUNT[57]
    rec = run(jax.random.key(4), 57)
    assert TRACE_COUNT[57] == before + 1
    L, L_star = CONFIG.n_components, 2
    shapes = {
        "cell_size": (3, L_star),
        "cell_mass": (3, L_star),
        "cell_parameter": (3, L_star),
        "cell": (3, L),
        "weights": (3, L),
        "value_norm": (3, L),
        "restart_risks": (3, 6),
        "cell_gate_gap": (3, L_star),
    }
    for field, value in rec._asdict().items():
        assert value.shape == shapes.get(field, (3,)), field
        if field == "cell_gate_gap":  # inf marks a cell with fewer than two atoms
            assert not bool(jnp.any(jnp.isnan(value))) and bool(jnp.all(value >= 0)), field
        elif field == "restart_risks":  # NaN marks a restart that screening dropped
            np.testing.assert_array_equal(jnp.sum(jnp.isfinite(value), axis=1), 2)
        else:
            assert bool(jnp.all(jnp.isfinite(value))), field
    again = run(jax.random.key(4), 57)
    assert TRACE_COUNT[57] == before + 1  # same shapes and config: no new compilation
    for x, y in zip(rec, again):
        np.testing.assert_array_equal(x, y)
    # A replicate's result does not depend on which other replicates run with it, nor on its
    # place in the batch (up to round-off: 30 damped Gauss-Newton steps can amplify last-bit
    # differences to ~1e-8).
    shuffled = run(jax.random.key(4), 57, replicates=[2, 0, 1])
    assert TRACE_COUNT[57] == before + 1
    np.testing.assert_allclose(shuffled.D, rec.D[np.array([2, 0, 1])], rtol=1e-6)
    other = run(jax.random.key(5), 57)
    assert not np.array_equal(other.D, rec.D)
