"""The regression function, the parameterizations and the checks at the boundary."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml
from moe_lora.parameterization import canonicalize

SPEC = ml.ModelSpec(d=3, d_out=2, r=2, d_k=4)
PARAMETERIZATIONS = [
    ml.Vanilla(),
    ml.linear(3),
    ml.nonlinear("tanh", 3),
    ml.nonlinear("relu", 3),
    ml.nonlinear("gelu", 3),
    ml.nonlinear("sigmoid", 3),
]


def _cases():
    """Every parameterization under softmax gating and vanilla and tanh under sigmoid gating in the
    fast tier; the other sigmoid cases (the same code path) in the slow tier."""
    for gating in ml.GATINGS:
        for par in PARAMETERIZATIONS:
            fast = gating == "softmax" or par.name in ("vanilla", "mlp-tanh")
            yield pytest.param(
                par, gating, marks=() if fast else pytest.mark.slow, id=f"{par.name}-{gating}"
            )


def _model(par, spec=SPEC, key=0):
    ks = jax.random.split(jax.random.key(key), 4)
    base = ml.Base(
        *(
            jax.random.normal(k, s)
            for k, s in zip(ks[:3], [(spec.d, spec.d), (spec.d, spec.d_k), (spec.d, spec.d_out)])
        )
    )
    return ml.make_model(spec, par, key=ks[3], base=base)


def _naive_f(model, params, x):
    """f_G(x) for one input, term by term from the LoRA factors (docs/model.md, "The regression
    model")."""
    f = ml.factors(model, params)
    s, b = model.spec, model.base
    scores = []
    for j in range(len(f.c)):
        M = b.M0 + f.B_Q[j] @ f.A_Q[j] @ b.K0.T
        scores.append(s.gate_scale * x @ M @ x / math.sqrt(s.d_k) + f.c[j])
    scores = jnp.stack(scores)
    g = jax.nn.softmax(scores) if s.gating == "softmax" else jax.nn.sigmoid(scores)
    return sum(g[j] * (b.V0 + f.B_V[j] @ f.A_V[j]).T @ x for j in range(len(f.c)))


@pytest.mark.parametrize("par, gating", list(_cases()))
def test_regression_function_matches_term_by_term_formula(par, gating):
    spec = ml.ModelSpec(d=3, d_out=2, r=2, d_k=4, gating=gating, gate_scale=1.7)
    model = _model(par, spec)
    params = ml.init_params(jax.random.key(1), model, 3, 0.8)
    X = ml.sample_inputs(jax.random.key(2), 5, spec.d)
    f = ml.regression_function(spec, model.base, ml.atoms(model, params), X)
    expected = jnp.stack([_naive_f(model, params, x) for x in X])
    np.testing.assert_allclose(f, expected, rtol=1e-12, atol=1e-12)


def test_softmax_invariances_and_sigmoid_has_none():
    model = _model(ml.Vanilla())
    a = ml.atoms(model, ml.init_params(jax.random.key(1), model, 3, 1.0))
    X = ml.sample_inputs(jax.random.key(2), 50, SPEC.d)
    Q = jnp.array([[0.3, -0.2, 0.1], [-0.2, 0.5, 0.0], [0.1, 0.0, -0.4]])
    shifted = a._replace(S=a.S + Q[None], c=a.c + 2.0)
    f = lambda spec, atoms: ml.regression_function(spec, model.base, atoms, X)
    np.testing.assert_allclose(f(SPEC, shifted), f(SPEC, a), atol=1e-13)
    sig = ml.ModelSpec(d=3, d_out=2, r=2, d_k=4, gating="sigmoid")
    assert np.max(np.abs(f(sig, shifted) - f(sig, a))) > 1e-3


@pytest.mark.parametrize("par, gating", list(_cases()))
def test_canonicalize_keeps_the_function_and_is_idempotent(par, gating):
    spec = ml.ModelSpec(d=3, d_out=2, r=2, d_k=4, gating=gating)
    model = _model(par, spec)
    params = ml.init_params(jax.random.key(3), model, 3, 1.5)
    X = ml.sample_inputs(jax.random.key(4), 40, spec.d)
    canon = canonicalize(model, params)
    f = lambda p: ml.regression_function(spec, model.base, ml.atoms(model, p), X)
    np.testing.assert_allclose(f(canon), f(params), atol=1e-12)
    np.testing.assert_allclose(ml.atoms(model, canon).V, ml.atoms(model, params).V, atol=1e-12)
    again = canonicalize(model, canon)
    for x, y in zip(again, canon):
        np.testing.assert_allclose(x, y, atol=1e-9)


def test_vanilla_contains_every_shared_truth():
    shared = _model(ml.nonlinear("tanh", 3))
    params = ml.init_params(jax.random.key(5), shared, 2, 1.0)
    vanilla = ml.make_model(SPEC, ml.Vanilla(), base=shared.base)
    converted = ml.parameterization.to_vanilla_params(shared, params, vanilla.parameterization)
    for x, y in zip(ml.atoms(vanilla, converted), ml.atoms(shared, params)):
        np.testing.assert_allclose(x, y, atol=1e-12)
    with pytest.raises(ValueError, match="outside the vanilla compact space"):
        ml.parameterization.to_vanilla_params(shared, params, ml.Vanilla(bound=0.01))


def test_compact_parameter_space_bounds_every_factor():
    model = _model(ml.Vanilla(bound=2.0, bias_bound=3.0))
    params = ml.init_params(jax.random.key(6), model, 4, 100.0)
    f = ml.factors(model, params)
    assert max(float(jnp.max(jnp.abs(x))) for x in f[:4]) <= 2.0
    assert float(jnp.max(jnp.abs(f.c))) <= 3.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ml.ModelSpec(d=2, d_out=1, r=3), r"rank r=3 exceeds the input dimension d=2"),
        (lambda: ml.ModelSpec(d=2, d_out=1, r=1, gating="relu"), r"Unknown gating 'relu'"),
        (lambda: ml.ModelSpec(d=0, d_out=1, r=1), r"d must be a positive integer, got 0"),
        (lambda: ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=-1.0), r"gate_scale must be positive"),
        (lambda: ml.nonlinear("softplus"), r"Unknown activation 'softplus'"),
        (lambda: ml.Vanilla(bound=float("inf")), r"bound must be a positive finite number"),
        (lambda: ml.make_model(ml.ModelSpec(d=2, d_out=1, r=1), ml.linear()), r"needs a key"),
        (
            lambda: ml.make_model(
                ml.ModelSpec(d=2, d_out=1, r=1),
                ml.Vanilla(),
                base=ml.Base(jnp.zeros((2, 3)), jnp.eye(2), jnp.zeros((2, 1))),
            ),
            r"Shape mismatch for base weight M0: got \(2, 3\), expected \(2, 2\)",
        ),
        (lambda: ml.Design(kind="gaussian"), r"Unknown design 'gaussian'"),
    ],
)
def test_bad_input_is_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_truth_checks():
    spec = ml.ModelSpec(d=2, d_out=1, r=1)
    model = ml.make_model(spec, ml.Vanilla())
    good = ml.init_params(jax.random.key(0), model, 2, 1.0)
    truth = ml.make_truth(model, good, key=jax.random.key(0))
    assert truth.separation > 0 and truth.gate_strength > 0
    twin = jax.tree.map(lambda x: jnp.stack([x[0], x[0]]), good)
    with pytest.raises(ValueError, match="coincide|relabel"):
        ml.make_truth(model, twin, key=jax.random.key(0))
    with pytest.raises(ValueError, match="Non-finite entries in truth parameters field 'A_Q'"):
        ml.make_truth(
            model, good._replace(A_Q=good.A_Q.at[0, 0, 0].set(jnp.nan)), key=jax.random.key(0)
        )
    with pytest.raises(
        ValueError, match=r"Shape mismatch for truth parameter B_V: got \(2, 3, 1\)"
    ):
        ml.make_truth(model, good._replace(B_V=jnp.zeros((2, 3, 1))), key=jax.random.key(0))
    with pytest.raises(ValueError, match="sigma must be positive"):
        ml.sample_dataset(jax.random.key(0), truth, 10, 0.0)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        ml.sample_dataset(jax.random.key(0), truth, 0, 0.1)
    with pytest.raises(ValueError, match="No truth with separation >= 100"):
        ml.draw_truth(jax.random.key(0), model, 2, min_separation=100.0, max_tries=3)


