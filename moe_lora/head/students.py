"""The students of the head simulation: one small protocol (init, factors, parameter count), three
members.

* ``LoRAStudent`` ("lora"): free B_Q (d x r), A_Q (r x d_k), B_V (d x r), A_V (r x d_v).
* ``LearnedGenerator`` ("learned_generator"): our reconstruction of the RepLoRA paper's Figure 1
  (its equations were not available to us). Two learned diagonals diag(a), diag(b) (a, b in R^r)
  are the inputs of a small learned MLP, a trunk act(diag(.) W_1 + b_1) of width h and four linear
  output heads::

      H_A = act(diag(a) W_1A + 1 b_1A^T),  A_Q = H_A W_AQ,      A_V = H_A W_AV,
      H_B = act(diag(b) W_1B + 1 b_1B^T),  B_Q = (H_B W_BQ)^T,  B_V = (H_B W_BV)^T.

  With ``separate_trunks`` the A and B sides have their own trunk (W_1A, b_1A) and (W_1B, b_1B);
  without, one trunk serves both. With h >= r and free output heads its family of products
  (B_Q A_Q, B_V A_V) is LoRA's: the two differ in coordinates, not in what they represent.
* ``FixedMaps`` ("fixed_maps"): the theory's shared reparameterization
  (``moe_lora.parameterization.Shared``,
  MODEL.md section 3), made a head student. Latents a, b in R^p and fixed, known maps::

      A_Q = act(W_AQ a),  A_V = act(W_AV a),  B_Q = s_Q act(W_BQ b),  B_V = s_V act(W_BV b)

  (reshaped; s_Q, s_V known scales). Query and value updates are coupled: both come from the same
  two latents. Its family is a 2p-dimensional subset of LoRA's, so a teacher drawn from it
  separates the two students' parameter counts (2p against r (2 d + d_k + d_v)).

None of these is "RepLoRA" without a qualifier: the paper's name covers the learned generator,
and the sweeps' ``Shared`` is the fixed-maps member.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..attention import LoRA
from ..model import ModelSpec
from ..parameterization import ACTIVATIONS, Shared, SharedMaps, SharedParams
from .config import HeadConfig


class SharedFamily(NamedTuple):
    """The fixed, known maps of the ``FixedMaps`` family and its two output scales s_Q, s_V."""

    maps: SharedMaps
    scale_q: Float[Array, ""]
    scale_v: Float[Array, ""]


@runtime_checkable
class HeadStudent(Protocol):
    """What the simulation needs of a student.

    * ``name``: its label in tables;
    * ``init(key, config)``: a start at the frozen head (its update is zero), as a params pytree;
    * ``factors(config, family, params)``: the LoRA factors the parameters stand for (``family``
      is the teacher's ``SharedFamily``; only ``FixedMaps`` reads it);
    * ``parameter_count(config)``: its trainable parameters.
    """

    name: str

    def init(self, key: PRNGKeyArray, config: HeadConfig): ...

    def factors(self, config: HeadConfig, family: SharedFamily, params) -> LoRA: ...

    def parameter_count(self, config: HeadConfig) -> int: ...


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class LoRAStudent:
    """Vanilla LoRA on W_Q and W_V: the factors are the parameters."""

    name: str = "lora"

    def init(self, key: PRNGKeyArray, config: HeadConfig) -> LoRA:
        """B entries N(0, 1/d), A = 0."""
        r, d = config.rank, config.d
        kq, kv = jax.random.split(key)
        return LoRA(
            B_Q=jax.random.normal(kq, (d, r)) / math.sqrt(d),
            A_Q=jnp.zeros((r, config.d_k)),
            B_V=jax.random.normal(kv, (d, r)) / math.sqrt(d),
            A_V=jnp.zeros((r, config.d_v)),
        )

    def factors(self, config: HeadConfig, family: SharedFamily, params: LoRA) -> LoRA:
        return params

    def parameter_count(self, config: HeadConfig) -> int:
        """r (2 d + d_k + d_v)."""
        return config.rank * (2 * config.d + config.d_k + config.d_v)


class GeneratorParams(NamedTuple):
    """The learned generator's parameters: the two diagonals, the trunk(s) (leading axis 1 or 2),
    four heads."""

    a: Float[Array, " r"]
    b: Float[Array, " r"]
    W_1: Float[Array, "T r h"]
    b_1: Float[Array, "T h"]
    W_AQ: Float[Array, "h d_k"]
    W_AV: Float[Array, "h d_v"]
    W_BQ: Float[Array, "h d"]
    W_BV: Float[Array, "h d"]


def generator_factors(params: GeneratorParams, activation: str = "tanh") -> LoRA:
    """LoRA factors from the diagonal inputs through the learned MLP (trunk 0 for A, the last for
    B).

    Example:
        >>> import jax
        >>> config = HeadConfig(rank=3, rank_true=2, hidden=4)
        >>> p = LearnedGenerator().init(jax.random.key(0), config)
        >>> [x.shape for x in generator_factors(p)]
        [(16, 3), (3, 8), (16, 3), (3, 8)]
    """
    act = ACTIVATIONS[activation]
    H_A = act(params.a[:, None] * params.W_1[0] + params.b_1[0][None, :])
    H_B = act(params.b[:, None] * params.W_1[-1] + params.b_1[-1][None, :])
    return LoRA(
        B_Q=(H_B @ params.W_BQ).T,
        A_Q=H_A @ params.W_AQ,
        B_V=(H_B @ params.W_BV).T,
        A_V=H_A @ params.W_AV,
    )


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class LearnedGenerator:
    """The learned MLP generator from two diagonal inputs (our reconstruction of the paper's
    RepLoRA)."""

    name: str = "learned_generator"

    def init(self, key: PRNGKeyArray, config: HeadConfig) -> GeneratorParams:
        """a = b = 1, W_1 entries N(0, 1), b_1 = 0, A heads 0, B heads N(0, 1/(h d))."""
        r, h, d, T = config.rank, config.width, config.d, 2 if config.separate_trunks else 1
        k1, kq, kv = jax.random.split(key, 3)
        return GeneratorParams(
            a=jnp.ones(r),
            b=jnp.ones(r),
            W_1=jax.random.normal(k1, (T, r, h)),
            b_1=jnp.zeros((T, h)),
            W_AQ=jnp.zeros((h, config.d_k)),
            W_AV=jnp.zeros((h, config.d_v)),
            W_BQ=jax.random.normal(kq, (h, d)) / math.sqrt(h * d),
            W_BV=jax.random.normal(kv, (h, d)) / math.sqrt(h * d),
        )

    def factors(self, config: HeadConfig, family: SharedFamily, params: GeneratorParams) -> LoRA:
        return generator_factors(params, config.activation)

    def parameter_count(self, config: HeadConfig) -> int:
        """2 r + T (r h + h) + h (2 d + d_k + d_v), T = 2 with separate trunks, else 1."""
        r, h, T = config.rank, config.width, 2 if config.separate_trunks else 1
        return 2 * r + T * (r * h + h) + h * (2 * config.d + config.d_k + config.d_v)


def shared_parameterization(config: HeadConfig) -> tuple[Shared, ModelSpec]:
    """The sweeps' ``Shared`` parameterization and the spec its maps have for this head."""
    spec = ModelSpec(
        d=config.d, d_out=config.d_v, r=config.rank, d_k=config.d_k, gating=config.gating
    )
    return Shared(activation=config.activation, latent_dim=config.latent_dim), spec


class LatentParams(NamedTuple):
    """The fixed-maps student's parameters: the raw latents of the A side and the B side."""

    a: Float[Array, " p"]
    b: Float[Array, " p"]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class FixedMaps:
    """The fixed shared maps of the theory: Q and V updates coupled through two latents."""

    name: str = "fixed_maps"

    def init(self, key: PRNGKeyArray, config: HeadConfig) -> LatentParams:
        """a = 0 (so the A factors, hence the update, are zero for odd activations), b entries N(0,
        1)."""
        p = config.latent_dim
        return LatentParams(a=jnp.zeros(p), b=jax.random.normal(key, (p,)))

    def factors(self, config: HeadConfig, family: SharedFamily, params: LatentParams) -> LoRA:
        shared, spec = shared_parameterization(config)
        # One component, so the gate bias c of the sweeps' parameterization plays no part.
        f = shared.factors(
            spec, family.maps, SharedParams(params.a[None], params.b[None], jnp.zeros(1))
        )
        return LoRA(
            B_Q=family.scale_q * f.B_Q[0], A_Q=f.A_Q[0], B_V=family.scale_v * f.B_V[0], A_V=f.A_V[0]
        )

    def parameter_count(self, config: HeadConfig) -> int:
        """2 p."""
        return 2 * config.latent_dim


STUDENTS: dict[str, HeadStudent] = {
    s.name: s for s in (LoRAStudent(), LearnedGenerator(), FixedMaps())
}


def student_of(student: str | HeadStudent) -> HeadStudent:
    """A student from its name (``STUDENTS``) or itself; ``ValueError`` names the known ones."""
    if isinstance(student, str):
        if student not in STUDENTS:
            raise ValueError(f"Unknown student {student!r}; expected one of {tuple(STUDENTS)}")
        return STUDENTS[student]
    if not isinstance(student, HeadStudent):
        raise ValueError(f"Expected a student name or a HeadStudent, got {student!r}")
    return student


def parameter_counts(config: HeadConfig) -> dict[str, int]:
    """Trainable parameters of each student.

    Example:
        >>> parameter_counts(HeadConfig())
        {'lora': 96, 'learned_generator': 106, 'fixed_maps': 4}
    """
    return {name: s.parameter_count(config) for name, s in STUDENTS.items()}
