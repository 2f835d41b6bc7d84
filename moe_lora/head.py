"""LoRA against RepLoRA on a full attention head: a teacher-student simulation.

See docs/model.md, "Attention as a mixture of experts", for the identity behind it.

The setting. A frozen "pre-trained" head with random weights W_Q0, W_K0 (d x d_k) and W_V0 (d x d_v),
entries N(0, 1/d). An input is a sequence X of N tokens in R^d (i.i.d. N(0, I_d) tokens, or
Uniform[-1, 1]^d). The head's output is the whole N x d_v matrix

    H(X) = G(X (W_Q0 + B_Q A_Q) W_K0^T X^T / sqrt(d_k)) X (W_V0 + B_V A_V),

with G the row-wise softmax (``gating="softmax"``; row i is the mixture of experts of
``moe_lora.attention``) or the element-wise sigmoid(s - log N) of sigmoid attention
(``gating="sigmoid"``; the bias -log N keeps the gates of a row summing to about 1 at s = 0).
A sample is n sequences with Y = H*(X) + eps, eps ~ N(0, sigma^2) entry-wise.

The teacher H* is a rank-r* update of W_Q and W_V, drawn once from a key and reused:
``truth="vanilla"`` draws free Gaussian factors; ``truth="reparameterized"`` draws the parameters of
the RepLoRA generator below (at rank r*) and takes its factors. Either way the factors are then
rescaled so that ||B_Q A_Q||_F = update_q ||W_Q0||_F and ||B_V A_V||_F = update_v ||W_V0||_F
(the stated update sizes), and the teacher's gates are checked to be non-degenerate: the query
update must move the gates (mean total-variation change >= ``MIN_GATE_CHANGE``) without
saturating them (share of saturated rows <= ``MAX_GATE_SATURATION``); ``draw_teacher`` raises
otherwise and records both numbers.

The students, both of rank r >= r*:

* LoRA: free B_Q (d x r), A_Q (r x d_k), B_V (d x r), A_V (r x d_v); r (2 d + d_k + d_v) parameters.
* RepLoRA, our reconstruction of the paper's Figure 1 (the paper's own equations were not available
  to us). Two learned diagonal matrices D_A = diag(a), D_B = diag(b) (a, b in R^r) are the inputs
  of ONE lightweight MLP: a shared trunk (W_1 in R^{r x h}, bias b_1 in R^h, activation act)
  followed by four linear output heads, two for the A factors and two for the B factors::

      H_A = act(D_A W_1 + 1 b_1^T)  (r x h),     A_Q = H_A W_AQ,      A_V = H_A W_AV,
      H_B = act(D_B W_1 + 1 b_1^T)  (r x h),     B_Q = (H_B W_BQ)^T,  B_V = (H_B W_BV)^T,

  with W_AQ (h x d_k), W_AV (h x d_v), W_BQ, W_BV (h x d). Row k of a factor is the MLP's output at
  the input row a_k e_k (resp. b_k e_k). Query and value share the latent rows H_A and H_B and
  the trunk. 2 r + r h + h + h (2 d + d_k + d_v) parameters (``parameter_counts``); the default
  h = r gives 106 against LoRA's 96 at r = 2 (d = 16, d_k = d_v = 8).
  With h >= r and free output heads the family of products (B_Q A_Q, B_V A_V) is the same as
  LoRA's (H_B^T H_A is a generic r x r matrix that the heads absorb): the two students differ in
  their coordinates, hence in what Adam and early stopping do, not in what they can represent.
  This differs from the theory's section 3, where the maps are fixed and the sharing constrains.

Training: full-batch Adam (optax) on the mean squared error over the training split, at most
``steps`` steps in one ``lax.while_loop``; the parameters with the best validation loss are kept and
updates stop once the validation loss has not improved for ``patience`` steps (early stopping,
one flag per fit: vmapped, the loop runs until the batch's last fit stops, and stopped fits
stay where they are). Optionally (``finisher="lm"``) a
Levenberg-Marquardt least-squares finisher (``moe_lora.optimize``) continues from Adam's best
point on the training split. Several starts per fit (vmapped); the start with the lowest
validation loss is kept. Both students start at the pre-trained head (zero update: A factors,
resp. the A heads, are zero).

Replicates: seed k at sample size n uses ``fold_in(fold_in(key, n), k)``, split into data, noise
and initialisation keys that do not depend on the student, so both students see the same data.
The teacher and the test inputs come from ``fold_in(key, 0)`` (n >= 2, so no replicate shares it).
``simulate_head`` is jitted once per (student, n, config); ``TRACE_COUNT`` counts its traces.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .attention import AttentionWeights, LoRA
from .optimize import LevenbergMarquardt

STUDENTS = ("lora", "replora")
GATINGS = ("softmax", "sigmoid")
TRUTHS = ("vanilla", "reparameterized")
INPUTS = ("gaussian", "uniform")
FINISHERS = ("none", "lm")
HEAD_ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "gelu": jax.nn.gelu, "identity": lambda x: x}

#: Traces of the jitted unit, per (student, n): a compile counter for tests.
TRACE_COUNT: collections.Counter = collections.Counter()

#: The teacher's query update must change the gates by at least this mean total variation.
MIN_GATE_CHANGE = 0.02
#: At most this share of the teacher's gate rows may be saturated (largest gate > 0.99).
MAX_GATE_SATURATION = 0.5


def _positive_int(name, value):
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(name, value):
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {options}")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Static settings of the head simulation (validated on construction).

    Args:
        d, d_k, d_v: token, key/query and value dimensions. N: tokens per sequence.
        rank_true: r*, rank of the teacher's updates. rank: r >= r*, rank of both students.
        hidden: width h of RepLoRA's MLP (``None``: h = rank).
        activation: the MLP's activation (``HEAD_ACTIVATIONS``).
        sigma: noise standard deviation. inputs: token distribution, ``"gaussian"`` N(0, I_d) or
            ``"uniform"`` Uniform[-1, 1]^d.
        gating: ``"softmax"`` or ``"sigmoid"`` attention. truth: ``"vanilla"`` or ``"reparameterized"``.
        update_q, update_v: teacher update sizes ||B_Q A_Q||_F / ||W_Q0||_F and ||B_V A_V||_F / ||W_V0||_F.
        optimizer: ``"adam"`` (the only one now). learning_rate, steps: Adam's step size and step budget.
        val_fraction: share of the n sequences held out for early stopping (at least one).
        patience: early stopping after this many steps without a better validation loss.
        starts: random starts per fit. finisher: ``"none"`` or ``"lm"`` (Levenberg-Marquardt after
            Adam). lm_iterations: its iteration cap. n_test: test sequences for the function error.
    """

    d: int = 16
    d_k: int = 8
    d_v: int = 8
    N: int = 8
    rank_true: int = 2
    rank: int = 2
    hidden: int | None = None
    activation: str = "tanh"
    sigma: float = 0.1
    inputs: str = "gaussian"
    gating: str = "softmax"
    truth: str = "vanilla"
    update_q: float = 1.0
    update_v: float = 0.5
    optimizer: str = "adam"
    learning_rate: float = 1e-2
    steps: int = 2000
    val_fraction: float = 0.2
    patience: int = 200
    starts: int = 2
    finisher: str = "none"
    lm_iterations: int = 100
    n_test: int = 512

    def __post_init__(self):
        for name in ("d", "d_k", "d_v", "rank_true", "rank", "steps", "patience", "starts", "lm_iterations", "n_test"):
            _positive_int(name, getattr(self, name))
        if not (isinstance(self.N, (int, np.integer)) and self.N >= 1):
            raise ValueError(f"N (tokens per sequence) must be an integer >= 1, got {self.N!r}")
        if self.hidden is not None:
            _positive_int("hidden", self.hidden)
        for name, other in (("d", self.d), ("d_k", self.d_k), ("d_v", self.d_v)):
            if self.rank > other:
                raise ValueError(f"Student rank {self.rank} is above {name}={other}; expected rank <= min(d, d_k, d_v)")
            if self.rank_true > other:
                raise ValueError(
                    f"Teacher rank {self.rank_true} is above {name}={other}; expected rank_true <= min(d, d_k, d_v)"
                )
        if self.rank < self.rank_true:
            raise ValueError(
                f"Student rank {self.rank} is below the teacher's rank_true={self.rank_true}; "
                "expected rank >= rank_true"
            )
        for name in ("sigma", "update_q", "update_v", "learning_rate"):
            _positive_float(name, getattr(self, name))
        if not (isinstance(self.val_fraction, float) and 0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction must be a float in (0, 1), got {self.val_fraction!r}")
        _choice("activation", self.activation, tuple(HEAD_ACTIVATIONS))
        _choice("inputs", self.inputs, INPUTS)
        _choice("gating", self.gating, GATINGS)
        _choice("truth", self.truth, TRUTHS)
        _choice("optimizer", self.optimizer, ("adam",))
        _choice("finisher", self.finisher, FINISHERS)

    @property
    def width(self) -> int:
        """h, the width of RepLoRA's MLP."""
        return self.rank if self.hidden is None else self.hidden


def _check_student(student):
    _choice("student", student, STUDENTS)


def check_head(config: HeadConfig, weights: AttentionWeights, lora: LoRA | None = None) -> None:
    """Raise ``ValueError`` naming the shapes when frozen weights or factors do not fit ``config``."""
    d, d_k, d_v = config.d, config.d_k, config.d_v
    expected = {"W_Q": (d, d_k), "W_K": (d, d_k), "W_V": (d, d_v)}
    for name, shape in expected.items():
        got = tuple(np.shape(getattr(weights, name)))
        if got != shape:
            raise ValueError(f"Shape mismatch for {name}: got {got}, expected {shape} (d={d}, d_k={d_k}, d_v={d_v})")
    if lora is not None:
        r = np.shape(lora.B_Q)[-1]
        expected = {"B_Q": (d, r), "A_Q": (r, d_k), "B_V": (d, r), "A_V": (r, d_v)}
        for name, shape in expected.items():
            got = tuple(np.shape(getattr(lora, name)))
            if got != shape:
                raise ValueError(
                    f"Shape mismatch for {name}: got {got}, expected {shape} (d={d}, d_k={d_k}, d_v={d_v}, r={r})"
                )


# --------------------------------------------------------------------------------------------- the head


def gate_matrix(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "N d"]
) -> Float[Array, "N N"]:
    """Gates G_ij of one sequence: softmax_j or sigmoid(. - log N) of x_i^T (W_Q0 + B_Q A_Q) W_K0^T x_j / sqrt(d_k)."""
    scores = (X @ (weights.W_Q + lora.B_Q @ lora.A_Q)) @ (X @ weights.W_K).T / math.sqrt(config.d_k)
    if config.gating == "softmax":
        return jax.nn.softmax(scores, axis=-1)
    return jax.nn.sigmoid(scores - math.log(config.N))


