"""Oracle: an attention row with LoRA on W_Q and W_V equals its mixture-of-experts form
(docs/model.md, "Attention as a mixture of experts")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_lora as ml


def _head(key, N=7, d=5, d_k=4, d_v=3, r=2):
    ks = jax.random.split(key, 8)
    X = jax.random.normal(ks[0], (N, d))
    w = ml.AttentionWeights(
        *(jax.random.normal(k, s) for k, s in zip(ks[1:4], [(d, d_k), (d, d_k), (d, d_v)]))
    )
    lora = ml.LoRA(
        *(jax.random.normal(k, s) for k, s in zip(ks[4:8], [(d, r), (r, d_k), (d, r), (r, d_v)]))
    )
    return X, w, lora


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_row_equals_mixture_of_experts(seed):
    X, w, lora = _head(jax.random.key(seed))
    assert X.dtype == jnp.float64
    rows = ml.attention(X, w, lora)
    for i in range(X.shape[0]):
        mix = ml.attention_row_as_mixture(X, i, w, lora)
        np.testing.assert_allclose(mix.row, rows[i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(jnp.sum(mix.gates), 1.0, atol=1e-12)


def test_lora_on_query_changes_gates_and_on_value_changes_experts():
    X, w, lora = _head(jax.random.key(3))
    base = ml.attention_row_as_mixture(X, 0, w, lora._replace(B_Q=0 * lora.B_Q, B_V=0 * lora.B_V))
    query_only = ml.attention_row_as_mixture(X, 0, w, lora._replace(B_V=0 * lora.B_V))
    value_only = ml.attention_row_as_mixture(X, 0, w, lora._replace(B_Q=0 * lora.B_Q))
    np.testing.assert_allclose(query_only.experts, base.experts, atol=1e-14)
    assert not np.allclose(query_only.gates, base.gates)
    np.testing.assert_allclose(value_only.gates, base.gates, atol=1e-14)
    assert not np.allclose(value_only.experts, base.experts)
    # Without LoRA the mixture is plain attention.
    np.testing.assert_allclose(base.row, ml.attention(X, w)[0], atol=1e-12)
