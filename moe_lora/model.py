"""The regression function f_G of LoRA seen as a gated mixture of linear experts.

docs/model.md, "The regression model". A mixing measure with L components is described by its
identifiable
atoms (S_j, V_j, c_j); the frozen base weights (M0, K0, V0) are shared by all components::

    score_j(X) = X^T (M + S_j) X + c_j,          M = gate_scale * sym(M0) / sqrt(d_k)
    f_G(X)     = sum_j gate_j(X) * (V0 + V_j)^T X

with ``gate_j = softmax_j(score)`` (default) or ``gate_j = sigmoid(score_j)``. Here
``S_j = gate_scale * sym(B_Qj A_Qj K0^T) / sqrt(d_k)`` and ``V_j = B_Vj A_Vj``. ``gate_scale``
multiplies every quadratic score, so users can make gates strong without touching the factors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

GATINGS = ("softmax", "sigmoid")


class FieldError(ValueError):
    """A bad value of one named field of a static configuration object.

    A ``ValueError`` whose ``field`` attribute names the offending field, so that a caller that
    built the object from its own keys (``moe_lora.config``) can name its key without parsing
    the message.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static shape and gating choices of a LoRA mixture of experts.

    Args:
        d: input (token) dimension.
        d_out: output dimension of each expert.
        r: LoRA rank, ``1 <= r <= d``.
        d_k: key dimension (columns of K0 and A_Q); defaults to ``d``.
        gating: ``"softmax"`` (default) or ``"sigmoid"``.
        gate_scale: positive factor on every quadratic gating score.

    Registered as a static pytree node: passing it to a jitted function costs no tracing and
    recompiles only when a field changes.
    """

    d: int
    d_out: int
    r: int
    d_k: int | None = None
    gating: str = "softmax"
    gate_scale: float = 1.0

    def __post_init__(self):
        for name in ("d", "d_out", "r"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise FieldError(name, f"{name} must be a positive integer, got {value!r}")
        if self.d_k is None:
            object.__setattr__(self, "d_k", self.d)
        if not isinstance(self.d_k, (int, np.integer)) or self.d_k < 1:
            raise FieldError("d_k", f"d_k must be a positive integer, got {self.d_k!r}")
        if self.r > self.d:
            raise FieldError(
                "r", f"LoRA rank r={self.r} exceeds the input dimension d={self.d}; expected r <= d"
            )
        if self.gating not in GATINGS:
            raise FieldError("gating", f"Unknown gating {self.gating!r}; expected one of {GATINGS}")
        if not (math.isfinite(self.gate_scale) and self.gate_scale > 0):
            raise FieldError(
                "gate_scale", f"gate_scale must be positive and finite, got {self.gate_scale!r}"
            )


class Base(NamedTuple):
    """Frozen pre-trained weights shared by all components: M0 = W_Q0 W_K0^T, K0 = W_K0, V0 =
    W_V0."""

    M0: Float[Array, "d d"]
    K0: Float[Array, "d d_k"]
    V0: Float[Array, "d d_out"]


def default_base(spec: ModelSpec, dtype=None) -> Base:
    """The default frozen base (docs/model.md, "The regression model"): M0 = 0, K0 = I, V0 = 0."""
    dtype = dtype or jnp.result_type(float)
    return Base(
        M0=jnp.zeros((spec.d, spec.d), dtype),
        K0=jnp.eye(spec.d, spec.d_k, dtype=dtype),
        V0=jnp.zeros((spec.d, spec.d_out), dtype),
    )


def check_base(spec: ModelSpec, base: Base) -> None:
    """Raise ``ValueError`` if the base weights do not have the shapes ``spec`` asks for."""
    expected = {"M0": (spec.d, spec.d), "K0": (spec.d, spec.d_k), "V0": (spec.d, spec.d_out)}
    for name, shape in expected.items():
        got = tuple(np.shape(getattr(base, name)))
        if got != shape:
            raise ValueError(f"Shape mismatch for base weight {name}: got {got}, expected {shape}")
        if not np.all(np.isfinite(np.asarray(getattr(base, name)))):
            raise ValueError(f"Base weight {name} has non-finite entries")


class Atoms(NamedTuple):
    """Identifiable atoms of a mixing measure: gate matrices, expert updates and gate biases.

    ``S`` is symmetric; under softmax gating only ``softmax(c)`` and the S up to a common
    symmetric shift are identified (docs/model.md, "Identifiability").
    """

    S: Float[Array, "L d d"]
    V: Float[Array, "L d d_out"]
    c: Float[Array, " L"]


def sym(M: Float[Array, "... d d"]) -> Float[Array, "... d d"]:
    """Symmetric part (M + M^T) / 2 of the trailing two axes."""
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def base_gate_matrix(spec: ModelSpec, base: Base) -> Float[Array, "d d"]:
    """The frozen part M = gate_scale * sym(M0) / sqrt(d_k) of every quadratic score."""
    return spec.gate_scale * sym(base.M0) / math.sqrt(spec.d_k)


def mixture_weights(c: Float[Array, " L"], gating: str) -> Float[Array, " L"]:
    """Weights pi_j of the atoms: ``softmax(c)`` (softmax gating) or ``sigmoid(c)`` (sigmoid).

    Under sigmoid gating pi_j = sigmoid(c_j) is the gate's value at X = 0, where every
    quadratic score vanishes; there is no normalisation, so pi need not sum to one.
    """
    if gating == "softmax":
        return jax.nn.softmax(c)
    return jax.nn.sigmoid(c)


def gates(spec: ModelSpec, base: Base, atoms: Atoms, X: Float[Array, "n d"]) -> Float[Array, "n L"]:
    """Gate values gate_j(X_i) of every component at every input."""
    M = base_gate_matrix(spec, base)
    quad = jnp.einsum("ni,lij,nj->nl", X, atoms.S, X) + jnp.einsum("ni,ij,nj->n", X, M, X)[:, None]
    score = quad + atoms.c[None, :]
    if spec.gating == "softmax":
        return jax.nn.softmax(score, axis=-1)
    return jax.nn.sigmoid(score)


def regression_function(
    spec: ModelSpec, base: Base, atoms: Atoms, X: Float[Array, "n d"]
) -> Float[Array, "n d_out"]:
    """f_G(X) = sum_j gate_j(X) (V0 + V_j)^T X at every row of X.

    Example:
        >>> spec = ModelSpec(d=2, d_out=1, r=1)
        >>> atoms = Atoms(S=jnp.zeros((2, 2, 2)), V=jnp.ones((2, 2, 1)), c=jnp.zeros(2))
        >>> regression_function(spec, default_base(spec), atoms, jnp.array([[1.0, 2.0]])).tolist()
        [[3.0]]
    """
    g = gates(spec, base, atoms, X)
    experts = jnp.einsum("ni,lio->nlo", X, atoms.V) + (X @ base.V0)[:, None, :]
    return jnp.einsum("nl,nlo->no", g, experts)


def gate_strength(
    spec: ModelSpec, base: Base, atoms: Atoms, X: Float[Array, "n d"]
) -> Float[Array, ""]:
    """Smallest standard deviation over X of a pairwise score difference score_j - score_l.

    A gate whose score differs from another's by a near-constant is weak: the two components
    are then told apart by their biases only. ``inf`` for a single component.
    """
    quad = jnp.einsum("ni,lij,nj->nl", X, atoms.S, X) + atoms.c[None, :]
    L = atoms.c.shape[0]
    if L < 2:
        return jnp.asarray(jnp.inf, quad.dtype)
    j, l = np.triu_indices(L, k=1)
    return jnp.min(jnp.std(quad[:, j] - quad[:, l], axis=0))


class GridView(NamedTuple):
    """A mixture on a num x num grid over [-lim, lim]^2: inputs, gates, experts and f_G."""

    x1: Float[np.ndarray, "num num"]
    x2: Float[np.ndarray, "num num"]
    gates: Float[np.ndarray, "num num L"]
    experts: Float[np.ndarray, "num num L d_out"]
    f: Float[np.ndarray, "num num d_out"]


def mixture_on_grid(
    spec: ModelSpec, base: Base, atoms: Atoms, *, num: int = 101, lim: float = 1.0
) -> GridView:
    """Gates gate_j(X), experts (V0 + V_j)^T X and f_G(X) on a grid over [-lim, lim]^2 (d = 2 only).

    Example:
        >>> spec = ModelSpec(d=2, d_out=1, r=1)
        >>> atoms = Atoms(S=jnp.zeros((2, 2, 2)), V=jnp.ones((2, 2, 1)), c=jnp.zeros(2))
        >>> view = mixture_on_grid(spec, default_base(spec), atoms, num=5)
        >>> view.gates.shape, float(view.gates.sum(-1).min())
        ((5, 5, 2), 1.0)
    """
    if spec.d != 2:
        raise ValueError(
            f"mixture_on_grid draws the input square: expected d = 2, got d = {spec.d}"
        )
    if not (isinstance(num, (int, np.integer)) and num >= 2):
        raise ValueError(f"num must be an integer >= 2, got {num!r}")
    t = np.linspace(-lim, lim, num)
    x1, x2 = np.meshgrid(t, t)
    X = jnp.asarray(np.stack([x1.ravel(), x2.ravel()], -1), dtype=jnp.result_type(atoms.V))
    g = gates(spec, base, atoms, X)
    experts = jnp.einsum("ni,lio->nlo", X, atoms.V) + (X @ base.V0)[:, None, :]
    f = regression_function(spec, base, atoms, X)
    shape = (num, num)
    return GridView(
        x1,
        x2,
        np.asarray(g).reshape(*shape, -1),
        np.asarray(experts).reshape(*shape, *experts.shape[1:]),
        np.asarray(f).reshape(*shape, -1),
    )