def head_output(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "N d"]
) -> Float[Array, "N d_v"]:
    """The head's output on one sequence: H(X) = G(X) X (W_V0 + B_V A_V); equals ``attention`` under softmax.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from moe_lora.attention import attention
        >>> c = HeadConfig()
        >>> t = draw_teacher(jax.random.key(0), c)
        >>> X = sample_sequences(jax.random.key(1), c, 1)[0]
        >>> bool(jnp.allclose(head_output(c, t.weights, t.lora, X), attention(X, t.weights, t.lora)))
        True
    """
    return gate_matrix(config, weights, lora, X) @ (X @ (weights.W_V + lora.B_V @ lora.A_V))


def _heads(config, weights, lora, X):
    return jax.vmap(lambda x: head_output(config, weights, lora, x))(X)


def sample_sequences(key: PRNGKeyArray, config: HeadConfig, n: int) -> Float[Array, "n N d"]:
    """n i.i.d. sequences of N tokens from the configured token distribution."""
    shape = (n, config.N, config.d)
    if config.inputs == "gaussian":
        return jax.random.normal(key, shape)
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)


# --------------------------------------------------------------------------------------------- students


class RepLoRAParams(NamedTuple):
    """RepLoRA's trainable parameters: the two diagonals and the one MLP (trunk and four heads)."""

    a: Float[Array, " r"]
    b: Float[Array, " r"]
    W_1: Float[Array, "r h"]
    b_1: Float[Array, " h"]
    W_AQ: Float[Array, "h d_k"]
    W_AV: Float[Array, "h d_v"]
    W_BQ: Float[Array, "h d"]
    W_BV: Float[Array, "h d"]


