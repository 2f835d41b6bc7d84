"""Wall time of one full set of lower-bound curves (issue 12's cost target: <= 10 minutes on 2
cores).

12 etas x 5 estimators (vanilla, linear, tanh, sigmoid, gelu) x 2 values of L (L*, L* + 1), losses
D and D_2, on the headline truths of ``simulations/overspecified.toml`` (vanilla on the tanh truth,
each shared estimator on the truth drawn through itself), with the default ``BoundConfig``.

    nice -n 10 python benchmarks/bounds_cost.py > benchmarks/results/bounds_cost.txt

``headline_truth`` rebuilds the configs' truths with the core API (the same keys as the sweeps).
"""

from __future__ import annotations

import argparse
import os
import time

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


def main(seed: int = 0) -> None:
    jax.config.update("jax_enable_x64", True)
    import pandas as pd

    from moe_lora.bounds import BoundConfig, bound_curves

    config = BoundConfig(losses=("D", "D_2"))
    print(f"cores: {os.cpu_count()}, jax {jax.__version__}, config: {config}")
    t_all = time.perf_counter()
    frames = []
    for name in ("vanilla", "linear", "tanh", "sigmoid", "gelu"):
        through = "tanh" if name == "vanilla" else name
        truth = headline_truth(through, seed)
        for L in (2, 3):
            t0 = time.perf_counter()
            df = bound_curves(
                jax.random.key(seed),
                truth,
                estimator_model(name, seed),
                L,
                config,
                truth_label=through,
                estimator_label=name,
            )
            frames.append(df)
            on = df[df.kind == "m"].on_target.mean()
            print(
                f"{name:8s} truth={through:8s} L={L}: {time.perf_counter() - t0:6.1f} s  (m rows "
                f"on target: {on:.0%})",
                flush=True,
            )
    total = time.perf_counter() - t_all
    df = pd.concat(frames)
    print(
        f"total: {total:.1f} s for {len(df)} rows ({df.kind.eq('M').sum()} M(eta) rows, target <= "
        "600 s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args().seed)
