"""LoRA Voronoi losses: the gate-shift alignment, D and D_r, the L2 error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml

SPEC = ml.ModelSpec(d=2, d_out=1, r=1)


@pytest.fixture(scope="module")
def truth():
    model = ml.make_model(SPEC, ml.Vanilla())
    return ml.draw_truth(jax.random.key(0), model, 2, min_separation=0.5)


def test_losses_vanish_at_the_truth(truth):
    X = ml.sample_inputs(jax.random.key(1), 100, 2)
    s = ml.score(truth.model, truth.atoms, truth.model, truth.atoms, X)
    assert float(s.D.total) == 0.0 and float(s.D_unaligned) == 0.0 and float(s.l2_error) == 0.0


def test_alignment_removes_a_common_gate_shift(truth):
    Q = jnp.array([[0.05, -0.02], [-0.02, 0.03]])
    shifted = truth.atoms._replace(S=truth.atoms.S + Q[None], c=truth.atoms.c + 1.0)
    aligned = ml.lora_voronoi_loss(shifted, truth.atoms, "softmax")
    unaligned = ml.lora_voronoi_loss(shifted, truth.atoms, "softmax", align=False)
    assert float(aligned.total) < 1e-12
    # pi-weighted ||Q|| per singleton cell: sum_j pi_j ||Q|| = ||Q||.
    np.testing.assert_allclose(unaligned.total, jnp.linalg.norm(Q), rtol=1e-12)
    # Sigmoid gating has no such invariance: nothing is aligned.
    assert float(ml.lora_voronoi_loss(shifted, truth.atoms, "sigmoid").total) > 0.05


def test_alignment_never_increases_D_and_uses_the_weighted_shift(truth):
    key = jax.random.key(2)
    for k in jax.random.split(key, 10):
        k1, k2 = jax.random.split(k)
        noisy = truth.atoms._replace(
            S=truth.atoms.S + 0.05 * ml.sym(jax.random.normal(k1, truth.atoms.S.shape)),
            V=truth.atoms.V + 0.05 * jax.random.normal(k2, truth.atoms.V.shape),
        )
        a = float(ml.lora_voronoi_loss(noisy, truth.atoms, "softmax").total)
        u = float(ml.lora_voronoi_loss(noisy, truth.atoms, "softmax", align=False).total)
        assert a <= u + 1e-12
        aligned = ml.align_gate_shift(noisy, truth.atoms)
        pi = jax.nn.softmax(noisy.c)
        np.testing.assert_allclose(
            jnp.einsum("i,ijk->jk", pi, aligned.S - truth.atoms.S), 0.0, atol=1e-12
        )


def test_split_atom_and_D_r_by_hand(truth):
    t = truth.atoms
    dV = jnp.array([[0.1], [0.0]])
    # Atom 0 split in two halves, one copy's V off by dV; atom 1 exact.
    fitted = ml.Atoms(
        S=jnp.stack([t.S[0], t.S[0], t.S[1]]),
        V=jnp.stack([t.V[0], t.V[0] + dV, t.V[1]]),
        c=jnp.stack([t.c[0] - jnp.log(2.0), t.c[0] - jnp.log(2.0), t.c[1]]),
    )
    pi0 = float(jax.nn.softmax(t.c)[0])
    D = ml.lora_voronoi_loss(fitted, t, "softmax", align=False)
    np.testing.assert_allclose(D.total, pi0 / 2 * 0.1**2, rtol=1e-10)
    np.testing.assert_array_equal(D.cell_size, [2, 1])
    D3 = ml.lora_voronoi_loss(fitted, t, "softmax", ml.Exponents(3.0, 3.0), align=False)
    np.testing.assert_allclose(D3.total, pi0 / 2 * 0.1**3, rtol=1e-10)


def test_l2_error_against_a_direct_computation(truth):
    X = ml.sample_inputs(jax.random.key(3), 500, 2)
    other = truth.atoms._replace(V=truth.atoms.V * 1.1)
    f = ml.regression_function(SPEC, truth.model.base, other, X)
    g = ml.regression_function(SPEC, truth.model.base, truth.atoms, X)
    np.testing.assert_allclose(
        ml.l2_error(truth.model, other, truth.model, truth.atoms, X),
        np.sqrt(np.mean(np.sum((f - g) ** 2, -1))),
        rtol=1e-12,
    )
