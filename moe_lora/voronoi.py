"""Generic Voronoi loss between a fitted and a true mixing measure.

A mixing measure is a weight vector ``pi`` (L,) and named parameter blocks whose arrays have
leading axis L. Fitted atom i belongs to the cell A_j of the nearest true atom (Euclidean
distance of all blocks flattened and concatenated; ties go to the lower j) and::

    D = sum_j |sum_{i in A_j} pi_i - pi*_j|
        + sum_j sum_{i in A_j} pi_i sum_b ||b_i - b*_j||^{e_b(j)}

with ``e_b(j) = singleton`` if |A_j| == 1 else ``multi``. Exponents (1, 2) give the loss D of
the LoRA model, (r, r) give D_r. Everything is jit- and vmap-compatible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

Blocks = Mapping[str, Array]


class VoronoiLoss(NamedTuple):
    """Voronoi loss with its per-true-atom breakdown (``total = mass.sum() + parameter.sum()``).

    ``block_parameter[b]`` is block b's share of ``parameter`` (the shares sum to it up to
    round-off).
    """

    total: Float[Array, ""]
    mass: Float[Array, " L_star"]
    parameter: Float[Array, " L_star"]
    cell_size: Int[Array, " L_star"]
    cell: Int[Array, " L"]
    block_parameter: Mapping[str, Float[Array, " L_star"]] | None = None


class Exponents(NamedTuple):
    """Exponents of a block's parameter distance in singleton and multi-atom cells."""

    singleton: float
    multi: float


def _atom_count(blocks: Blocks, what: str) -> int:
    if not blocks:
        raise ValueError(f"{what} must contain at least one parameter block")
    counts = {name: (jnp.shape(x)[0] if jnp.ndim(x) else None) for name, x in blocks.items()}
    if len(set(counts.values())) != 1 or None in counts.values():
        raise ValueError(
            f"Blocks of {what} must share one leading (atom) axis, got leading sizes {counts}"
        )
    return next(iter(counts.values()))


def _flatten(blocks: Blocks, names: list[str], n: int) -> Float[Array, "n p"]:
    return jnp.concatenate([jnp.reshape(blocks[k], (n, -1)) for k in names], axis=1)


def _validate(weights, blocks: Blocks, true_weights, true_blocks: Blocks) -> list[str]:
    names = sorted(blocks)
    if set(blocks) != set(true_blocks):
        raise ValueError(
            f"Block names differ: fitted atoms have {sorted(blocks)}, true atoms "
            f"{sorted(true_blocks)}"
        )
    for w, b, what in (
        (weights, blocks, "fitted atoms"),
        (true_weights, true_blocks, "true atoms"),
    ):
        if jnp.ndim(w) != 1:
            raise ValueError(f"Weights of {what} must be 1-D, got shape {jnp.shape(w)}")
        n = _atom_count(b, what)
        if n != jnp.shape(w)[0]:
            raise ValueError(
                f"Blocks of {what} have {n} atoms but their weights have length {jnp.shape(w)[0]}"
            )
    for k in names:
        fitted, true = jnp.shape(blocks[k])[1:], jnp.shape(true_blocks[k])[1:]
        if fitted != true:
            raise ValueError(
                f"Shape mismatch for block '{k}': fitted atoms have {fitted} per atom, true atoms "
                f"{true}"
            )
    return names


def voronoi_cells(blocks: Blocks, true_blocks: Blocks) -> Int[Array, " L"]:
    """Index of the nearest true atom for each fitted atom: cell(i) = argmin_j ||theta_i -
    theta*_j||.

    Args:
        blocks: fitted parameter blocks, each of shape (L, ...).
        true_blocks: true parameter blocks with the same names, each of shape (L_star, ...).

    Returns:
        Integer array (L,); ties go to the lower true index.

    >>> import jax.numpy as jnp
    >>> fitted, true = {"a": jnp.array([[0.9], [0.1], [0.5]])}, {"a": jnp.array([[0.0], [1.0]])}
    >>> voronoi_cells(fitted, true).tolist()
    [1, 0, 0]
    """
    names = sorted(blocks)
    theta = _flatten(blocks, names, _atom_count(blocks, "fitted atoms"))
    theta_star = _flatten(true_blocks, names, _atom_count(true_blocks, "true atoms"))
    # Explicit differences rather than the Gram expansion so exact ties stay exact ties.
    sq_dist = jnp.sum((theta[:, None, :] - theta_star[None, :, :]) ** 2, axis=-1)
    return jnp.argmin(sq_dist, axis=1)


def _norm_power(diff: Array, exponent) -> Float[Array, " L"]:
    """||diff_i||^exponent per atom, with zero (not NaN) gradient at diff_i == 0."""
    sq = jnp.sum(jnp.reshape(diff, (diff.shape[0], -1)) ** 2, axis=1)
    positive = sq > 0
    safe = jnp.where(positive, sq, 1.0)
    return jnp.where(positive, safe ** (exponent / 2), 0.0)


