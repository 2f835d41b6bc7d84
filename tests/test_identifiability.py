"""Exact flat sets through the truth (moe_lora.bounds.witnesses): built witnesses, the gate fiber,
the search.

Fast: vanilla's split witness is exact; the gate fiber's tangent says where the scale fiber moves V
(tanh at p = d) and where it cannot (linear; tanh at p < d); vanilla's flat M as a function of the
radius. Slow: the search finds and certifies a tanh witness at p = d = 2 and none for linear at
p = d or tanh at p < d; the null space of W_BQ at p > d gives the linear map a flat set; a family
that contains another has a flat-set M at least as large on the same truth; at the sweeps' setting
(d = 3, r = 1, p = 2) the map's search on the map's truth finds no witness for linear, tanh,
sigmoid and gelu, and an exact one for relu; ``bound_curves`` takes the tanh flat set at p = d = 2
into M (fast: not searched at L = L* or when switched off).
"""

import jax
import numpy as np
import pytest

from moe_lora.bounds import (
    flat_edge,
    flat_params,
    gate_fiber,
    quadrature,
    split_witness,
    vanilla_flat_modulus,
)
from moe_lora.bounds.quadrature import l2_distance
from moe_lora.bounds.witnesses import EXACT_TOL
from moe_lora.fit import truth_in
from moe_lora.losses import lora_voronoi_loss
from moe_lora.model import ModelSpec, mixture_weights
from moe_lora.parameterization import Vanilla, atoms, linear, make_model, nonlinear
from moe_lora.truth import Design, draw_truth

SPEC = ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
QUAD = None


def _quad():
    global QUAD
    if QUAD is None:
        QUAD = quadrature(2, Design(), 12, key=jax.random.key(0))
    return QUAD


def _truth(param, key=1):
    model = make_model(SPEC, param, key=jax.random.key(key))
    return draw_truth(
        jax.random.key(key + 1),
        model,
        2,
        min_separation=0.3,
        min_gate_strength=0.3,
        min_expert_separation=0.3,
    )


@pytest.fixture(scope="module")
def tanh_truth():
    return _truth(nonlinear("tanh", 2))


def _check(est, truth, params):
    G = atoms(est, params)
    return float(l2_distance(est, G, est, truth.atoms, _quad())), float(
        lora_voronoi_loss(G, truth.atoms, "softmax").total
    )


def test_vanilla_split_witness_is_exact(tanh_truth):
    est = make_model(SPEC, Vanilla())
    tp = truth_in(est, tanh_truth)
    pi = np.asarray(mixture_weights(tanh_truth.atoms.c, "softmax"))
    A_V = np.asarray(est.parameterization.to_compact(tp).A_V[0])
    for size in (0.1, 0.5):
        delta = np.array([[size], [0.0]])
        l2, D = _check(est, tanh_truth, split_witness(est, tp, 0, delta))
        assert l2 < 1e-14
        assert D == pytest.approx(pi[0] * np.sum((delta @ A_V) ** 2), rel=1e-9)


def test_gate_fiber_tangent(tanh_truth):
    tanh = gate_fiber(tanh_truth.model, truth_in(tanh_truth.model, tanh_truth), 0)
    assert tanh.dimension == 1 and tanh.expert_motion > 1e-2  # the scale fiber moves the expert
    lin = _truth(linear(2))
    fib = gate_fiber(lin.model, truth_in(lin.model, lin), 0)
    assert fib.dimension == 1 and fib.expert_motion < 1e-10  # a -> a / t, b -> t b: V is constant
    low = _truth(nonlinear("tanh", 1), key=5)
    assert gate_fiber(low.model, truth_in(low.model, low), 0).dimension == 0  # p < d: no fiber
    wide = _truth(linear(3), key=7)
    fib = gate_fiber(wide.model, truth_in(wide.model, wide), 0)
    assert fib.dimension >= 2 and fib.expert_motion > 1e-2  # null(W_BQ), null(W_AQ) move V


