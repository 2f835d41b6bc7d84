"""The three parameterizations of the LoRA factors (docs/model.md, "Parameterizations") behind one
interface.

Every parameterization maps free, unconstrained *raw* parameters of L components to the LoRA
factors (B_Q, A_Q, B_V, A_V, c) and from there to the identifiable atoms (S, V, c):

* ``Vanilla()``: every factor entry is free.
* ``Shared(activation="identity")`` (``linear``): per component latents a_j, b_j and fixed maps,
  A_Q = W_AQ a, A_V = W_AV a, B_Q = W_BQ b, B_V = W_BV b (reshaped).
* ``Shared(activation="tanh")`` etc. (``nonlinear``, RepLoRA): the same through an activation,
  A_Q = act(W_AQ a), ... (a one-layer MLP). Activations: tanh, sigmoid, gelu, relu, identity.

Compact parameter space: a raw value x enters as ``R * tanh(x / R)``, so factors (vanilla) or
latents (shared) lie in [-R, R] and gate biases c in [-R_c, R_c] (closed: tanh rounds to 1 in
floating point for large x). The theory assumes such a compact space; without it
over-specified vanilla fits slide off along the pi -> 0, ||V|| -> inf valley and every number
depends on the iteration budget (docs/model.md, "Compact parameter space").
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .model import Atoms, Base, FieldError, ModelSpec, check_base, default_base, sym

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
}


class LoRAFactors(NamedTuple):
    """LoRA factors of L components; vanilla raw parameters have this layout too."""

    B_Q: Float[Array, "L d r"]
    A_Q: Float[Array, "L r d_k"]
    B_V: Float[Array, "L d r"]
    A_V: Float[Array, "L r d_out"]
    c: Float[Array, " L"]


class SharedParams(NamedTuple):
    """Raw latents of the shared parameterizations: a_j feeds the A factors, b_j the B factors."""

    a: Float[Array, "L p"]
    b: Float[Array, "L p"]
    c: Float[Array, " L"]


class SharedMaps(NamedTuple):
    """Fixed, known maps from latents to flattened factors (docs/model.md, "Parameterizations")."""

    W_AQ: Float[Array, "r*d_k p"]
    W_AV: Float[Array, "r*d_out p"]
    W_BQ: Float[Array, "d*r p"]
    W_BV: Float[Array, "d*r p"]


def _check_bounds(bound, bias_bound):
    for name, value in (("bound", bound), ("bias_bound", bias_bound)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise FieldError(name, f"{name} must be a positive finite number, got {value!r}")


def _squash(raw, bound):
    return bound * jnp.tanh(raw / bound)


def _unsquash(x, bound):
    return bound * jnp.arctanh(jnp.clip(x / bound, -1.0, 1.0))


def _inside(x, bound):
    """Per component (leading axis): every entry strictly inside the compact space."""
    return jnp.all(jnp.abs(x) < bound * (1 - 1e-6), axis=tuple(range(1, x.ndim)))


def _canonical_bias(c, gating: str, bias_bound: float):
    """Mean-zero gate biases under softmax gating (f is unchanged by a common shift of c)."""
    if gating != "softmax":
        return c
    c_b = _squash(c, bias_bound)
    c_new = c_b - jnp.mean(c_b)
    return jnp.where(
        jnp.all(jnp.abs(c_new) < bias_bound * (1 - 1e-6)), _unsquash(c_new, bias_bound), c
    )


@runtime_checkable
class Parameterization(Protocol):
    """What the library needs of a parameterization of the LoRA factors.

    A new parameterization is one frozen dataclass (registered static) with these members:

    * ``name``, ``bound``, ``bias_bound``: its label and the compact space of its raw values;
    * ``param_shapes(spec, L)``: the raw parameters' shapes, as the params pytree;
    * ``draw_maps(key, spec)``: its fixed maps (``None`` if it has none);
    * ``factors(spec, maps, params)``: raw parameters -> ``LoRAFactors`` inside the compact space;
    * ``canonicalize(spec, params)``: a point with the same atoms, moved along exact symmetries;
    * ``embed(estimator, truth_model, truth_params)``: a truth's raw parameters in this
      parameterization, or ``ValueError`` if its family need not contain the truth.
    * ``to_compact(params)`` / ``from_compact(values)``: raw parameters -> their values in the
      compact space (same pytree: factors or latents in [-R, R], biases in [-R_c, R_c]) and back.
    """

    name: str
    bound: float
    bias_bound: float

    def param_shapes(self, spec: ModelSpec, n_components: int): ...

    def draw_maps(self, key: PRNGKeyArray, spec: ModelSpec): ...

    def factors(self, spec: ModelSpec, maps, params) -> LoRAFactors: ...

    def canonicalize(self, spec: ModelSpec, params): ...

    def embed(self, estimator: Model, truth_model: Model, truth_params): ...

    def to_compact(self, params): ...

    def from_compact(self, values): ...


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Vanilla:
    """Vanilla LoRA: B_Q, A_Q, B_V, A_V and c free and independent per component.

    Args:
        bound: R, every factor entry lies in (-R, R).
        bias_bound: R_c, every gate bias lies in (-R_c, R_c).
    """

    bound: float = 5.0
    bias_bound: float = 10.0

    def __post_init__(self):
        _check_bounds(self.bound, self.bias_bound)

    @property
    def name(self) -> str:
        return "vanilla"

    def param_shapes(self, spec: ModelSpec, n_components: int) -> LoRAFactors:
        s, L = spec, n_components
        return LoRAFactors((L, s.d, s.r), (L, s.r, s.d_k), (L, s.d, s.r), (L, s.r, s.d_out), (L,))

    def draw_maps(self, key, spec):
        return None

    def factors(self, spec: ModelSpec, maps, params) -> LoRAFactors:
        return LoRAFactors(
            *(_squash(x, self.bound) for x in params[:4]), _squash(params.c, self.bias_bound)
        )

    def canonicalize(self, spec: ModelSpec, params) -> LoRAFactors:
        """Balanced factors (equal singular values in B and A) and mean-zero biases."""
        c = _canonical_bias(params.c, spec.gating, self.bias_bound)
        out = []
        for B_raw, A_raw in ((params.B_Q, params.A_Q), (params.B_V, params.A_V)):
            B, A = _squash(B_raw, self.bound), _squash(A_raw, self.bound)
            B_new, A_new = _balance(B, A, B)
            ok = (_inside(B_new, self.bound) & _inside(A_new, self.bound))[:, None, None]
            out += [
                jnp.where(ok, _unsquash(B_new, self.bound), B_raw),
                jnp.where(ok, _unsquash(A_new, self.bound), A_raw),
            ]
        return LoRAFactors(out[0], out[1], out[2], out[3], c)

    def embed(self, estimator: Model, truth_model: Model, truth_params) -> LoRAFactors:
        """Vanilla's family contains every parameterization's: the truth's factors, as raw
        values."""
        return to_vanilla_params(truth_model, truth_params, self)

    def to_compact(self, params) -> LoRAFactors:
        """Raw parameters -> the factors and biases they stand for, R tanh(x / R) (R_c for c)."""
        return LoRAFactors(
            *(_squash(x, self.bound) for x in params[:4]), _squash(params.c, self.bias_bound)
        )

    def from_compact(self, values) -> LoRAFactors:
        """Inverse of ``to_compact`` (entries on the bound are clipped to it)."""
        return LoRAFactors(
            *(_unsquash(x, self.bound) for x in values[:4]), _unsquash(values.c, self.bias_bound)
        )


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Shared:
    """Shared (reparameterized) LoRA: factors are (activated) fixed linear maps of latents.

    Args:
        activation: one of ``ACTIVATIONS``; ``"identity"`` is the linear reparameterization.
        latent_dim: p, the dimension of each latent a_j and b_j.
        bound: R, every latent entry lies in (-R, R).
        bias_bound: R_c, every gate bias lies in (-R_c, R_c).
    """

    activation: str = "tanh"
    latent_dim: int = 2
    bound: float = 5.0
    bias_bound: float = 10.0

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise FieldError(
                "activation",
                f"Unknown activation {self.activation!r}; expected one of {tuple(ACTIVATIONS)}",
            )
        if not isinstance(self.latent_dim, (int, np.integer)) or self.latent_dim < 1:
            raise FieldError(
                "latent_dim", f"latent_dim must be a positive integer, got {self.latent_dim!r}"
            )
        _check_bounds(self.bound, self.bias_bound)

    @property
    def name(self) -> str:
        return "linear" if self.activation == "identity" else f"mlp-{self.activation}"

    def param_shapes(self, spec: ModelSpec, n_components: int) -> SharedParams:
        L, p = n_components, self.latent_dim
        return SharedParams((L, p), (L, p), (L,))

    def draw_maps(self, key: PRNGKeyArray, spec: ModelSpec) -> SharedMaps:
        return draw_maps(key, spec, self.latent_dim)

    def factors(self, spec: ModelSpec, maps: SharedMaps, params) -> LoRAFactors:
        act = ACTIVATIONS[self.activation]
        a, b = _squash(params.a, self.bound), _squash(params.b, self.bound)
        L = a.shape[0]
        return LoRAFactors(
            B_Q=act(b @ maps.W_BQ.T).reshape(L, spec.d, spec.r),
            A_Q=act(a @ maps.W_AQ.T).reshape(L, spec.r, spec.d_k),
            B_V=act(b @ maps.W_BV.T).reshape(L, spec.d, spec.r),
            A_V=act(a @ maps.W_AV.T).reshape(L, spec.r, spec.d_out),
            c=_squash(params.c, self.bias_bound),
        )

    def canonicalize(self, spec: ModelSpec, params) -> SharedParams:
        """Mean-zero biases; for the positively homogeneous activations (identity, relu) also
        ||a|| = ||b|| (a -> t a, b -> b / t leaves the atoms unchanged)."""
        c = _canonical_bias(params.c, spec.gating, self.bias_bound)
        if self.activation not in ("identity", "relu"):
            return params._replace(c=c)
        a, b = _squash(params.a, self.bound), _squash(params.b, self.bound)
        tiny = jnp.finfo(a.dtype).tiny
        t = jnp.sqrt(
            jnp.maximum(jnp.linalg.norm(b, axis=-1), tiny)
            / jnp.maximum(jnp.linalg.norm(a, axis=-1), tiny)
        )
        a_new, b_new = a * t[:, None], b / t[:, None]
        ok = (_inside(a_new, self.bound) & _inside(b_new, self.bound))[:, None]
        return SharedParams(
            jnp.where(ok, _unsquash(a_new, self.bound), params.a),
            jnp.where(ok, _unsquash(b_new, self.bound), params.b),
            c,
        )

    def embed(self, estimator: Model, truth_model: Model, truth_params) -> SharedParams:
        """Only a truth drawn through this very parameterization, with the same maps."""
        same_maps = truth_model.maps is not None and all(
            np.array_equal(a, b) for a, b in zip(estimator.maps, truth_model.maps)
        )
        if self != truth_model.parameterization or not same_maps:
            raise ValueError(
                f"A {self.name} estimator does not contain a truth drawn through "
                f"{truth_model.parameterization.name} with other maps; draw the truth through the "
                "estimator's model"
            )
        return truth_params

    def to_compact(self, params) -> SharedParams:
        """Raw parameters -> the latents and biases they stand for, R tanh(x / R) (R_c for c)."""
        return SharedParams(
            _squash(params.a, self.bound),
            _squash(params.b, self.bound),
            _squash(params.c, self.bias_bound),
        )

    def from_compact(self, values) -> SharedParams:
        """Inverse of ``to_compact`` (entries on the bound are clipped to it)."""
        return SharedParams(
            _unsquash(values.a, self.bound),
            _unsquash(values.b, self.bound),
            _unsquash(values.c, self.bias_bound),
        )


def linear(latent_dim: int = 2, **kwargs) -> Shared:
    """The linear reparameterization: ``Shared(activation="identity")``."""
    return Shared(activation="identity", latent_dim=latent_dim, **kwargs)


def nonlinear(activation: str = "tanh", latent_dim: int = 2, **kwargs) -> Shared:
    """The non-linear reparameterization (RepLoRA) with the given activation."""
    return Shared(activation=activation, latent_dim=latent_dim, **kwargs)


class Model(NamedTuple):
    """Everything that maps raw parameters to a regression function, as one pytree.

    ``spec`` and ``parameterization`` are static; ``base`` and ``maps`` are arrays (``maps`` is
    ``None`` for vanilla). Build it with ``make_model``.
    """

    spec: ModelSpec
    parameterization: Parameterization
    base: Base
    maps: SharedMaps | None


def draw_maps(key: PRNGKeyArray, spec: ModelSpec, latent_dim: int, dtype=None) -> SharedMaps:
    """Fixed maps with i.i.d. N(0, 1/p) entries, so W a has O(1) entries for O(1) latents."""
    dtype = dtype or jnp.result_type(float)
    shapes = SharedMaps(
        W_AQ=(spec.r * spec.d_k, latent_dim),
        W_AV=(spec.r * spec.d_out, latent_dim),
        W_BQ=(spec.d * spec.r, latent_dim),
        W_BV=(spec.d * spec.r, latent_dim),
    )
    keys = jax.random.split(key, 4)
    return SharedMaps(
        *(jax.random.normal(k, s, dtype) / math.sqrt(latent_dim) for k, s in zip(keys, shapes))
    )


def make_model(
    spec: ModelSpec,
    parameterization: Parameterization,
    *,
    key: PRNGKeyArray | None = None,
    base: Base | None = None,
    maps=None,
) -> Model:
    """Assemble and validate a ``Model``; a parameterization with maps draws them from ``key``.

    Example:
        >>> spec = ModelSpec(d=2, d_out=1, r=1)
        >>> model = make_model(spec, nonlinear("tanh"), key=jax.random.key(0))
        >>> model.maps.W_AQ.shape
        (2, 2)
    """
    if not isinstance(parameterization, Parameterization):
        raise ValueError(
            f"Unknown parameterization {parameterization!r}; expected Vanilla(), Shared(...) or "
            "another implementation of moe_lora.parameterization.Parameterization"
        )
    base = default_base(spec) if base is None else Base(*(jnp.asarray(w) for w in base))
    check_base(spec, base)
    expected = parameterization.draw_maps(jax.random.key(0), spec)
    if expected is None:
        if maps is not None:
            raise ValueError(
                f"The {parameterization.name} parameterization takes no maps; got maps"
            )
        return Model(spec, parameterization, base, None)
    if maps is None:
        if key is None:
            raise ValueError(
                f"The {parameterization.name} parameterization needs a key to draw its maps"
            )
        maps = parameterization.draw_maps(key, spec)
    for name, got, want in zip(expected._fields, maps, expected):
        if np.shape(got) != np.shape(want):
            raise ValueError(
                f"Shape mismatch for map {name}: got {np.shape(got)}, expected {np.shape(want)}"
            )
    return Model(spec, parameterization, base, type(expected)(*(jnp.asarray(w) for w in maps)))


def param_shapes(model: Model, n_components: int):
    """Shapes of the raw parameters of ``n_components`` components, as the params pytree."""
    return model.parameterization.param_shapes(model.spec, n_components)


def init_params(key: PRNGKeyArray, model: Model, n_components: int, scale: float):
    """Raw parameters with i.i.d. N(0, scale^2) entries (gate biases included)."""
    shapes = param_shapes(model, n_components)
    keys = jax.random.split(key, len(shapes))
    dtype = model.base.M0.dtype
    return type(shapes)(*(scale * jax.random.normal(k, sh, dtype) for k, sh in zip(keys, shapes)))


def factors(model: Model, params) -> LoRAFactors:
    """The LoRA factors of each component, inside the compact parameter space."""
    return model.parameterization.factors(model.spec, model.maps, params)


def atoms_from_factors(model: Model, f: LoRAFactors) -> Atoms:
    """S_j = gate_scale sym(B_Qj A_Qj K0^T) / sqrt(d_k), V_j = B_Vj A_Vj, c_j = c_j."""
    s = model.spec
    S = s.gate_scale * sym(f.B_Q @ f.A_Q @ model.base.K0.T) / math.sqrt(s.d_k)
    return Atoms(S=S, V=f.B_V @ f.A_V, c=f.c)


def atoms(model: Model, params) -> Atoms:
    """The identifiable atoms (S_j, V_j, c_j) of raw parameters ``params``."""
    return atoms_from_factors(model, factors(model, params))


def to_vanilla_params(model: Model, params, vanilla: Vanilla) -> LoRAFactors:
    """Raw vanilla parameters with exactly the factors of ``params`` under ``model``.

    Vanilla's family contains every shared one, provided the factors fit in its compact space.
    Raises ``ValueError`` when a factor or bias lies outside the vanilla bounds.
    """
    f = factors(model, params)
    for name, x in zip(LoRAFactors._fields, f):
        bound = vanilla.bias_bound if name == "c" else vanilla.bound
        largest = float(jnp.max(jnp.abs(x)))
        if largest >= bound:
            raise ValueError(
                f"Factor {name} has an entry of size {largest:.4g}, outside the vanilla compact "
                "space "
                f"(-{bound}, {bound}); raise Vanilla(bound=...) or bias_bound"
            )
    return LoRAFactors(
        *(b * jnp.arctanh(x / b) for x, b in zip(f, [vanilla.bound] * 4 + [vanilla.bias_bound]))
    )


def check_finite_params(params, what: str = "parameters") -> None:
    """Raise ``ValueError`` naming the first leaf of ``params`` that has a non-finite entry."""
    for name, leaf in zip(getattr(params, "_fields", range(len(params))), params):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(f"Non-finite entries in {what} field {name!r}")


def _balance(B, A, B_ref):
    """Balanced factors with the same product: B = U sqrt(s), A = sqrt(s) V^T (top r), signs kept
    near B_ref."""
    r = B.shape[-1]
    U, s, Vt = jnp.linalg.svd(B @ A, full_matrices=False)
    root = jnp.sqrt(s[..., :r])
    B_new, A_new = U[..., :r] * root[..., None, :], root[..., :, None] * Vt[..., :r, :]
    # An SVD's signs are arbitrary; flipping a column of B and the row of A keeps the product.
    flip = jnp.where(jnp.sum(B_new * B_ref, axis=-2) < 0, -1.0, 1.0)
    return B_new * flip[..., None, :], A_new * flip[..., :, None]


def canonicalize(model: Model, params):
    """Move raw parameters along the exact symmetries of f to a canonical point; f is unchanged.

    The fitted function is invariant under B A = (B R)(R^-1 A) (vanilla; a -> t a, b -> b / t
    for the linear and ReLU reparameterizations) and, under softmax gating, c -> c + const.
    These directions are exactly flat, and an optimizer drifts along them towards the bound of
    the compact space, where the tanh saturates and progress stalls. Canonical points: balanced
    factors (equal singular values in B and A; ||a|| = ||b||) and mean-zero biases. A move is
    skipped for a component whose canonical point would leave the compact space, so the set of
    reachable atoms is unchanged.
    """
    return model.parameterization.canonicalize(model.spec, params)


class DerivativeFamily(NamedTuple):
    """Singular values of the derivative family of an activation (``derivative_family``)."""

    activation: str
    singular_values: np.ndarray
    relative_smallest: float
    rank: int
    size: int

    @property
    def independent(self) -> bool:
        """Full numerical rank: the family is linearly independent."""
        return self.rank == self.size


def derivative_family(
    activation: str,
    *,
    scales=(0.5, 1.0),
    bias: float = 0.3,
    lim: float = 4.0,
    num: int = 401,
    rtol: float = 1e-6,
) -> DerivativeFamily:
    """Is {sigma(eta x + b), x sigma'(eta x + b), x^2 sigma''(eta x + b) : eta in scales} linearly
    independent?

    These are the derivatives of order 0, 1 and 2 in eta of sigma(eta x + b): the terms of the
    Taylor expansion that the theory needs to be independent for a non-linear reparameterization
    to keep polynomial rates ("strong identifiability", docs/model.md). Each function is
    evaluated on ``num`` points of [-lim, lim] (a column, scaled to unit norm) and the numerical
    rank of the matrix is counted with relative tolerance ``rtol``.

    A polynomial of degree < 2 (identity) or a piecewise linear activation (relu: sigma'' = 0
    almost everywhere) fails; tanh, sigmoid and gelu pass. At the defaults their smallest
    relative singular values are 2e-4, 4e-5 and 3e-4, and those of identity and relu are exactly
    0 (a zero column), so the verdict does not hinge on ``rtol`` (float32 round-off is ~1e-7).

    >>> derivative_family("tanh").independent, derivative_family("identity").independent
    (True, False)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}")
    scales = np.asarray(scales, float)
    if scales.ndim != 1 or len(scales) < 1 or len(np.unique(scales)) != len(scales):
        raise ValueError(f"scales must be distinct numbers, got {scales!r}")
    act = ACTIVATIONS[activation]
    d1 = jax.vmap(jax.grad(lambda u: act(u)))
    d2 = jax.vmap(jax.grad(jax.grad(lambda u: act(u))))
    x = jnp.linspace(
        -lim, lim, num, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    )
    cols = []
    for eta in scales:
        u = eta * x + bias
        cols += [act(u), x * d1(u), x**2 * d2(u)]
    M = np.stack([np.asarray(c, float) for c in cols], -1)
    norms = np.linalg.norm(M, axis=0)
    M = M / np.where(norms > 0, norms, 1.0)
    s = np.linalg.svd(M, compute_uv=False)
    rel = s / s[0] if s[0] > 0 else np.zeros_like(s)
    return DerivativeFamily(activation, s, float(rel[-1]), int(np.sum(rel > rtol)), M.shape[1])
