"""The numerical unit of every experiment: sample data, fit, certify and score, for many replicates.

``simulate_replicates`` is jitted once per (estimator, sample size, config): the sample size sets
array shapes, so experiments loop over n in Python and vmap replicates (and, inside the fit,
restarts). Replicate k of size n uses the key ``fold_in(fold_in(key, n), k)``, so adding a size
or a replicate does not change the others; its data and its starts use separate sub-keys.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from . import checks
from .fit import (
    FitConfig,
    InitConfig,
    empirical_risk,
    estimate,
    fit_least_squares,
    initial_params,
    truth_in,
)
from .losses import score
from .model import FieldError, mixture_weights
from .parameterization import Model, atoms
from .truth import Design, Truth, sample_dataset
from .voronoi import VoronoiLoss

#: Number of times ``simulate_replicates`` was traced, per sample size (a compile counter for
#: tests).
TRACE_COUNT: collections.Counter = collections.Counter()

#: Relative slack for "risk at the estimate <= risk at the truth": round-off only.
RISK_SLACK = 1e-10

#: Two fitted atoms of one Voronoi cell "share a gate" when ||S_i - S_k||_F is at most this: on
#: vanilla's exact flat set (docs/model.md, "Identifiability") their experts can then trade
#: without changing f. Gates here are O(1) (gate_scale 3 in the committed configs).
SHARED_GATE_TOL = 1e-3

#: Finished restarts within this many sigma^2 / n of the best risk count as near-best
#: (``Record.n_near_best``, the D-ambiguity columns).
NEAR_BEST = 1.0

#: A fit is saturated when two finished restarts reach the best risk to this many sigma^2 / n.
SATURATION_TOL = 0.1


class Record(NamedTuple):
    """Everything one replicate's fit produced; nothing is dropped, failures are flagged.

    The fields, in this order, are the columns of the results table (``moe_lora.table``).

    Attributes:
        risk: final empirical risk R_n(G_n) of the best restart.
        risk_truth: empirical risk R_n(G*) at the truth, on the same data.
        grad_norm, rel_grad: gradient norm and relative gradient at G_n.
        iterations: finisher iterations of the best restart.
        stop_reason: see ``moe_lora.optimize.STOP_REASONS``.
        converged: the finisher's convergence test was met: relative gradient <= gtol, or the
            statistical-precision rule (stop_reason "precise"; ``LevenbergMarquardt.stat_tol``).
        certified: converged and risk <= risk_truth (1 + RISK_SLACK): a least-squares estimate.
        restart: index of the best restart; restart_risks: final risk of every restart.
        min_weight: smallest fitted weight pi_i.
        D, D_unaligned, l2_error: losses (D aligned for the softmax gate shift).
        cell_size, cell_mass, cell_parameter: per true atom |A_j|, mass and parameter terms of D.
        cell: Voronoi cell of every fitted atom; weights: fitted pi.
        value_norm: Frobenius norm ||V_i|| of every fitted expert update (the weight/value
            valley of vanilla LoRA shows as a small weight with a large ||V_i||).
        D_mass, D_singleton, D_multi: D taken apart: the mass term sum_j |sum_{A_j} pi_i - pi*_j|,
            and the parameter terms of singleton and multi-atom cells (they sum to D).
        D_S, D_V: the parameter terms of the gate block S and the expert block V (D_mass + D_S
            + D_V = D up to round-off).
        cell_gate_gap: per true atom j, the smallest ||S_i - S_k||_F between two fitted atoms of
            its cell (inf if it holds fewer than two).
        shared_gate: some cell holds two atoms whose gates agree to ``SHARED_GATE_TOL``.
        D_shared_gate: the part of D (mass and parameter terms) from such cells.
        n_restarts: starts the estimate was chosen from (``InitConfig.candidates``).
        n_near_best: finished restarts whose risk is within ``NEAR_BEST`` sigma^2 / n of the
            best (the best included): fits the data cannot tell apart.
        saturated: at least two finished restarts reached the best risk to within
            ``SATURATION_TOL`` sigma^2 / n: the best minimum was found twice, independently.
        D_ambiguity_min, D_ambiguity_max: the smallest and largest D among those near-best
            restarts (the D-ambiguity of fits the data cannot tell apart).
        risk_oracle, D_oracle: the oracle fit (one near-truth start, ``InitConfig.oracle``) on
            the same data, a labelled diagnostic that never takes part in the estimate; NaN
            when it is not run.
    """

    risk: Float[Array, ""]
    risk_truth: Float[Array, ""]
    grad_norm: Float[Array, ""]
    rel_grad: Float[Array, ""]
    min_weight: Float[Array, ""]
    D: Float[Array, ""]
    D_unaligned: Float[Array, ""]
    l2_error: Float[Array, ""]
    iterations: Int[Array, ""]
    restart: Int[Array, ""]
    stop_reason: Int[Array, ""]
    converged: Bool[Array, ""]
    certified: Bool[Array, ""]
    cell_size: Int[Array, " L_star"]
    cell_mass: Float[Array, " L_star"]
    cell_parameter: Float[Array, " L_star"]
    weights: Float[Array, " L"]
    cell: Int[Array, " L"]
    restart_risks: Float[Array, " restarts"]
    value_norm: Float[Array, " L"]
    D_mass: Float[Array, ""]
    D_singleton: Float[Array, ""]
    D_multi: Float[Array, ""]
    D_S: Float[Array, ""]
    D_V: Float[Array, ""]
    shared_gate: Bool[Array, ""]
    D_shared_gate: Float[Array, ""]
    cell_gate_gap: Float[Array, " L_star"]
    n_restarts: Int[Array, ""]
    n_near_best: Int[Array, ""]
    saturated: Bool[Array, ""]
    D_ambiguity_min: Float[Array, ""]
    D_ambiguity_max: Float[Array, ""]
    risk_oracle: Float[Array, ""]
    D_oracle: Float[Array, ""]


class Decomposition(NamedTuple):
    """D taken apart (the fields of the same names in ``Record``).

    ``Record`` repeats these fields flat instead of nesting a ``Decomposition`` because its
    fields, in order, are the columns of the committed results tables (``moe_lora.table``);
    ``tests/test_decomposition.py`` checks that they stay the same names, in order.
    """

    D_mass: Float[Array, ""]
    D_singleton: Float[Array, ""]
    D_multi: Float[Array, ""]
    D_S: Float[Array, ""]
    D_V: Float[Array, ""]
    shared_gate: Bool[Array, ""]
    D_shared_gate: Float[Array, ""]
    cell_gate_gap: Float[Array, " L_star"]


def decompose(loss: VoronoiLoss, S: Float[Array, "L d d"]) -> Decomposition:
    """The pieces of a LoRA Voronoi loss ``loss`` (blocks S and V) of fitted gates ``S``.

    The mass term, the parameter terms of singleton and multi-atom cells, those of the S and V
    blocks, and the cells whose atoms share a gate: cell j's gate gap is the smallest
    ||S_i - S_k||_F over two fitted atoms of the cell (inf if it has fewer than two), and the cell
    shares a gate when the gap is at most ``SHARED_GATE_TOL``.

    Example:
        >>> from moe_lora.losses import lora_voronoi_loss
        >>> from moe_lora.model import Atoms
        >>> truth = Atoms(S=jnp.zeros((1, 2, 2)), V=jnp.ones((1, 2, 1)), c=jnp.zeros(1))
        >>> V = jnp.stack([0.5 * jnp.ones((2, 1)), 1.5 * jnp.ones((2, 1))])
        >>> split = Atoms(S=jnp.zeros((2, 2, 2)), V=V, c=jnp.zeros(2))
        >>> parts = decompose(lora_voronoi_loss(split, truth, "softmax"), split.S)
        >>> p = parts
        >>> bool(p.shared_gate), float(p.D_shared_gate), float(p.D_multi), float(p.D_S)
        (True, 0.5, 0.5, 0.0)
    """
    cell, L_star = loss.cell, loss.mass.shape[0]
    singleton = loss.cell_size == 1
    dist = jnp.sqrt(jnp.sum((S[:, None] - S[None, :]) ** 2, axis=(-2, -1)))
    pair = (cell[:, None] == cell[None, :]) & ~jnp.eye(cell.shape[0], dtype=bool)
    gaps = jax.ops.segment_min(
        jnp.min(jnp.where(pair, dist, jnp.inf), axis=1), cell, num_segments=L_star
    )
    gaps = jnp.where(loss.cell_size >= 2, gaps, jnp.inf)
    shared = gaps <= SHARED_GATE_TOL
    return Decomposition(
        D_mass=jnp.sum(loss.mass),
        D_singleton=jnp.sum(jnp.where(singleton, loss.parameter, 0.0)),
        D_multi=jnp.sum(jnp.where(singleton, 0.0, loss.parameter)),
        D_S=jnp.sum(loss.block_parameter["S"]),
        D_V=jnp.sum(loss.block_parameter["V"]),
        shared_gate=jnp.any(shared),
        D_shared_gate=jnp.sum(jnp.where(shared, loss.mass + loss.parameter, 0.0)),
        cell_gate_gap=gaps,
    )


def simulate_replicate(
    key: PRNGKeyArray,
    truth: Truth,
    estimator: Model,
    true_params,
    X_eval,
    sigma,
    *,
    n: int,
    design: Design,
    config: FitConfig,
) -> Record:
    """One replicate: draw n pairs, fit from every start, certify the best and score it.

    Truth-free starts (``InitConfig.starts`` other than ``"oracle"``) come from
    ``fold_in(k_init, 1)``; the oracle fit (a diagnostic, or the estimate of ``"oracle"``
    configs) from ``k_init``, so the oracle diagnostic is the fit an oracle-start config makes on
    the same data. ``true_params`` start the oracle fit and certify; nothing else reads them.
    """
    k_data, k_init = jax.random.split(key)
    data = sample_dataset(k_data, truth, n, sigma, design)
    init = config.init
    if init.truth_free:
        fit = estimate(jax.random.fold_in(k_init, 1), estimator, data, config)
    else:
        fit = fit_least_squares(
            estimator, data, initial_params(k_init, estimator, true_params, config), config
        )
    fitted = atoms(estimator, fit.params)
    risk_truth = empirical_risk(estimator, true_params, data)
    scores = score(estimator, fitted, truth.model, truth.atoms, X_eval)
    weights = mixture_weights(fitted.c, estimator.spec.gating)
    D_of = lambda params: (
        score(estimator, atoms(estimator, params), truth.model, truth.atoms, X_eval).D.total
    )
    scale = sigma**2 / n
    gap = jnp.where(jnp.isfinite(fit.finished_risks), fit.finished_risks - fit.stats.risk, jnp.inf)
    near = gap <= NEAR_BEST * scale
    D_finished = jax.vmap(D_of)(fit.finished_params)
    nan = jnp.full((), jnp.nan, fit.stats.risk.dtype)
    risk_oracle, D_oracle = nan, nan
    if init.oracle:
        oracle = dataclasses.replace(config, init=InitConfig(starts="oracle"))
        ofit = fit_least_squares(
            estimator, data, initial_params(k_init, estimator, true_params, oracle), oracle
        )
        risk_oracle, D_oracle = ofit.stats.risk, D_of(ofit.params)
    return Record(
        risk=fit.stats.risk,
        risk_truth=risk_truth,
        grad_norm=fit.stats.grad_norm,
        rel_grad=fit.stats.rel_grad,
        iterations=fit.stats.iterations,
        stop_reason=fit.stats.stop_reason,
        converged=fit.converged,
        certified=fit.converged & (fit.stats.risk <= risk_truth * (1 + RISK_SLACK)),
        restart=fit.restart,
        restart_risks=fit.restart_risks,
        min_weight=jnp.min(weights),
        D=scores.D.total,
        D_unaligned=scores.D_unaligned,
        l2_error=scores.l2_error,
        cell_size=scores.D.cell_size,
        cell_mass=scores.D.mass,
        cell_parameter=scores.D.parameter,
        cell=scores.D.cell,
        weights=weights,
        value_norm=jnp.sqrt(jnp.sum(fitted.V**2, axis=(-2, -1))),
        **decompose(scores.D, fitted.S)._asdict(),
        n_restarts=jnp.asarray(fit.restart_risks.shape[0], jnp.int32),
        n_near_best=jnp.sum(near).astype(jnp.int32),
        saturated=jnp.sum(gap <= SATURATION_TOL * scale) >= 2,
        D_ambiguity_min=jnp.min(jnp.where(near, D_finished, jnp.inf)),
        D_ambiguity_max=jnp.max(jnp.where(near, D_finished, -jnp.inf)),
        risk_oracle=risk_oracle,
        D_oracle=D_oracle,
    )


@functools.partial(jax.jit, static_argnames=("n", "design", "config", "batch"))
def _simulate_batch(
    keys, truth, estimator, true_params, X_eval, sigma, *, n, design, config, batch
):
    TRACE_COUNT[n] += 1
    one = functools.partial(simulate_replicate, n=n, design=design, config=config)
    if batch is None or batch >= keys.shape[0]:
        return jax.vmap(one, in_axes=(0, None, None, None, None, None))(
            keys, truth, estimator, true_params, X_eval, sigma
        )
    # Batches of ``batch`` vmapped replicates, one batch after another: a vmapped while-loop runs
    # until its slowest member stops, so small batches pay for their own slowest fit only.
    return jax.lax.map(
        lambda k: one(k, truth, estimator, true_params, X_eval, sigma), keys, batch_size=batch
    )


def replicate_keys(key: PRNGKeyArray, n: int, replicates) -> PRNGKeyArray:
    """Keys of the given replicate indices at sample size n: fold_in(fold_in(key, n), k)."""
    k_n = jax.random.fold_in(key, n)
    return jax.vmap(lambda k: jax.random.fold_in(k_n, k))(jnp.asarray(replicates, dtype=jnp.uint32))


def simulate_replicates(
    key: PRNGKeyArray,
    truth: Truth,
    estimator: Model,
    n: int,
    *,
    sigma: float,
    replicates,
    config: FitConfig,
    X_eval: Float[Array, "m d"],
    design: Design = Design(),
    batch: int | None = None,
) -> Record:
    """Fit ``estimator`` to fresh data of size n from ``truth``, for each replicate index.

    Args:
        key: the experiment's key; replicate k uses fold_in(fold_in(key, n), k).
        truth: the ground truth (``draw_truth`` or ``make_truth``).
        estimator: the fitted model; its family must contain the truth (``truth_in``).
        n: sample size. sigma: noise standard deviation.
        replicates: an int R (indices 0..R-1) or a sequence of replicate indices.
        config: fitted components, optimizer and restarts.
        X_eval: fixed held-out inputs for the L2 error.
        design: input distribution.
        batch: replicates fitted together in one vmapped batch; batches run one after another
            (``lax.map``). ``None``: all replicates in one batch. Each fit's Levenberg-Marquardt
            loop runs inside the batch until the batch's slowest fit stops, so when iteration
            counts are heavy-tailed (over-specified fits) small batches waste less; large
            batches vectorize better when they are not. Vmapped and mapped code round
            differently, so a fit's path can differ by a few iterations: converged fits agree
            (risk to about 1e-8 relative), but fits in vanilla's weight/value valley can end at
            different points of it (docs/results.md, "Empirical minimax").

    Returns:
        A ``Record`` whose every field has a leading replicate axis.

    Example:
        >>> import jax, moe_lora as ml
        >>> spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
        >>> model = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
        >>> key = jax.random.key(2)
        >>> truth = ml.draw_truth(key, model, 2, min_separation=0.5, min_gate_strength=0.5)
        >>> X_eval = ml.sample_inputs(jax.random.key(3), 1000, 2)
        >>> rec = ml.simulate_replicates(jax.random.key(4), truth, model, 2000, sigma=0.02,
        ...     replicates=2, config=ml.FitConfig(n_components=2), X_eval=X_eval)
        >>> rec.D.shape, bool(rec.certified.all())
        ((2,), True)
    """
    checks.integer("n", n, minimum=1)
    if not isinstance(sigma, (int, float)):
        raise FieldError("sigma", f"sigma must be a Python number, got {type(sigma).__name__}")
    checks.positive("sigma", sigma)
    L_star = truth.atoms.c.shape[0]
    if config.n_components < L_star:
        raise ValueError(
            f"n_components={config.n_components} is below the true number of components "
            f"L*={L_star}; expected L >= L*"
        )
    if np.ndim(X_eval) != 2 or np.shape(X_eval)[1] != estimator.spec.d:
        raise ValueError(
            f"Shape mismatch for X_eval: got {np.shape(X_eval)}, expected (m, {estimator.spec.d})"
        )
    if batch is not None:
        checks.integer("batch", batch, minimum=1)
    if isinstance(replicates, (int, np.integer)):
        replicates = np.arange(checks.integer("replicates", replicates, minimum=1))
    true_params = truth_in(estimator, truth)
    keys = replicate_keys(key, int(n), replicates)
    return _simulate_batch(
        keys,
        truth,
        estimator,
        true_params,
        jnp.asarray(X_eval),
        float(sigma),
        n=int(n),
        design=design,
        config=config,
        batch=None if batch is None else int(batch),
    )
