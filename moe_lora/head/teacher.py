"""The teacher: a frozen random head and a rank-r* update of W_Q and W_V, drawn once and reused.

``truth="vanilla"`` draws free Gaussian factors; ``"learned_generator"`` draws the parameters of
the learned generator at rank r* and width h = r*; ``"fixed_maps"`` draws two latents through the
fixed shared maps (the students' own maps, so the ``FixedMaps`` student contains the truth).
The update is then brought to the stated sizes ||B_Q A_Q||_F = update_q ||W_Q0||_F and
||B_V A_V||_F = update_v ||W_V0||_F: balanced on free factors, on the linear B heads of the
generator, through the known scales s_Q, s_V of the fixed maps. The teacher's gates must move
(mean total-variation change >= ``MIN_GATE_CHANGE``) without saturating (share of saturated rows
<= ``MAX_GATE_SATURATION``); ``draw_teacher`` raises otherwise and records both numbers.

Every teacher carries the fixed maps (``family``), drawn from ``fold_in(key, 1)`` whatever the
truth, so a ``FixedMaps`` student can be fitted to any teacher; its scales are set by the
family's own latents, drawn alongside.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..attention import AttentionWeights, LoRA
from .config import HeadConfig
from .forward import gate_matrix, sample_sequences, zero_update
from .students import (
    FixedMaps,
    GeneratorParams,
    LatentParams,
    SharedFamily,
    generator_factors,
    shared_parameterization,
)

#: The teacher's query update must change the gates by at least this mean total variation.
MIN_GATE_CHANGE = 0.02
#: At most this share of the teacher's gate rows may be saturated (largest gate > 0.99).
MAX_GATE_SATURATION = 0.5


class Teacher(NamedTuple):
    """The frozen head and the teacher's update.

    Attributes:
        weights: the frozen pre-trained head. lora: the teacher's factors (rank r*).
        params: what the factors were drawn as (``LoRA``, ``GeneratorParams`` or ``LatentParams``).
        family: the fixed shared maps and their scales (for the ``FixedMaps`` student).
        update_q, update_v: ||B_Q A_Q||_F / ||W_Q0||_F and ||B_V A_V||_F / ||W_V0||_F (as
        configured). gate_change: mean total variation (1/2 sum_j |G_ij - G0_ij|) between the
        teacher's and the
            frozen head's gates. gate_saturation: share of gate rows with a gate above 0.99.
    """

    weights: AttentionWeights
    lora: LoRA
    params: object
    family: SharedFamily
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


def gate_diagnostics(
    config: HeadConfig, weights: AttentionWeights, lora: LoRA, X: Float[Array, "n N d"]
) -> tuple[float, float]:
    """(gate_change, gate_saturation) of an update on sequences X; see ``Teacher``."""
    G = jax.vmap(lambda x: gate_matrix(config, weights, lora, x))(X)
    G0 = jax.vmap(lambda x: gate_matrix(config, weights, zero_update(config), x))(X)
    change = 0.5 * jnp.mean(jnp.sum(jnp.abs(G - G0), axis=-1))
    saturation = jnp.mean(jnp.max(G, axis=-1) > 0.99)
    return float(change), float(saturation)


def _sizes(config, weights, lora):
    """(t_Q, t_V): the factors by which B_Q A_Q and B_V A_V must be multiplied to have the stated
    sizes."""
    tq = config.update_q * jnp.linalg.norm(weights.W_Q) / jnp.linalg.norm(lora.B_Q @ lora.A_Q)
    tv = config.update_v * jnp.linalg.norm(weights.W_V) / jnp.linalg.norm(lora.B_V @ lora.A_V)
    return tq, tv


def draw_family(
    key: PRNGKeyArray, config: HeadConfig, weights: AttentionWeights
) -> tuple[SharedFamily, LatentParams]:
    """The fixed shared maps (N(0, 1/p) entries), latents with N(0, 1) entries, and the scales that
    give those latents' update the stated sizes."""
    k_maps, k_a, k_b = jax.random.split(key, 3)
    shared, spec = shared_parameterization(config)
    one = jnp.ones(())
    family = SharedFamily(shared.draw_maps(k_maps, spec), one, one)
    latents = LatentParams(
        jax.random.normal(k_a, (config.latent_dim,)), jax.random.normal(k_b, (config.latent_dim,))
    )
    tq, tv = _sizes(config, weights, FixedMaps().factors(config, family, latents))
    return family._replace(scale_q=tq, scale_v=tv), latents


def draw_teacher(key: PRNGKeyArray, config: HeadConfig) -> Teacher:
    """The frozen head and a rank-r* teacher update of the configured kind and sizes (see the module
    docstring).

    Raises:
        ValueError: if the teacher's gates are degenerate (the query update barely moves them, or
            most rows are saturated); the message gives the measured numbers.
    """
    k_head, k_update, k_check = jax.random.split(key, 3)
    weights = _frozen_head(k_head, config)
    family, latents = draw_family(jax.random.fold_in(key, 1), config, weights)
    r = config.rank_true
    normal = jax.random.normal
    if config.truth == "vanilla":
        kb, ka, kc, ke = jax.random.split(k_update, 4)
        raw = LoRA(
            normal(kb, (config.d, r)),
            normal(ka, (r, config.d_k)),
            normal(kc, (config.d, r)),
            normal(ke, (r, config.d_v)),
        )
        tq, tv = _sizes(config, weights, raw)
        params = LoRA(
            raw.B_Q * jnp.sqrt(tq),
            raw.A_Q * jnp.sqrt(tq),
            raw.B_V * jnp.sqrt(tv),
            raw.A_V * jnp.sqrt(tv),
        )
        lora = params
    elif config.truth == "learned_generator":
        k1, k2, k3, k4, k5, k6, k7 = jax.random.split(k_update, 7)
        h, T = r, 2 if config.separate_trunks else 1  # the generator at rank r*, width h = r*
        params = GeneratorParams(
            a=normal(k1, (r,)),
            b=normal(k2, (r,)),
            W_1=normal(k3, (T, r, h)),
            b_1=jnp.zeros((T, h)),
            W_AQ=normal(k4, (h, config.d_k)),
            W_AV=normal(k5, (h, config.d_v)),
            W_BQ=normal(k6, (h, config.d)),
            W_BV=normal(k7, (h, config.d)),
        )
        tq, tv = _sizes(config, weights, generator_factors(params, config.activation))
        params = params._replace(W_BQ=params.W_BQ * tq, W_BV=params.W_BV * tv)
        lora = generator_factors(params, config.activation)
    else:
        params = latents
        lora = FixedMaps().factors(config, family, latents)
    change, saturation = gate_diagnostics(
        config, weights, lora, sample_sequences(k_check, config, 256)
    )
    if change < MIN_GATE_CHANGE or saturation > MAX_GATE_SATURATION:
        raise ValueError(
            f"Degenerate teacher gates: gate_change={change:.3g} (expected >= {MIN_GATE_CHANGE}), "
            f"gate_saturation={saturation:.3g} (expected <= {MAX_GATE_SATURATION}); change update_q"
        )
    return Teacher(
        weights,
        lora,
        params,
        family,
        float(config.update_q),
        float(config.update_v),
        change,
        saturation,
    )
