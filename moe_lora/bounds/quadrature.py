"""L2(mu) computed deterministically: tensor Gauss-Legendre quadrature, or a fixed sample."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..model import Atoms, regression_function
from ..parameterization import Model
from ..truth import Design, sample_inputs


class Quadrature(NamedTuple):
    """Nodes and probability weights standing in for mu: E_mu[g] ~ sum_q w_q g(x_q)."""

    X: Float[Array, "q d"]
    w: Float[Array, " q"]


def quadrature(
    d: int, design: Design, order: int, *, key: PRNGKeyArray, n_sample: int = 20000
) -> Quadrature:
    """Tensor Gauss-Legendre rule for mu on [-1, 1]^d (d <= 3), else a fixed sample of n_sample
    points.

    Uniform design: w_q = prod_k w_GL(x_qk) / 2^d. Truncated normal: the same nodes with weights
    proportional to w_GL times the density, normalised to sum 1. ``key`` draws the fallback sample
    (it is unused when quadrature applies). The integrands here (softmax of quadratics times linear
    experts) are analytic on the box, so the rule converges geometrically in ``order``.

    >>> import jax
    >>> q = quadrature(2, Design(), 8, key=jax.random.key(0))
    >>> # E[x^2] = 1/3
    >>> q.X.shape, round(float(q.w.sum()), 12), round(float(q.w @ q.X[:, 0] ** 2), 12)
    ((64, 2), 1.0, 0.333333333333)
    """
    if d > 3:
        X = sample_inputs(key, n_sample, d, design)
        return Quadrature(X, jnp.full(n_sample, 1.0 / n_sample, X.dtype))
    x, w = np.polynomial.legendre.leggauss(order)
    if design.kind == "truncated_normal":
        w = w * np.exp(-0.5 * (x / design.scale) ** 2)
    w = w / w.sum()
    grids = np.meshgrid(*([x] * d), indexing="ij")
    weights = np.meshgrid(*([w] * d), indexing="ij")
    X = np.stack([g.ravel() for g in grids], axis=1)
    W = np.prod(np.stack([g.ravel() for g in weights], axis=1), axis=1)
    dtype = jnp.result_type(float)
    return Quadrature(jnp.asarray(X, dtype), jnp.asarray(W, dtype))


def l2_distance(
    model: Model, atoms_: Atoms, true_model: Model, true_atoms: Atoms, quad: Quadrature
) -> Float[Array, ""]:
    """||f_G - f_G*||_{L2(mu)} = sqrt(sum_q w_q ||f_G(x_q) - f_G*(x_q)||^2)."""
    f = regression_function(model.spec, model.base, atoms_, quad.X)
    f_star = regression_function(true_model.spec, true_model.base, true_atoms, quad.X)
    return jnp.sqrt(quad.w @ jnp.sum((f - f_star) ** 2, axis=-1))
