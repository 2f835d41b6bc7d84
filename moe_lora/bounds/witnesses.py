"""Exact flat sets through the truth: atoms that share a true gate, built and searched for.

Under softmax gating, fitted atoms with one gate S and biases c_i act as one atom with weight
sum_i exp(c_i) and expert the weighted mean of their V_i. So if the k atoms of cell j all have the
gate S*_j, weights pi*_j lambda_i (sum_i lambda_i = 1) and

    sum_i lambda_i V_i = V*_j,

then f_G = f_G* exactly while D(G, G*) = pi*_j sum_i lambda_i ||V_i - V*_j||^2 > 0 (the mass and
gate terms vanish; D's multi-atom exponent is 2). Such a G is a *flat witness*. Conversely, if
softmax-gated mixtures of linear experts with quadratic gates are identifiable up to merging
atoms with equal gates and a common gate shift (the result the theory rests on; we use it, we do
not prove it), every exact flat set near the truth is of this form, so searching over atoms that
share a true gate is a complete search for exact flat sets.

Where such atoms exist is a question about the *gate fiber* of the parameterization: the raw
parameters theta of one atom with S(theta) = S*_j. The expert V(theta) must take more than one
value on it (with V*_j inside the convex hull of those values):

* vanilla: B_V, A_V are free, so the fiber carries every V; the split V* +- delta is a witness;
* shared maps, r = 1: S is fixed by u v^T with u = act(W_BQ b), v = act(W_AQ a); when p >= d the
  fiber holds the scale curve u -> t u, v -> v / t, along which V = act(W_BV b) act(W_AV a) moves
  unless act is positively homogeneous (identity, relu);
* shared maps with p > d r (or p > r d_k): the null space of W_BQ (W_AQ) moves B_V (A_V) and
  leaves the gate unchanged, for every activation, the linear one included.

``gate_fiber`` measures the fiber's tangent at the truth (its dimension and whether V moves on it);
``flat_search`` solves for witnesses by Levenberg-Marquardt on the residuals
[S(theta_i) - S*_j, sum_i lambda_i V(theta_i) - V*_j] with D held at a target and every atom
within ``radius`` of the true atom, from starts along the fiber's tangent (the fiber chords), near
the truth and far from it; ``largest_flat_loss`` bisects the target for the flat set's edge inside
the radius. ``flat_params`` turns a cell solution into the raw parameters of the whole estimator,
so every witness is checked with the package's own ``atoms``, ``regression_function`` and
``lora_voronoi_loss``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray

from ..fit import split_biases
from ..model import mixture_weights
from ..optimize import LevenbergMarquardt
from ..parameterization import Model, atoms


class FiberInfo(NamedTuple):
    """The gate fiber's tangent at one true atom: null(dS/dtheta) and dV on it.

    ``dimension``: dim null(dS/dtheta) in raw coordinates (the gate fiber's dimension, at a
    regular point); ``expert_motion``: largest ||dV/dtheta n|| / ||dV/dtheta|| over unit n in the
    null space (0 when V is constant to first order along the fiber); ``n_raw``: raw coordinates
    per atom (c excluded).
    """

    dimension: int
    expert_motion: float
    n_raw: int


def _atom_fields(params, j):
    """Raw fields (c excluded) of atom j, as a tuple of arrays without the atom axis."""
    return tuple(x[j] for x in params[:-1])


def _cell_atoms(estimator: Model, true_params, fields):
    """Atoms of k raw atoms given their non-bias fields (leading axis k); biases are irrelevant to
    S, V."""
    k = fields[0].shape[0]
    return atoms(estimator, type(true_params)(*fields, jnp.zeros(k, fields[0].dtype)))


def gate_fiber(estimator: Model, true_params, j: int, *, rtol: float = 1e-9) -> FiberInfo:
    """The tangent of the gate fiber {theta : S(theta) = S*_j} at true atom j (host-side).

    Singular values of dS/dtheta below ``rtol`` times the largest count as zero.
    """
    one = tuple(x[None] for x in _atom_fields(true_params, j))
    flat, unravel = ravel_pytree(one)

    def gate_and_expert(theta):
        a = _cell_atoms(estimator, true_params, unravel(theta))
        return a.S.ravel(), a.V.ravel()

    J_S, J_V = (np.asarray(x) for x in jax.jacfwd(gate_and_expert)(flat))
    _, s, Vt = np.linalg.svd(J_S)
    rank = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    null = Vt[rank:].T
    scale = np.linalg.norm(J_V, 2)
    motion = float(np.linalg.norm(J_V @ null, 2) / scale) if null.shape[1] and scale > 0 else 0.0
    return FiberInfo(int(null.shape[1]), motion, int(flat.shape[0]))


def trace_fiber(
    estimator: Model,
    true_params,
    j: int,
    *,
    key: PRNGKeyArray,
    steps: int = 60,
    h: float = 0.05,
    curves: int = 2,
    newton: int = 8,
) -> np.ndarray:
    """Points of the gate fiber {theta : S(theta) = S*_j} through true atom j, traced by
    continuation.

    From theta*, ``curves`` random directions n of the fiber's tangent (both signs): a step h along
    the current tangent, then Gauss-Newton corrections theta <- theta - J^+ (S(theta) - S*) back
    onto the fiber. Returns (m, n_raw) raw points (c excluded), the truth first; points whose gate
    residual stays above 1e-10 are dropped. An empty tangent gives the truth alone.
    """
    one = tuple(x[None] for x in _atom_fields(true_params, j))
    flat1, unravel1 = ravel_pytree(one)
    S_star = _cell_atoms(estimator, true_params, one).S[0].ravel()
    gate = jax.jit(lambda t: _cell_atoms(estimator, true_params, unravel1(t)).S.ravel() - S_star)
    jac = jax.jit(jax.jacfwd(gate))

    def tangent(theta):
        J = np.asarray(jac(theta))
        _, s, Vt = np.linalg.svd(J)
        rank = int(np.sum(s > 1e-9 * s[0])) if s.size and s[0] > 0 else 0
        return J, Vt[rank:]

    rng = np.random.default_rng(int(np.asarray(jax.random.key_data(key)).ravel()[-1]))
    theta0 = np.asarray(flat1)
    _, null0 = tangent(theta0)
    points = [theta0]
    if null0.shape[0] == 0:
        return np.stack(points)
    for _ in range(curves):
        n0 = rng.normal(size=null0.shape[0]) @ null0
        n0 /= np.linalg.norm(n0)
        for sign in (1.0, -1.0):
            theta, n = theta0.copy(), sign * n0
            for _ in range(steps):
                trial = theta + h * n
                for _ in range(newton):
                    J = np.asarray(jac(trial))
                    res = np.asarray(gate(trial))
                    trial = trial - np.linalg.lstsq(J, res, rcond=None)[0]
                if not (
                    np.all(np.isfinite(trial)) and np.linalg.norm(np.asarray(gate(trial))) <= 1e-10
                ):
                    break
                _, null = tangent(trial)
                if null.shape[0] == 0:
                    break
                step = null.T @ (
                    null @ (trial - theta)
                )  # keep going the same way along the new tangent
                if np.linalg.norm(step) == 0:
                    break
                n = step / np.linalg.norm(step)
                theta = trial
                points.append(theta.copy())
    return np.stack(points)


def chord_starts(
    estimator: Model, true_params, j: int, k: int, points: np.ndarray, n_starts: int
) -> np.ndarray:
    """Starts for the cell solve from fiber points: the k-tuples whose best convex weights come
    closest to V*_j (weights by least squares on the simplex's affine hull, clipped to it)."""
    one = tuple(x[None] for x in _atom_fields(true_params, j))
    _, unravel1 = ravel_pytree(one)
    V = np.asarray(
        jax.vmap(lambda t: _cell_atoms(estimator, true_params, unravel1(t)).V[0].ravel())(
            jnp.asarray(points)
        )
    )
    V_star = V[0]
    m = len(points)
    rng = np.random.default_rng(0)
    if k == 2:
        i1, i2 = np.triu_indices(m, k=1)
        combos = np.stack([i1, i2], 1)
    else:
        combos = rng.integers(0, m, size=(min(20000, max(m**k, 1)), k))
    A = V[combos] - V_star  # (n, k, dim)
    # minimise ||sum_i lam_i A_i|| over sum lam = 1: lam = G^-1 1 / 1^T G^-1 1, G the Gram matrix
    G = np.einsum("nid,njd->nij", A, A) + 1e-12 * np.eye(k)
    g = np.linalg.solve(G, np.ones((len(A), k, 1)))[..., 0]
    lam = g / g.sum(axis=1, keepdims=True)
    valid = np.all(lam > 1e-3, axis=1)
    miss = np.linalg.norm(np.einsum("ni,nid->nd", lam, A), axis=1)
    miss = np.where(valid, miss, np.inf)
    order = np.argsort(miss)[:n_starts]
    order = order[np.isfinite(miss[order])]
    out = []
    for o in order:
        per = [unravel1(jnp.asarray(points[i])) for i in combos[o]]
        fields = tuple(jnp.concatenate([pf[f] for pf in per]) for f in range(len(one)))
        out.append(np.asarray(ravel_pytree((fields, jnp.asarray(np.log(lam[o]))))[0]))
    return np.stack(out) if out else np.zeros((0, 0))


class CellProblem(NamedTuple):
    """One true atom's cell, split into k atoms that must share its gate (see the module
    docstring)."""

    j: int
    k: int
    pi_star: Float[Array, ""]
    S_star: Float[Array, "d d"]
    V_star: Float[Array, "d d_out"]
    c_star: Float[Array, ""]


def cell_problem(estimator: Model, truth_atoms, j: int, k: int) -> CellProblem:
    """The data of true atom j's cell (compact-space bias c*_j included)."""
    pi = mixture_weights(truth_atoms.c, estimator.spec.gating)
    return CellProblem(int(j), int(k), pi[j], truth_atoms.S[j], truth_atoms.V[j], truth_atoms.c[j])


class FlatSolution(NamedTuple):
    """Solved cells (leading batch axes): raw fields of the k atoms, weights, exactness, loss."""

    theta: Float[Array, "... P"]
    lam: Float[Array, "... k"]
    exact: Float[Array, ...]
    D: Float[Array, ...]
    spread: Float[Array, "... k"]


def _unravel_cell(true_params, k: int):
    template = tuple(jnp.stack([x] * k) for x in _atom_fields(true_params, 0))
    flat, unravel = ravel_pytree((template, jnp.zeros(k, template[0].dtype)))
    return flat.shape[0], unravel


@functools.partial(jax.jit, static_argnames=("k", "radius", "barrier", "max_iter"))
def _solve_cells(
    estimator: Model,
    true_params,
    problem_arrays,
    thetas0,
    targets,
    penalties,
    *,
    k: int,
    radius: float,
    barrier: float,
    max_iter: int,
) -> FlatSolution:
    """LM on the cell residuals for every (target, start): thetas0 (T, K, P), targets and penalties
    (T,)."""
    pi_star, S_star, V_star, c_star = problem_arrays
    _, unravel = _unravel_cell(true_params, k)
    bias_bound = estimator.parameterization.bias_bound

    def parts(theta):
        fields, w = unravel(theta)
        a = _cell_atoms(estimator, true_params, fields)
        lam = jax.nn.softmax(w)
        gate = (a.S - S_star[None]).ravel()
        mean = (jnp.einsum("i,ijk->jk", lam, a.V) - V_star).ravel()
        spread = jnp.sqrt(jnp.sum((a.V - V_star[None]) ** 2, axis=(1, 2)))
        return gate, mean, lam, spread

    def residual(theta, target, penalty):
        gate, mean, lam, spread = parts(theta)
        D = pi_star * jnp.sum(lam * spread**2)
        # the split biases c*_j + log lambda_i must stay inside the compact space [-R_c, R_c]
        low = jax.nn.relu(-(c_star + jnp.log(lam)) - 0.99 * bias_bound)
        return jnp.concatenate(
            [
                gate,
                mean,
                jnp.sqrt(penalty) * ((D - target) / target)[None],
                jnp.sqrt(barrier) * jax.nn.relu(spread - radius),
                jnp.sqrt(barrier) * low,
            ]
        )

    lm = LevenbergMarquardt(max_iter=max_iter, gtol=1e-14, xtol=1e-16)

    def one(theta0, target, penalty):
        theta, _ = lm.run(lambda t: residual(t, target, penalty), theta0)
        gate, mean, lam, spread = parts(theta)
        exact = jnp.sqrt(jnp.sum(gate**2) + jnp.sum(mean**2))
        return FlatSolution(theta, lam, exact, pi_star * jnp.sum(lam * spread**2), spread)

    return jax.vmap(jax.vmap(one, in_axes=(0, None, None)), in_axes=(0, 0, 0))(
        thetas0, targets, penalties
    )


def fiber_starts(
    key: PRNGKeyArray, estimator: Model, true_params, j: int, k: int, n_starts: int
) -> np.ndarray:
    """Starts for the cell solve: (n_starts, P) flat vectors (raw fields of k atoms, then k logits).

    A third each: fiber chords (atom i at theta* + s_i n, n a unit vector of the fiber's tangent,
    s_i of both signs, sizes log-uniform in [0.05, 2]); small perturbations of k copies of the
    truth (scale 0.1); far draws (every field N(0, 1)), which reach other branches of the fiber
    (the swap u <-> v, gelu's second pre-image).
    """
    one = tuple(x[None] for x in _atom_fields(true_params, j))
    flat1, unravel1 = ravel_pytree(one)
    P1 = flat1.shape[0]

    def gate(theta):
        return _cell_atoms(estimator, true_params, unravel1(theta)).S.ravel()

    J = np.asarray(jax.jacfwd(gate)(flat1))
    _, s, Vt = np.linalg.svd(J)
    rank = int(np.sum(s > 1e-9 * s[0])) if s.size and s[0] > 0 else 0
    null = Vt[rank:]
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1].item())
    base = np.asarray(flat1)
    out = []
    for i in range(n_starts):
        kind = i % 3
        if kind == 0:
            if null.shape[0]:
                n = rng.normal(size=null.shape[0]) @ null
                n /= np.linalg.norm(n)
            else:
                n = rng.normal(size=P1)
                n /= np.linalg.norm(n)
            sizes = 10 ** rng.uniform(np.log10(0.05), np.log10(2.0), k)
            signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
            atoms_ = [base + signs[m] * sizes[m] * n for m in range(k)]
        elif kind == 1:
            atoms_ = [base + 0.1 * rng.normal(size=P1) for _ in range(k)]
        else:
            atoms_ = [rng.normal(size=P1) for _ in range(k)]
        # per-atom flat vectors -> the cell layout (fields stacked on the atom axis), then logits 0
        per_field = [unravel1(jnp.asarray(x)) for x in atoms_]
        fields = tuple(jnp.concatenate([pf[f] for pf in per_field]) for f in range(len(one)))
        out.append(np.asarray(ravel_pytree((fields, jnp.zeros(k, base.dtype)))[0]))
    return np.stack(out)


