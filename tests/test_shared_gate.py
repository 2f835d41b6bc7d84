"""Vanilla's hardest truths: the shared-gate family (``moe_lora.truth.shared_gate_truth``) and the
``[minimax]`` keys that choose it."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml
from moe_lora.config import ConfigError
from moe_lora.experiment import Experiment, TruthLabel
from moe_lora.parameterization import atoms_from_factors
from moe_lora.truth import shared_gate_directions, shared_gate_factors, shared_gate_truth

SPEC = ml.ModelSpec(d=3, d_out=1, r=1, gate_scale=3.0)


def _truth(name="tanh", spec=SPEC, components=2):
    param = ml.Vanilla() if name == "vanilla" else ml.nonlinear(name, 2)
    model = ml.make_model(spec, param, key=jax.random.key(1))
    truth = ml.draw_truth(
        jax.random.key(2), model, components, min_separation=0.5, min_gate_strength=0.5
    )
    return truth, ml.make_model(spec, ml.Vanilla())


@pytest.mark.parametrize("name", ["tanh", "vanilla"])
def test_members_have_the_declared_atoms(name):
    truth, vanilla = _truth(name)
    g = shared_gate_directions(truth)
    # V +- Delta are the truth's experts; S its atom 0 gate.
    np.testing.assert_allclose(g.V + g.Delta, truth.atoms.V[0], atol=1e-15)
    np.testing.assert_allclose(g.V - g.Delta, truth.atoms.V[1], atol=1e-15)
    np.testing.assert_allclose(g.S, truth.atoms.S[0], atol=1e-14)
    assert float(jnp.linalg.norm(g.E)) > 1e-3 and float(jnp.linalg.norm(g.Delta)) > 1e-3
    for delta in (1.0, 0.5, 0.01):
        member = shared_gate_truth(truth, delta, vanilla, key=jax.random.key(0))
        a = member.atoms
        assert member.model.parameterization.name == "vanilla"
        np.testing.assert_allclose(a.S[0], g.S, atol=1e-13)
        np.testing.assert_allclose(a.S[1] - a.S[0], delta * g.E, atol=1e-13)
        np.testing.assert_allclose(a.V[0], g.V + g.Delta, atol=1e-13)  # Delta does not move
        np.testing.assert_allclose(a.V[1], g.V - g.Delta, atol=1e-13)
        np.testing.assert_allclose(jax.nn.softmax(a.c), [0.5, 0.5], atol=1e-14)
        # Each gate is a rank-r LoRA gate: vanilla represents the member exactly.
        assert np.linalg.matrix_rank(np.asarray(a.S[1]), tol=1e-10) <= 2 * SPEC.r


def test_the_limit_is_one_merged_atom_and_only_the_limit():
    """At delta = 0 the two atoms share their gate, so f is exactly that of one atom (S, V) with
    their summed weight, whatever Delta (vanilla's flat set). For delta > 0, with L* = 2,
    f_delta - f_0 = -tanh(delta q(X) / 2) Delta^T X with q(X) = X^T E X, which vanishes mu-a.e. only
    at delta = 0 (E != 0, Delta != 0): the family reaches the flat set only in the limit, at an
    L2 distance linear in delta."""
    truth, _ = _truth("tanh")
    model, g = truth.model, shared_gate_directions(truth)
    X = ml.sample_inputs(jax.random.key(3), 4000, SPEC.d)

    def f(atoms):
        return ml.regression_function(SPEC, model.base, atoms, X)

    merged = ml.Atoms(S=g.S[None], V=g.V[None], c=jnp.zeros(1))
    f0 = f(atoms_from_factors(model, shared_gate_factors(truth, 0.0)))
    np.testing.assert_allclose(f0, f(merged), atol=1e-14)
    q = jnp.einsum("ni,ij,nj->n", X, g.E, X)
    ratios = []
    for delta in (0.5, 0.1, 1e-3):
        fd = f(atoms_from_factors(model, shared_gate_factors(truth, delta)))
        closed = -jnp.tanh(delta * q / 2)[:, None] * (X @ g.Delta)
        np.testing.assert_allclose(fd - f0, closed, atol=1e-14)
        ratios.append(float(jnp.sqrt(jnp.mean((fd - f0) ** 2))) / delta)
    limit = float(jnp.sqrt(jnp.mean((q[:, None] * (X @ g.Delta) / 2) ** 2)))
    assert limit > 1e-3 and ratios[-1] == pytest.approx(limit, rel=1e-5)


def test_more_atoms_keep_the_others_and_the_pair_mass():
    truth, vanilla = _truth("tanh", components=3)
    member = shared_gate_truth(truth, 0.5, vanilla, key=jax.random.key(0))
    pi, pi_star = jax.nn.softmax(member.atoms.c), jax.nn.softmax(truth.atoms.c)
    np.testing.assert_allclose(pi[0], pi[1], atol=1e-15)
    np.testing.assert_allclose(pi[0] + pi[1], pi_star[0] + pi_star[1], atol=1e-14)
    np.testing.assert_allclose(member.atoms.S[2], truth.atoms.S[2], atol=1e-13)
    np.testing.assert_allclose(member.atoms.V[2], truth.atoms.V[2], atol=1e-13)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t, v: shared_gate_truth(t, 0.0, v, key=jax.random.key(0)), r"\(0, 1\]"),
        (lambda t, v: shared_gate_truth(t, 1.5, v, key=jax.random.key(0)), r"\(0, 1\]"),
        (lambda t, v: shared_gate_truth(t, 0.5, t.model, key=jax.random.key(0)), "vanilla truth"),
        (
            lambda t, v: shared_gate_truth(
                t, 0.5, ml.make_model(SPEC, ml.Vanilla(bound=0.01)), key=jax.random.key(0)
            ),
            "compact space",
        ),
    ],
)
def test_bad_members_are_refused(call, match):
    truth, vanilla = _truth("tanh")
    with pytest.raises(ValueError, match=match):
        call(truth, vanilla)


def test_sigmoid_gating_is_refused():
    truth, vanilla = _truth(
        "tanh", spec=ml.ModelSpec(d=3, d_out=1, r=1, gate_scale=3.0, gating="sigmoid")
    )
    with pytest.raises(ValueError, match="softmax gating"):
        shared_gate_truth(truth, 0.5, vanilla, key=jax.random.key(0))


BASE = {
    "name": "tiny",
    "estimators": ["vanilla", "tanh"],
    "model": {"d": 2, "r": 1, "gate_scale": 3.0},
    "truth": {"components": 2, "min_separation": 0.5, "min_gate_strength": 0.5},
    "data": {"sigma": 0.02, "sizes": [60], "replicates": 2, "n_eval": 200},
    "fit": {"extra_components": [1], "max_iter": 30},
    "minimax": {"deltas": [1.0, 0.25]},
}


def _with(**minimax):
    cfg = copy.deepcopy(BASE)
    cfg["minimax"] |= minimax
    return cfg


@pytest.mark.parametrize(
    "minimax, match",
    [
        (
            {"family": "gates"},
            r"minimax\.family: expected one of \['merging', 'shared_gate'\], got 'gates'",
        ),
        ({"family": 1}, r"minimax\.family: expected a string"),
        (
            {"family": "shared_gate", "maps_family": "shared_gate"},
            r"minimax\.maps_family: expected one of \['merging'\], got 'shared_gate'",
        ),
        ({"famly": "shared_gate"}, r"minimax\.famly: unknown key"),
    ],
)
def test_bad_family_keys_name_the_key_and_the_allowed_values(minimax, match):
    with pytest.raises(ConfigError, match=match):
        Experiment.from_dict(_with(**minimax))


def test_shared_gate_needs_vanilla():
    cfg = _with(family="shared_gate") | {"estimators": ["tanh"]}
    with pytest.raises(ConfigError, match=r"minimax\.family: 'shared_gate' .* 'vanilla'"):
        Experiment.from_dict(cfg)


def test_merging_is_the_default_and_leaves_the_written_config_unchanged():
    default, explicit = Experiment.from_dict(BASE), Experiment.from_dict(_with(family="merging"))
    assert default.config.minimax.family == "merging"
    assert default.config.to_dict() == explicit.config.to_dict()
    assert default.config.to_dict()["minimax"] == {"deltas": [1.0, 0.25]}
    assert [str(x) for x in default.truth_labels()] == ["tanh", "tanh@delta=0.25"]


def test_shared_gate_pairs_vanilla_with_its_family_and_the_map_with_its_own():
    exp = Experiment.from_dict(_with(family="shared_gate"))
    assert exp.config.to_dict()["minimax"] == {"deltas": [1.0, 0.25], "family": "shared_gate"}
    pairs = {(str(label), e) for label, e in exp.pairs()}
    assert pairs == {
        ("tanh", "vanilla"),
        ("tanh", "tanh"),
        ("tanh@delta=0.25", "tanh"),
        ("tanh@shared_gate=1", "vanilla"),
        ("tanh@shared_gate=0.25", "vanilla"),
    }
    truths = exp.draw_truths()
    member = truths[TruthLabel("tanh", 0.25, seed=0, family="shared_gate")]
    assert member.model.parameterization.name == "vanilla"
    g = shared_gate_directions(truths[TruthLabel("tanh", seed=0)])
    np.testing.assert_allclose(member.atoms.S[1] - member.atoms.S[0], 0.25 * g.E, atol=1e-13)
    for label in truths:
        assert TruthLabel.parse(str(label), seed=label.seed) == label


def test_the_minimax_config_loads_with_both_families_and_worst_case_rules():
    from pathlib import Path

    from moe_lora.experiment import load_experiment

    root = Path(__file__).resolve().parents[1] / "simulations"
    exp = load_experiment(root / "minimax_shared_gate.toml")
    assert exp.config.minimax.family == "shared_gate"
    assert exp.config.minimax.maps_family == "merging"
    fitted = {}
    for label, e in exp.pairs():
        fitted.setdefault(e, set()).add(
            label.family or ("drawn" if label.delta is None else "merge")
        )
    assert fitted == {"vanilla": {"drawn", "shared_gate"}, "tanh": {"drawn", "merge"}}
    worst = [r for r in exp.config.rates.verdicts if r.get("worst_case")]
    assert {e for r in worst for e in r["estimators"]} == {"vanilla", "tanh"}
    for name in ("bound_identifiable_s0", "bound_identifiable_vanilla_s0"):
        assert load_experiment(root / f"{name}.toml").config.bound is not None
