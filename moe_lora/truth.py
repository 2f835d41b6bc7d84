"""Ground-truth mixing measures and data drawn from them (docs/model.md, "The regression model").

A truth is drawn *through a parameterization*, so every estimator whose family contains that
parameterization contains the truth. Truths whose atoms are too close together, or whose
gates are too weak to tell components apart, are rejected and redrawn; the separation and the
gate strength of the accepted truth are recorded with it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from . import checks
from .model import Atoms, gate_strength, mixture_weights, regression_function, sym
from .parameterization import (
    LoRAFactors,
    Model,
    Vanilla,
    atoms,
    check_finite_params,
    factors,
    init_params,
    param_shapes,
)
from .voronoi import check_distinct_atoms

DESIGNS = ("uniform", "truncated_normal")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Design:
    """Distribution mu of the inputs X on the box [-1, 1]^d.

    Args:
        kind: ``"uniform"`` (Uniform[-1, 1]^d, default) or ``"truncated_normal"``
            (N(0, scale^2 I) truncated to the box, coordinate-wise).
        scale: standard deviation before truncation (``truncated_normal`` only).
    """

    kind: str = "uniform"
    scale: float = 0.5

    def __post_init__(self):
        checks.one_of("design", self.kind, DESIGNS)
        checks.positive("scale", self.scale)


def sample_inputs(
    key: PRNGKeyArray, n: int, d: int, design: Design = Design(), dtype=None
) -> Float[Array, "n d"]:
    """n i.i.d. inputs from the design distribution mu."""
    dtype = dtype or jnp.result_type(float)
    if design.kind == "uniform":
        return jax.random.uniform(key, (n, d), dtype, minval=-1.0, maxval=1.0)
    bound = 1.0 / design.scale
    return design.scale * jax.random.truncated_normal(key, -bound, bound, (n, d), dtype)


class Truth(NamedTuple):
    """A ground-truth mixing measure: the model it was drawn through, its raw parameters and atoms.

    ``separation`` is the smallest distance between two true atoms (S, V); ``expert_separation``
    the smallest distance between two experts V_i, V_j (the gates are identified only through
    differences between the experts they weigh); ``gate_strength`` the smallest standard
    deviation over mu of a pairwise score difference (see ``moe_lora.model.gate_strength``).
    """

    model: Model
    params: object
    atoms: Atoms
    separation: float
    gate_strength: float
    expert_separation: float = math.inf


class Dataset(NamedTuple):
    """n pairs (X_i, Y_i) with Y = f_{G*}(X) + eps, eps ~ N(0, sigma^2 I)."""

    X: Float[Array, "n d"]
    Y: Float[Array, "n d_out"]


def _separation(a: Atoms, blocks=("S", "V")) -> float:
    """Smallest distance between two atoms over the named blocks (inf for one atom)."""
    theta = np.concatenate(
        [np.asarray(getattr(a, b)).reshape(len(a.c), -1) for b in blocks], axis=1
    )
    dist = np.linalg.norm(theta[:, None, :] - theta[None, :, :], axis=-1)
    dist[np.diag_indices_from(dist)] = np.inf
    return float(dist.min())


def make_truth(model: Model, params, *, key: PRNGKeyArray, design: Design = Design()) -> Truth:
    """Wrap user-chosen raw parameters as a ``Truth`` after checking them.

    Raises ``ValueError`` for wrong shapes, non-finite entries or coinciding atoms (the Voronoi
    loss is not relabelling-invariant then). ``key`` draws the Monte Carlo sample used to
    report the gate strength.
    """
    shapes = param_shapes(model, len(params.c))
    if type(params) is not type(shapes):
        raise ValueError(
            f"Expected {type(shapes).__name__} for {model.parameterization.name}, got "
            f"{type(params).__name__}"
        )
    for name, got, want in zip(shapes._fields, params, shapes):
        if np.shape(got) != want:
            raise ValueError(
                f"Shape mismatch for truth parameter {name}: got {np.shape(got)}, expected {want}"
            )
    check_finite_params(params, "truth parameters")
    a = atoms(model, params)
    check_distinct_atoms({"S": a.S, "V": a.V})
    X = sample_inputs(key, 4096, model.spec.d, design)
    return Truth(
        model,
        params,
        a,
        _separation(a),
        float(gate_strength(model.spec, model.base, a, X)),
        _separation(a, ("V",)),
    )


def draw_truth(
    key: PRNGKeyArray,
    model: Model,
    n_components: int,
    *,
    scale: float = 1.0,
    min_separation: float = 0.1,
    min_gate_strength: float = 0.1,
    min_expert_separation: float = 0.0,
    design: Design = Design(),
    max_tries: int = 1000,
) -> Truth:
    """Draw a true mixing measure through ``model``'s parameterization, rejecting bad draws.

    Raw parameters are i.i.d. N(0, scale^2). A draw is rejected when two atoms are closer than
    ``min_separation``, two experts V_i, V_j closer than ``min_expert_separation`` or the gate
    strength is below ``min_gate_strength``; attempt k uses ``fold_in(key, k)``, so the result
    is reproducible from ``key``.

    Raises:
        ValueError: bad arguments, or no acceptable draw in ``max_tries`` attempts (the message
            reports the best separation and gate strength seen).
    """
    checks.integer("n_components", n_components, minimum=1)
    for name, value in (
        ("scale", scale),
        ("min_separation", min_separation),
        ("min_gate_strength", min_gate_strength),
        ("min_expert_separation", min_expert_separation),
    ):
        checks.non_negative(name, value)
    best = (0.0, 0.0, 0.0)
    for attempt in range(max_tries):
        k_params, k_gate = jax.random.split(jax.random.fold_in(key, attempt))
        params = init_params(k_params, model, n_components, scale)
        a = atoms(model, params)
        separation, experts = _separation(a), _separation(a, ("V",))
        X = sample_inputs(k_gate, 4096, model.spec.d, design)
        strength = float(gate_strength(model.spec, model.base, a, X))
        if (
            separation >= min_separation
            and strength >= min_gate_strength
            and experts >= min_expert_separation
        ):
            return Truth(model, params, a, separation, strength, experts)
        best = max(best, (min(separation, 1e300), strength, min(experts, 1e300)))
    raise ValueError(
        f"No truth with separation >= {min_separation}, gate strength >= {min_gate_strength} and "
        "expert "
        f"separation >= {min_expert_separation} in {max_tries} draws (best: separation "
        f"{best[0]:.3g}, "
        f"gate strength {best[1]:.3g}, expert separation {best[2]:.3g}); lower the thresholds or "
        "raise scale / gate_scale"
    )


def merging_truth(
    truth: Truth, delta: float, *, key: PRNGKeyArray, design: Design = Design()
) -> Truth:
    """A truth whose atoms 0 and 1 are pulled together: the minimax family of the sweeps.

    Atom 1's raw parameters (every field but the gate bias c) move to
    ``theta_0 + delta (theta_1 - theta_0)`` in the parameterization the truth was drawn through,
    so as delta -> 0 the two atoms' gates and experts merge: the singular configuration where
    vanilla LoRA's derivatives become linearly dependent (docs/model.md, "Predictions").
    ``delta = 1`` gives the truth's own atoms back.

    Args:
        truth: a truth with at least two atoms.
        delta: in (0, 1].
        key: draws the sample that reports the gate strength (``make_truth``).
        design: the input distribution.

    Raises:
        ValueError: fewer than two atoms, delta outside (0, 1], or atoms that coincide.
    """
    if len(truth.atoms.c) < 2:
        raise ValueError(
            f"merging_truth pulls atoms 0 and 1 together; the truth has {len(truth.atoms.c)} atom"
        )
    if not (isinstance(delta, (int, float)) and 0 < delta <= 1):
        raise ValueError(f"delta must be a number in (0, 1], got {delta!r}")
    params = truth.params
    moved = type(params)(
        *(
            p if name == "c" else p.at[1].set(p[0] + delta * (p[1] - p[0]))
            for name, p in zip(params._fields, params)
        )
    )
    return make_truth(truth.model, moved, key=key, design=design)


class SharedGate(NamedTuple):
    """The shared-gate family of a drawn truth (``shared_gate_directions``): member delta has atoms
    (S, V + Delta) and (S + delta E, V - Delta) with equal weights, and the truth's other atoms."""

    S: Float[Array, "d d"]
    E: Float[Array, "d d"]
    V: Float[Array, "d d_out"]
    Delta: Float[Array, "d d_out"]


