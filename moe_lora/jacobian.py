"""The Jacobian of a LoRA mixture in closed form: J^T J and J^T r without automatic differentiation.

Every parameterization reaches the data only through the atoms (S_j, V_j, c_j). With

    score_k(X) = X^T (M + S_k) X + c_k,   E_k(X) = (V0 + V_k)^T X,   f(X) = sum_k gate_k(X) E_k(X),

the derivatives of f at one input are, for softmax gates (d gate_j / d score_k = gate_j (delta_jk -
gate_k)),

    df/dS_k = gate_k (E_k - f) X X^T,   df/dc_k = gate_k (E_k - f),   df/dV_k = gate_k X (x) I,

and for sigmoid gates the same with gate_k (E_k - f) replaced by gate_k (1 - gate_k) E_k. So the
residual Jacobian in atom coordinates, J_a (rows x Q, Q = L (d^2 + d d_out + 1)), is a handful of
element-wise products; its normal equations J_a^T J_a, J_a^T r are summed over row chunks and
chained once per iteration to the raw parameters theta through the small Q x P matrix
T = d atoms / d theta (``jax.jacfwd`` of the atom map, independent of n):

    J^T J = T^T (J_a^T J_a) T,   J^T r = T^T (J_a^T r).

This is exact (the chain rule), and it replaces P forward-mode tangents pushed through every
row's gates by one pass over the rows, whatever the parameterization. ``FitConfig.jacobian =
"jacfwd"`` keeps the automatic-differentiation path as the reference (``tests/test_jacobian.py``
checks the two against each other to 1e-10 for every parameterization and both gatings).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .model import Atoms, Base, ModelSpec, base_gate_matrix
from .optimize import chunked_sum
from .parameterization import Model, atoms


def atom_normal_equations(
    spec: ModelSpec,
    base: Base,
    atoms_: Atoms,
    X: Float[Array, "n d"],
    Y: Float[Array, "n d_out"],
    weight: Float[Array, " n"],
    scale: float,
) -> tuple[Float[Array, ""], Float[Array, "Q Q"], Float[Array, " Q"]]:
    """(r^T r, J_a^T J_a, J_a^T r) of r = scale * weight * (f_G(X) - Y) in atom coordinates.

    The coordinates are ``ravel_pytree(atoms_)``: S (L, d, d), then V (L, d, d_out), then c (L),
    each row-major. Rows with weight 0 (padding) contribute nothing.
    """
    L, d = atoms_.c.shape[0], spec.d
    n, d_out = Y.shape
    XX = X[:, :, None] * X[:, None, :]
    score = (
        jnp.einsum("nab,lab->nl", XX, atoms_.S)
        + jnp.einsum("nab,ab->n", XX, base_gate_matrix(spec, base))[:, None]
        + atoms_.c[None, :]
    )
    E = jnp.einsum("na,lao->nlo", X, atoms_.V) + (X @ base.V0)[:, None, :]
    w = scale * weight
    if spec.gating == "softmax":
        g = jax.nn.softmax(score, axis=-1)
        f = jnp.einsum("nl,nlo->no", g, E)
        sens = g[:, :, None] * (E - f[:, None, :])
    else:
        g = jax.nn.sigmoid(score)
        f = jnp.einsum("nl,nlo->no", g, E)
        sens = (g * (1 - g))[:, :, None] * E
    sens = w[:, None, None] * sens
    J_S = jnp.einsum("nlo,nab->nolab", sens, XX).reshape(n, d_out, L * d * d)
    J_V = jnp.einsum("nl,na,op->nolap", w[:, None] * g, X, jnp.eye(d_out, dtype=X.dtype)).reshape(
        n, d_out, L * d * d_out
    )
    J_c = jnp.swapaxes(sens, 1, 2)
    J = jnp.concatenate([J_S, J_V, J_c], axis=-1).reshape(n * d_out, -1)
    r = (w[:, None] * (f - Y)).reshape(-1)
    return r @ r, J.T @ J, J.T @ r


def structured_normal_equations(model: Model, unravel: Callable, n: int) -> Callable:
    """(theta, (X, Y, weight), chunk_size) -> (R, J^T J, J^T r) of r = weight (f - Y) / sqrt(n),
    in closed form; the ``normal_eqs`` argument of ``LevenbergMarquardt.run``.

    ``unravel`` maps the flat raw parameters to the params pytree of ``model``. The row sums run
    over chunks of ``chunk_size`` rows (``None``: all at once), so memory is bounded at large n.
    """
    scale = 1.0 / math.sqrt(n)

    def flat_atoms(theta):
        return ravel_pytree(atoms(model, unravel(theta)))[0]

    def evaluate(theta, data, chunk_size):
        A = atoms(model, unravel(theta))
        terms = lambda *rows: atom_normal_equations(model.spec, model.base, A, *rows, scale)
        R, AtA, Atr = chunked_sum(terms, data, chunk_size)
        T = jax.jacfwd(flat_atoms)(theta)
        return R, T.T @ AtA @ T, T.T @ Atr

    return evaluate
