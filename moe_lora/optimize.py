"""Minimisers for a least-squares objective R(theta) = ||r(theta)||^2 on a flat parameter vector.

Two finishers share one interface, ``finisher.run(residual_fn, theta0) -> (theta, Stats)``,
written for one problem (vmap it for many) and looping inside ``lax.while_loop``:

* ``LevenbergMarquardt``: damped Gauss-Newton with Nielsen's damping update. The default is
  Marquardt's scaled damping mu * diag(J^T J), floored at a tiny fraction of its largest entry:
  the LoRA Jacobians have exact null directions (gate shift, B A = (B t)(A / t) rescalings,
  bias shift; docs/model.md, "Identifiability"), which the floor keeps damped, and directions whose
  curvature collapses as a factor saturates at the bound of the compact space, along which
  Levenberg's mu * I stalls the step. Measured on the same truths, data and starts,
  Marquardt certified as many or more fits than Levenberg (``benchmarks/results/``).
* ``OptaxFinisher``: any optax transformation (e.g. ``optax.lbfgs()``) run to the same
  convergence test, for comparison.

Convergence is a relative-gradient test, scale-free in both theta and R:

    rel_grad = max_k |dR/dtheta_k| * max(|theta_k|, 1) / max(R, tiny) <= gtol

Levenberg-Marquardt can also stop at statistical precision (``stat_tol``): when the decrease of
R that a full Gauss-Newton step predicts, g^T (J^T J)^-1 g, is below ``stat_tol * R / m`` (m
residual entries; R / m estimates sigma^2 / n at a fit with noise variance sigma^2 per output), the
remaining optimisation error is a small fraction of the statistical error, and more iterations
would only move the estimate along directions the data do not determine.

Stop reasons: 0 converged (rel_grad <= gtol), 1 step below xtol (stalled), 2 iteration cap,
3 non-finite objective, 4 precise (statistical-precision rule). Reasons 0 and 4 count as
converged (``is_converged``).

Large samples: with ``data`` given, ``run`` sums R, J^T J and J^T r over chunks of ``chunk_size``
rows (``lax.scan``), so the n x P Jacobian is never held whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from . import checks
from .model import FieldError

CONVERGED, STALLED, MAX_ITER, NONFINITE, PRECISE = 0, 1, 2, 3, 4
STOP_REASONS = {
    CONVERGED: "converged",
    STALLED: "stalled",
    MAX_ITER: "max_iter",
    NONFINITE: "non-finite",
    PRECISE: "precise",
}
_RUNNING = -1


def is_converged(stop_reason):
    """True for the stop reasons that count as converged: ``CONVERGED`` and ``PRECISE``."""
    return (stop_reason == CONVERGED) | (stop_reason == PRECISE)


class Stats(NamedTuple):
    """What a finisher reports about its run."""

    risk: Float[Array, ""]
    grad_norm: Float[Array, ""]
    rel_grad: Float[Array, ""]
    iterations: Int[Array, ""]
    stop_reason: Int[Array, ""]


def relative_gradient(theta, risk, grad):
    """max_k |grad_k| max(|theta_k|, 1) / max(R, tiny): the convergence measure of every
    finisher."""
    tiny = jnp.finfo(theta.dtype).tiny
    return jnp.max(jnp.abs(grad) * jnp.maximum(jnp.abs(theta), 1.0)) / jnp.maximum(risk, tiny)


def _check_positive(**values):
    for name, value in values.items():
        checks.positive(name, value, finite=False)


def _chunked(data, chunk_size):
    """Zero-pad every array of ``data`` to a multiple of ``chunk_size`` rows and split the rows
    into (chunks, chunk_size, ...)."""
    n = data[0].shape[0]
    k = -(-n // chunk_size)
    pad = lambda x: jnp.concatenate([x, jnp.zeros((k * chunk_size - n,) + x.shape[1:], x.dtype)])
    return tuple(pad(x).reshape((k, chunk_size) + x.shape[1:]) for x in data)


def chunked_sum(terms: Callable, data, chunk_size: int | None):
    """sum over row chunks of ``terms(*chunk)`` (a pytree of arrays), in a ``lax.scan``.

    ``data`` is a tuple of arrays sharing their leading axis of n rows; with ``chunk_size`` None
    or >= n, ``terms(*data)``. The rows are zero-padded to whole chunks, so ``terms`` must give
    zero on all-zero rows (pass a row weight).
    """
    if chunk_size is None or chunk_size >= data[0].shape[0]:
        return terms(*data)

    def add(total, chunk):
        return jax.tree.map(jnp.add, total, terms(*chunk)), None

    zero = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(terms, *(x[:chunk_size] for x in data)),
    )
    total, _ = jax.lax.scan(add, zero, _chunked(data, chunk_size))
    return total


def normal_equations(residual_fn: Callable, theta, data=None, chunk_size: int | None = None):
    """(R, J^T J, J^T r) at theta for R = ||r||^2, r = residual_fn(theta) or residual_fn(theta,
    *data).

    J comes from ``jax.jacfwd`` (the reference path; ``moe_lora.jacobian`` has the closed form
    for LoRA mixtures). With ``data`` (a tuple of arrays sharing their leading axis of n rows)
    and ``chunk_size < n``, the three sums run over chunks of rows (``chunked_sum``); the rows
    are zero-padded to whole chunks, so ``residual_fn`` must give zero residuals on all-zero rows.
    """

    def terms(*chunk):
        J, r = jax.jacfwd(lambda t: (residual_fn(t, *chunk),) * 2, has_aux=True)(theta)
        return r @ r, J.T @ J, J.T @ r

    if data is None:
        return terms()
    return chunked_sum(terms, data, chunk_size)


def _residual_count(residual_fn, theta, data):
    """Number m of residual entries (real rows only when ``data`` is given)."""
    if data is None:
        return jax.eval_shape(residual_fn, theta).size
    per_row = jax.eval_shape(residual_fn, theta, *(x[:1] for x in data)).size
    return per_row * data[0].shape[0]


class LMState(NamedTuple):
    """The Levenberg-Marquardt loop state: the iterate, R, J^T J, J^T r, the damping mu and its
    growth factor nu, the iteration count and the stop reason (-1 while running)."""

    theta: Float[Array, " P"]
    R: Float[Array, ""]
    A: Float[Array, "P P"]
    g: Float[Array, " P"]
    mu: Float[Array, ""]
    nu: Float[Array, ""]
    k: Int[Array, ""]
    reason: Int[Array, ""]


@dataclasses.dataclass(frozen=True)
class LevenbergMarquardt:
    """Levenberg-Marquardt with Nielsen's damping update (Madsen, Nielsen, Tingleff 2004, alg.
    3.16).

    Args:
        max_iter: iteration cap (one Jacobian evaluation per iteration).
        gtol: relative-gradient tolerance for convergence.
        xtol: stop as stalled when ||h|| <= xtol (||theta|| + xtol).
        tau: initial damping (see ``damping``).
        damping: ``"levenberg"``: solve (J^T J + mu I) h = -g, mu0 = tau max diag(J^T J);
            ``"marquardt"``: solve (J^T J + mu D) h = -g with D = diag(J^T J) + floor max diag(J^T
            J), mu0 = tau. Marquardt's scaling keeps Gauss-Newton steps along directions whose
            curvature has collapsed (parameters saturating at the bound of the compact space);
            the floor keeps exactly flat directions damped.
        floor: relative floor of Marquardt's scaling (and of J^T J in the ``stat_tol`` test).
        stat_tol: if set, also stop (reason ``PRECISE``) when the Gauss-Newton predicted
            decrease g^T (J^T J + floor max diag(J^T J) I)^-1 g of R falls below
            ``stat_tol * R / m``, m the number of residual entries: a statistical-precision
            stopping rule (see the module docstring). ``None``: gradient test only.
        chunk_size: rows per chunk when ``run`` is given ``data``; ``None``: all rows at once.

    Example:
        >>> import jax.numpy as jnp
        >>> rosenbrock = lambda t: jnp.array([t[0] - 1.0, 10 * (t[1] - t[0] ** 2)])
        >>> theta, stats = LevenbergMarquardt().run(rosenbrock, jnp.zeros(2))
        >>> STOP_REASONS[int(stats.stop_reason)], jnp.round(theta, 6).tolist()
        ('converged', [1.0, 1.0])
    """

    max_iter: int = 2000
    gtol: float = 1e-6
    xtol: float = 1e-14
    tau: float = 1e-3
    damping: str = "marquardt"
    floor: float = 1e-9
    stat_tol: float | None = None
    chunk_size: int | None = None

    def __post_init__(self):
        _check_positive(
            max_iter=self.max_iter, gtol=self.gtol, xtol=self.xtol, tau=self.tau, floor=self.floor
        )
        if self.stat_tol is not None:
            _check_positive(stat_tol=self.stat_tol)
        if self.chunk_size is not None and not (
            isinstance(self.chunk_size, int) and self.chunk_size > 0
        ):
            raise FieldError(
                "chunk_size",
                f"chunk_size must be a positive integer or None, got {self.chunk_size!r}",
            )
        if self.damping not in ("levenberg", "marquardt"):
            raise FieldError(
                "damping", f"Unknown damping {self.damping!r}; expected 'levenberg' or 'marquardt'"
            )

    def _scaling(self, A):
        if self.damping == "levenberg":
            return jnp.ones(A.shape[0], A.dtype)
        diag = jnp.diag(A)
        return diag + self.floor * jnp.max(diag)

    def run(
        self,
        residual_fn: Callable,
        theta0: Float[Array, " P"],
        canonicalize: Callable | None = None,
        data=None,
        normal_eqs: Callable | None = None,
    ) -> tuple[Float[Array, " P"], Stats]:
        """Minimise ||residual_fn(theta)||^2 from theta0.

        ``canonicalize`` (optional) maps a point to an equivalent one with the same residuals
        (a move along exact symmetries); each trial point theta + h is canonicalized before it
        is evaluated, so the iterates cannot drift along flat directions.
        ``data`` (optional): a tuple of arrays with a leading axis of rows; the residuals are then
        ``residual_fn(theta, *data)``, evaluated in chunks of ``chunk_size`` rows (all-zero rows
        must give zero residuals; see ``normal_equations``).
        ``normal_eqs`` (optional): ``(theta, data, chunk_size) -> (R, J^T J, J^T r)`` in closed
        form (``moe_lora.jacobian``); default ``normal_equations`` (``jax.jacfwd``).
        """
        init, body = self.iteration(residual_fn, theta0, canonicalize, data, normal_eqs)
        state = jax.lax.while_loop(lambda s: s.reason == _RUNNING, body, init(theta0))
        return state.theta, self.stats(state)

    def start(self, residual_fn, theta0, canonicalize=None, data=None, normal_eqs=None) -> LMState:
        """The loop state at theta0 (no iteration yet); continue it with ``advance``."""
        return self.iteration(residual_fn, theta0, canonicalize, data, normal_eqs)[0](theta0)

    def advance(
        self, state: LMState, budget, residual_fn, canonicalize=None, data=None, normal_eqs=None
    ) -> LMState:
        """Iterate from ``state`` until it stops or has made ``budget`` iterations in all.

        The iterations are those of ``run``: ``start`` then ``advance`` to ``max_iter`` is
        ``run``. A state left running (``state.reason == -1``) can be advanced again.
        """
        body = self.iteration(residual_fn, state.theta, canonicalize, data, normal_eqs)[1]
        return jax.lax.while_loop(lambda s: (s.reason == _RUNNING) & (s.k < budget), body, state)

    @staticmethod
    def stats(state: LMState) -> Stats:
        """What ``run`` reports about a loop state."""
        return Stats(
            state.R,
            2 * jnp.linalg.norm(state.g),
            relative_gradient(state.theta, state.R, 2 * state.g),
            state.k,
            state.reason,
        )

    def iteration(self, residual_fn, theta0, canonicalize=None, data=None, normal_eqs=None):
        """(init, body): ``init(theta0)`` is the loop state at theta0 and ``body(state)`` one
        damped Gauss-Newton iteration (see ``run`` for the arguments)."""
        canonicalize = canonicalize or (lambda t: t)
        if normal_eqs is None:
            evaluate = lambda theta: normal_equations(residual_fn, theta, data, self.chunk_size)
        else:
            evaluate = lambda theta: normal_eqs(theta, data, self.chunk_size)
        m = _residual_count(residual_fn, theta0, data)

        def precise(R, A, g):
            if self.stat_tol is None:
                return False
            ridge = self.floor * jnp.max(jnp.diag(A)) + jnp.finfo(A.dtype).tiny
            decrease = g @ jnp.linalg.solve(A + ridge * jnp.eye(A.shape[0], dtype=A.dtype), g)
            return decrease <= self.stat_tol * R / m

        def status(theta, R, A, g, k, small_step):
            rel = relative_gradient(theta, R, 2 * g)
            reason = jnp.where(rel <= self.gtol, CONVERGED, _RUNNING)
            reason = jnp.where((reason == _RUNNING) & precise(R, A, g), PRECISE, reason)
            reason = jnp.where((reason == _RUNNING) & small_step, STALLED, reason)
            reason = jnp.where((reason == _RUNNING) & (k >= self.max_iter), MAX_ITER, reason)
            return jnp.where(jnp.isfinite(R), reason, NONFINITE)

        def body(state):
            theta, R, A, g, mu, nu, k, _ = state
            D = self._scaling(A)
            h = jnp.linalg.solve(A + mu * jnp.diag(D), -g)
            predicted = h @ (mu * D * h - g)  # = 2 (L(0) - L(h)) for F = R / 2
            small_step = jnp.linalg.norm(h) <= self.xtol * (jnp.linalg.norm(theta) + self.xtol)
            trial = canonicalize(theta + h)
            R_new, A_new, g_new = evaluate(trial)
            rho = (R - R_new) / predicted
            accept = jnp.isfinite(R_new) & (rho > 0)
            pick = lambda new, old: jnp.where(accept, new, old)
            theta, R, A, g = pick(trial, theta), pick(R_new, R), pick(A_new, A), pick(g_new, g)
            mu = jnp.where(accept, mu * jnp.maximum(1 / 3, 1 - (2 * rho - 1) ** 3), mu * nu)
            nu = jnp.where(accept, 2.0, 2 * nu)
            k = k + 1
            return LMState(theta, R, A, g, mu, nu, k, status(theta, R, A, g, k, small_step))

        def init(theta0):
            theta0 = canonicalize(theta0)
            R, A, g = evaluate(theta0)
            mu0 = self.tau * (jnp.max(jnp.diag(A)) if self.damping == "levenberg" else 1.0)
            zero = jnp.zeros((), jnp.int32)
            return LMState(
                theta0,
                R,
                A,
                g,
                mu0,
                jnp.asarray(2.0, R.dtype),
                zero,
                status(theta0, R, A, g, zero, False),
            )

        return init, body


@dataclasses.dataclass(frozen=True)
class OptaxFinisher:
    """Run an optax transformation on R = ||r||^2 until the relative-gradient test or the cap.

    ``optimizer.update`` receives ``value``, ``grad`` and ``value_fn`` as extra arguments, so
    line-search transformations such as ``optax.lbfgs()`` work; others ignore them.
    Create the optimizer once and reuse it: it is a static argument of the jitted unit.
    """

    optimizer: optax.GradientTransformation
    max_iter: int = 2000
    gtol: float = 1e-6

    def __post_init__(self):
        _check_positive(max_iter=self.max_iter, gtol=self.gtol)

    def run(
        self,
        residual_fn: Callable,
        theta0: Float[Array, " P"],
        canonicalize: Callable | None = None,
        data=None,
        normal_eqs: Callable | None = None,
    ) -> tuple[Float[Array, " P"], Stats]:
        """Minimise ||residual_fn(theta)||^2 (or ||residual_fn(theta, *data)||^2) from theta0;
        ``normal_eqs`` is ignored (first-order methods need only the gradient);
        ``canonicalize`` is applied to theta0 only (moving a quasi-Newton method's iterate would
        invalidate its curvature history)."""
        if canonicalize is not None:
            theta0 = canonicalize(theta0)
        opt = optax.with_extra_args_support(self.optimizer)
        risk_fn = lambda t: jnp.sum(residual_fn(t, *(data or ())) ** 2)
        value_and_grad = jax.value_and_grad(risk_fn)

        def status(theta, R, grad, k):
            rel = relative_gradient(theta, R, grad)
            reason = jnp.where(
                rel <= self.gtol, CONVERGED, jnp.where(k >= self.max_iter, MAX_ITER, _RUNNING)
            )
            return jnp.where(jnp.isfinite(R), reason, NONFINITE)

        def body(state):
            theta, opt_state, R, grad, k, _ = state
            updates, opt_state = opt.update(
                grad, opt_state, theta, value=R, grad=grad, value_fn=risk_fn
            )
            theta = optax.apply_updates(theta, updates)
            R, grad = value_and_grad(theta)
            return theta, opt_state, R, grad, k + 1, status(theta, R, grad, k + 1)

        R, grad = value_and_grad(theta0)
        zero = jnp.zeros((), jnp.int32)
        state = (theta0, opt.init(theta0), R, grad, zero, status(theta0, R, grad, zero))
        theta, _, R, grad, k, reason = jax.lax.while_loop(lambda s: s[-1] == _RUNNING, body, state)
        return theta, Stats(R, jnp.linalg.norm(grad), relative_gradient(theta, R, grad), k, reason)


class Finisher(Protocol):
    """What ``fit_least_squares`` needs of a finisher: a static (hashable) object with ``run``.

    ``run(residual_fn, theta0, canonicalize=None, data=None) -> (theta, Stats)`` minimises
    ||residual_fn(theta)||^2 (``residual_fn(theta, *data)`` with ``data``) for one problem inside
    a JAX loop, and reports why it stopped in ``Stats.stop_reason`` (``STOP_REASONS``); it never
    raises on a failed fit. ``LevenbergMarquardt`` and ``OptaxFinisher`` implement it.
    """

    def run(
        self,
        residual_fn: Callable,
        theta0: Float[Array, " P"],
        canonicalize: Callable | None = None,
        data=None,
        normal_eqs: Callable | None = None,
    ) -> tuple[Float[Array, " P"], Stats]: ...


def warm_up(
    optimizer: optax.GradientTransformation,
    steps: int,
    risk_fn: Callable,
    theta0: Float[Array, " P"],
):
    """``steps`` plain optax steps on ``risk_fn`` inside a ``lax.scan`` (no convergence test)."""
    if steps == 0:
        return theta0
    opt = optax.with_extra_args_support(optimizer)
    value_and_grad = jax.value_and_grad(risk_fn)

    def step(carry, _):
        theta, opt_state = carry
        R, grad = value_and_grad(theta)
        updates, opt_state = opt.update(
            grad, opt_state, theta, value=R, grad=grad, value_fn=risk_fn
        )
        candidate = optax.apply_updates(theta, updates)
        # A warm-up step that produced non-finite parameters is dropped rather than propagated.
        theta = jnp.where(jnp.all(jnp.isfinite(candidate)), candidate, theta)
        return (theta, opt_state), None

    (theta, _), _ = jax.lax.scan(step, (theta0, opt.init(theta0)), None, length=steps)
    return theta