def replora_factors(params: RepLoRAParams, activation: str = "tanh") -> LoRA:
    """The RepLoRA generator: LoRA factors from the diagonal inputs through the one MLP.

    H_A = act(diag(a) W_1 + b_1), H_B = act(diag(b) W_1 + b_1); A_Q = H_A W_AQ, A_V = H_A W_AV,
    B_Q = (H_B W_BQ)^T, B_V = (H_B W_BV)^T.

    Example:
        >>> import jax
        >>> p = init_student(jax.random.key(0), HeadConfig(rank=3, rank_true=2, hidden=4), "replora")
        >>> [x.shape for x in replora_factors(p)]
        [(16, 3), (3, 8), (16, 3), (3, 8)]
    """
    act = HEAD_ACTIVATIONS[activation]
    H_A = act(params.a[:, None] * params.W_1 + params.b_1[None, :])
    H_B = act(params.b[:, None] * params.W_1 + params.b_1[None, :])
    return LoRA(B_Q=(H_B @ params.W_BQ).T, A_Q=H_A @ params.W_AQ, B_V=(H_B @ params.W_BV).T, A_V=H_A @ params.W_AV)


def student_factors(config: HeadConfig, student: str, params) -> LoRA:
    """The LoRA factors a student's parameters stand for (identity for LoRA)."""
    return params if student == "lora" else replora_factors(params, config.activation)