def shared_gate_directions(truth: Truth) -> SharedGate:
    """S, E, V and Delta of the shared-gate family of ``truth`` (docs/model.md, "Vanilla's hardest
    truths").

    With (B_Qj, A_Qj, B_Vj, A_Vj) the LoRA factors of the truth's atom j and
    gate(B, A) = gate_scale sym(B A K0^T) / sqrt(d_k):

        S     = gate(B_Q0, A_Q0)                  = S*_0, the gate of atom 0
        E     = gate(B_Q1 - B_Q0, A_Q0)           (B_Q moves toward atom 1's, A_Q stays atom 0's)
        V     = (V*_0 + V*_1) / 2,   Delta = (V*_0 - V*_1) / 2

    so S + delta E = gate(B_Q0 + delta (B_Q1 - B_Q0), A_Q0) is a rank-r gate for every delta
    (a gate of the truth's own S*_1 direction would not be, at d > 2 r), and V +- Delta are the
    truth's experts V*_0 and V*_1.
    """
    if len(truth.atoms.c) < 2:
        raise ValueError(
            f"the shared-gate family uses atoms 0 and 1; the truth has {len(truth.atoms.c)} atom"
        )
    spec, K0 = truth.model.spec, truth.model.base.K0
    f = factors(truth.model, truth.params)

    def gate(B, A):
        return spec.gate_scale * sym(B @ A @ K0.T) / math.sqrt(spec.d_k)

    V0, V1 = truth.atoms.V[0], truth.atoms.V[1]
    return SharedGate(
        S=gate(f.B_Q[0], f.A_Q[0]),
        E=gate(f.B_Q[1] - f.B_Q[0], f.A_Q[0]),
        V=(V0 + V1) / 2,
        Delta=(V0 - V1) / 2,
    )