def voronoi_loss(
    weights: Float[Array, " L"],
    blocks: Blocks,
    true_weights: Float[Array, " L_star"],
    true_blocks: Blocks,
    exponents: Mapping[str, Exponents],
) -> VoronoiLoss:
    """Voronoi loss D between (weights, blocks) and (true_weights, true_blocks).

    D = sum_j |sum_{i in A_j} pi_i - pi*_j| + sum_j sum_{i in A_j} pi_i sum_b ||b_i -
    b*_j||^{e_b(j)}, e_b(j) = exponents[b].singleton if |A_j| == 1 else exponents[b].multi; empty
    cells contribute only pi*_j. Shapes and exponents are checked eagerly (static information only).

    Args:
        weights: fitted mixture weights pi (L,).
        blocks: fitted parameter blocks, name -> (L, ...).
        true_weights: true weights pi* (L_star,).
        true_blocks: true parameter blocks, same names, name -> (L_star, ...).
        exponents: name -> Exponents(singleton, multi), both > 0, for exactly the block names.

    Returns:
        VoronoiLoss with the total, the per-true-atom mass and parameter terms, cell sizes and
        the cell of each fitted atom.

    >>> import jax.numpy as jnp
    >>> fitted, true = {"a": jnp.array([[0.1], [-0.2], [1.5]])}, {"a": jnp.array([[0.0], [1.0]])}
    >>> out = voronoi_loss(jnp.array([0.3, 0.2, 0.5]), fitted, jnp.array([0.5, 0.5]), true,
    ...                    {"a": Exponents(1, 2)})
    >>> round(float(out.total), 4)  # 0.3*0.1^2 + 0.2*0.2^2 + 0.5*0.5
    0.261
    """
    names = _validate(weights, blocks, true_weights, true_blocks)
    if set(exponents) != set(names):
        missing, extra = sorted(set(names) - set(exponents)), sorted(set(exponents) - set(names))
        raise ValueError(
            f"exponents must name exactly the blocks {names}: missing {missing}, extra {extra}"
        )
    exps = {k: Exponents(*exponents[k]) for k in names}
    for k, e in exps.items():
        for field, value in zip(Exponents._fields, e):
            # Traced exponents cannot be checked eagerly; concrete ones can.
            if not isinstance(value, jax.core.Tracer) and not float(value) > 0:
                raise ValueError(f"Exponent {field} of block '{k}' must be > 0, got {value!r}")

    # numpy inputs cannot be indexed by a traced cell array.
    weights, true_weights = jnp.asarray(weights), jnp.asarray(true_weights)
    blocks, true_blocks = ({k: jnp.asarray(b[k]) for k in names} for b in (blocks, true_blocks))
    L_star = true_weights.shape[0]
    cell = voronoi_cells(blocks, true_blocks)
    cell_size = jax.ops.segment_sum(jnp.ones_like(cell), cell, num_segments=L_star)
    mass = jnp.abs(jax.ops.segment_sum(weights, cell, num_segments=L_star) - true_weights)

    singleton = cell_size[cell] == 1
    per_block = {
        k: _norm_power(
            blocks[k] - true_blocks[k][cell], jnp.where(singleton, exps[k].singleton, exps[k].multi)
        )
        for k in names
    }
    parameter = jax.ops.segment_sum(weights * sum(per_block.values()), cell, num_segments=L_star)
    block_parameter = {
        k: jax.ops.segment_sum(weights * v, cell, num_segments=L_star) for k, v in per_block.items()
    }
    return VoronoiLoss(
        jnp.sum(mass) + jnp.sum(parameter), mass, parameter, cell_size, cell, block_parameter
    )


def check_distinct_atoms(true_blocks: Blocks, *, atol: float = 0.0) -> None:
    """Host-side check that no two true atoms coincide: ||theta*_j - theta*_l|| > atol for j != l.

    Args:
        true_blocks: true parameter blocks, name -> (L_star, ...), concrete arrays.
        atol: distances at or below this count as coinciding.

    Raises:
        ValueError: naming the first coinciding pair and its distance.

    >>> import numpy as np
    >>> check_distinct_atoms({"a": np.array([[0.0], [1.0]])})
    """
    names = sorted(true_blocks)
    theta = np.concatenate(
        [np.reshape(np.asarray(true_blocks[k]), (len(true_blocks[k]), -1)) for k in names], axis=1
    )
    dist = np.sqrt(np.sum((theta[:, None, :] - theta[None, :, :]) ** 2, axis=-1))
    close = np.argwhere(np.triu(dist <= atol, k=1))
    if close.size:
        j, l = close[0]
        raise ValueError(
            f"True atoms {j} and {l} coincide (distance {dist[j, l]:.3g} <= atol={atol}); their "
            "Voronoi "
            "cells are ambiguous, so the Voronoi loss is not invariant to relabelling the true "
            "atoms"
        )
