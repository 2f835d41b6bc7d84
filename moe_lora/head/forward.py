"""The head itself: its gates and output on a sequence with a LoRA update, and the token sampler.

    H(X) = G(X (W_Q0 + B_Q A_Q) W_K0^T X^T / sqrt(d_k)) X (W_V0 + B_V A_V),

G the row-wise softmax (row i is the mixture of experts of ``moe_lora.attention``) or the
element-wise sigmoid(s - log N) of sigmoid attention (the bias -log N keeps a row's gates summing
to about 1 at s = 0).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..attention import AttentionWeights, LoRA
from .config import HeadConfig


def check_head(config: HeadConfig, weights: AttentionWeights, lora: LoRA | None = None) -> None:
    """Raise ``ValueError`` naming the shapes when frozen weights or factors do not fit
    ``config``."""
    d, d_k, d_v = config.d, config.d_k, config.d_v
    expected = {"W_Q": (d, d_k), "W_K": (d, d_k), "W_V": (d, d_v)}
    for name, shape in expected.items():
        got = tuple(np.shape(getattr(weights, name)))
        if got != shape:
            raise ValueError(
                f"Shape mismatch for {name}: got {got}, expected {shape} (d={d}, d_k={d_k}, "
                f"d_v={d_v})"
            )
    if lora is not None:
        r = np.shape(lora.B_Q)[-1]
        expected = {"B_Q": (d, r), "A_Q": (r, d_k), "B_V": (d, r), "A_V": (r, d_v)}
        for name, shape in expected.items():
            got = tuple(np.shape(getattr(lora, name)))
            if got != shape:
                raise ValueError(
                    f"Shape mismatch for {name}: got {got}, expected {shape} (d={d}, d_k={d_k}, "
                    f"d_v={d_v}, r={r})"
                )


def gate_matrix(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "N d"]
) -> Float[Array, "N N"]:
    """Gates G_ij of one sequence: softmax_j or sigmoid(. - log N) of x_i^T (W_Q0 + B_Q A_Q) W_K0^T
    x_j / sqrt(d_k)."""
    scores = (X @ (weights.W_Q + lora.B_Q @ lora.A_Q)) @ (X @ weights.W_K).T / math.sqrt(config.d_k)
    if config.gating == "softmax":
        return jax.nn.softmax(scores, axis=-1)
    return jax.nn.sigmoid(scores - math.log(config.N))


def head_output(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "N d"]
) -> Float[Array, "N d_v"]:
    """The head's output on one sequence: H(X) = G(X) X (W_V0 + B_V A_V); equals ``attention`` under
    softmax.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from moe_lora.attention import attention
        >>> from moe_lora.head import draw_teacher
        >>> c = HeadConfig()
        >>> t = draw_teacher(jax.random.key(0), c)
        >>> X = sample_sequences(jax.random.key(1), c, 1)[0]
        >>> out = head_output(c, t.weights, t.lora, X)
        >>> bool(jnp.allclose(out, attention(X, t.weights, t.lora)))
        True
    """
    return gate_matrix(config, weights, lora, X) @ (X @ (weights.W_V + lora.B_V @ lora.A_V))


def head_outputs(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "n N d"]
) -> Float[Array, "n N d_v"]:
    """``head_output`` on each of n sequences."""
    return jax.vmap(lambda x: head_output(config, weights, lora, x))(X)


def mean_squared_error(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X, Y
) -> Float[Array, ""]:
    """Mean over sequences, tokens and outputs of (H(X) - Y)^2."""
    return jnp.mean((head_outputs(config, weights, lora, X) - Y) ** 2)


def zero_update(config: HeadConfig, r: int = 1) -> LoRA:
    """A rank-r update that is zero: the frozen head."""
    return LoRA(
        jnp.zeros((config.d, r)),
        jnp.zeros((r, config.d_k)),
        jnp.zeros((config.d, r)),
        jnp.zeros((r, config.d_v)),
    )


def sample_sequences(key: PRNGKeyArray, config: HeadConfig, n: int) -> Float[Array, "n N d"]:
    """n i.i.d. sequences of N tokens from the configured token distribution."""
    shape = (n, config.N, config.d)
    if config.inputs == "gaussian":
        return jax.random.normal(key, shape)
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