def flat_search(
    key: PRNGKeyArray,
    estimator: Model,
    truth_atoms,
    true_params,
    j: int,
    k: int,
    targets,
    *,
    radius: float,
    n_starts: int = 24,
    penalty=1e2,
    barrier: float = 1e6,
    max_iter: int = 400,
    warm: np.ndarray | None = None,
    chords: np.ndarray | None = None,
) -> FlatSolution:
    """Solve for flat witnesses of cell j with k atoms at each D target: axes (targets, starts).

    ``penalty`` (a number or one per target; 0 leaves D free) weighs (D - target) / target.
    ``chords`` (optional, (C, P), from ``chord_starts``) replace the first C starts, ``warm``
    (e.g. witnesses of a nearby target) the ones after them.
    """
    prob = cell_problem(estimator, truth_atoms, j, k)
    starts = fiber_starts(key, estimator, true_params, j, k, n_starts)
    first = 0
    for extra in (chords, warm):
        if extra is not None and len(extra):
            m = min(len(extra), n_starts - first)
            starts[first : first + m] = extra[:m]
            first += m
    targets = jnp.asarray(np.atleast_1d(np.asarray(targets, float)), truth_atoms.S.dtype)
    penalties = jnp.broadcast_to(jnp.asarray(penalty, targets.dtype), targets.shape)
    thetas0 = jnp.broadcast_to(
        jnp.asarray(starts, targets.dtype), (targets.shape[0],) + starts.shape
    )
    arrays = (prob.pi_star, prob.S_star, prob.V_star, prob.c_star)
    return _solve_cells(
        estimator,
        true_params,
        arrays,
        thetas0,
        targets,
        penalties,
        k=int(k),
        radius=float(radius),
        barrier=float(barrier),
        max_iter=int(max_iter),
    )


