"""Lower-bound curves: the modulus of continuity of G -> f_G against the Voronoi loss, computed.

The minimax lower bounds of the theory (docs/model.md, "The two-point curve") rest on one
quantity. For a truth G* with L* atoms, an estimator family with L >= L* atoms and a loss D:

    M(eta) = sup { D(G, G*) : ||f_G - f_G*||_{L2(mu)} <= eta,  G in N(G*) }
    m(eps) = inf { ||f_G - f_G*||_{L2(mu)} : D(G, G*) = eps,  G in N(G*) }

N(G*) is the neighbourhood: every fitted atom (gauge-aligned S_i, V_i) lies within ``radius`` of
the true atom of its Voronoi cell, inside the compact parameter space of the family; optionally
(``kappa``) fitted atoms sharing a cell keep their gates at least kappa apart, which removes the
exact flat set of over-specified vanilla LoRA.

How it is computed:

* L2(mu) deterministically: tensor Gauss-Legendre quadrature (uniform or truncated-normal design,
  d <= 3), a large fixed sample otherwise (``quadrature``).
* m(eps) as a least-squares problem in residual form, solved by ``LevenbergMarquardt``:
  residuals sqrt(w_q) (f_G(x_q) - f*(x_q)), sqrt(penalty) (D(G) - eps) / eps and
  sqrt(barrier) relu(dist_i - radius) (plus relu(kappa - ||S_i - S_k||) for same-cell pairs).
  D is the core's (``losses.lora_voronoi_loss`` after ``losses.align_gate_shift``, whose cell loop
  has forward-mode derivatives, what LM uses); it is only piecewise smooth, so a solve is repeated
  from its end point until the cells stop changing (``cells_stable`` in the result).
* M(eta) as the monotone envelope of the witnesses: every solved G (every eps target, every start)
  is a point (D(G, G*), ||f_G - f*||), evaluated with the true (re-aligned) D; M(eta) is the largest
  D among witnesses inside N(G*) with L2 <= eta. Each such value is attained by an explicit G, so it
  is a certified lower bound on the true M(eta) (up to the quadrature error).
* Starts, vmapped over (eps, start): split-truth starts, starts along the shared-gate flat
  directions (vanilla: ``witnesses.split_witness``, exactly flat; shared maps: opposite latent moves
  and the fiber chords of ``witnesses.trace_fiber`` / ``chord_starts``) and random perturbations.

Le Cam's two-point lemma (``le_cam_lower_bound``): if D(G1, G0) <= C (D(G, G0) + D(G, G1)) for all
G (the weak triangle inequality; C measured from below by ``triangle_ratios`` on random triples
and ``witness_path_triangle`` along the witnesses' paths, the larger kept: ``with_path_triangle``),
then for any estimator G_n
from n samples,

    max_{i=0,1} E_{G_i} D(G_n, G_i) >= D(G1, G0) / (2 C) * (1 - TV(P_0^n, P_1^n)),

and with Gaussian noise TV <= sqrt(KL / 2) = sqrt(n) ||f_G1 - f_G0|| / (2 sigma) (Pinsker). With
||f_G1 - f_G0|| <= c sigma / sqrt(n): LB(n) = (1 - c / 2) M(c sigma / sqrt(n)) / (2 C).
``le_cam_best_c`` takes the best c per n; an exact flat witness has TV = 0 and gives D / (2 C) at
every n (``le_cam_flat``). C is not uniform: ``split_path_triangle`` measures it along vanilla's
split paths as a function of the radius.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray

from ..fit import truth_in
from ..losses import lora_voronoi_loss
from ..model import Atoms, mixture_weights, regression_function
from ..optimize import MAX_ITER, STOP_REASONS, LevenbergMarquardt, Stats
from ..parameterization import Model, Vanilla, atoms, canonicalize
from ..truth import Design, Truth
from ..voronoi import Exponents
from .config import D_LOSS, L2_FLOOR, BoundConfig, loss_exponents
from .containment import contained_in_vanilla, with_flat_set
from .problem import (
    Unravel,
    has_parameters,
    interpolate_modulus,
    safe_norm,
    split_atoms,
    split_truth,
    witness_problem,
)
from .quadrature import Quadrature, quadrature
from .witnesses import chord_starts, flat_params, split_witness, trace_fiber

# --------------------------------------------------------------------------------------------
# Starts


def _expert_fields(estimator: Model) -> tuple[str, ...]:
    """Raw fields moved along the shared-gate directions: vanilla's expert factor B_V; shared: a,
    b."""
    return ("B_V",) if isinstance(estimator.parameterization, Vanilla) else ("a", "b")


def starts(
    key: PRNGKeyArray,
    estimator: Model,
    true_params,
    n_components: int,
    eps,
    config: BoundConfig,
    exponents: Exponents = D_LOSS,
):
    """All starts for one eps target, stacked on a leading axis (split, then flat, then random).

    Perturbations are sized so that the loss starts near eps: s1 = start_scale eps^(1/e_singleton)
    (a singleton cell's term is pi ||Delta||^e_singleton), s2 = start_scale eps^(1/e_multi).

    * split: the true atoms with the L - L* extra atoms copies of true atom k mod L* (weights
      shared), every raw field but c perturbed by N(0, s1^2);
    * flat: the extra atoms copies of one true atom with its gate fields untouched and the expert
      fields moved by +u on the parent and -u on its copies, u ~ N(0, s2^2). Vanilla with one copy:
      ``witnesses.split_witness``, exactly on the flat set; shared: the latents a, b moved (first
      order only; ``solve_witnesses`` adds the fiber-chord starts of ``witnesses``);
    * random: all fields, c included, perturbed by N(0, s2^2).
    """
    L_star = true_params.c.shape[0]
    s1 = config.start_scale * eps ** (1 / exponents.singleton)
    s2 = config.start_scale * eps ** (1 / exponents.multi)
    out = []
    keys = iter(jax.random.split(key, config.n_starts - 1))

    def parents(k):
        return np.concatenate([np.arange(L_star), np.full(n_components - L_star, k % L_star, int)])

    for k in range(config.split_starts):
        base = split_atoms(estimator, true_params, parents(k))
        ks = jax.random.split(next(keys), len(base))
        out.append(
            type(base)(
                *[
                    x + s1 * jax.random.normal(kk, x.shape, x.dtype)
                    for kk, x in zip(ks[:-1], base[:-1])
                ],
                base.c,
            )
        )
    heaviest = jnp.argsort(-mixture_weights(true_params.c, estimator.spec.gating))
    vanilla = isinstance(estimator.parameterization, Vanilla)
    for k in range(config.flat_starts):
        j = heaviest[k % L_star]
        if vanilla and n_components == L_star + 1:
            # exactly on the flat set (witnesses.split_witness), sized so that pi_j ||u
            # A_Vj||^e_multi = eps
            u = jax.random.normal(next(keys), true_params.B_V.shape[1:], true_params.B_V.dtype)
            A_V = estimator.parameterization.to_compact(true_params).A_V[j]
            pi_j = mixture_weights(
                estimator.parameterization.to_compact(true_params).c, estimator.spec.gating
            )[j]
            size = safe_norm(u @ A_V, axis=(0, 1))
            u = u * jnp.where(
                size > 0,
                (eps / pi_j) ** (1 / exponents.multi) / jnp.where(size > 0, size, 1.0),
                1.0,
            )
            out.append(split_witness(estimator, true_params, j, u))
            continue
        parent = jnp.concatenate([jnp.arange(L_star), jnp.full(n_components - L_star, j)])
        base = split_atoms(estimator, true_params, parent)
        sign = jnp.where(
            jnp.arange(n_components) == j, 1.0, jnp.where(jnp.asarray(parent) == j, -1.0, 0.0)
        )
        ks = iter(jax.random.split(next(keys), len(base)))
        fields = []
        for name, x in zip(base._fields, base):
            if name in _expert_fields(estimator):
                u = s2 * jax.random.normal(next(ks), x.shape[1:], x.dtype)
                x = x + sign.reshape((-1,) + (1,) * (x.ndim - 1)) * u[None]
            fields.append(x)
        out.append(type(base)(*fields))
    for k in range(config.random_starts):
        base = split_atoms(estimator, true_params, parents(k))
        ks = jax.random.split(next(keys), len(base))
        out.append(
            type(base)(
                *[x + s2 * jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(ks, base)]
            )
        )
    return jax.tree.map(lambda *xs: jnp.stack(xs), *out)


_all_starts = jax.jit(
    jax.vmap(starts, in_axes=(0, None, None, None, 0, None, None)), static_argnums=(3, 5)
)


# --------------------------------------------------------------------------------------------
# The solver


class Witness(NamedTuple):
    """One solved G: its raw parameters, loss, L2 distance and certificate (leading batch axes)."""

    theta: Float[Array, "... P"]
    D: Float[Array, ...]
    l2: Float[Array, ...]
    neighbourhood_violation: Float[Array, ...]
    rel_grad: Float[Array, ...]
    stop_reason: Float[Array, ...]
    iterations: Float[Array, ...]
    rounds: Float[Array, ...]
    cells_stable: Float[Array, ...]
    atoms: Atoms


@functools.partial(jax.jit, static_argnames=("config",))
def _solve(
    estimator: Model,
    true_atoms: Atoms,
    quad: Quadrature,
    template,
    thetas0,
    eps,
    exps,
    config: BoundConfig,
):
    """Solve every (eps, start) problem: thetas0 (E, K, P), eps (E,). One jitted unit."""
    unravel = Unravel(template)
    f_star = regression_function(estimator.spec, estimator.base, true_atoms, quad.X)
    residual, evaluate = witness_problem(estimator, true_atoms, quad, f_star, unravel, config)
    lm = LevenbergMarquardt(max_iter=config.max_iter, gtol=config.gtol, xtol=1e-15)
    canonical = lambda theta: ravel_pytree(canonicalize(estimator, unravel(theta)))[0]
    dtype = quad.X.dtype
    zero_stats = Stats(
        jnp.zeros((), dtype),
        jnp.zeros((), dtype),
        jnp.full((), jnp.inf, dtype),
        jnp.zeros((), jnp.int32),
        jnp.full((), MAX_ITER, jnp.int32),
    )

    def one(theta0, target):
        def cond(state):
            k, _, _, _, stable = state
            return (k < config.cell_rounds) & ~stable

        def body(state):
            k, theta, cell, _, _ = state
            theta, stats = lm.run(
                lambda t: residual(t, cell, target, exps),
                theta,
                canonical if config.canonicalize else None,
            )
            stats = jax.tree.map(lambda new, old: new.astype(old.dtype), stats, zero_stats)
            new_cell = evaluate(theta, exps)[2]
            return k + 1, theta, new_cell, stats, jnp.all(new_cell == cell)

        cell0 = evaluate(theta0, exps)[2]
        state = (jnp.zeros((), jnp.int32), theta0, cell0, zero_stats, jnp.zeros((), bool))
        k, theta, _, stats, stable = jax.lax.while_loop(cond, body, state)
        a, D, _, l2, outside = evaluate(theta, exps)
        return Witness(
            theta, D, l2, outside, stats.rel_grad, stats.stop_reason, stats.iterations, k, stable, a
        )

    return jax.vmap(jax.vmap(one, in_axes=(0, None)))(thetas0, eps)


def _chord_seeds(
    estimator: Model, true_params, n_components: int, config: BoundConfig
) -> np.ndarray:
    """Flat starts of the shared maps: fiber chords of the heaviest true atoms (``witnesses``),
    all L - L* extra atoms in one cell; (C, P) flat raw vectors, none for vanilla."""
    if isinstance(estimator.parameterization, Vanilla) or config.flat_starts == 0:
        return np.zeros((0,))
    L_star = true_params.c.shape[0]
    k = n_components - L_star + 1
    order = np.argsort(-np.asarray(mixture_weights(true_params.c, estimator.spec.gating)))
    out = []
    for m in range(config.flat_starts):
        j = int(order[m % L_star])
        points = trace_fiber(estimator, true_params, j, key=jax.random.key(m))
        chords = chord_starts(estimator, true_params, j, k, points, 1)
        for theta in chords:
            lam = np.asarray(jax.nn.softmax(jnp.asarray(theta[-k:])))
            full = flat_params(estimator, true_params, j, k, theta, lam)
            out.append(np.asarray(ravel_pytree(full)[0]))
    return np.stack(out) if out else np.zeros((0,))


def solve_witnesses(
    key: PRNGKeyArray,
    truth: Truth,
    estimator: Model,
    n_components: int,
    loss: str,
    config: BoundConfig,
    *,
    quad: Quadrature | None = None,
    epsilons=None,
) -> Witness:
    """Solve m(eps) for every eps in ``epsilons`` (default ``config.epsilons``) from every start:
    a Witness with axes (E, K + 1).

    The first K starts per target are those of ``starts``; the last is a second pass from the best
    witness of a larger target scaled back towards the truth (see the comment in the code).

    Raises ``ValueError`` for L < L*, an estimator family that does not contain the truth, or a bad
    loss.
    """
    exps = loss_exponents(loss)
    L_star = truth.atoms.c.shape[0]
    if not isinstance(n_components, (int, np.integer)) or n_components < L_star:
        raise ValueError(
            f"n_components L = {n_components!r} is below the truth's L* = {L_star}; expected L >= "
            "L*"
        )
    true_params = truth_in(estimator, truth)
    if quad is None:
        quad = quadrature(
            estimator.spec.d,
            Design(),
            config.quadrature_order,
            key=jax.random.fold_in(key, 1),
            n_sample=config.n_sample,
        )
    epsilons = tuple(config.epsilons if epsilons is None else (float(e) for e in epsilons))
    eps = jnp.asarray(epsilons, quad.X.dtype)
    keys = jax.random.split(jax.random.fold_in(key, 0), len(epsilons))
    exps_array = Exponents(*(jnp.asarray(x, quad.X.dtype) for x in exps))
    stacked = _all_starts(keys, estimator, true_params, int(n_components), eps, config, exps_array)
    thetas0 = jax.vmap(jax.vmap(lambda p: ravel_pytree(p)[0]))(stacked)
    seeds = _chord_seeds(estimator, true_params, int(n_components), config)
    if len(seeds):
        seeds = jnp.broadcast_to(
            jnp.asarray(seeds, thetas0.dtype), (thetas0.shape[0],) + seeds.shape
        )
        thetas0 = jnp.concatenate([thetas0, seeds], axis=1)
    template = jax.tree.map(lambda x: x[0, 0], stacked)
    first = _solve(estimator, truth.atoms, quad, template, thetas0, eps, exps_array, config)
    # Second pass, one start per target: the best witness of a larger target (least L2 per unit of
    # loss) scaled back towards the truth, theta_base + t (theta_w - theta_base), t = (eps / D_w)^(1
    # / e_singleton). Near G* the loss and the L2 distance both scale with the displacement, so this
    # start carries the cheapest direction found at a large eps down to the small ones, where
    # independent starts often fail.
    base = ravel_pytree(canonicalize(estimator, split_truth(estimator, truth, n_components)))[0]
    D, l2 = np.asarray(first.D), np.asarray(first.l2)
    targets = np.asarray(epsilons)
    ok = (np.asarray(first.neighbourhood_violation) <= config.neighbourhood_tol) & (
        np.abs(D / targets[:, None] - 1) <= config.constraint_tol
    )
    flat_theta, flat_D = np.asarray(first.theta).reshape(-1, base.shape[0]), D.ravel()
    ratio = np.where(ok, l2 / D, np.inf).ravel()
    rescaled = []
    for target in targets:
        pick = np.where(flat_D > target, ratio, np.inf)
        k = int(np.argmin(pick)) if np.isfinite(pick).any() else int(np.argmin(ratio))
        t = (target / flat_D[k]) ** (1 / exps.singleton) if np.isfinite(ratio[k]) else 1.0
        rescaled.append(base + t * (flat_theta[k] - base))
    second = _solve(
        estimator,
        truth.atoms,
        quad,
        template,
        jnp.asarray(np.stack(rescaled))[:, None],
        eps,
        exps_array,
        config,
    )
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), first, second)


# --------------------------------------------------------------------------------------------
# From witnesses to curves


def modulus_from_witnesses(D, l2, etas) -> np.ndarray:
    """M(eta) >= max { D_k : l2_k <= eta } for each eta (0 where no witness qualifies: G* itself).

    >>> D, L2 = [0.1, 0.5, 0.3], [1e-6, 1e-2, 1e-4]
    >>> modulus_from_witnesses(D, L2, [1e-8, 1e-5, 1e-3, 1.0]).tolist()
    [0.0, 0.1, 0.3, 0.5]
    """
    D, l2, etas = (np.asarray(x, float).ravel() for x in (D, l2, etas))
    ok = np.isfinite(D) & np.isfinite(l2)
    D, l2 = D[ok], l2[ok]
    return np.array([np.max(D[l2 <= eta], initial=0.0) for eta in etas])


def le_cam_lower_bound(D, l2, n, sigma: float, constant: float, c: float = 1.0) -> np.ndarray:
    """Two-point lower bound on any estimator's worst-case E[D] at sample sizes n.

    LB(n) = (1 - c / 2) M(c sigma / sqrt(n)) / (2 C), with M from the witnesses (D_k, l2_k),
    C the weak triangle constant and 0 < c < 2 (Pinsker: TV <= c / 2). See the module docstring.

    >>> le_cam_lower_bound([0.4], [1e-3], [1e2, 1e6], sigma=0.02, constant=2.0).tolist()
    [0.05, 0.0]
    """
    if not (0 < c < 2):
        raise ValueError(f"c must lie in (0, 2), got {c!r}")
    if not constant >= 1:
        raise ValueError(f"The weak triangle constant must be >= 1, got {constant!r}")
    n = np.asarray(n, float)
    return (1 - c / 2) * modulus_from_witnesses(D, l2, c * sigma / np.sqrt(n)) / (2 * constant)


def le_cam_best_c(
    D, l2, n, sigma: float, constant: float, cs=np.linspace(0.05, 1.95, 39)
) -> np.ndarray:
    """The two-point bound with c chosen per n: max over c of (1 - c / 2) M(c sigma / sqrt(n)) / (2
    C).

    Witnesses at the round-off floor (l2 <= L2_FLOOR: exact flat witnesses, f_G1 = f_G0) have TV =
    0, so they give D / (2 C) at every n (``le_cam_flat``); the maximum with them is taken too.

    >>> le_cam_best_c([0.4], [1e-3], [1e2], sigma=0.02, constant=1.0).round(4).tolist()
    [0.15]
    """
    n = np.asarray(n, float)
    best = np.max([le_cam_lower_bound(D, l2, n, sigma, constant, c) for c in cs], axis=0)
    return np.maximum(best, le_cam_flat(D, l2, constant))


def le_cam_flat(D, l2, constant: float) -> float:
    """Le Cam with TV = 0: the largest D of an exact flat witness (l2 <= L2_FLOOR), over 2 C.

    Two mixing measures with the same f give the same data distribution, so no estimator can do
    better than D(G1, G0) / (2 C) at any n.

    >>> le_cam_flat([0.1, 0.4], [1e-16, 1e-3], 1.0)
    0.05
    """
    D, l2 = np.asarray(D, float).ravel(), np.asarray(l2, float).ravel()
    flat = np.isfinite(D) & (l2 <= L2_FLOOR)
    return float(np.max(D[flat], initial=0.0) / (2 * constant))


def vanilla_flat_modulus(pi_star, radius, extra: int = 1) -> np.ndarray:
    """Vanilla's flat-set M at every eta > 0: (sum of the ``extra`` largest pi*_j) radius^2.

    The split of true atom j into copies with its gate and experts V*_j +- delta, ||delta|| =
    radius, has f_G = f_G* and D = pi*_j radius^2; one extra atom per split cell. It holds while the
    copies stay in their cells (radius below half the atoms' separation) and the factors in the
    compact space.

    >>> vanilla_flat_modulus([0.4, 0.6], [0.5, 1.0]).tolist()
    [0.15, 0.6]
    """
    top = np.sort(np.asarray(pi_star, float))[::-1][: int(extra)].sum()
    return top * np.asarray(radius, float) ** 2


def split_path_triangle(
    truth: Truth, estimator: Model, radii, loss: str = "D", points: int = 64
) -> np.ndarray:
    """The weak triangle constant along vanilla's split paths, as a function of the radius.

    G0 = G*, G1 the split of the heaviest true atom with expert moves +-delta, ||delta A_V|| = rho
    (``witnesses.split_witness``), and G the splits at s delta, s in (0, 1] (and G* shifted by
    -s delta, s in (0, 1]): returns max over the path of D(G1, G0) / (D(G, G0) + D(G, G1)) per rho.
    """
    if not isinstance(estimator.parameterization, Vanilla):
        raise ValueError(
            "split_path_triangle follows vanilla's split; got " + estimator.parameterization.name
        )
    exps = loss_exponents(loss)
    tp = truth_in(estimator, truth)
    gating = estimator.spec.gating
    j = int(np.argmax(np.asarray(mixture_weights(truth.atoms.c, gating))))
    A_V = np.asarray(estimator.parameterization.to_compact(tp).A_V[j])
    u = A_V.T / np.linalg.norm(A_V)  # B_V move whose expert move has unit norm (r = 1 direction)
    u = (
        u[:, : tp.B_V.shape[-1]]
        if u.shape[1] >= tp.B_V.shape[-1]
        else np.pad(u, ((0, 0), (0, tp.B_V.shape[-1] - u.shape[1])))
    )
    u = u / max(np.linalg.norm(u @ A_V), 1e-300)
    out = []
    for rho in np.atleast_1d(radii):
        G1 = atoms(estimator, split_witness(estimator, tp, j, rho * u))
        top = float(lora_voronoi_loss(G1, truth.atoms, gating, exps).total)
        ratios = []
        for s_ in np.linspace(-1, 1, points):
            G = atoms(estimator, split_witness(estimator, tp, j, s_ * rho * u))
            ratios.append(
                top
                / (
                    float(lora_voronoi_loss(G, truth.atoms, gating, exps).total)
                    + float(lora_voronoi_loss(G, G1, gating, exps).total)
                )
            )
        out.append(max(ratios))
    return np.array(out)


def witness_path_triangle(
    truth: Truth,
    estimator: Model,
    n_components: int,
    thetas,
    loss: str = "D",
    points: int = 64,
) -> np.ndarray:
    """The weak triangle constant along the paths from the split truth to witnesses, any family.

    For each witness, a flat raw-parameter vector of ``estimator`` with ``n_components`` atoms as
    a bound row stores it (``theta``): G0 = G*, G1 the witness, and G on the straight path, in the
    compact space (``Parameterization.to_compact``), w(s) = base + s (w - base), s in [-1, 1]
    (``points`` values), from the split truth ``base`` (s = 0: the truth's function) through the
    witness (s = 1) and as far on the other side. ``base`` is the split truth whose extra atoms copy
    the true atom that puts it nearest the witness. Returns, per witness, the max over the path of
    D(G1, G0) / (D(G, G0) + D(G, G1)): a lower estimate of C, as ``triangle_ratios`` is, on the
    paths the witnesses lie on. On vanilla's split witness it is ``split_path_triangle``. A
    witness with two identical atoms has D(G1, G1) > 0 (the Voronoi cells of G1 give one copy
    every atom), so its ratio is not a triangle ratio: such witnesses give NaN.
    """
    exps = loss_exponents(loss)
    par, L = estimator.parameterization, int(n_components)
    true_params = truth_in(estimator, truth)
    L_star = true_params.c.shape[0]
    template = split_truth(estimator, truth, L)
    unravel = ravel_pytree(template)[1]
    compact = lambda theta: ravel_pytree(par.to_compact(unravel(theta)))[0]
    unravel_compact = ravel_pytree(par.to_compact(template))[1]
    bases = jnp.stack(
        [
            compact(
                ravel_pytree(
                    split_atoms(
                        estimator,
                        true_params,
                        np.concatenate([np.arange(L_star), np.full(L - L_star, k)]),
                    )
                )[0]
            )
            for k in range(L_star)
        ]
    )
    W = np.asarray([np.asarray(t, float) for t in thetas])
    if W.ndim != 2 or W.shape[1] != bases.shape[1]:
        raise ValueError(
            f"thetas must be flat vectors of {bases.shape[1]} raw parameters ({L} atoms of "
            f"{par.name}), got shape {W.shape}"
        )
    gating = estimator.spec.gating
    D = lambda G, H: lora_voronoi_loss(G, H, gating, exps).total
    G_of = lambda w: atoms(estimator, par.from_compact(unravel_compact(w)))
    s_grid = jnp.linspace(-1.0, 1.0, points)

    def one(theta_w):
        w = compact(theta_w)
        base = bases[jnp.argmin(jnp.sum((bases - w[None, :]) ** 2, axis=1))]
        G1 = G_of(w)
        top = jnp.where(D(G1, G1) > 1e-12 * jnp.maximum(D(G1, truth.atoms), 1e-300), jnp.nan, 1.0)
        top = top * D(G1, truth.atoms)

        def ratio(s):
            G = G_of(base + s * (w - base))
            return top / (D(G, truth.atoms) + D(G, G1))

        return jnp.max(jax.vmap(ratio)(s_grid))

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(W, bases.dtype)))


def with_path_triangle(truth: Truth, estimator: Model, rows: pd.DataFrame, points: int = 64):
    """A unit's rows with ``triangle_constant`` raised, per loss, to the largest ratio along its
    own witnesses' paths (``witness_path_triangle``, column ``triangle_path``; NaN where no witness
    of that loss carries parameters). The random triples' value is kept as ``triangle_random``.

    Le Cam's bound needs C at least the supremum of D(G1, G0) / (D(G, G0) + D(G, G1)). The random
    triples (``triangle_ratios``) and the witness paths both estimate it from below, and neither
    dominates: on the headline sigmoid truth the paths reach 5.2 (L = L*) and 3.3 (L = L* + 1)
    against 1.14 and 1.06 from the triples. The bound uses the larger.
    """
    out = rows.copy()
    if "triangle_random" not in out.columns:
        out["triangle_random"] = out["triangle_constant"].astype(float)
    out["triangle_path"] = np.nan
    if "theta" not in out.columns or out.empty:
        return out
    (L,) = set(out["L"].astype(int))
    stored = out["theta"].map(has_parameters)
    for loss in dict.fromkeys(out["loss"]):
        here = out[(out["loss"] == loss) & stored]
        here = here.drop_duplicates(subset=["D", "l2"])
        if here.empty:
            continue
        C = witness_path_triangle(truth, estimator, L, here["theta"].tolist(), loss, points)
        C = C[np.isfinite(C)]
        if not len(C):
            continue
        sel = out["loss"] == loss
        out.loc[sel, "triangle_path"] = float(C.max())
        out.loc[sel, "triangle_constant"] = np.maximum(
            out.loc[sel, "triangle_random"].astype(float), float(C.max())
        )
    return out


def triangle_ratios(
    key: PRNGKeyArray,
    truth: Truth,
    estimator: Model,
    n_components: int,
    loss: str,
    n_samples: int,
    scale: float = 0.5,
) -> Float[Array, " n_samples"]:
    """Ratios D(G1, G0) / (D(G, G0) + D(G, G1)) over random triples near the truth.

    G0 = G*; G1 and G a split truth (L atoms) with raw parameters perturbed at scales
    log-uniform in [1e-3, 1] times ``scale``, drawn independently. The weak triangle constant C
    is the supremum of this ratio; its maximum over the sample is a lower estimate of C.
    """
    exps = loss_exponents(loss)
    true_params = truth_in(estimator, truth)
    L_star = true_params.c.shape[0]
    parent = np.concatenate([np.arange(L_star), np.arange(n_components - L_star) % L_star])
    base = split_atoms(estimator, true_params, parent)
    gating = estimator.spec.gating

    def draw(k):
        k_scale, k_dir = jax.random.split(k)
        s = scale * 10 ** jax.random.uniform(k_scale, (), minval=-3.0, maxval=0.0)
        ks = jax.random.split(k_dir, len(base))
        return atoms(
            estimator,
            type(base)(
                *[x + s * jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(ks, base)]
            ),
        )

    def ratio(k):
        k1, k2 = jax.random.split(k)
        G1, G = draw(k1), draw(k2)
        top = lora_voronoi_loss(G1, truth.atoms, gating, exps).total
        return top / (
            lora_voronoi_loss(G, truth.atoms, gating, exps).total
            + lora_voronoi_loss(G, G1, gating, exps).total
        )

    return jax.jit(jax.vmap(ratio))(jax.random.split(key, n_samples))


def _flat(x) -> list[float]:
    return np.asarray(x, float).ravel().tolist()


def _rows(w: Witness, pi, common: dict, config: BoundConfig, epsilons) -> list[dict]:
    """Table rows of one loss: the best witness per eps target ("m") and the envelope per eta ("M").

    M rows carry the certified envelope (``value``: the largest D of a witness with L2 <= eta) and
    ``interpolated``: the inverse of the m-curve, log-log interpolated between consecutive targets
    (the sup of eps with m(eps) <= eta on the piecewise-linear curve), which a step envelope
    understates between targets; it is attained by no explicit G, so it is not certified."""
    eps = np.asarray(epsilons)[:, None]
    D, l2 = np.asarray(w.D), np.asarray(w.l2)
    inside = np.asarray(w.neighbourhood_violation) <= config.neighbourhood_tol
    violation = (D - eps) / eps
    on_target = inside & (np.abs(violation) <= config.constraint_tol)

    def row(e, k, **extra):
        return dict(
            common,
            D=float(D[e, k]),
            l2=float(l2[e, k]),
            constraint_violation=float(violation[e, k]),
            on_target=bool(on_target[e, k]),
            inside=bool(inside[e, k]),
            neighbourhood_violation=float(w.neighbourhood_violation[e, k]),
            rel_grad=float(w.rel_grad[e, k]),
            stop_reason=STOP_REASONS[int(w.stop_reason[e, k])],
            iterations=int(w.iterations[e, k]),
            rounds=int(w.rounds[e, k]),
            cells_stable=bool(w.cells_stable[e, k]),
            starts=int(D.shape[1]),
            S=_flat(w.atoms.S[e, k]),
            V=_flat(w.atoms.V[e, k]),
            pi=_flat(pi[e, k]),
            theta=_flat(w.theta[e, k]),
            source=common["estimator"],
            **extra,
        )

    rows = []
    m_curve = []
    for e, target in enumerate(epsilons):
        ok = on_target[e]
        if ok.any():
            k = int(np.argmin(np.where(ok, l2[e], np.inf)))
            agree = int(np.sum(ok & (l2[e] <= l2[e, k] * (1 + config.agree_rtol) + L2_FLOOR)))
        else:  # no start on target: report the one closest to it, flagged by on_target
            k = int(np.argmin(np.abs(violation[e]) + np.where(inside[e], 0.0, np.inf)))
            agree = 0
        rows.append(
            row(
                e,
                k,
                kind="m",
                eps=float(target),
                eta=np.nan,
                value=float(l2[e, k]),
                starts_agree=agree,
            )
        )
        if ok.any():
            m_curve.append((float(target), float(l2[e, k])))
    D_in = np.where(inside, D, -np.inf)
    for eta in config.etas:
        best = np.where(l2 <= eta, D_in, -np.inf)
        if not np.isfinite(best).any():  # no witness that close: only G* itself, D = 0
            rows.append(
                dict(
                    common,
                    kind="M",
                    eps=np.nan,
                    eta=float(eta),
                    value=0.0,
                    D=0.0,
                    l2=0.0,
                    starts=int(D.shape[1]),
                    starts_agree=0,
                    inside=True,
                    on_target=False,
                    source=common["estimator"],
                    interpolated=interpolate_modulus(m_curve, eta),
                )
            )
            continue
        e, k = np.unravel_index(int(np.argmax(best)), best.shape)
        agree = int(np.sum(best >= best[e, k] * (1 - config.agree_rtol)))
        rows.append(
            row(
                e,
                k,
                kind="M",
                eps=float(epsilons[e]),
                eta=float(eta),
                value=float(D[e, k]),
                starts_agree=agree,
                interpolated=max(float(D[e, k]), interpolate_modulus(m_curve, eta)),
            )
        )
    return rows


def refine_targets(
    key: PRNGKeyArray,
    truth: Truth,
    estimator: Model,
    n_components: int,
    loss: str,
    config: BoundConfig,
    quad: Quadrature,
) -> tuple[Witness, tuple[float, ...]]:
    """Witnesses at ``config.epsilons`` plus adaptive targets: ``config.refine`` bisections (in log
    eps) of the flat set's edge (the largest target whose best witness is at the L2 floor against
    the next one) and of the envelope's largest jump (the consecutive targets whose best L2 differ
    most).

    Returns the witnesses (targets sorted) and their targets.
    """
    w = jax.device_get(
        solve_witnesses(key, truth, estimator, n_components, loss, config, quad=quad)
    )
    eps = list(config.epsilons)
    for b in range(config.refine):
        D, l2 = np.asarray(w.D), np.asarray(w.l2)
        targets = np.asarray(eps)
        ok = (np.asarray(w.neighbourhood_violation) <= config.neighbourhood_tol) & (
            np.abs(D / targets[:, None] - 1) <= config.constraint_tol
        )
        m = np.where(ok, l2, np.inf).min(axis=1)
        order = np.argsort(targets)
        t_sorted, m_sorted = targets[order], m[order]
        new = []
        flat = m_sorted <= L2_FLOOR
        if flat.any() and not flat.all():
            e = int(np.max(np.nonzero(flat)[0]))
            if e + 1 < len(t_sorted):
                new.append(float(np.sqrt(t_sorted[e] * t_sorted[e + 1])))
        finite = np.isfinite(m_sorted) & (m_sorted > L2_FLOOR)
        idx = np.nonzero(finite)[0]
        if len(idx) >= 2:
            jumps = np.log(m_sorted[idx[1:]]) - np.log(m_sorted[idx[:-1]])
            g = int(np.argmax(np.abs(jumps)))
            new.append(float(np.sqrt(t_sorted[idx[g]] * t_sorted[idx[g + 1]])))
        new = [x for x in dict.fromkeys(new) if all(abs(x / t - 1) > 1e-9 for t in eps)]
        if not new:
            break
        more = jax.device_get(
            solve_witnesses(
                jax.random.fold_in(key, 1000 + b),
                truth,
                estimator,
                n_components,
                loss,
                config,
                quad=quad,
                epsilons=new,
            )
        )
        w = jax.tree.map(lambda a, c: np.concatenate([a, c], axis=0), w, more)
        eps += new
    order = np.argsort(eps)
    return jax.tree.map(lambda a: a[order], w), tuple(float(eps[i]) for i in order)


def bound_curves(
    key: PRNGKeyArray,
    truth: Truth,
    estimator: Model,
    n_components: int,
    config: BoundConfig,
    *,
    truth_label: str,
    estimator_label: str,
    contained=(),
) -> pd.DataFrame:
    """All curves for one (truth, estimator, L): m(eps) and M(eta) for every loss, as a tidy table.

    One row per (loss, eps) with ``kind = "m"`` (the best witness at that target: least L2 among the
    starts on target) and per (loss, eta) with ``kind = "M"`` (the witness of largest D with
    L2 <= eta, over every target and start). Columns: truth, estimator, L, L_star, extra, loss,
    kind, eps, eta, value (m or M), D and l2 of the witness, on_target (|D - eps| / eps <=
    constraint_tol, inside N(G*)), constraint_violation, inside, neighbourhood_violation, starts,
    starts_agree (starts within agree_rtol of the best value), rel_grad and stop_reason of the last
    Levenberg-Marquardt solve, iterations, rounds (cell reassignments), cells_stable,
    triangle_constant (the larger of the largest ratio over ``triangle_samples`` random triples
    and the largest along the witnesses' own paths, ``with_path_triangle``; the latter also as
    triangle_path, the former as triangle_random), quadrature_order,
    radius, kappa, the witness atoms S, V, pi and raw parameters theta (flattened lists), and
    source (the family whose search found the witness, or ``"flat_edge"``).

    When L > L* (and ``config.flat_edge_starts`` > 0), each cell's exact flat set is searched
    (``witnesses.flat_edge``) and its largest-D witness merged into the curves
    (``containment.with_flat_set``): the eps targets alone can miss a flat set between them.

    ``contained``: pairs (family model, its ``bound_curves`` rows on the same truth) of families
    that vanilla's contains; their witnesses are mapped into vanilla and re-evaluated there, and
    merged into vanilla's curves (``containment.contain``), so that vanilla's M is at least theirs.

    Raises ``ValueError`` for L < L*, a family that does not contain the truth, a bad loss, or
    ``contained`` given for a family other than vanilla.
    """
    if not isinstance(truth_label, str) or not isinstance(estimator_label, str):
        raise ValueError("truth_label and estimator_label must be strings")
    L_star = int(truth.atoms.c.shape[0])
    if not isinstance(n_components, (int, np.integer)) or n_components < L_star:
        raise ValueError(
            f"n_components L = {n_components!r} is below the truth's L* = {L_star}; expected L >= "
            "L*"
        )
    quad = quadrature(
        estimator.spec.d,
        Design(),
        config.quadrature_order,
        key=jax.random.fold_in(key, 1),
        n_sample=config.n_sample,
    )
    weights = jax.jit(jax.vmap(jax.vmap(lambda c: mixture_weights(c, estimator.spec.gating))))
    rows = []
    for i, loss in enumerate(config.losses):
        k_loss = jax.random.fold_in(key, 100 + i)
        w, epsilons = refine_targets(k_loss, truth, estimator, n_components, loss, config, quad)
        C = float(
            np.max(
                np.asarray(
                    triangle_ratios(
                        jax.random.fold_in(k_loss, 7),
                        truth,
                        estimator,
                        n_components,
                        loss,
                        config.triangle_samples,
                    )
                )
            )
        )
        common = dict(
            truth=truth_label,
            estimator=estimator_label,
            L=int(n_components),
            L_star=L_star,
            extra=int(n_components) - L_star,
            loss=loss,
            triangle_constant=C,
            quadrature_order=config.quadrature_order,
            radius=config.radius,
            kappa=np.nan if config.kappa is None else config.kappa,
        )
        rows += _rows(w, np.asarray(weights(w.atoms.c)), common, config, epsilons)
    df = pd.DataFrame(rows)
    if config.flat_edge_starts and n_components > L_star:
        df = with_flat_set(jax.random.fold_in(key, 2), truth, estimator, df, config, quad)
    if contained:
        df = contained_in_vanilla(df, list(contained), estimator, truth, config, quad)
    return with_path_triangle(truth, estimator, df)
