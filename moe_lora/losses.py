"""LoRA losses: the Voronoi losses D and D_r of docs/model.md, "Losses", and the L2 function error.

Both Voronoi losses are configurations of the generic ``moe_lora.voronoi.voronoi_loss`` with
blocks ``{"S": S, "V": V}`` and weights ``pi = mixture_weights(c)``:

* ``D``: exponents 1 in singleton cells and 2 in multi-atom cells, for both blocks;
* ``D_r``: exponent r everywhere.

Under softmax gating the gates are identified only up to a common symmetric shift Q; the fit
is aligned first (``align_gate_shift``) and the unaligned value is kept as a diagnostic.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .model import Atoms, mixture_weights, regression_function
from .parameterization import Model
from .voronoi import Exponents, VoronoiLoss, voronoi_cells, voronoi_loss

D_EXPONENTS = Exponents(singleton=1.0, multi=2.0)


def align_gate_shift(atoms: Atoms, true_atoms: Atoms, max_rounds: int = 20) -> Atoms:
    """Shift every fitted gate by the pi-weighted least-squares Q given the Voronoi cells.

    Q = -sum_i pi_i (S_i - S*_{cell(i)}) / sum_i pi_i; cells are then reassigned on the aligned
    atoms and Q recomputed from the unaligned ones, until the cells stop changing (at most
    ``max_rounds`` rounds). Only meaningful under softmax gating, where f is unchanged by a
    common shift of the S_j.
    """
    pi = jax.nn.softmax(atoms.c)
    true_blocks = {"S": true_atoms.S, "V": true_atoms.V}

    def shift(cell):
        dS = atoms.S - true_atoms.S[cell]
        return -jnp.einsum("i,ijk->jk", pi, dS) / jnp.sum(pi)

    def cells_after(Q):
        return voronoi_cells({"S": atoms.S + Q[None], "V": atoms.V}, true_blocks)

    def cond(state):
        k, cell, previous = state
        return (k == 0) | ((k < max_rounds) & jnp.any(cell != previous))

    def body(state):
        k, cell, _ = state
        return k + 1, cells_after(shift(cell)), cell

    cell0 = cells_after(jnp.zeros_like(atoms.S[0]))
    _, cell, _ = jax.lax.while_loop(cond, body, (0, cell0, cell0))
    return atoms._replace(S=atoms.S + shift(cell)[None])


def lora_voronoi_loss(
    atoms: Atoms,
    true_atoms: Atoms,
    gating: str,
    exponents: Exponents = D_EXPONENTS,
    *,
    align: bool = True,
) -> VoronoiLoss:
    """Voronoi loss between fitted and true LoRA atoms (D by default, D_r with ``Exponents(r, r)``).

    With ``align=True`` and softmax gating the fitted gates are first aligned by
    ``align_gate_shift``; under sigmoid gating there is no such invariance and nothing is shifted.
    """
    if align and gating == "softmax":
        atoms = align_gate_shift(atoms, true_atoms)
    return voronoi_loss(
        mixture_weights(atoms.c, gating),
        {"S": atoms.S, "V": atoms.V},
        mixture_weights(true_atoms.c, gating),
        {"S": true_atoms.S, "V": true_atoms.V},
        {"S": exponents, "V": exponents},
    )


class Scores(NamedTuple):
    """Losses of one fit against the truth."""

    D: VoronoiLoss
    D_unaligned: Float[Array, ""]
    l2_error: Float[Array, ""]


def l2_error(
    model: Model, atoms: Atoms, truth_model: Model, true_atoms: Atoms, X_eval: Float[Array, "m d"]
) -> Float[Array, ""]:
    """||f_G - f_{G*}||_{L2(mu)}, estimated on a fixed held-out sample X_eval ~ mu."""
    f = regression_function(model.spec, model.base, atoms, X_eval)
    f_star = regression_function(truth_model.spec, truth_model.base, true_atoms, X_eval)
    return jnp.sqrt(jnp.mean(jnp.sum((f - f_star) ** 2, axis=-1)))


def score(
    model: Model, atoms: Atoms, truth_model: Model, true_atoms: Atoms, X_eval: Float[Array, "m d"]
) -> Scores:
    """D (aligned, with per-cell breakdown), D unaligned, and the L2 function error."""
    gating = model.spec.gating
    return Scores(
        D=lora_voronoi_loss(atoms, true_atoms, gating),
        D_unaligned=lora_voronoi_loss(atoms, true_atoms, gating, align=False).total,
        l2_error=l2_error(model, atoms, truth_model, true_atoms, X_eval),
    )
