"""Fitting one student to one sample: Adam with early stopping, an optional least-squares finish,
the record.

Training: full-batch Adam (optax) on the mean squared error over the training split, at most
``steps`` steps in one ``lax.while_loop``; the parameters with the best validation loss are kept
and updates stop once the validation loss has not improved for ``patience`` steps (one flag per
fit: vmapped, the loop runs until the batch's last fit stops, and stopped fits stay where they
are). ``finisher="lm"`` continues from Adam's best point with Levenberg-Marquardt
(``moe_lora.optimize.LevenbergMarquardt``) on the training split; ``"lm_if_better"`` keeps that
point only where its validation loss is not above Adam's. Several starts per fit (vmapped), each
trained at every step size of ``config.rate_grid``; the (start, step size) pair with the lowest
validation loss is kept, so a grid ``learning_rates`` tunes the step size per fit, and so per
student, on the validation split.

Every record says whether the fit reached the teacher: ``underfit`` is set when its training loss
is above ``UNDERFIT_RATIO`` times the teacher's on the same data.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..attention import AttentionWeights
from ..optimize import LevenbergMarquardt
from .config import HeadConfig
from .forward import head_outputs, mean_squared_error, sample_sequences, zero_update
from .students import HeadStudent, SharedFamily
from .teacher import Teacher

#: A fit whose training loss is above this multiple of the teacher's is flagged ``underfit``.
UNDERFIT_RATIO = 1.5


class HeadRecord(NamedTuple):
    """One fit of one student (leading seed axis when batched).

    Attributes:
        function_error: sqrt(mean ||H_hat - H*||^2 / mean ||H* - H_0||^2) on the test sequences:
            the head's output error relative to the teacher's effect (H_0 the frozen head).
        function_rmse: sqrt(mean over entries of (H_hat - H*)^2), absolute.
        gate_error: ||B_Q A_Q W_K0^T - (B_Q A_Q W_K0^T)*||_F / ||(B_Q A_Q W_K0^T)*||_F: the gate
            product, free of the factors' gauge B A = (B R)(R^-1 A).
        value_error: ||B_V A_V - (B_V A_V)*||_F / ||(B_V A_V)*||_F, likewise.
        steps: Adam steps to the best validation loss (of the kept start).
        stopped_early: the kept start's patience ran out before the step budget.
        val_loss, train_loss: mean squared error on the validation and training splits at the
        estimate. train_loss_truth: the teacher's training loss on the same data (about sigma^2).
        underfit: train_loss > ``UNDERFIT_RATIO`` train_loss_truth (the fit did not reach the
        teacher). finisher_iterations: Levenberg-Marquardt iterations (0 without a finisher).
        finisher_kept: the finisher's point was kept (always with ``"lm"``, never with ``"none"``).
        start: index of the kept start. learning_rate: Adam's step size of the kept fit (one of
        ``config.rate_grid``).
    """

    function_error: Float[Array, ""]
    function_rmse: Float[Array, ""]
    gate_error: Float[Array, ""]
    value_error: Float[Array, ""]
    steps: Int[Array, ""]
    stopped_early: Bool[Array, ""]
    val_loss: Float[Array, ""]
    train_loss: Float[Array, ""]
    train_loss_truth: Float[Array, ""]
    underfit: Bool[Array, ""]
    finisher_iterations: Int[Array, ""]
    finisher_kept: Bool[Array, ""]
    start: Int[Array, ""]
    learning_rate: Float[Array, ""]


def split_sizes(config: HeadConfig, n: int) -> tuple[int, int]:
    """(n_train, n_val): at least one validation sequence and one training sequence."""
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ValueError(
            "Sample size n must be an integer >= 2 (one training and one validation sequence), "
            f"got {n!r}"
        )
    n_val = min(max(1, int(round(config.val_fraction * n))), n - 1)
    return n - n_val, n_val


def train_student(
    config: HeadConfig,
    student: HeadStudent,
    family: SharedFamily,
    weights: AttentionWeights,
    params0,
    train,
    val,
    learning_rate=None,
):
    """Adam with early stopping from ``params0`` for one start: (best params, steps to best,
    stopped, best val loss).

    ``learning_rate`` (traced under ``vmap`` over a grid) defaults to ``config.learning_rate``.

    Full-batch steps in a ``lax.while_loop`` that ends after ``config.steps`` steps or once the
    validation loss has not improved for ``patience`` steps; the parameters with the best
    validation loss are returned. Under ``vmap`` the loop runs until the batch's last fit stops;
    a stopped fit's parameters no longer move, so its result does not depend on its batch.
    """
    opt = optax.adam(config.learning_rate if learning_rate is None else learning_rate)
    loss = lambda p, X, Y: mean_squared_error(
        config, weights, student.factors(config, family, p), X, Y
    )
    grad = jax.grad(loss)

    def step(state):
        k, p, opt_state, best, best_loss, best_step, stopped = state
        updates, new_opt_state = opt.update(grad(p, *train), opt_state, p)
        moved = optax.apply_updates(p, updates)
        p = jax.tree.map(lambda new, old: jnp.where(stopped, old, new), moved, p)
        opt_state = jax.tree.map(
            lambda new, old: jnp.where(stopped, old, new), new_opt_state, opt_state
        )
        v = loss(p, *val)
        better = (v < best_loss) & ~stopped
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, best)
        best_loss, best_step = jnp.where(better, v, best_loss), jnp.where(better, k + 1, best_step)
        stopped = stopped | (k + 1 - best_step >= config.patience)
        return k + 1, p, opt_state, best, best_loss, best_step, stopped

    zero = jnp.zeros((), jnp.int32)
    state = (
        zero,
        params0,
        opt.init(params0),
        params0,
        loss(params0, *val),
        zero,
        jnp.zeros((), bool),
    )
    _, _, _, best, best_loss, best_step, stopped = jax.lax.while_loop(
        lambda s: (s[0] < config.steps) & ~s[-1], step, state
    )
    return best, best_step, stopped, best_loss


def finish_least_squares(
    config: HeadConfig, student: HeadStudent, family: SharedFamily, weights, params, train
):
    """Levenberg-Marquardt on the training split from ``params``: (params, iterations)."""
    theta0, unravel = ravel_pytree(params)
    X, Y = train
    scale = 1 / math.sqrt(Y.size)
    residual = lambda t, x, y: (
        scale
        * (
            head_outputs(config, weights, student.factors(config, family, unravel(t)), x) - y
        ).ravel()
    )
    lm = LevenbergMarquardt(max_iter=config.lm_iterations, gtol=1e-8, chunk_size=config.lm_chunk)
    theta, stats = lm.run(residual, theta0, data=(X, Y))
    return unravel(theta), stats.iterations


def _relative(M, M_star):
    return jnp.linalg.norm(M - M_star) / jnp.linalg.norm(M_star)


def fit_replicate(
    key: PRNGKeyArray, teacher: Teacher, X_test, config: HeadConfig, student: HeadStudent, n: int
) -> HeadRecord:
    """One replicate: draw n sequences, fit ``student`` from ``config.starts`` starts, score the
    kept one.

    The key splits into data, noise and start keys that do not depend on the student, so every
    student sees the same data.
    """
    n_train, _ = split_sizes(config, n)
    k_x, k_eps, k_init = jax.random.split(key, 3)
    X = sample_sequences(k_x, config, n)
    Y = head_outputs(config, teacher.weights, teacher.lora, X) + config.sigma * jax.random.normal(
        k_eps, (n, config.N, config.d_v)
    )
    val, train = (X[n_train:], Y[n_train:]), (X[:n_train], Y[:n_train])
    starts = jax.vmap(lambda k: student.init(k, config))(jax.random.split(k_init, config.starts))
    return fit_from(starts, teacher, X_test, config, student, train, val)


def fit_from(
    starts, teacher: Teacher, X_test, config: HeadConfig, student: HeadStudent, train, val
) -> HeadRecord:
    """Fit from a batch of starts (leading axis), each at every step size of ``config.rate_grid``;
    keep the best validation loss, score it."""
    w, fam = teacher.weights, teacher.family
    val_loss = lambda p: mean_squared_error(config, w, student.factors(config, fam, p), *val)
    # candidate i is start i // L at step size i % L
    rates = config.rate_grid
    L = len(rates)
    starts = jax.tree.map(lambda x: jnp.repeat(x, L, axis=0), starts)
    leaf = jax.tree.leaves(starts)[0]
    count = leaf.shape[0]
    lrs = jnp.tile(jnp.asarray(rates, dtype=leaf.dtype), count // L)
    best, steps, stopped, adam_val = jax.vmap(
        lambda p, lr: train_student(config, student, fam, w, p, train, val, lr)
    )(starts, lrs)
    if config.finisher == "none":
        iters, kept = jnp.zeros(count, jnp.int32), jnp.zeros(count, bool)
    else:
        finished, iters = jax.vmap(
            lambda p: finish_least_squares(config, student, fam, w, p, train)
        )(best)
        kept = jnp.ones(count, bool)
        if config.finisher == "lm_if_better":
            kept = jax.vmap(val_loss)(finished) <= adam_val
        pick = lambda new, old: jnp.where(
            kept.reshape(kept.shape + (1,) * (new.ndim - 1)), new, old
        )
        best = jax.tree.map(pick, finished, best)
    val_losses = jax.vmap(val_loss)(best)
    s = jnp.argmin(jnp.where(jnp.isfinite(val_losses), val_losses, jnp.inf))
    lora = student.factors(config, fam, jax.tree.map(lambda x: x[s], best))
    H_hat, H_star = (
        head_outputs(config, w, lora, X_test),
        head_outputs(config, w, teacher.lora, X_test),
    )
    H_0 = head_outputs(config, w, zero_update(config), X_test)
    err = jnp.mean((H_hat - H_star) ** 2)
    t = teacher.lora
    train_loss = mean_squared_error(config, w, lora, *train)
    train_loss_truth = mean_squared_error(config, w, t, *train)
    return HeadRecord(
        function_error=jnp.sqrt(err / jnp.mean((H_star - H_0) ** 2)),
        function_rmse=jnp.sqrt(err),
        gate_error=_relative(lora.B_Q @ lora.A_Q @ w.W_K.T, t.B_Q @ t.A_Q @ w.W_K.T),
        value_error=_relative(lora.B_V @ lora.A_V, t.B_V @ t.A_V),
        steps=steps[s],
        stopped_early=stopped[s],
        val_loss=val_losses[s],
        train_loss=train_loss,
        train_loss_truth=train_loss_truth,
        underfit=~(train_loss <= UNDERFIT_RATIO * train_loss_truth),
        finisher_iterations=iters[s],
        finisher_kept=kept[s],
        start=(s // L).astype(jnp.int32),
        learning_rate=lrs[s],
    )