def parameter_counts(config: HeadConfig) -> dict[str, int]:
    """Trainable parameters of each student: LoRA r (2 d + d_k + d_v); RepLoRA 2 r + r h + h + h (2 d + d_k + d_v).

    Example:
        >>> parameter_counts(HeadConfig())
        {'lora': 96, 'replora': 106}
    """
    r, h, d, d_k, d_v = config.rank, config.width, config.d, config.d_k, config.d_v
    return {"lora": r * (2 * d + d_k + d_v), "replora": 2 * r + r * h + h + h * (2 * d + d_k + d_v)}


def init_student(key: PRNGKeyArray, config: HeadConfig, student: str):
    """A start at the pre-trained head (zero update): the A factors (LoRA) or A heads (RepLoRA) are zero.

    LoRA: B entries N(0, 1/d). RepLoRA: a = b = 1, W_1 entries N(0, 1), b_1 = 0, B heads N(0, 1/(h d)).
    """
    _check_student(student)
    r, h, d = config.rank, config.width, config.d
    if student == "lora":
        kq, kv = jax.random.split(key)
        return LoRA(
            B_Q=jax.random.normal(kq, (d, r)) / math.sqrt(d),
            A_Q=jnp.zeros((r, config.d_k)),
            B_V=jax.random.normal(kv, (d, r)) / math.sqrt(d),
            A_V=jnp.zeros((r, config.d_v)),
        )
    k1, kq, kv = jax.random.split(key, 3)
    return RepLoRAParams(
        a=jnp.ones(r),
        b=jnp.ones(r),
        W_1=jax.random.normal(k1, (r, h)),
        b_1=jnp.zeros(h),
        W_AQ=jnp.zeros((h, config.d_k)),
        W_AV=jnp.zeros((h, config.d_v)),
        W_BQ=jax.random.normal(kq, (h, d)) / math.sqrt(h * d),
        W_BV=jax.random.normal(kv, (h, d)) / math.sqrt(h * d),
    )


# --------------------------------------------------------------------------------------------- teacher


class Teacher(NamedTuple):
    """The frozen head and the teacher's update, drawn once and reused.

    Attributes:
        weights: the frozen pre-trained head. lora: the teacher's factors (rank r*).
        params: what the factors were drawn as (``LoRA`` for a vanilla truth, ``RepLoRAParams``
            of the rank-r* generator for a reparameterized one).
        update_q, update_v: ||B_Q A_Q||_F / ||W_Q0||_F and ||B_V A_V||_F / ||W_V0||_F (as configured).
        gate_change: mean total variation (1/2 sum_j |G_ij - G0_ij|) between the teacher's and the
            frozen head's gates. gate_saturation: share of gate rows with a gate above 0.99.
    """

    weights: AttentionWeights
    lora: LoRA
    params: object
    update_q: float
    update_v: float
    gate_change: float
    gate_saturation: float


def _frozen_head(key, config):
    kq, kk, kv = jax.random.split(key, 3)
    scale = 1 / math.sqrt(config.d)
    return AttentionWeights(
        W_Q=scale * jax.random.normal(kq, (config.d, config.d_k)),
        W_K=scale * jax.random.normal(kk, (config.d, config.d_k)),
        W_V=scale * jax.random.normal(kv, (config.d, config.d_v)),
    )


def _zero_lora(config, r=1):
    return LoRA(
        jnp.zeros((config.d, r)), jnp.zeros((r, config.d_k)), jnp.zeros((config.d, r)), jnp.zeros((r, config.d_v))
    )


def gate_diagnostics(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "n N d"]
) -> tuple[float, float]:
    """(gate_change, gate_saturation) of an update on sequences X; see ``Teacher``."""
    G = jax.vmap(lambda x: gate_matrix(config, weights, lora, x))(X)
    G0 = jax.vmap(lambda x: gate_matrix(config, weights, _zero_lora(config), x))(X)
    change = 0.5 * jnp.mean(jnp.sum(jnp.abs(G - G0), axis=-1))
    saturation = jnp.mean(jnp.max(G, axis=-1) > 0.99)
    return float(change), float(saturation)


