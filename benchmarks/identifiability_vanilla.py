"""Vanilla's flat-set M as a function of the radius, and the weak triangle constant along the split.

On the headline truths of a config (default simulations/overspecified.toml), L = L* + 1: the split
of the heaviest true atom with expert moves +-delta, ||delta A_V|| = rho, built by
``witnesses.split_witness`` and checked with the package's f (quadrature) and D; the formula
``vanilla_flat_modulus`` = pi*_max rho^2; and ``split_path_triangle`` at the same rho.

    python benchmarks/identifiability_vanilla.py --out figures/data/identifiability/vanilla_flat.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
import pandas as pd


def main(config: str, out: str, radii) -> None:
    jax.config.update("jax_enable_x64", True)
    from moe_lora.bounds import quadrature, split_path_triangle, split_witness, vanilla_flat_modulus
    from moe_lora.bounds.quadrature import l2_distance
    from moe_lora.experiment import load_experiment
    from moe_lora.fit import truth_in
    from moe_lora.losses import lora_voronoi_loss
    from moe_lora.model import mixture_weights
    from moe_lora.parameterization import atoms
    from moe_lora.truth import Design

    exp = load_experiment(config)
    est = exp.model("vanilla")
    quad = quadrature(exp.spec.d, Design(), 12, key=jax.random.key(0))
    rows = []
    for label, truth in exp.draw_truths().items():
        if label.delta is not None:
            continue
        tp = truth_in(est, truth)
        pi = np.asarray(mixture_weights(truth.atoms.c, exp.spec.gating))
        j = int(np.argmax(pi))
        A_V = np.asarray(est.parameterization.to_compact(tp).A_V[j])
        u = np.zeros(tp.B_V.shape[1:])
        u[:, 0] = 1.0
        u /= np.linalg.norm(u @ A_V)
        C = split_path_triangle(truth, est, radii)
        for rho, c in zip(radii, C):
            G = atoms(est, split_witness(est, tp, j, rho * u))
            out_D = lora_voronoi_loss(G, truth.atoms, exp.spec.gating)
            rows.append(
                dict(
                    config=Path(config).stem,
                    truth=str(label),
                    radius=rho,
                    pi_max=float(pi[j]),
                    M_formula=float(vanilla_flat_modulus(pi, rho)),
                    D_witness=float(out_D.total),
                    l2_witness=float(l2_distance(est, G, est, truth.atoms, quad)),
                    cells_hold=bool(np.sum(np.asarray(out_D.cell) == j) == 2),
                    separation=truth.separation,
                    triangle_split_path=float(c),
                )
            )
            print(rows[-1], flush=True)
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out, index=False)  # after every row: a partial run is usable


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="simulations/overspecified.toml")
    ap.add_argument("--out", default="figures/data/identifiability/vanilla_flat.csv")
    ap.add_argument("--radii", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 3.0])
    a = ap.parse_args()
    main(a.config, a.out, a.radii)