def shared_gate_factors(truth: Truth, delta: float) -> LoRAFactors:
    """The LoRA factors of member ``delta`` in [0, 1] of the shared-gate family of ``truth``.

    Atom 0 keeps the truth's atom 0 factors (gate S, expert V + Delta = V*_0); atom 1 has
    B_Q = B_Q0 + delta (B_Q1 - B_Q0), A_Q = A_Q0 (gate S + delta E) and the truth's atom 1 expert
    factors (V - Delta = V*_1); both biases are log((exp c_0 + exp c_1) / 2), so the two weights
    are equal and their sum is the truth's pi*_0 + pi*_1; atoms 2.. are the truth's. delta = 0 is
    the exact flat set (``shared_gate_truth`` takes delta in (0, 1] only).
    """
    if truth.model.spec.gating != "softmax":
        raise ValueError(
            "the shared-gate family is defined for softmax gating (two equal gates with equal "
            f"weights reproduce one atom only there); got gating {truth.model.spec.gating!r}"
        )
    if not (isinstance(delta, (int, float)) and 0 <= delta <= 1):
        raise ValueError(f"delta must be a number in [0, 1], got {delta!r}")
    shared_gate_directions(truth)  # checks the atom count
    f = factors(truth.model, truth.params)
    c_pair = jnp.log((jnp.exp(f.c[0]) + jnp.exp(f.c[1])) / 2)
    return LoRAFactors(
        B_Q=f.B_Q.at[1].set(f.B_Q[0] + delta * (f.B_Q[1] - f.B_Q[0])),
        A_Q=f.A_Q.at[1].set(f.A_Q[0]),
        B_V=f.B_V,
        A_V=f.A_V,
        c=f.c.at[0].set(c_pair).at[1].set(c_pair),
    )