def draw_teacher(key: PRNGKeyArray, config: HeadConfig) -> Teacher:
    """The frozen head and a rank-r* teacher update of the configured kind and sizes (see the module docstring).

    Raises:
        ValueError: if the teacher's gates are degenerate (the query update barely moves them, or
            most rows are saturated); the message gives the measured numbers.
    """
    k_head, k_update, k_check = jax.random.split(key, 3)
    weights = _frozen_head(k_head, config)
    r = config.rank_true
    if config.truth == "vanilla":
        kb, ka, kc, ke = jax.random.split(k_update, 4)
        params = LoRA(
            B_Q=jax.random.normal(kb, (config.d, r)),
            A_Q=jax.random.normal(ka, (r, config.d_k)),
            B_V=jax.random.normal(kc, (config.d, r)),
            A_V=jax.random.normal(ke, (r, config.d_v)),
        )
        raw = params
    else:
        k1, k2, k3, k4, k5, k6, k7 = jax.random.split(k_update, 7)
        h = r  # the generator at rank r*, width h = r*
        normal = jax.random.normal
        params = RepLoRAParams(
            a=normal(k1, (r,)),
            b=normal(k2, (r,)),
            W_1=normal(k3, (r, h)),
            b_1=jnp.zeros(h),
            W_AQ=normal(k4, (h, config.d_k)),
            W_AV=normal(k5, (h, config.d_v)),
            W_BQ=normal(k6, (h, config.d)),
            W_BV=normal(k7, (h, config.d)),
        )
        raw = replora_factors(params, config.activation)
    # Rescale to the stated sizes: balanced for a free factorization, on the (linear) B heads for RepLoRA.
    tq = config.update_q * jnp.linalg.norm(weights.W_Q) / jnp.linalg.norm(raw.B_Q @ raw.A_Q)
    tv = config.update_v * jnp.linalg.norm(weights.W_V) / jnp.linalg.norm(raw.B_V @ raw.A_V)
    if config.truth == "vanilla":
        params = LoRA(raw.B_Q * jnp.sqrt(tq), raw.A_Q * jnp.sqrt(tq), raw.B_V * jnp.sqrt(tv), raw.A_V * jnp.sqrt(tv))
        lora = params
    else:
        params = params._replace(W_BQ=params.W_BQ * tq, W_BV=params.W_BV * tv)
        lora = replora_factors(params, config.activation)
    change, saturation = gate_diagnostics(config, weights, lora, sample_sequences(k_check, config, 256))
    if change < MIN_GATE_CHANGE or saturation > MAX_GATE_SATURATION:
        raise ValueError(
            f"Degenerate teacher gates: gate_change={change:.3g} (expected >= {MIN_GATE_CHANGE}), "
            f"gate_saturation={saturation:.3g} (expected <= {MAX_GATE_SATURATION}); change update_q"
        )
    return Teacher(weights, lora, params, float(config.update_q), float(config.update_v), change, saturation)


# --------------------------------------------------------------------------------------------- one fit


