"""The pieces of a bound unit that the curves and their containment both use.

* ``cell_terms``: the loss D(G, G*) and the neighbourhood quantities of a fit;
* ``split_truth``, ``split_atoms``, ``Unravel``: the truth as L > L* raw atoms (extra atoms are
  copies), and flat vectors of such parameters;
* ``witness_problem``: the residual and the evaluation of one two-point search;
* ``has_parameters``, ``interpolate_modulus``: reading stored witness rows.

``moe_lora.bounds.curves`` computes a unit's curves and ``moe_lora.bounds.containment`` merges a
contained family's witnesses into vanilla's; both import from here, neither from the other's
privates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ..fit import split_biases, truth_in
from ..losses import align_gate_shift, lora_voronoi_loss
from ..model import Atoms, regression_function
from ..parameterization import Model, atoms
from ..truth import Truth
from ..voronoi import Exponents
from .config import D_LOSS, L2_FLOOR, BoundConfig
from .quadrature import Quadrature


def safe_norm(x, axis):
    """The Euclidean norm over ``axis``, with a zero (not NaN) derivative at 0."""
    sq = jnp.sum(x**2, axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


class CellTerms(NamedTuple):
    """The loss and the neighbourhood quantities of a fit (cells of the aligned atoms)."""

    loss: Float[Array, ""]
    distance: Float[Array, " L"]
    gate_gap: Float[Array, "L L"]
    cell: Array


def cell_terms(atoms_: Atoms, true_atoms: Atoms, exponents: Exponents, gating: str) -> CellTerms:
    """D(G, G*) (``losses.lora_voronoi_loss``, gauge-aligned by ``losses.align_gate_shift``), each
    aligned atom's distance ||(S_i + Q, V_i) - (S*, V*)_cell(i)|| and the gate gaps ||S_i - S_k||.

    The alignment's cell loop is a ``lax.while_loop``: it has forward-mode derivatives (what
    ``LevenbergMarquardt`` uses, ``jax.jacfwd``) but no reverse-mode ones.
    """
    aligned = align_gate_shift(atoms_, true_atoms) if gating == "softmax" else atoms_
    out = lora_voronoi_loss(aligned, true_atoms, gating, exponents, align=False)
    dS, dV = aligned.S - true_atoms.S[out.cell], aligned.V - true_atoms.V[out.cell]
    flat = jnp.concatenate([dS.reshape(dS.shape[0], -1), dV.reshape(dV.shape[0], -1)], axis=1)
    gap = safe_norm(atoms_.S[:, None] - atoms_.S[None, :], axis=(-2, -1))
    return CellTerms(out.total, safe_norm(flat, axis=1), gap, out.cell)


def split_truth(estimator: Model, truth: Truth, n_components: int):
    """The truth's raw parameters in ``estimator`` as ``n_components`` atoms: the extra atoms are
    copies of true atom 0 (``_split``). The template of every flat theta of ``n_components``."""
    L_star = truth.atoms.c.shape[0]
    parent = np.concatenate([np.arange(L_star), np.zeros(n_components - L_star, int)])
    return split_atoms(estimator, truth_in(estimator, truth), parent)


def split_atoms(estimator: Model, true_params, parent):
    """Raw parameters with atom i a copy of true atom parent[i]; copies share their parent's
    weight."""
    fields = [x[parent] for x in true_params[:-1]]
    return type(true_params)(*fields, split_biases(estimator, true_params.c, parent))


def witness_problem(
    estimator: Model, true_atoms: Atoms, quad: Quadrature, f_star, unravel, config: BoundConfig
):
    gating = estimator.spec.gating
    sqrt_w = jnp.sqrt(quad.w)[:, None]
    L = unravel.n_components
    pairs = np.triu_indices(L, k=1)

    def atoms_of(theta):
        return atoms(estimator, unravel(theta))

    def violations(a, radius):
        terms = cell_terms(a, true_atoms, D_LOSS, gating)
        outside = jax.nn.relu(terms.distance - radius)
        if config.kappa is None:
            return terms, outside, jnp.zeros(0, outside.dtype)
        same = (terms.cell[pairs[0]] == terms.cell[pairs[1]]).astype(outside.dtype)
        return terms, outside, same * jax.nn.relu(config.kappa - terms.gate_gap[pairs])

    def residual(theta, cell, eps, exps):
        # ``cell`` is the previous round's cell assignment: the loss reassigns cells itself (on the
        # aligned atoms), so a round only restarts the solve; rounds end when cells stop changing.
        a = atoms_of(theta)
        f = regression_function(estimator.spec, estimator.base, a, quad.X)
        loss = cell_terms(a, true_atoms, exps, gating).loss
        _, outside, close = violations(a, config.radius)
        return jnp.concatenate(
            [
                (sqrt_w * (f - f_star)).ravel(),
                jnp.sqrt(config.penalty) * ((loss - eps) / eps)[None],
                jnp.sqrt(config.barrier) * outside,
                jnp.sqrt(config.barrier) * close,
            ]
        )

    def evaluate(theta, exps):
        a = atoms_of(theta)
        terms, outside, close = violations(a, config.radius)
        total = cell_terms(a, true_atoms, exps, gating).loss
        l2 = jnp.sqrt(
            quad.w
            @ jnp.sum(
                (regression_function(estimator.spec, estimator.base, a, quad.X) - f_star) ** 2, -1
            )
        )
        return a, total, terms.cell, l2, jnp.maximum(jnp.max(outside), jnp.max(close, initial=0.0))

    return residual, evaluate


class Unravel:
    """``unravel`` of a flat raw-parameter vector, carrying the number of components."""

    def __init__(self, template):
        self.n_components = template.c.shape[0]
        self._unravel = ravel_pytree(template)[1]

    def __call__(self, theta):
        return self._unravel(theta)


def has_parameters(theta) -> bool:
    """Whether a bound row's ``theta`` holds a witness's raw parameters (rows of G* itself, and
    rows read from units computed before ``theta`` was stored, hold None or NaN)."""
    return isinstance(theta, (list, tuple, np.ndarray)) and len(theta) > 0


def interpolate_modulus(m_curve, eta: float) -> float:
    """sup { eps : m(eps) <= eta } on the m-curve interpolated log-log between its points (eps_i,
    m_i).

    A target whose m is at the round-off floor (``L2_FLOOR``) counts as m = 0 (an exact flat
    witness): every eta reaches it. 0 when no point qualifies.

    >>> round(interpolate_modulus([(0.01, 1e-4), (0.1, 1e-2)], 1e-3), 6)  # halfway in log
    0.031623
    """
    pts = sorted((e, max(m, 0.0)) for e, m in m_curve)
    best = 0.0
    for (e0, m0), (e1, m1) in zip(pts, pts[1:] + [(None, None)]):
        if m0 <= max(eta, L2_FLOOR):
            best = max(best, e0)
            if e1 is not None and m1 > eta and m0 > L2_FLOOR and m1 > m0:
                t = (np.log(eta) - np.log(m0)) / (np.log(m1) - np.log(m0))
                best = max(best, float(np.exp(np.log(e0) + t * (np.log(e1) - np.log(e0)))))
    return float(best)