def test_draw_truth_is_reproducible_and_respects_thresholds():
    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    model = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
    t1 = ml.draw_truth(jax.random.key(7), model, 3, min_separation=0.5, min_gate_strength=0.5)
    t2 = ml.draw_truth(jax.random.key(7), model, 3, min_separation=0.5, min_gate_strength=0.5)
    assert t1.separation >= 0.5 and t1.gate_strength >= 0.5
    for x, y in zip(t1.params, t2.params):
        np.testing.assert_array_equal(x, y)
    V = np.asarray(t1.atoms.V).reshape(3, -1)
    assert t1.expert_separation == pytest.approx(
        min(np.linalg.norm(V[i] - V[j]) for i in range(3) for j in range(i))
    )


def test_draw_truth_rejects_close_experts():
    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    model = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
    loose = ml.draw_truth(jax.random.key(7), model, 2, min_separation=0.5, min_gate_strength=0.5)
    strict = ml.draw_truth(
        jax.random.key(7),
        model,
        2,
        min_separation=0.5,
        min_gate_strength=0.5,
        min_expert_separation=loose.expert_separation * 1.5,
    )
    assert strict.expert_separation >= loose.expert_separation * 1.5
    with pytest.raises(ValueError, match=r"expert separation >= 50\.0 in 3 draws"):
        ml.draw_truth(jax.random.key(0), model, 2, min_expert_separation=50.0, max_tries=3)
    with pytest.raises(
        ValueError, match="min_expert_separation must be finite and non-negative, got -1"
    ):
        ml.draw_truth(jax.random.key(0), model, 2, min_expert_separation=-1.0)


@pytest.mark.parametrize("kind", ["uniform", "truncated_normal"])
def test_designs_stay_in_the_box(kind):
    X = ml.sample_inputs(jax.random.key(0), 2000, 3, ml.Design(kind=kind, scale=0.7))
    assert X.shape == (2000, 3) and float(jnp.max(jnp.abs(X))) <= 1.0
    sd = float(jnp.std(X))
    assert (0.5 < sd < 0.65) if kind == "uniform" else (sd < 0.55)