class HeadRecord(NamedTuple):
    """One fit of one student (leading seed axis when batched).

    Attributes:
        function_error: sqrt(mean ||H_hat - H*||^2 / mean ||H* - H_0||^2) on the test sequences:
            the head's output error relative to the teacher's effect (H_0 the frozen head).
        function_rmse: sqrt(mean over entries of (H_hat - H*)^2), absolute.
        gate_error: ||B_Q A_Q W_K0^T - (B_Q A_Q W_K0^T)*||_F / ||(B_Q A_Q W_K0^T)*||_F (identifiable gate part).
        value_error: ||B_V A_V - (B_V A_V)*||_F / ||(B_V A_V)*||_F.
        steps: Adam steps to the best validation loss (of the kept start).
        stopped_early: the kept start's patience ran out before the step budget.
        val_loss, train_loss: mean squared error on the validation and training splits at the estimate.
        train_loss_truth: the teacher's training loss on the same data (about sigma^2).
        finisher_iterations: Levenberg-Marquardt iterations (0 without a finisher).
        start: index of the kept start.
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
    finisher_iterations: Int[Array, ""]
    start: Int[Array, ""]


def split_sizes(config: HeadConfig, n: int) -> tuple[int, int]:
    """(n_train, n_val): at least one validation sequence and one training sequence."""
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ValueError(f"Sample size n must be an integer >= 2 (one training and one validation sequence), got {n!r}")
    n_val = min(max(1, int(round(config.val_fraction * n))), n - 1)
    return n - n_val, n_val


def _mse(config, weights, lora, X, Y):
    return jnp.mean((_heads(config, weights, lora, X) - Y) ** 2)


def train_student(config: HeadConfig, student: str, weights: AttentionWeights, params0, train, val):
    """Adam with early stopping from ``params0`` for one start: (best params, steps to best, stopped, best val loss).

    Full-batch steps in a ``lax.while_loop`` that ends after ``config.steps`` steps or once the
    validation loss has not improved for ``patience`` steps; the parameters with the best
    validation loss are returned. Under ``vmap`` the loop runs until the batch's last fit stops;
    a stopped fit's parameters no longer move, so its result does not depend on its batch.
    """
    opt = optax.adam(config.learning_rate)
    loss = lambda p, X, Y: _mse(config, weights, student_factors(config, student, p), X, Y)
    grad = jax.grad(loss)

    def step(state):
        k, p, opt_state, best, best_loss, best_step, stopped = state
        updates, new_opt_state = opt.update(grad(p, *train), opt_state, p)
        moved = optax.apply_updates(p, updates)
        p = jax.tree.map(lambda new, old: jnp.where(stopped, old, new), moved, p)
        opt_state = jax.tree.map(lambda new, old: jnp.where(stopped, old, new), new_opt_state, opt_state)
        v = loss(p, *val)
        better = (v < best_loss) & ~stopped
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, best)
        best_loss, best_step = jnp.where(better, v, best_loss), jnp.where(better, k + 1, best_step)
        stopped = stopped | (k + 1 - best_step >= config.patience)
        return k + 1, p, opt_state, best, best_loss, best_step, stopped

    zero = jnp.zeros((), jnp.int32)
    state = (zero, params0, opt.init(params0), params0, loss(params0, *val), zero, jnp.zeros((), bool))
    _, _, _, best, best_loss, best_step, stopped = jax.lax.while_loop(
        lambda s: (s[0] < config.steps) & ~s[-1], step, state
    )
    return best, best_step, stopped, best_loss


def _finish(config, student, weights, params, train):
    """Levenberg-Marquardt on the training split from ``params`` (``finisher="lm"``)."""
    theta0, unravel = ravel_pytree(params)
    X, Y = train
    scale = 1 / math.sqrt(Y.size)
    residual = lambda t: scale * (_heads(config, weights, student_factors(config, student, unravel(t)), X) - Y).ravel()
    theta, stats = LevenbergMarquardt(max_iter=config.lm_iterations, gtol=1e-8).run(residual, theta0)
    return unravel(theta), stats.iterations


def _relative(M, M_star):
    return jnp.linalg.norm(M - M_star) / jnp.linalg.norm(M_star)


def fit_replicate(key: PRNGKeyArray, teacher: Teacher, X_test, config: HeadConfig, student: str, n: int) -> HeadRecord:
    """One replicate: draw n sequences, fit ``student`` from ``config.starts`` starts, score the kept one."""
    n_train, _ = split_sizes(config, n)
    k_x, k_eps, k_init = jax.random.split(key, 3)
    w = teacher.weights
    X = sample_sequences(k_x, config, n)
    Y = _heads(config, w, teacher.lora, X) + config.sigma * jax.random.normal(k_eps, (n, config.N, config.d_v))
    val, train = (X[n_train:], Y[n_train:]), (X[:n_train], Y[:n_train])
    starts = jax.vmap(lambda k: init_student(k, config, student))(jax.random.split(k_init, config.starts))
    return _fit_from(starts, teacher, X_test, config, student, train, val)


def _fit_from(starts, teacher, X_test, config, student, train, val) -> HeadRecord:
    """Fit from a batch of starts (leading axis), keep the best validation loss, score it."""
    w = teacher.weights
    best, steps, stopped, _ = jax.vmap(lambda p: train_student(config, student, w, p, train, val))(starts)
    if config.finisher == "lm":
        best, iters = jax.vmap(lambda p: _finish(config, student, w, p, train))(best)
    else:
        iters = jnp.zeros(config.starts, jnp.int32)
    val_losses = jax.vmap(lambda p: _mse(config, w, student_factors(config, student, p), *val))(best)
    s = jnp.argmin(jnp.where(jnp.isfinite(val_losses), val_losses, jnp.inf))
    params = jax.tree.map(lambda x: x[s], best)
    lora = student_factors(config, student, params)
    H_hat, H_star = _heads(config, w, lora, X_test), _heads(config, w, teacher.lora, X_test)
    H_0 = _heads(config, w, _zero_lora(config), X_test)
    err = jnp.mean((H_hat - H_star) ** 2)
    t = teacher.lora
    return HeadRecord(
        function_error=jnp.sqrt(err / jnp.mean((H_star - H_0) ** 2)),
        function_rmse=jnp.sqrt(err),
        gate_error=_relative(lora.B_Q @ lora.A_Q @ w.W_K.T, t.B_Q @ t.A_Q @ w.W_K.T),
        value_error=_relative(lora.B_V @ lora.A_V, t.B_V @ t.A_V),
        steps=steps[s],
        stopped_early=stopped[s],
        val_loss=val_losses[s],
        train_loss=_mse(config, w, lora, *train),
        train_loss_truth=_mse(config, w, t, *train),
        finisher_iterations=iters[s],
        start=s.astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("config", "student", "n"))
def _simulate_block(keys, teacher, X_test, *, config, student, n):
    TRACE_COUNT[(student, n)] += 1
    return jax.vmap(lambda k: fit_replicate(k, teacher, X_test, config, student, n))(keys)


def seed_keys(key: PRNGKeyArray, n: int, seeds) -> PRNGKeyArray:
    """Keys of the given seeds at sample size n: fold_in(fold_in(key, n), k)."""
    k_n = jax.random.fold_in(key, n)
    return jax.vmap(lambda k: jax.random.fold_in(k_n, k))(jnp.asarray(seeds, dtype=jnp.uint32))


def teacher_and_test(key: PRNGKeyArray, config: HeadConfig) -> tuple[Teacher, Float[Array, "m N d"]]:
    """The experiment's teacher and test sequences, both from ``fold_in(key, 0)``."""
    k_teacher, k_test = jax.random.split(jax.random.fold_in(key, 0))
    return draw_teacher(k_teacher, config), sample_sequences(k_test, config, config.n_test)