#: A solved cell is an exact flat witness when its gate and mean residual is below this...
EXACT_TOL = 1e-12
#: ...its loss within this relative distance of the target, and every atom inside the radius.
TARGET_RTOL = 1e-6


def flat_ok(sol: FlatSolution, targets, radius: float) -> np.ndarray:
    """Which solutions are exact flat witnesses on target inside the radius."""
    targets = np.asarray(targets, float).reshape((-1,) + (1,) * (np.ndim(sol.D) - 1))
    return (
        (np.asarray(sol.exact) <= EXACT_TOL)
        & (np.abs(np.asarray(sol.D) / targets - 1) <= TARGET_RTOL)
        & np.all(np.asarray(sol.spread) <= radius * (1 + 1e-9), axis=-1)
    )


class FlatEdge(NamedTuple):
    """The range of D found on the flat set of one cell inside the radius, with its extreme
    witness."""

    found: bool
    D_max: float
    D_min: float
    theta: np.ndarray | None
    lam: np.ndarray | None
    best_exact: float
    solves: int


#: ...and a witness must move the loss by at least this much (below it the atoms sit on the truth).
D_MIN = 1e-8


def _exact_inside(sol: FlatSolution, radius: float) -> np.ndarray:
    return (
        (np.asarray(sol.exact) <= EXACT_TOL)
        & (np.asarray(sol.D) >= D_MIN)
        & np.all(np.asarray(sol.spread) <= radius * (1 + 1e-9), axis=-1)
    )


