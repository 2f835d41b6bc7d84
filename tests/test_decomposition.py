"""D taken apart: its pieces sum back to D, and the shared-gate flag marks vanilla's exact flat
set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml
from moe_lora.simulate import SHARED_GATE_TOL, decompose

SPEC = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
TANH = ml.make_model(SPEC, ml.nonlinear("tanh"), key=jax.random.key(1))


@pytest.fixture(scope="module")
def truth():
    return ml.draw_truth(jax.random.key(2), TANH, 2, min_separation=0.5, min_gate_strength=0.5)


def _split(atoms, delta, gate_offset=0.0):
    """True atom 0 split into two atoms of half its weight, experts V +- delta, gates S and S +
    offset."""
    offset = gate_offset * jnp.eye(2)
    return ml.Atoms(
        S=jnp.stack([atoms.S[0], atoms.S[0] + offset, atoms.S[1]]),
        V=jnp.stack([atoms.V[0] + delta, atoms.V[0] - delta, atoms.V[1]]),
        c=jnp.array([atoms.c[0] - jnp.log(2.0), atoms.c[0] - jnp.log(2.0), atoms.c[1]]),
    )


def test_shared_gate_flag_on_a_hand_built_split_and_not_on_the_truth(truth):
    a = truth.atoms
    split = _split(a, jnp.array([[1.0], [0.0]]))
    parts = decompose(ml.lora_voronoi_loss(split, a, "softmax"), split.S)
    pi0 = float(jax.nn.softmax(a.c)[0])
    assert (
        bool(parts.shared_gate)
        and float(parts.cell_gate_gap[0]) == 0.0
        and np.isinf(parts.cell_gate_gap[1])
    )
    assert float(parts.D_shared_gate) == pytest.approx(
        pi0 * 1.0, rel=1e-10
    )  # all of D: pi* ||delta||^2
    assert float(parts.D_multi) == pytest.approx(pi0, rel=1e-10) and float(
        parts.D_S
    ) == pytest.approx(0.0, abs=1e-14)
    own = decompose(ml.lora_voronoi_loss(a, a, "softmax"), a.S)
    assert (
        not bool(own.shared_gate)
        and float(own.D_shared_gate) == 0.0
        and np.isinf(own.cell_gate_gap).all()
    )
    apart = _split(a, jnp.array([[1.0], [0.0]]), gate_offset=10 * SHARED_GATE_TOL)
    assert not bool(decompose(ml.lora_voronoi_loss(apart, a, "softmax"), apart.S).shared_gate)


def test_pieces_sum_back_to_D_for_every_fit(truth):
    rec = ml.simulate_replicates(
        jax.random.key(3),
        truth,
        ml.make_model(SPEC, ml.Vanilla()),
        400,
        sigma=0.02,
        replicates=3,
        config=ml.FitConfig(n_components=3),
        X_eval=ml.sample_inputs(jax.random.key(4), 500, 2),
    )
    np.testing.assert_allclose(rec.D_mass + rec.D_singleton + rec.D_multi, rec.D, rtol=1e-12)
    np.testing.assert_allclose(rec.D_mass + rec.D_S + rec.D_V, rec.D, rtol=1e-12)
    np.testing.assert_allclose(rec.D_mass, rec.cell_mass.sum(-1), rtol=1e-12)
    assert (np.asarray(rec.D_shared_gate) <= np.asarray(rec.D) * (1 + 1e-12)).all()
    assert (
        np.asarray(rec.shared_gate) == (np.asarray(rec.cell_gate_gap) <= SHARED_GATE_TOL).any(-1)
    ).all()


def test_record_repeats_the_decomposition_fields_in_order():
    from moe_lora.simulate import Decomposition, Record

    fields = list(Record._fields)
    start = fields.index(Decomposition._fields[0])
    assert tuple(fields[start : start + len(Decomposition._fields)]) == Decomposition._fields