def _seed_list(seeds):
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count or a sequence of seed indices, got {seeds!r}")
        return np.arange(seeds)
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or (seeds < 0).any():
        raise ValueError(f"seeds must be a non-empty sequence of non-negative indices, got {seeds!r}")
    return seeds


def simulate_head(
    key: PRNGKeyArray, config: HeadConfig, student: str, n: int, seeds, *, teacher: Teacher | None = None
) -> HeadRecord:
    """Fit ``student`` to n noisy sequences from the teacher, for each seed (vmapped, one compilation per (student, n)).

    Args:
        key: the experiment's key: the teacher and test set come from fold_in(key, 0) (unless
            ``teacher`` is given), seed k uses fold_in(fold_in(key, n), k).
        config: the setting. student: ``"lora"`` or ``"replora"``. n: sequences per sample (>= 2).
        seeds: a count S (seeds 0..S-1) or a sequence of seed indices.
        teacher: reuse an already drawn teacher (then the test set still comes from ``key``).

    Returns:
        A ``HeadRecord`` with a leading seed axis.

    Example:
        >>> import jax
        >>> c = HeadConfig(steps=50, starts=1, n_test=16)
        >>> rec = simulate_head(jax.random.key(0), c, "replora", 8, 2)
        >>> rec.function_error.shape
        (2,)
    """
    _check_student(student)
    split_sizes(config, n)
    drawn, X_test = teacher_and_test(key, config)
    teacher = drawn if teacher is None else teacher
    check_head(config, teacher.weights, teacher.lora)
    keys = seed_keys(key, int(n), _seed_list(seeds))
    return _simulate_block(keys, teacher, X_test, config=config, student=student, n=int(n))


# --------------------------------------------------------------------------------------------- tables


METRICS = ("function_error", "function_rmse", "gate_error", "value_error")


def head_rows(record: HeadRecord, *, student: str, n: int, seeds, labels: dict | None = None) -> pd.DataFrame:
    """Tidy rows (one per seed) of a batched record: student, n, seed, every record field, and the labels."""
    seeds = _seed_list(seeds)
    table = pd.DataFrame({name: np.asarray(value) for name, value in record._asdict().items()})
    table.insert(0, "seed", seeds.astype(int))
    table.insert(0, "n", int(n))
    table.insert(0, "student", student)
    for name, value in (labels or {}).items():
        table[name] = value
    return table


def head_unit(
    key: PRNGKeyArray, config: HeadConfig, student: str, n: int, seeds, *, variation: str = "headline"
) -> pd.DataFrame:
    """The unit of work: one (variation, student, n, block of seeds), as table rows.

    Deterministic in (key, config, student, n, seeds): any process computing the same unit gets
    the same rows. The rows carry the variation's label and the settings that vary between
    variations (gating, truth, rank, rank_true).
    """
    record = simulate_head(key, config, student, n, seeds)
    labels = {
        "variation": variation,
        "gating": config.gating,
        "truth": config.truth,
        "rank": config.rank,
        "rank_true": config.rank_true,
        "parameters": parameter_counts(config)[student],
    }
    return head_rows(record, student=student, n=n, seeds=seeds, labels=labels)


# --------------------------------------------------------------------------------------------- analysis


def _cube(table: pd.DataFrame, metric: str):
    """(ns, seeds, array[student (lora, replora), n, seed]) of one variation's metric; seeds must match."""
    wide = table.pivot_table(index=["student", "n"], columns="seed", values=metric, aggfunc="first")
    ns = np.sort(table["n"].unique())
    missing = [s for s in STUDENTS if s not in set(table["student"])]
    if missing:
        raise ValueError(f"The table lacks student(s) {missing}; expected both of {STUDENTS}")
    cube = np.stack([wide.loc[s].reindex(ns).to_numpy() for s in STUDENTS])
    if np.isnan(cube).any():
        raise ValueError("The table is not complete: every (student, n) needs the same seeds")
    return ns, wide.columns.to_numpy(), cube


