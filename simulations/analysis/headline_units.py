"""The headline truths and estimators of the bound readers, rebuilt with the core API.

``estimator_model`` and ``headline_truth`` draw what ``simulations/{exact,overspecified}.toml``
(and ``minimax.toml``'s near-merging members) draw, with the same keys as the sweeps; the bound
scripts here and ``benchmarks/bounds_cost.py`` (the timing of the same units) use them.
"""

from __future__ import annotations

import jax

ESTIMATORS = (
    "vanilla",
    "linear",
    "tanh",
    "sigmoid",
    "gelu",
    "relu",
)  # the sweeps' index of each name


def estimator_model(name: str, seed: int = 0):
    """The estimator ``name`` of the headline configs (d=2, d_out=1, r=1, gate_scale=3,
    latent_dim=2)."""
    from moe_lora.model import ModelSpec
    from moe_lora.parameterization import Shared, Vanilla, make_model

    spec = ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    if name == "vanilla":
        return make_model(spec, Vanilla())
    keys = jax.random.split(jax.random.key(seed), 4)
    activation = "identity" if name == "linear" else name
    return make_model(
        spec,
        Shared(activation=activation, latent_dim=2),
        key=jax.random.fold_in(keys[0], ESTIMATORS.index(name)),
    )


def headline_truth(through: str, seed: int = 0, delta: float | None = None):
    """The truth drawn through ``through`` as in simulations/{exact,overspecified}.toml; with
    ``delta``, the near-merging member of simulations/minimax.toml (atom 1's raw parameters but c
    moved to theta_0 + delta (theta_1 - theta_0))."""
    from moe_lora.truth import Design, draw_truth, make_truth

    keys = jax.random.split(jax.random.key(seed), 4)
    model = estimator_model(through, seed)
    truth = draw_truth(
        jax.random.fold_in(keys[1], ESTIMATORS.index(through)),
        model,
        2,
        scale=1.0,
        min_separation=0.5,
        min_gate_strength=0.5,
        min_expert_separation=0.5,
        design=Design(),
    )
    if delta is None or delta == 1:
        return truth
    p = truth.params
    moved = type(p)(
        *(
            x if name == "c" else x.at[1].set(x[0] + delta * (x[1] - x[0]))
            for name, x in zip(p._fields, p)
        )
    )
    return make_truth(model, moved, design=Design(), key=jax.random.fold_in(keys[2], 0))