def shared_gate_truth(
    truth: Truth, delta: float, vanilla: Model, *, key: PRNGKeyArray, design: Design = Design()
) -> Truth:
    """Member ``delta`` in (0, 1] of vanilla's hardest family: two atoms with gates S and
    S + delta E, experts V + Delta and V - Delta and equal weights (``shared_gate_factors``;
    ``shared_gate_directions`` defines S, E, V, Delta from the drawn ``truth``).

    As delta -> 0 the member approaches vanilla's exact flat set: at delta = 0 the two atoms
    share their gate, so f is that of one atom (S, V) of their summed weight, whatever Delta.
    Only vanilla represents it (a shared map ties the expert to the gate), so the member is a
    truth of the vanilla model ``vanilla``, its raw parameters those factors inside vanilla's
    compact space.

    Raises:
        ValueError: delta outside (0, 1], fewer than two atoms, sigmoid gating, ``vanilla`` not a
            vanilla model, or factors outside its compact space.
    """
    if not (isinstance(delta, (int, float)) and 0 < delta <= 1):
        raise ValueError(f"delta must be a number in (0, 1], got {delta!r}")
    if not isinstance(vanilla.parameterization, Vanilla):
        raise ValueError(
            f"the shared-gate family is a vanilla truth; got {vanilla.parameterization.name}"
        )
    f = shared_gate_factors(truth, delta)
    v = vanilla.parameterization
    for name, x in zip(LoRAFactors._fields, f):
        bound = v.bias_bound if name == "c" else v.bound
        if float(jnp.max(jnp.abs(x))) >= bound:
            raise ValueError(
                f"factor {name} of the shared-gate member leaves vanilla's compact space "
                f"(-{bound}, {bound})"
            )
    raw = LoRAFactors(*(b * jnp.arctanh(x / b) for x, b in zip(f, [v.bound] * 4 + [v.bias_bound])))
    return make_truth(vanilla, raw, key=key, design=design)


def truth_summary(truth: Truth) -> dict:
    """A truth as exact JSON: parameterization, separations, weights and atoms (floats
    round-trip)."""
    a = truth.atoms
    return {
        "parameterization": truth.model.parameterization.name,
        "separation": float(truth.separation),
        "gate_strength": float(truth.gate_strength),
        "expert_separation": float(truth.expert_separation),
        "weights": np.asarray(mixture_weights(a.c, truth.model.spec.gating)).tolist(),
        "S": np.asarray(a.S).tolist(),
        "V": np.asarray(a.V).tolist(),
    }


def sample_dataset(
    key: PRNGKeyArray, truth: Truth, n: int, sigma: float, design: Design = Design()
) -> Dataset:
    """n pairs from the truth: X ~ mu, Y = f_{G*}(X) + sigma * N(0, I).

    ``n`` and ``sigma`` are validated when they are Python numbers (they are static under jit).
    """
    if isinstance(n, (int, np.integer)):
        checks.integer("n", n, minimum=1)
    if isinstance(sigma, (int, float)):
        checks.positive("sigma", sigma)
    k_x, k_eps = jax.random.split(key)
    model = truth.model
    X = sample_inputs(k_x, n, model.spec.d, design, model.base.M0.dtype)
    f = regression_function(model.spec, model.base, truth.atoms, X)
    return Dataset(X, f + sigma * jax.random.normal(k_eps, f.shape, f.dtype))