def flat_edge(
    key: PRNGKeyArray,
    estimator: Model,
    truth_atoms,
    true_params,
    j: int,
    k: int,
    *,
    radius: float,
    n_starts: int = 24,
    grid: int = 6,
    bisections: int = 8,
    max_iter: int = 400,
) -> FlatEdge:
    """The largest (and smallest) D on the flat set of cell j with k atoms inside the radius.

    Starts: the fiber chords (``trace_fiber``, ``chord_starts``), then ``fiber_starts``. First one
    solve with D free and one per target of a log grid over [1e-4, 1] pi*_j radius^2 (the largest D
    any k atoms within the radius can have); every exact witness inside the radius counts, whatever
    its D. Then each edge of the range found is bisected (in log D) against the grid point beyond
    it, warm-started from the witnesses at the edge. ``best_exact`` is the smallest gate and mean
    residual reached by any solve whose D is at least half the smallest target (the trivial witness,
    every atom on the truth, is exact too): on a clean cell it stays far above ``EXACT_TOL``.
    """
    pi_j = float(mixture_weights(truth_atoms.c, estimator.spec.gating)[j])
    top = pi_j * radius**2
    points = trace_fiber(estimator, true_params, j, key=jax.random.fold_in(key, 1))
    chords = chord_starts(estimator, true_params, j, k, points, n_starts // 3)
    targets = np.concatenate([[top], top * np.logspace(-4, 0, grid)])
    penalties = np.concatenate([[0.0], np.full(grid, 1e2)])
    sol = jax.device_get(
        flat_search(
            key,
            estimator,
            truth_atoms,
            true_params,
            j,
            k,
            targets,
            radius=radius,
            n_starts=n_starts,
            penalty=penalties,
            max_iter=max_iter,
            chords=chords,
        )
    )
    solves = 1
    # over solutions that moved the loss (D >= half the smallest target): the trivial witness, all
    # atoms on the truth, is exact too
    moved = np.asarray(sol.D) >= 0.5 * targets[1]
    best_exact = float(np.min(np.where(moved, np.asarray(sol.exact), np.inf)))
    ok = _exact_inside(sol, radius)
    if not ok.any():
        return FlatEdge(False, 0.0, 0.0, None, None, best_exact, solves)
    D = np.asarray(sol.D)
    flat_theta, flat_lam, flat_D = (np.asarray(sol.theta)[ok], np.asarray(sol.lam)[ok], D[ok])

    def bisect(sign):
        nonlocal solves, best_exact, flat_theta, flat_lam, flat_D
        edge = float(flat_D.max() if sign > 0 else flat_D.min())
        beyond = (
            targets[1:][targets[1:] > edge * (1 + 1e-6)]
            if sign > 0
            else targets[1:][targets[1:] < edge * (1 - 1e-6)]
        )
        if beyond.size == 0:
            return
        far = float(beyond.min() if sign > 0 else beyond.max())
        lo, hi = np.log(edge), np.log(far)
        for b in range(bisections):
            mid = float(np.exp(0.5 * (lo + hi)))
            near = np.argsort(np.abs(np.log(flat_D) - lo))[: n_starts // 3]
            sb = jax.device_get(
                flat_search(
                    jax.random.fold_in(key, 10 * b + (sign > 0) + 2),
                    estimator,
                    truth_atoms,
                    true_params,
                    j,
                    k,
                    [mid],
                    radius=radius,
                    n_starts=n_starts,
                    max_iter=max_iter,
                    warm=flat_theta[near],
                    chords=chords,
                )
            )
            solves += 1
            best_exact = min(
                best_exact,
                float(
                    np.min(
                        np.where(np.asarray(sb.D) >= 0.5 * targets[1], np.asarray(sb.exact), np.inf)
                    )
                ),
            )
            okb = _exact_inside(sb, radius)[0]
            if okb.any():
                flat_theta = np.concatenate([flat_theta, np.asarray(sb.theta[0])[okb]])
                flat_lam = np.concatenate([flat_lam, np.asarray(sb.lam[0])[okb]])
                flat_D = np.concatenate([flat_D, np.asarray(sb.D[0])[okb]])
            reached = (
                flat_D.max() >= mid * (1 - 1e-6) if sign > 0 else flat_D.min() <= mid * (1 + 1e-6)
            )
            if reached:
                lo = np.log(float(flat_D.max() if sign > 0 else flat_D.min()))
            else:
                hi = np.log(mid)

    bisect(+1)
    bisect(-1)
    i = int(np.argmax(flat_D))
    return FlatEdge(
        True,
        float(flat_D.max()),
        float(flat_D.min()),
        flat_theta[i],
        flat_lam[i],
        best_exact,
        solves,
    )


def flat_dimension(
    estimator: Model, true_params, j: int, k: int, theta, *, rtol: float = 1e-8
) -> int:
    """Local dimension of the flat set at a witness, in atom space (the V_i and weights lambda_i).

    The null space N of the Jacobian of the exact residuals [S_i - S*_j, sum lambda_i V_i - V*_j]
    in raw coordinates, mapped by the Jacobian of (V_i, lambda_i): dim = rank(J_atoms N). Moves
    that leave every atom unchanged (the linear map's a -> t a, b -> b / t) do not count.
    """
    _, unravel = _unravel_cell(true_params, k)
    S_star = _cell_atoms(estimator, true_params, tuple(x[j][None] for x in true_params[:-1])).S[0]

    def exact_and_atoms(t):
        fields, w = unravel(t)
        a = _cell_atoms(estimator, true_params, fields)
        lam = jax.nn.softmax(w)
        res = jnp.concatenate(
            [(a.S - S_star[None]).ravel(), jnp.einsum("i,ijk->jk", lam, a.V).ravel()]
        )
        return res, jnp.concatenate([a.V.ravel(), lam])

    J_res, J_at = (np.asarray(x) for x in jax.jacfwd(exact_and_atoms)(jnp.asarray(theta)))
    _, s, Vt = np.linalg.svd(J_res)
    rank = int(np.sum(s > rtol * s[0]))
    N = Vt[rank:].T
    if N.shape[1] == 0:
        return 0
    t = np.linalg.svd(J_at @ N, compute_uv=False)
    return int(np.sum(t > rtol * max(t[0], 1e-300))) if t.size else 0


def flat_params(estimator: Model, true_params, j: int, k: int, theta, lam):
    """Raw parameters of the whole estimator (L* + k - 1 atoms) with cell j replaced by a solved
    cell.

    True atoms other than j are kept; the k atoms get the solved raw fields and biases
    c*_j + log lambda_i in the compact space (so their weights are pi*_j lambda_i under softmax).
    """
    _, unravel = _unravel_cell(true_params, k)
    fields, _ = unravel(jnp.asarray(theta))
    L_star = true_params.c.shape[0]
    keep = jnp.asarray([i for i in range(L_star) if i != j], int)
    merged = [jnp.concatenate([x[keep], f]) for x, f in zip(true_params[:-1], fields)]
    c_star = estimator.parameterization.to_compact(true_params).c
    c = jnp.concatenate([c_star[keep], c_star[j] + jnp.log(jnp.asarray(lam))])
    return type(true_params)(*merged, _bias_raw(estimator, true_params, c))


def _bias_raw(estimator: Model, true_params, c):
    """Raw biases of compact-space biases c (through the parameterization's own inverse)."""
    par = estimator.parameterization
    fields = [jnp.zeros((c.shape[0],) + x.shape[1:], x.dtype) for x in true_params[:-1]]
    return par.from_compact(type(true_params)(*fields, c)).c


def split_witness(estimator: Model, true_params, j: int, delta) -> object:
    """Vanilla's flat witness: atom j and one copy with its gate factors, expert factor B_V +-
    delta.

    Built in the compact space (``Parameterization.to_compact``), so the pi-weighted experts are
    kept exactly: V = (B_V +- delta) A_V, weights pi*_j / 2 each, mean V*_j; D = pi*_j ||delta
    A_V||^2. ``delta`` has B_V's shape per atom, (d, r).
    """
    par = estimator.parameterization
    L_star = true_params.c.shape[0]
    parent = jnp.concatenate(
        [jnp.arange(L_star), jnp.atleast_1d(jnp.asarray(j, jnp.int32))]
    )  # j may be traced
    raw = type(true_params)(
        *(x[parent] for x in true_params[:-1]), split_biases(estimator, true_params.c, parent)
    )
    comp = par.to_compact(raw)
    sign = jnp.zeros(L_star + 1).at[j].set(1.0).at[L_star].set(-1.0)
    moved = comp._replace(B_V=comp.B_V + sign[:, None, None] * jnp.asarray(delta)[None])
    return par.from_compact(moved)


_INVERSES = {
    "tanh": np.arctanh,
    "sigmoid": lambda y: np.log(y) - np.log1p(-y),
    "identity": lambda y: y,
}


def scale_fiber_point(estimator: Model, true_params, j: int, t: float):
    """Raw fields (a, b) of the point u -> t u, v -> v / t of true atom j's gate fiber (closed
    form).

    For r = 1 and p = d with an invertible activation (tanh, sigmoid, identity): u = act(W_BQ b) and
    v = act(W_AQ a) give the gate sym(u v^T), so b(t) = W_BQ^-1 act^-1(t u), a(t) = W_AQ^-1 act^-1(v
    / t) give the same gate. Returns ``None`` when t u or v / t leaves the activation's range or a
    latent leaves the compact space.
    """
    par, spec = estimator.parameterization, estimator.spec
    act = getattr(par, "activation", None)
    if act not in _INVERSES or spec.r != 1 or par.latent_dim != spec.d:
        raise ValueError(
            f"scale_fiber_point needs r = 1, p = d and activation in {sorted(_INVERSES)}; got "
            f"{par.name}, r = {spec.r}, p = {getattr(par, 'latent_dim', None)}, d = {spec.d}"
        )
    comp = par.to_compact(true_params)
    maps = [np.asarray(m) for m in estimator.maps]
    W_AQ, _, W_BQ, _ = maps
    a, b = np.asarray(comp.a[j]), np.asarray(comp.b[j])
    from ..parameterization import ACTIVATIONS

    f = ACTIVATIONS[act]
    u, v = np.asarray(f(jnp.asarray(W_BQ @ b))), np.asarray(f(jnp.asarray(W_AQ @ a)))
    with np.errstate(all="ignore"):
        b_t = np.linalg.solve(W_BQ, _INVERSES[act](t * u))
        a_t = np.linalg.solve(W_AQ, _INVERSES[act](v / t))
    if not (
        np.all(np.isfinite(a_t))
        and np.all(np.isfinite(b_t))
        and np.max(np.abs(np.r_[a_t, b_t])) < par.bound * (1 - 1e-9)
    ):
        return None
    raw = par.from_compact(comp._replace(a=comp.a.at[j].set(a_t), b=comp.b.at[j].set(b_t)))
    return raw.a[j], raw.b[j]


def scale_fiber_witness(estimator: Model, true_params, j: int, t1: float, t_grid=None):
    """Two atoms on the scale fiber of true atom j whose weighted expert is V*_j, built exactly (d
    d_out = 2).

    Atom 1 sits at t1; atom 2 at the t2 (root of the cross product of V(t1) - V* and V(t2) - V* on
    the far side, by bisection to machine precision) and the weights are set by the chord. Returns
    (theta, lam) for ``flat_params`` (cell layout, k = 2), or ``None`` if no such t2 is in
    ``t_grid``.
    """
    if estimator.spec.d * estimator.spec.d_out != 2:
        raise ValueError("scale_fiber_witness builds chords in a plane: expected d * d_out = 2")
    V_star = np.asarray(
        _cell_atoms(estimator, true_params, tuple(x[j][None] for x in true_params[:-1])).V[0]
    ).ravel()

    def V(t):
        point = scale_fiber_point(estimator, true_params, j, t)
        if point is None:
            return None, None
        fields = tuple(x[None] for x in point)
        return np.asarray(_cell_atoms(estimator, true_params, fields).V[0]).ravel() - V_star, point

    w1, p1 = V(t1)
    if w1 is None or np.linalg.norm(w1) == 0:
        return None

    def cross(t):
        w, _ = V(t)
        return None if w is None else w1[0] * w[1] - w1[1] * w[0]

    grid = (
        np.concatenate([-np.geomspace(10, 0.1, 200), np.geomspace(0.1, 10, 200)])
        if t_grid is None
        else t_grid
    )
    values = [cross(t) for t in grid]
    for lo, hi, c_lo, c_hi in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if c_lo is None or c_hi is None or np.sign(c_lo) == np.sign(c_hi):
            continue
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            c_mid = cross(mid)
            if c_mid is None:
                break
            if np.sign(c_mid) == np.sign(c_lo):
                lo, c_lo = mid, c_mid
            else:
                hi = mid
        w2, p2 = V(0.5 * (lo + hi))
        if w2 is None or w2 @ w1 >= 0:  # same side: V* not between them
            continue
        n1, n2 = np.linalg.norm(w1), np.linalg.norm(w2)
        lam = np.array([n2 / (n1 + n2), n1 / (n1 + n2)])
        fields = tuple(jnp.stack([x1, x2]) for x1, x2 in zip(p1, p2))
        return np.asarray(ravel_pytree((fields, jnp.asarray(np.log(lam))))[0]), lam
    return None


#: The identifiability map's rejection thresholds, tried in order: the verdicts' 0.5 first, lowered
#: only where no truth passes.
MAP_THRESHOLDS = (0.5, 0.3, 0.1)


def setting_truth(family: str, d: int, r: int, p: int, *, seed: int = 0, thresholds=MAP_THRESHOLDS):
    """The truth of the identifiability map (docs/identifiability.md) at one setting.

    Drawn through ``family`` ("linear" or an activation) at latent dimension ``p``, with
    d_out = 1, gate_scale = 3, L* = 2 and the maps' key ``fold_in(key(seed), 1000 d + 100 r +
    10 p)``: the model from ``fold_in(key, 1)``, the truth from ``fold_in(key, 2)`` at the first
    of ``thresholds`` (separation, gate strength and expert separation) that a draw passes. The
    search keys of the map are ``fold_in(key, 3 + j)``.

    Returns:
        (threshold used, Truth, key).

    Raises:
        ValueError: no truth passes the last threshold.
    """
    from ..model import ModelSpec
    from ..parameterization import linear, make_model, nonlinear
    from ..truth import draw_truth

    spec = ModelSpec(d=d, d_out=1, r=r, gate_scale=3.0)
    key = jax.random.fold_in(jax.random.key(seed), 1000 * d + 100 * r + 10 * p)
    param = linear(p) if family == "linear" else nonlinear(family, p)
    model = make_model(spec, param, key=jax.random.fold_in(key, 1))
    for threshold in thresholds:
        try:
            truth = draw_truth(
                jax.random.fold_in(key, 2),
                model,
                2,
                min_separation=threshold,
                min_gate_strength=threshold,
                min_expert_separation=threshold,
            )
        except ValueError:
            continue
        return threshold, truth, key
    raise ValueError(
        f"setting_truth: no {family} truth at d={d}, r={r}, p={p} passes thresholds {thresholds}"
    )