def test_vanilla_flat_modulus_grows_with_the_radius():
    M = vanilla_flat_modulus([0.3, 0.7], [0.25, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(M, 0.7 * np.array([0.25, 0.5, 1.0, 2.0]) ** 2)
    assert vanilla_flat_modulus([0.3, 0.7], 1.0, extra=2) == pytest.approx(1.0)


def _edge(truth, est=None, j=0, radius=0.5):
    est = truth.model if est is None else est
    tp = truth_in(est, truth)
    return (
        est,
        tp,
        flat_edge(
            jax.random.key(0),
            est,
            truth.atoms,
            tp,
            j,
            2,
            radius=radius,
            n_starts=12,
            grid=4,
            bisections=4,
            max_iter=300,
        ),
    )


@pytest.mark.slow
def test_search_builds_an_exact_tanh_witness_at_p_equal_d(tanh_truth):
    found = []
    for j in range(2):
        est, tp, edge = _edge(tanh_truth, j=j)
        if edge.found:
            l2, D = _check(est, tanh_truth, flat_params(est, tp, j, 2, edge.theta, edge.lam))
            assert l2 < 1e-14 and D == pytest.approx(edge.D_max, rel=1e-6) and D > 1e-6
            found.append(D)
    assert found, "no tanh flat witness at p = d = 2"


@pytest.mark.slow
@pytest.mark.parametrize("param,key", [(linear(2), 1), (nonlinear("tanh", 1), 5)])
def test_search_finds_no_flat_set_where_the_fiber_is_clean(param, key):
    truth = _truth(param, key)
    for j in range(2):
        _, _, edge = _edge(truth, j=j)
        assert not edge.found and edge.best_exact > 1e3 * EXACT_TOL


@pytest.mark.slow
def test_linear_map_has_a_flat_set_when_p_exceeds_d():
    truth = _truth(linear(3), key=7)
    est, tp, edge = _edge(truth)
    assert edge.found
    l2, D = _check(est, truth, flat_params(est, tp, 0, 2, edge.theta, edge.lam))
    assert l2 < 1e-14 and D > 1e-6


@pytest.mark.slow
def test_containing_family_has_the_larger_flat_modulus(tanh_truth):
    vanilla = make_model(SPEC, Vanilla())
    for j in range(2):
        _, _, tanh = _edge(tanh_truth, j=j)
        _, _, van = _edge(tanh_truth, vanilla, j=j)
        assert van.found and van.D_max >= tanh.D_max * (1 - 1e-6)


def _map_edge(family: str, d: int, r: int, p: int, j: int, extra: int = 1):
    """The identifiability map's search (simulations/analysis/identifiability_map.py) on its
    truth."""
    from moe_lora.bounds import setting_truth

    _, truth, key = setting_truth(family, d, r, p)
    tp = truth_in(truth.model, truth)
    edge = flat_edge(
        jax.random.fold_in(key, 3 + j),
        truth.model,
        truth.atoms,
        tp,
        j,
        extra + 1,
        radius=0.5,
        n_starts=24,
        max_iter=400,
    )
    return truth, tp, edge


@pytest.mark.slow
@pytest.mark.parametrize("family", ["linear", "tanh", "sigmoid", "gelu"])
def test_the_sweeps_identifiable_setting_has_no_flat_set(family):
    """d = 3, r = 1, p = 2 (verdicts_identifiable_*.toml), reported clean in the map: its search
    finds no witness at either true atom and comes no closer than 1e-4 to one."""
    for j in range(2):
        _, _, edge = _map_edge(family, 3, 1, 2, j)
        assert not edge.found and edge.best_exact > 1e-4, (j, edge.best_exact)


@pytest.mark.slow
def test_relu_flat_set_at_the_sweeps_setting():
    """relu's sign-dependent fiber: at d = 3, r = 1, p = 2, where the smooth maps are clean, the
    map reports a witness at true atom 1; it is exact by the package's f and D."""
    truth, tp, edge = _map_edge("relu", 3, 1, 2, 1)
    assert edge.found
    spec = truth.model.spec
    quad = quadrature(spec.d, Design(), 12, key=jax.random.key(0))
    G = atoms(truth.model, flat_params(truth.model, tp, 1, 2, edge.theta, edge.lam))
    assert float(l2_distance(truth.model, G, truth.model, truth.atoms, quad)) < 1e-14
    D = float(lora_voronoi_loss(G, truth.atoms, "softmax").total)
    assert D == pytest.approx(edge.D_max, rel=1e-6) and D > 1e-3


def test_no_flat_set_rows_at_the_exact_order_or_when_off(tanh_truth):
    """The flat-set search needs an extra atom (L > L*) and is off at ``flat_edge_starts = 0``."""
    import pandas as pd

    from moe_lora.bounds import BoundConfig
    from moe_lora.bounds.containment import flat_set_rows

    model = make_model(SPEC, nonlinear("tanh", 2), key=jax.random.key(1))
    for L, starts in ((2, 24), (3, 0)):
        rows = pd.DataFrame({"L": [L], "loss": ["D"], "kind": ["M"]})
        config = BoundConfig(losses=("D",), flat_edge_starts=starts)
        out = flat_set_rows(jax.random.key(0), tanh_truth, model, rows, config, _quad())
        assert out.empty and list(out.columns) == list(rows.columns)


@pytest.mark.slow
def test_bound_curves_take_in_the_flat_set():
    """The tanh flat set at p = d = 2 (the tanh truth of overspecified.toml, notebook 6) reaches
    M(eta) at every eta above round-off, as a witness of the flat-set search re-evaluated with the
    unit's own f and D: the eps targets alone miss it."""
    from jax.flatten_util import ravel_pytree

    from moe_lora.bounds import BoundConfig, bound_curves, split_truth

    keys = jax.random.split(jax.random.key(0), 4)
    model = make_model(SPEC, nonlinear("tanh", 2), key=jax.random.fold_in(keys[0], 2))
    truth = draw_truth(
        jax.random.fold_in(keys[1], 2),
        model,
        2,
        min_separation=0.5,
        min_gate_strength=0.5,
        min_expert_separation=0.5,
    )
    config = BoundConfig(
        etas=(1e-12, 1e-3),
        epsilons=(1e-3, 1e-2),
        losses=("D",),
        max_iter=200,
        refine=0,
        triangle_samples=16,
    )
    rows = bound_curves(
        jax.random.key(0), truth, model, 3, config, truth_label="tanh", estimator_label="tanh"
    )
    M = rows[(rows.kind == "M")].set_index("eta")
    assert M.loc[1e-12, "source"] == "flat_edge" and bool(M.loc[1e-12, "inside"])
    assert M.loc[1e-12, "value"] > 1e-3 and M.loc[1e-12, "l2"] < 1e-14
    unravel = ravel_pytree(split_truth(model, truth, 3))[1]
    l2, D = _check(model, truth, unravel(jax.numpy.asarray(M.loc[1e-12, "theta"])))
    assert l2 < 1e-14 and D == pytest.approx(M.loc[1e-12, "value"], rel=1e-9)
