"""Tests of the generic Voronoi loss: hand-worked oracles, errors, jit/vmap/grad, properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_lora.voronoi import Exponents, check_distinct_atoms, voronoi_cells, voronoi_loss

jax.config.update("jax_enable_x64", True)

D = Exponents(1.0, 2.0)
EXP = {"S": D, "v": D}

# Two true atoms with a (2, 2) block and a (2,) block.
TRUE_W = np.array([0.5, 0.5])
TRUE = {"S": np.array([np.zeros((2, 2)), 2 * np.eye(2)]), "v": np.array([[0.0, 0.0], [2.0, 2.0]])}
# Three fitted atoms: 0 and 1 split true atom 0, atom 2 sits alone near true atom 1.
SPLIT_W = np.array([0.2, 0.3, 0.5])
SPLIT = {
    "S": np.array([[[0.1, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -0.3]], [[2.0, 0.4], [0.0, 2.0]]]),
    "v": np.array([[0.0, 0.2], [0.0, 0.0], [2.3, 2.4]]),
}


def loss(w, b, tw=TRUE_W, tb=TRUE, exps=EXP):
    return voronoi_loss(
        jnp.asarray(w),
        {k: jnp.asarray(x) for k, x in b.items()},
        jnp.asarray(tw),
        {k: jnp.asarray(x) for k, x in tb.items()},
        exps,
    )


# Property tests see many shapes: one compile per shape beats eager per-op dispatch. Exponents are
# traced here, so their eager validation is exercised only by the unjitted `loss`.
_jitted = jax.jit(voronoi_loss)


def jloss(w, b, tw, tb, exps=EXP):
    return _jitted(w, b, tw, tb, exps)


def test_exact_match_in_any_order():
    tw = np.array([0.2, 0.3, 0.5])
    tb = {
        "S": np.arange(12.0).reshape(3, 2, 2),
        "v": np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]),
    }
    out = loss(tw, tb, tw, tb)
    assert float(out.total) == 0.0
    np.testing.assert_array_equal(out.cell, [0, 1, 2])
    p = np.array([2, 0, 1])
    out = loss(tw[p], {k: x[p] for k, x in tb.items()}, tw, tb)
    assert float(out.total) == 0.0
    np.testing.assert_array_equal(out.cell, p)
    np.testing.assert_array_equal(out.cell_size, [1, 1, 1])
    np.testing.assert_array_equal(out.mass, 0.0)
    np.testing.assert_array_equal(out.parameter, 0.0)


def test_split_atom_by_hand():
    out = loss(SPLIT_W, SPLIT)
    np.testing.assert_array_equal(out.cell, [0, 0, 1])
    np.testing.assert_array_equal(out.cell_size, [2, 1])
    np.testing.assert_allclose(out.mass, [0.0, 0.0], atol=1e-15)
    # Cell 0 (two atoms): squared norms. Cell 1 (singleton): first powers, ||dS|| = 0.4, ||dv|| =
    # 0.5.
    cell0 = 0.2 * (0.1**2 + 0.2**2) + 0.3 * (0.3**2 + 0.0)
    cell1 = 0.5 * (0.4 + 0.5)
    np.testing.assert_allclose(out.parameter, [cell0, cell1], rtol=1e-13)
    np.testing.assert_allclose(out.total, 0.487, rtol=1e-13)


def test_dead_atom_and_empty_cell():
    tw, tb = np.array([0.3, 0.3, 0.4]), {"a": np.array([[0.0], [5.0], [10.0]])}
    w, b = np.array([0.001, 0.35, 0.649]), {"a": np.array([[2.0], [0.1], [9.5]])}
    out = loss(w, b, tw, tb, {"a": D})
    np.testing.assert_array_equal(out.cell, [0, 0, 2])
    np.testing.assert_array_equal(out.cell_size, [2, 0, 1])
    np.testing.assert_allclose(out.mass, [0.051, 0.3, 0.249], rtol=1e-12)
    # The dead atom shares cell 0, so it is charged 2^2, not 2^1.
    np.testing.assert_allclose(
        out.parameter, [0.001 * 4 + 0.35 * 0.01, 0.0, 0.649 * 0.5], rtol=1e-12
    )
    np.testing.assert_allclose(out.total, 0.051 + 0.3 + 0.249 + 0.0075 + 0.3245, rtol=1e-12)


def test_permutations():
    ref = loss(SPLIT_W, SPLIT)
    p = np.array([2, 0, 1])
    out = loss(SPLIT_W[p], {k: x[p] for k, x in SPLIT.items()})
    np.testing.assert_allclose(out.total, ref.total, rtol=1e-14)
    np.testing.assert_allclose(out.mass, ref.mass, atol=1e-15)
    np.testing.assert_allclose(out.parameter, ref.parameter, rtol=1e-14)
    np.testing.assert_array_equal(out.cell, np.asarray(ref.cell)[p])

    q = np.array([1, 0])
    out = loss(SPLIT_W, SPLIT, TRUE_W[q], {k: x[q] for k, x in TRUE.items()})
    np.testing.assert_allclose(out.total, ref.total, rtol=1e-14)
    np.testing.assert_allclose(out.parameter, np.asarray(ref.parameter)[q], rtol=1e-14)
    np.testing.assert_array_equal(out.cell_size, np.asarray(ref.cell_size)[q])
    np.testing.assert_array_equal(out.cell, [1, 1, 0])


def test_ties_go_to_lower_index():
    for truth in ([[0.0], [2.0]], [[2.0], [0.0]]):
        assert voronoi_cells({"a": jnp.array([[1.0]])}, {"a": jnp.array(truth)}).tolist() == [0]
    cells = voronoi_cells(
        {"a": jnp.array([[0.5, 0.5], [0.0, 0.0]])}, {"a": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
    )
    assert cells.tolist() == [0, 0]


def test_d_r_exponents():
    r = 3.0
    out = loss(SPLIT_W, SPLIT, exps={"S": Exponents(r, r), "v": Exponents(r, r)})
    cell0 = 0.2 * (0.1**3 + 0.2**3) + 0.3 * 0.3**3
    cell1 = 0.5 * (0.4**3 + 0.5**3)
    np.testing.assert_allclose(out.parameter, [cell0, cell1], rtol=1e-13)
    np.testing.assert_allclose(out.total, 0.1044, rtol=1e-13)
    # Per-block exponents: S uses 1 everywhere, v uses 2 everywhere.
    out = loss(SPLIT_W, SPLIT, exps={"S": Exponents(1, 1), "v": Exponents(2, 2)})
    expected = 0.2 * (0.1 + 0.04) + 0.3 * 0.3 + 0.5 * (0.4 + 0.25)
    np.testing.assert_allclose(out.total, expected, rtol=1e-13)


def test_errors():
    bad = {"S": np.zeros((3, 2, 3)), "v": np.zeros((3, 2))}
    with pytest.raises(ValueError, match=r"block 'S'.*\(2, 3\).*\(2, 2\)"):
        loss(SPLIT_W, bad)
    with pytest.raises(ValueError, match="length 2"):
        loss(SPLIT_W[:2], SPLIT)
    with pytest.raises(ValueError, match="1-D"):
        loss(SPLIT_W[None], SPLIT)
    with pytest.raises(ValueError, match=r"Block names differ.*'w'"):
        loss(SPLIT_W, {"S": SPLIT["S"], "w": SPLIT["v"]})
    with pytest.raises(ValueError, match=r"missing \['v'\]"):
        loss(SPLIT_W, SPLIT, exps={"S": D})
    with pytest.raises(ValueError, match=r"extra \['x'\]"):
        loss(SPLIT_W, SPLIT, exps={**EXP, "x": D})
    with pytest.raises(ValueError, match=r"singleton of block 'v'.*0"):
        loss(SPLIT_W, SPLIT, exps={"S": D, "v": Exponents(0.0, 2.0)})
    with pytest.raises(ValueError, match=r"multi of block 'S'.*-1"):
        loss(SPLIT_W, SPLIT, exps={"S": Exponents(1.0, -1.0), "v": D})
    with pytest.raises(ValueError, match=r"block 'S'"):  # static checks also fire under jit
        jax.jit(lambda w, b: voronoi_loss(w, b, TRUE_W, TRUE, EXP))(SPLIT_W, bad)

    check_distinct_atoms(TRUE)
    same = {"a": np.array([[0.0], [1.0], [0.0]])}
    with pytest.raises(ValueError, match=r"atoms 0 and 2 coincide \(distance 0"):
        check_distinct_atoms(same)
    with pytest.raises(ValueError, match=r"atoms 0 and 1 .*relabelling"):
        check_distinct_atoms({"a": np.array([[0.0], [1e-9]])}, atol=1e-6)


def test_jit_vmap_and_gradients():
    rng = np.random.default_rng(0)
    ws = rng.dirichlet(np.ones(3), size=4)
    bs = {k: x[None] + 0.1 * rng.normal(size=(4, *x.shape)) for k, x in SPLIT.items()}
    f = lambda w, b: voronoi_loss(w, b, TRUE_W, TRUE, EXP)
    batched = jax.jit(jax.vmap(f))(ws, bs)
    for n in range(4):
        one = loss(ws[n], {k: x[n] for k, x in bs.items()})
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one)):
            np.testing.assert_allclose(a[n], b, rtol=1e-13, atol=1e-15)

    total = lambda w, b, tw=TRUE_W, tb=TRUE: voronoi_loss(w, b, tw, tb, EXP).total
    for w, b in (
        (TRUE_W, TRUE),
        (np.array([0.25, 0.25, 0.5]), {k: x[[0, 0, 1]] for k, x in TRUE.items()}),
    ):
        grads = jax.grad(total, argnums=(0, 1, 2, 3))(jnp.asarray(w), b, jnp.asarray(TRUE_W), TRUE)
        assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))

    # Generic point: off-mass so |.| is smooth, every distance nonzero.
    w0 = np.array([0.25, 0.3, 0.4])
    x0 = np.concatenate([w0, SPLIT["S"].ravel(), SPLIT["v"].ravel()])

    def flat(x):
        return total(x[:3], {"S": x[3:15].reshape(3, 2, 2), "v": x[15:].reshape(3, 2)})

    flat = jax.jit(flat)
    g = jax.grad(flat)(jnp.asarray(x0))
    h = 1e-6
    fd = np.array([(flat(x0 + h * e) - flat(x0 - h * e)) / (2 * h) for e in np.eye(x0.size)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


# ---- properties -------------------------------------------------------------------------------


def random_truth(seed):
    """Well-separated truth: atom j sits near 10 * j along the first v coordinate."""
    rng = np.random.default_rng(seed)
    L = int(rng.integers(1, 5))
    v = rng.normal(size=(L, 3))
    v[:, 0] += 10.0 * np.arange(L)
    return rng, rng.dirichlet(np.ones(L)), {"S": rng.normal(size=(L, 2, 2)), "v": v}


def perturbed(rng, w, b, scale=0.5):
    return rng.dirichlet(np.ones(len(w))), {
        k: x + scale * rng.normal(size=x.shape) for k, x in b.items()
    }


PROPS = settings(max_examples=50, deadline=None)
seeds = st.integers(0, 2**32 - 1)


@PROPS
@given(seeds)
def test_prop_invariant_to_fitted_permutation(seed):
    rng, tw, tb = random_truth(seed)
    w, b = perturbed(
        rng, np.concatenate([tw, tw]), {k: np.concatenate([x, x]) for k, x in tb.items()}
    )
    p = rng.permutation(len(w))
    ref, out = jloss(w, b, tw, tb), jloss(w[p], {k: x[p] for k, x in b.items()}, tw, tb)
    np.testing.assert_allclose(out.total, ref.total, rtol=1e-12)
    np.testing.assert_allclose(out.parameter, ref.parameter, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(out.cell, np.asarray(ref.cell)[p])


@PROPS
@given(seeds)
def test_prop_invariant_to_true_permutation(seed):
    rng, tw, tb = random_truth(seed)
    w, b = perturbed(rng, tw, tb)
    q = rng.permutation(len(tw))
    ref, out = jloss(w, b, tw, tb), jloss(w, b, tw[q], {k: x[q] for k, x in tb.items()})
    np.testing.assert_allclose(out.total, ref.total, rtol=1e-12)
    np.testing.assert_allclose(out.mass, np.asarray(ref.mass)[q], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.parameter, np.asarray(ref.parameter)[q], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(q[out.cell], ref.cell)


@PROPS
@given(seeds, st.integers(1, 5), st.floats(0.1, 4.0), st.floats(0.1, 4.0))
def test_prop_nonnegative(seed, L, e1, e2):
    rng, tw, tb = random_truth(seed)
    w = rng.dirichlet(np.ones(L))
    b = {"S": 5 * rng.normal(size=(L, 2, 2)), "v": 20 * rng.normal(size=(L, 3))}
    exps = {"S": Exponents(e1, e2), "v": Exponents(e2, e1)}
    assert float(jloss(w, b, tw, tb, exps).total) >= 0.0


@PROPS
@given(seeds, st.sampled_from(["weight", "S", "v"]))
def test_prop_zero_iff_exact(seed, what):
    rng, tw, tb = random_truth(seed)
    p = rng.permutation(len(tw))
    w, b = tw[p], {k: x[p].copy() for k, x in tb.items()}
    assert float(jloss(w, b, tw, tb).total) == 0.0
    j = int(rng.integers(len(w)))
    if what == "weight":
        w = w.copy()
        w[j] += 1e-3
    else:
        b[what][j].flat[int(rng.integers(b[what][j].size))] += 1e-3
    assert float(jloss(w, b, tw, tb).total) > 0.0


@PROPS
@given(seeds, st.integers(2, 4))
def test_prop_exact_split_is_zero(seed, pieces):
    rng, tw, tb = random_truth(seed)
    j = int(rng.integers(len(tw)))
    idx = np.concatenate([np.arange(len(tw)), np.full(pieces - 1, j)])
    w = tw[idx].copy()
    share = rng.dirichlet(np.ones(pieces)) * tw[j]
    w[idx == j] = share
    out = jloss(w, {k: x[idx] for k, x in tb.items()}, tw, tb)
    np.testing.assert_allclose(out.total, 0.0, atol=1e-14)
    assert int(out.cell_size[j]) == pieces
