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
from .model import Atoms, gate_strength, mixture_weights, regression_function
from .parameterization import Model, atoms, check_finite_params, init_params, param_shapes
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
