"""Least-squares fits of a LoRA mixture: initialisation, multi-start, the certified fit record.

The estimator of docs/model.md, "Estimator and certification", G_n in argmin_G (1/n) sum_i ||Y_i -
f_G(X_i)||^2, over the raw parameters of a parameterization with L fitted components. One fit is
written for one data set; restarts are vmapped inside, replicates outside (``moe_lora.simulate``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from . import checks
from .jacobian import structured_normal_equations
from .model import FieldError, regression_function
from .optimize import Finisher, LevenbergMarquardt, Stats, is_converged, warm_up
from .parameterization import Model, atoms, canonicalize, init_params
from .truth import Dataset, Truth


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Restarts of one fit: ``near_truth`` split-truth starts and ``random`` random starts.

    Args:
        near_truth: starts near the truth: the L* true atoms, the L - L* extra components
            assigned round-robin to true atoms 0, 1, ..., each true atom split into copies
            whose weights sum to its weight, every raw parameter but the bias perturbed by
            N(0, near_truth_scale^2).
        random: starts with i.i.d. N(0, random_scale^2) raw parameters.
    """

    near_truth: int = 1
    random: int = 0
    near_truth_scale: float = 0.1
    random_scale: float = 1.0

    def __post_init__(self):
        for name in ("near_truth", "random"):
            checks.integer(name, getattr(self, name), minimum=0)
        if self.near_truth + self.random < 1:
            raise FieldError(
                "near_truth", "InitConfig needs at least one restart (near_truth + random >= 1)"
            )
        for name in ("near_truth_scale", "random_scale"):
            checks.non_negative(name, getattr(self, name))

    @property
    def n_restarts(self) -> int:
        return self.near_truth + self.random


