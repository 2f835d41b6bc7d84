"""Attention rows with LoRA, written both as attention and as a mixture of experts (docs/model.md,
"Attention as a mixture of experts").

Row i of softmax(X W_Q W_K^T X^T / sqrt(d_k)) X W_V is

    h_i(X) = sum_j softmax_j( x_i^T W_Q W_K^T x_j / sqrt(d_k) ) * W_V^T x_j,

a softmax-gated mixture of N linear experts W_V^T x_j with quadratic gating scores. LoRA
replaces W_Q by W_Q + B_Q A_Q and W_V by W_V + B_V A_V: LoRA on the query changes the gates,
LoRA on the value changes the experts. The regression model of section 2 is the
single-token case x_i = x_j = X of these scores.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class LoRA(NamedTuple):
    """Low-rank updates of the query and value weights: W_Q + B_Q A_Q and W_V + B_V A_V."""

    B_Q: Float[Array, "d r"]
    A_Q: Float[Array, "r d_k"]
    B_V: Float[Array, "d r"]
    A_V: Float[Array, "r d_v"]


class AttentionWeights(NamedTuple):
    """Frozen weights of one head."""

    W_Q: Float[Array, "d d_k"]
    W_K: Float[Array, "d d_k"]
    W_V: Float[Array, "d d_v"]


def attention(
    X: Float[Array, "N d"], w: AttentionWeights, lora: LoRA | None = None
) -> Float[Array, "N d_v"]:
    """Plain softmax attention softmax(X W_Q W_K^T X^T / sqrt(d_k)) X W_V, with LoRA if given."""
    W_Q, W_V = w.W_Q, w.W_V
    if lora is not None:
        W_Q, W_V = W_Q + lora.B_Q @ lora.A_Q, W_V + lora.B_V @ lora.A_V
    logits = (X @ W_Q) @ (X @ w.W_K).T / math.sqrt(w.W_K.shape[1])
    return jax.nn.softmax(logits, axis=-1) @ (X @ W_V)


class MixtureRow(NamedTuple):
    """Row i of attention as a mixture: its gates over the N experts, the experts, and the row."""

    gates: Float[Array, " N"]
    experts: Float[Array, "N d_v"]
    row: Float[Array, " d_v"]


def attention_row_as_mixture(
    X: Float[Array, "N d"], i: int, w: AttentionWeights, lora: LoRA
) -> MixtureRow:
    """Row i of LoRA attention as a mixture of experts, term by term.

    gate_j = softmax_j( x_i^T (W_Q W_K^T + B_Q A_Q W_K^T) x_j / sqrt(d_k) ),
    expert_j = (W_V + B_V A_V)^T x_j.
    """
    d_k = w.W_K.shape[1]
    M = w.W_Q @ w.W_K.T + lora.B_Q @ lora.A_Q @ w.W_K.T
    scores = jnp.einsum("a,ab,jb->j", X[i], M, X) / math.sqrt(d_k)
    gates = jax.nn.softmax(scores)
    experts = X @ w.W_V + (X @ lora.B_V) @ lora.A_V
    return MixtureRow(gates, experts, gates @ experts)