def crossing_fraction(ns, lora_mean, replora_mean) -> float:
    """The smallest n where RepLoRA's curve reaches LoRA's error at the largest n, over that n (log-log interpolated).

    Returns ns[0] / ns[-1] when RepLoRA is already there at the smallest n (an upper bound), and
    ``inf`` when it never gets there on the grid.

    Example:
        >>> round(crossing_fraction([10, 100], [1.0, 0.1], [0.5, 0.05]), 3)
        0.5
    """
    ns, target, rep = np.asarray(ns, float), lora_mean[-1], np.asarray(replora_mean, float)
    reached = np.nonzero(rep <= target)[0]
    if reached.size == 0:
        return math.inf
    i = reached[0]
    if i == 0:
        return ns[0] / ns[-1]
    x0, x1, y0, y1 = np.log(ns[i - 1]), np.log(ns[i]), np.log(rep[i - 1]), np.log(rep[i])
    return float(np.exp(x0 + (np.log(target) - y0) / (y1 - y0) * (x1 - x0)) / ns[-1])


STATISTICS = {"mean": np.mean, "median": np.median}


def _bootstrap_means(cube, n_boot, rng, statistic="mean"):
    idx = rng.integers(0, cube.shape[-1], size=(n_boot, cube.shape[-1]))
    return STATISTICS[statistic](cube[..., idx], axis=-1)  # student, n, boot


def data_efficiency(
    table: pd.DataFrame,
    *,
    metric: str = "function_error",
    statistic: str = "mean",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per variation: the data-efficiency fraction with a bootstrap interval over seeds.

    fraction = n_R / n_max, n_R the smallest n (log-log interpolated) at which RepLoRA's mean error
    reaches LoRA's mean error at n_max (``crossing_fraction``). Seeds are resampled with
    replacement, the same seeds for both students and every n (the students see the same data).
    ``censored``: "at most" when RepLoRA is already there at the smallest n, "not reached" when it
    never is. Also LoRA's and RepLoRA's mean error at n_max. ``statistic="median"`` uses medians
    over seeds throughout (robust to a single failed fit).

    Returns:
        DataFrame with columns variation, metric, fraction, lo, hi, censored, lora_at_max,
        replora_at_max, seeds.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for variation, part in _by_variation(table):
        ns, seeds, cube = _cube(part, metric)
        means = STATISTICS[statistic](cube, axis=-1)
        frac = crossing_fraction(ns, means[0], means[1])
        boot = _bootstrap_means(cube, n_boot, rng, statistic)
        fracs = np.array([crossing_fraction(ns, boot[0, :, b], boot[1, :, b]) for b in range(n_boot)])
        # inverted_cdf picks observed values: an interval end can be inf ("not reached") without NaNs
        lo, hi = np.quantile(fracs, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
        censored = "not reached" if math.isinf(frac) else ("at most" if frac == ns[0] / ns[-1] else "")
        rows.append(
            dict(
                variation=variation,
                metric=metric,
                statistic=statistic,
                fraction=frac,
                lo=lo,
                hi=hi,
                censored=censored,
                lora_at_max=means[0, -1],
                replora_at_max=means[1, -1],
                seeds=len(seeds),
            )
        )
    return pd.DataFrame(rows)


def improvement(
    table: pd.DataFrame,
    *,
    metric: str = "function_error",
    statistic: str = "mean",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per variation and n: RepLoRA's relative improvement 1 - mean_RepLoRA / mean_LoRA, with a bootstrap interval.

    Positive: RepLoRA's mean error is lower (``statistic="median"``: medians). Returns columns
    variation, n, metric, statistic, lora, replora, improvement, lo, hi.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for variation, part in _by_variation(table):
        ns, _, cube = _cube(part, metric)
        means, boot = STATISTICS[statistic](cube, axis=-1), _bootstrap_means(cube, n_boot, rng, statistic)
        gain = 1 - boot[1] / boot[0]
        lo, hi = np.percentile(gain, [50 * (1 - level), 50 * (1 + level)], axis=-1)
        for i, n in enumerate(ns):
            rows.append(
                dict(
                    variation=variation,
                    n=int(n),
                    metric=metric,
                    statistic=statistic,
                    lora=means[0, i],
                    replora=means[1, i],
                    improvement=1 - means[1, i] / means[0, i],
                    lo=lo[i],
                    hi=hi[i],
                )
            )
    return pd.DataFrame(rows)


def mean_bands(
    table: pd.DataFrame,
    *,
    metric: str = "function_error",
    statistic: str = "mean",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per variation, student and n: mean (or median) error over seeds (column ``mean``), bootstrap interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for variation, part in _by_variation(table):
        ns, _, cube = _cube(part, metric)
        center, boot = STATISTICS[statistic](cube, axis=-1), _bootstrap_means(cube, n_boot, rng, statistic)
        lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)], axis=-1)
        for s, student in enumerate(STUDENTS):
            for i, n in enumerate(ns):
                rows.append(
                    dict(variation=variation, student=student, n=int(n), mean=center[s, i], lo=lo[s, i], hi=hi[s, i])
                )
    return pd.DataFrame(rows)


def _by_variation(table):
    if "variation" not in table:
        return [("headline", table)]
    return [(v, table[table["variation"] == v]) for v in pd.unique(table["variation"])]