JACOBIANS = ("structured", "jacfwd")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything static about a fit; a static argument of the jitted unit.

    Args:
        n_components: L, the number of fitted components (L >= L*).
        finisher: ``LevenbergMarquardt(...)`` or ``OptaxFinisher(...)``.
        warmup: optional optax transformation run for ``warmup_steps`` before the finisher.
        warmup_steps: number of warm-up steps.
        init: the restarts.
        canonicalize: move iterates along exact symmetries to a canonical point
            (``moe_lora.parameterization.canonicalize``); the fitted function is unchanged.
        jacobian: ``"structured"``: J^T J and J^T r in closed form (``moe_lora.jacobian``);
            ``"jacfwd"``: by ``jax.jacfwd`` of the residuals (the reference).
    """

    n_components: int
    finisher: Finisher = LevenbergMarquardt()
    warmup: optax.GradientTransformation | None = None
    warmup_steps: int = 0
    init: InitConfig = InitConfig()
    canonicalize: bool = True
    jacobian: str = "structured"

    def __post_init__(self):
        if self.jacobian not in JACOBIANS:
            raise FieldError(
                "jacobian", f"Unknown jacobian {self.jacobian!r}; expected one of {JACOBIANS}"
            )
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if not isinstance(self.warmup_steps, (int, np.integer)) or self.warmup_steps < 0:
            raise ValueError(
                f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}"
            )
        if self.warmup_steps > 0 and self.warmup is None:
            raise ValueError(f"warmup_steps={self.warmup_steps} but no warm-up optimizer was given")


def empirical_risk(model: Model, params, data: Dataset) -> Float[Array, ""]:
    """R_n(G) = (1/n) sum_i ||Y_i - f_G(X_i)||^2."""
    f = regression_function(model.spec, model.base, atoms(model, params), data.X)
    return jnp.mean(jnp.sum((data.Y - f) ** 2, axis=-1))


def truth_in(estimator: Model, truth: Truth):
    """The truth's raw parameters in the estimator's parameterization (host-side, not jittable).

    Same parameterization and maps: the truth's own parameters. Vanilla estimator: the raw
    vanilla parameters with the truth's factors. Otherwise ``ValueError``: the estimator's family
    need not contain the truth (``Parameterization.embed``).
    """
    if estimator.spec != truth.model.spec:
        raise ValueError(
            f"Estimator spec {estimator.spec} differs from the truth's {truth.model.spec}"
        )
    return estimator.parameterization.embed(estimator, truth.model, truth.params)


def split_biases(estimator: Model, true_c, parent):
    """Raw gate biases of copies of true atoms: atom i copies true atom ``parent[i]``, and the
    copies of one true atom share its weight equally (``parent`` may be traced)."""
    L_star = true_c.shape[0]
    copies = jnp.zeros(L_star, true_c.dtype).at[parent].add(1.0)
    bias_bound = estimator.parameterization.bias_bound
    c = bias_bound * jnp.tanh(true_c / bias_bound)
    if estimator.spec.gating == "sigmoid":
        # pi = sigmoid(c): each of k copies gets weight sigmoid(c_j) / k. (Unlike softmax, the
        # copies' gates then agree with the parent's at X = 0 only: sigmoid gates do not split.)
        share = jax.nn.sigmoid(c[parent]) / copies[parent]
        c = jnp.log(share) - jnp.log1p(-share)
    else:
        # exp(c_j - log k) summed over k copies is exp(c_j): the normaliser and the weights are
        # kept.
        c = c[parent] - jnp.log(copies[parent])
    c = jnp.clip(c, -bias_bound * (1 - 1e-9), bias_bound * (1 - 1e-9))
    return bias_bound * jnp.arctanh(c / bias_bound)


def split_truth(key: PRNGKeyArray, estimator: Model, true_params, n_components: int, scale: float):
    """A start near the truth: each true atom split into perturbed copies (see ``InitConfig``)."""
    parent = np.arange(n_components) % true_params.c.shape[0]
    noise_keys = jax.random.split(key, len(true_params) - 1)
    perturbed = [
        x[parent] + scale * jax.random.normal(k, x[parent].shape, x.dtype)
        for k, x in zip(noise_keys, true_params[:-1])
    ]
    return type(true_params)(*perturbed, split_biases(estimator, true_params.c, parent))


def initial_params(key: PRNGKeyArray, estimator: Model, true_params, config: FitConfig):
    """All restarts of one fit, stacked on a leading axis: near-truth starts first, then random."""
    init = config.init
    k_near, k_rand = jax.random.split(key)
    starts = (
        [
            split_truth(k, estimator, true_params, config.n_components, init.near_truth_scale)
            for k in jax.random.split(k_near, init.near_truth)
        ]
        if init.near_truth
        else []
    )
    starts += (
        [
            init_params(k, estimator, config.n_components, init.random_scale)
            for k in jax.random.split(k_rand, init.random)
        ]
        if init.random
        else []
    )
    return jax.tree.map(lambda *xs: jnp.stack(xs), *starts)


class FitResult(NamedTuple):
    """The best restart of one least-squares fit, by final empirical risk."""

    params: object
    stats: Stats
    converged: Bool[Array, ""]
    restart: Int[Array, ""]
    restart_risks: Float[Array, " restarts"]


def fit_least_squares(estimator: Model, data: Dataset, starts, config: FitConfig) -> FitResult:
    """Fit every start (leading axis of ``starts``) and keep the one of least empirical risk.

    Each start runs ``config.warmup`` for ``config.warmup_steps`` steps, then
    ``config.finisher`` to its convergence test. Not jitted here: jit the caller (one unit).
    """
    n = data.X.shape[0]
    template = jax.tree.map(lambda x: x[0], starts)
    _, unravel = ravel_pytree(template)

    rows = (data.X, data.Y, jnp.ones(n, data.X.dtype))

    def residual(theta, X, Y, weight):
        # ``weight`` is 1 on every row; the finisher's zero-padded chunks get 0
        # (``normal_equations``).
        f = regression_function(estimator.spec, estimator.base, atoms(estimator, unravel(theta)), X)
        return (weight[:, None] * (f - Y) / jnp.sqrt(n)).ravel()

    risk = lambda theta: jnp.sum(residual(theta, *rows) ** 2)
    canonical = lambda theta: ravel_pytree(canonicalize(estimator, unravel(theta)))[0]
    normal_eqs = (
        structured_normal_equations(estimator, unravel, n)
        if config.jacobian == "structured"
        else None
    )

    def one(theta0):
        if config.warmup is not None:
            theta0 = warm_up(config.warmup, config.warmup_steps, risk, theta0)
        return config.finisher.run(
            residual,
            theta0,
            canonical if config.canonicalize else None,
            data=rows,
            normal_eqs=normal_eqs,
        )

    thetas, stats = jax.vmap(one)(jax.vmap(lambda s: ravel_pytree(s)[0])(starts))
    best = jnp.argmin(jnp.where(jnp.isfinite(stats.risk), stats.risk, jnp.inf))
    pick = lambda x: x[best]
    return FitResult(
        params=unravel(thetas[best]),
        stats=jax.tree.map(pick, stats),
        converged=is_converged(stats.stop_reason[best]),
        restart=best,
        restart_risks=stats.risk,
    )
