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
import sys
import time
from pathlib import Path

import jax

# the headline units' truths and estimators, shared with the bound readers of simulations/analysis
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulations" / "analysis"))
from headline_units import estimator_model, headline_truth  # noqa: E402


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
