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

#: Start strategies (``InitConfig.starts``): the first three never read the truth.
STARTS = ("random", "split", "mix", "oracle")


#: Screening schemes of ``Screen``.
SCREENS = ("subsample", "halving")


@dataclasses.dataclass(frozen=True)
class Screen:
    """Screened multi-start: spend few iterations on restarts that cannot win.

    Both schemes work on the first ``min(n, rows)`` rows of the data (``rows = 0``: all rows;
    the rows are i.i.d., so the first rows are a random subsample), then fit the ``keep`` best
    restarts by risk on those rows (ties to the lower index) from where they stand on all n rows
    to the finisher's own convergence test; the best of those by full-data risk is the estimate.

    * ``"subsample"``: every restart is fitted on the screening rows to the finisher's own stop,
      or ``iters`` iterations if sooner.
    * ``"halving"`` (successive halving): every restart runs ``iters`` iterations, the better
      half is kept and runs ``iters`` more, and so on until ``keep`` remain.

    Restarts run one after another (``lax.map``), each stopping on its own: a vmapped loop would
    run every restart as long as the slowest. Everything is deterministic given the starts.

    Args:
        kind: ``"subsample"`` or ``"halving"``.
        rows: rows of the screening fits (0: all rows).
        iters: iteration cap of a screening fit (``"subsample"``), or iterations per round.
        keep: survivors finished on all rows (``keep >= restarts``: every restart is finished).
    """

    kind: str = "subsample"
    rows: int = 1000
    iters: int = 200
    keep: int = 4

    def __post_init__(self):
        checks.one_of("kind", self.kind, SCREENS)
        checks.integer("rows", self.rows, minimum=0)
        checks.integer("iters", self.iters, minimum=1)
        checks.integer("keep", self.keep, minimum=1)

    def rounds(self, restarts: int) -> list[int]:
        """Survivors after each round: ``restarts`` halved (rounded up) down to ``keep``
        (``"subsample"``: one round straight to ``keep``).

        >>> Screen("halving", keep=2).rounds(32)
        [16, 8, 4, 2]
        >>> Screen("subsample", keep=4).rounds(32), Screen(keep=4).rounds(3)
        ([4], [])
        """
        if restarts <= self.keep:
            return []
        if self.kind == "subsample":
            return [self.keep]
        out, m = [], restarts
        while m > self.keep:
            m = max(self.keep, -(-m // 2))
            out.append(m)
        return out


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """The starts of one fit, and whether the oracle fit runs beside it as a diagnostic.

    The estimator is the least-squares estimate found from truth-free starts (docs/model.md,
    "Estimator and certification"; docs/optimizer.md, "Truth-free starts"):

    * ``"random"``: ``restarts`` starts with i.i.d. N(0, random_scale^2) raw parameters (the
      compact space's squashing maps every raw value inside it);
    * ``"split"`` (data-driven): fit L - 1 components from ``restarts`` random starts, then
      start from each of its L - 1 atoms split in two (``split_atoms``, perturbation
      ``split_scale``); needs L >= 2;
    * ``"mix"``: the ``restarts`` random starts and the L - 1 split starts together.

    All restarts go through ``screen`` (``None``: every restart runs to convergence on all rows).

    ``"oracle"`` is the old estimator that knows the truth: ``near_truth`` starts split from the
    truth and perturbed by N(0, near_truth_scale^2) (``split_truth``), then ``random`` random
    starts, every one run to convergence; tables made with it say "oracle start". With
    ``oracle=True`` the single near-truth fit (``near_truth = 1``, ``random = 0``, the same start
    an ``"oracle"`` config draws) runs on the same data beside a truth-free estimate and is
    recorded as ``risk_oracle`` and ``D_oracle``; it never takes part in choosing the estimate.
    """

    starts: str = "random"
    restarts: int = 32
    random_scale: float = 1.0
    split_scale: float = 0.1
    screen: Screen | None = Screen()
    oracle: bool = False
    near_truth: int = 1
    random: int = 0
    near_truth_scale: float = 0.1

    def __post_init__(self):
        checks.one_of("starts", self.starts, STARTS)
        for name in ("near_truth", "random"):
            checks.integer(name, getattr(self, name), minimum=0)
        checks.integer("restarts", self.restarts, minimum=1)
        if self.starts == "oracle":
            if self.near_truth + self.random < 1:
                raise FieldError(
                    "near_truth",
                    "InitConfig needs at least one restart (near_truth + random >= 1)",
                )
            if self.oracle:
                raise FieldError(
                    "oracle", "oracle=True is a diagnostic beside truth-free starts, not 'oracle'"
                )
        elif (self.near_truth, self.random) != (1, 0):
            raise FieldError(
                "near_truth" if self.near_truth != 1 else "random",
                f"near_truth and random count the starts of starts='oracle' only, got "
                f"near_truth={self.near_truth}, random={self.random} with starts={self.starts!r}; "
                "use restarts for truth-free starts",
            )
        for name in ("near_truth_scale", "random_scale", "split_scale"):
            checks.non_negative(name, getattr(self, name))
        if self.screen is not None and not isinstance(self.screen, Screen):
            raise FieldError("screen", f"expected a Screen or None, got {self.screen!r}")

    @property
    def truth_free(self) -> bool:
        return self.starts != "oracle"

    def candidates(self, n_components: int) -> int:
        """Number of starts the estimate is chosen from at L = ``n_components``."""
        if self.starts == "oracle":
            return self.near_truth + self.random
        split = n_components - 1 if self.starts in ("split", "mix") else 0
        return split + (self.restarts if self.starts != "split" else 0)


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
        if self.init.starts in ("split", "mix") and self.n_components < 2:
            raise FieldError(
                "starts",
                f"starts={self.init.starts!r} splits an (L - 1)-component fit, so needs L >= 2; "
                f"got L = {self.n_components}",
            )
        if self.init.truth_free and self.init.screen is not None:
            if not isinstance(self.finisher, LevenbergMarquardt) or self.warmup is not None:
                raise FieldError(
                    "screen",
                    "screened restarts run Levenberg-Marquardt rounds: expected a "
                    f"LevenbergMarquardt finisher and no warm-up, got {self.finisher!r}",
                )


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


def split_atoms(key: PRNGKeyArray, estimator: Model, params, parent, scale: float):
    """A start whose atom i copies atom ``parent[i]`` of ``params`` (raw parameters of the
    estimator's parameterization), every raw parameter but the bias perturbed by N(0, scale^2);
    the copies of one atom share its weight (``split_biases``)."""
    noise_keys = jax.random.split(key, len(params) - 1)
    perturbed = [
        x[parent] + scale * jax.random.normal(k, x[parent].shape, x.dtype)
        for k, x in zip(noise_keys, params[:-1])
    ]
    return type(params)(*perturbed, split_biases(estimator, params.c, parent))


def split_truth(key: PRNGKeyArray, estimator: Model, true_params, n_components: int, scale: float):
    """A start near the truth: each true atom split into perturbed copies (see ``InitConfig``)."""
    parent = np.arange(n_components) % true_params.c.shape[0]
    return split_atoms(key, estimator, true_params, parent, scale)


def random_starts(key: PRNGKeyArray, estimator: Model, n_components: int, count: int, scale: float):
    """``count`` starts with i.i.d. N(0, scale^2) raw parameters, stacked on a leading axis."""
    return jax.vmap(lambda k: init_params(k, estimator, n_components, scale))(
        jax.random.split(key, count)
    )


def split_starts(key: PRNGKeyArray, estimator: Model, params, scale: float):
    """The L - 1 starts of L components made from a fit ``params`` of L - 1: start j adds a copy
    of atom j (``split_atoms``), stacked on a leading axis. Reads only the fit."""
    L1 = params.c.shape[0]
    keys = jax.random.split(key, L1)
    starts = [
        split_atoms(k, estimator, params, np.concatenate([np.arange(L1), [j]]), scale)
        for j, k in enumerate(keys)
    ]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *starts)


def initial_params(key: PRNGKeyArray, estimator: Model, true_params, config: FitConfig):
    """The starts of an ``"oracle"`` fit, stacked on a leading axis: near-truth starts first,
    then random (they read the truth: the estimator of the committed oracle-start tables)."""
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
    """The best restart of one least-squares fit, by final empirical risk.

    ``restart_risks`` has one entry per start: its final risk on all rows, NaN for a start that
    screening dropped. ``finished`` are the starts run to the end on all rows, with their
    parameters (``finished_params``, stacked) and risks (``finished_risks``).
    """

    params: object
    stats: Stats
    converged: Bool[Array, ""]
    restart: Int[Array, ""]
    restart_risks: Float[Array, " restarts"]
    finished: Int[Array, " finished"]
    finished_params: object
    finished_risks: Float[Array, " finished"]


class _Problem(NamedTuple):
    """Residuals, closed-form normal equations, canonical map and rows of one data set."""

    residual: object
    normal_eqs: object
    canonical: object
    rows: tuple
    unravel: object


def _problem(estimator: Model, X, Y, template, config: FitConfig) -> _Problem:
    n = X.shape[0]
    _, unravel = ravel_pytree(template)

    def residual(theta, X, Y, weight):
        # ``weight`` is 1 on every row; the finisher's zero-padded chunks get 0
        # (``normal_equations``).
        f = regression_function(estimator.spec, estimator.base, atoms(estimator, unravel(theta)), X)
        return (weight[:, None] * (f - Y) / jnp.sqrt(n)).ravel()

    canonical = lambda theta: ravel_pytree(canonicalize(estimator, unravel(theta)))[0]
    return _Problem(
        residual=residual,
        normal_eqs=(
            structured_normal_equations(estimator, unravel, n)
            if config.jacobian == "structured"
            else None
        ),
        canonical=canonical if config.canonicalize else None,
        rows=(X, Y, jnp.ones(n, X.dtype)),
        unravel=unravel,
    )


def _chosen(unravel, thetas, stats, index, restarts=None, screened=None) -> FitResult:
    """The ``FitResult`` of the finished restarts ``thetas`` (their ``stats``; start ``index`` of
    each among ``restarts`` starts, all of them by default): the one of least final risk, a
    non-finite risk never chosen. ``screened`` adds each one's screening iterations."""
    risks = stats.risk
    best = jnp.argmin(jnp.where(jnp.isfinite(risks), risks, jnp.inf))
    chosen = jax.tree.map(lambda x: x[best], stats)
    if screened is not None:
        chosen = chosen._replace(iterations=chosen.iterations + screened[best])
    restart_risks = (
        risks if restarts is None else jnp.full(restarts, jnp.nan, risks.dtype).at[index].set(risks)
    )
    return FitResult(
        params=unravel(thetas[best]),
        stats=chosen,
        converged=is_converged(stats.stop_reason[best]),
        restart=index[best],
        restart_risks=restart_risks,
        finished=index,
        finished_params=jax.vmap(unravel)(thetas),
        finished_risks=risks,
    )


def fit_least_squares(estimator: Model, data: Dataset, starts, config: FitConfig) -> FitResult:
    """Fit every start (leading axis of ``starts``) and keep the one of least empirical risk.

    Each start runs ``config.warmup`` for ``config.warmup_steps`` steps, then
    ``config.finisher`` to its convergence test. Not jitted here: jit the caller (one unit).
    """
    template = jax.tree.map(lambda x: x[0], starts)
    p = _problem(estimator, data.X, data.Y, template, config)
    risk = lambda theta: jnp.sum(p.residual(theta, *p.rows) ** 2)

    def one(theta0):
        if config.warmup is not None:
            theta0 = warm_up(config.warmup, config.warmup_steps, risk, theta0)
        return config.finisher.run(
            p.residual, theta0, p.canonical, data=p.rows, normal_eqs=p.normal_eqs
        )

    thetas, stats = jax.vmap(one)(jax.vmap(lambda s: ravel_pytree(s)[0])(starts))
    return _chosen(p.unravel, thetas, stats, jnp.arange(thetas.shape[0]))


def screened_fit(estimator: Model, data: Dataset, starts, config: FitConfig) -> FitResult:
    """Screened multi-start (``Screen``): screen the restarts on a subsample, finish the best.

    Deterministic given the starts: each round keeps the restarts of least risk on the screening
    rows (``argsort``, stable, so ties go to the lower index), the same under vmap, shards and
    any batching of replicates. ``stats.iterations`` of the result counts the chosen restart's
    screening and finishing iterations.
    """
    screen, lm = config.init.screen, config.finisher
    n = data.X.shape[0]
    template = jax.tree.map(lambda x: x[0], starts)
    full = _problem(estimator, data.X, data.Y, template, config)
    m = n if screen.rows == 0 else min(n, screen.rows)
    sub = full if m == n else _problem(estimator, data.X[:m], data.Y[:m], template, config)
    thetas = jax.vmap(lambda s: ravel_pytree(s)[0])(starts)
    R = thetas.shape[0]
    index = jnp.arange(R)
    screened = jnp.zeros(R, jnp.int32)
    rounds = screen.rounds(R)
    if rounds:
        on_sub = dict(canonicalize=sub.canonical, data=sub.rows, normal_eqs=sub.normal_eqs)
        states = jax.lax.map(lambda t: lm.start(sub.residual, t, **on_sub), thetas)
        budget = 0
        for survivors in rounds:
            budget = screen.iters if screen.kind == "subsample" else budget + screen.iters
            states = jax.lax.map(
                lambda s, b=budget: lm.advance(s, b, sub.residual, **on_sub), states
            )
            risk = jnp.where(jnp.isfinite(states.R), states.R, jnp.inf)
            keep = jnp.argsort(risk, stable=True)[:survivors]
            states = jax.tree.map(lambda x, keep=keep: x[keep], states)
            index = index[keep]
        thetas, screened = states.theta, states.k
    on_full = dict(canonicalize=full.canonical, data=full.rows, normal_eqs=full.normal_eqs)
    finished, stats = jax.lax.map(lambda t: lm.run(full.residual, t, **on_full), thetas)
    return _chosen(full.unravel, finished, stats, index, R, screened)


def multi_start(estimator: Model, data: Dataset, starts, config: FitConfig) -> FitResult:
    """``screened_fit`` with a ``config.init.screen``, else ``fit_least_squares``."""
    if config.init.screen is None:
        return fit_least_squares(estimator, data, starts, config)
    return screened_fit(estimator, data, starts, config)


def estimate(key: PRNGKeyArray, estimator: Model, data: Dataset, config: FitConfig) -> FitResult:
    """The least-squares estimate from truth-free starts (``InitConfig.starts``): reads only the
    data, the estimator and L. The starts are, in this order: the random ones, then the split
    ones; ``FitResult.restart`` indexes them so."""
    init = config.init
    if not init.truth_free:
        raise ValueError("estimate draws truth-free starts; starts='oracle' needs initial_params")
    k_random, k_first, k_split = jax.random.split(key, 3)
    L = config.n_components
    starts = []
    if init.starts in ("random", "mix"):
        starts.append(random_starts(k_random, estimator, L, init.restarts, init.random_scale))
    if init.starts in ("split", "mix"):
        first_config = dataclasses.replace(
            config, n_components=L - 1, init=dataclasses.replace(init, starts="random")
        )
        first = multi_start(
            estimator,
            data,
            random_starts(k_first, estimator, L - 1, init.restarts, init.random_scale),
            first_config,
        )
        starts.append(split_starts(k_split, estimator, first.params, init.split_scale))
    starts = jax.tree.map(lambda *xs: jnp.concatenate(xs), *starts)
    return multi_start(estimator, data, starts, config)
