r"""The weak triangle constant of Le Cam's bound along the witnesses' own paths, per headline unit.

    python simulations/analysis/bounds_triangle.py figures/data/bounds/units \
        > benchmarks/results/bounds_triangle.txt

For each headline unit (tanh, sigmoid, gelu, linear and vanilla on the tanh and linear truths,
L = 2 and 3) and loss D: the constant C the unit's Le Cam bound uses (``triangle_constant``, the
largest ratio over random triples near the truth), and the largest ratio
D(G1, G*) / (D(G, G*) + D(G, G1)) along the compact-space path from the split truth through each
stored witness G1 and beyond (``bounds.witness_path_triangle``), over every witness and by the
witness's D. Vanilla's units hold the shared families' witnesses mapped into vanilla (its own rows
carry no parameters); a unit without stored parameters is listed as such. Vanilla's own split
path is ``bounds.split_path_triangle`` (docs/bounds.md). Witnesses with two identical atoms are
left out (no triangle ratio).

With ``--write``, every unit's ``triangle_constant`` is raised, per loss, to its witness paths'
largest ratio (``bounds.with_path_triangle``, as ``bound_curves`` now does; the triples' value is
kept as ``triangle_random``), and the units are rewritten in place:

    python simulations/analysis/bounds_triangle.py figures/data/bounds/units --write \
        > benchmarks/results/bounds_triangle.txt

"C triples" is then the random triples' value and "C used" the larger of the two.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headline_units import estimator_model, headline_truth  # noqa: E402

UNITS = [
    (through, est, L)
    for through, ests in (
        ("tanh", ("tanh", "vanilla")),
        ("linear", ("linear", "vanilla")),
        ("sigmoid", ("sigmoid",)),
        ("gelu", ("gelu",)),
    )
    for est in ests
    for L in (2, 3)
]
BINS = ((0.0, 0.01), (0.01, 0.1), (0.1, np.inf))


def main(units: Path, seed: int, write: bool = False) -> None:
    jax.config.update("jax_enable_x64", True)
    from moe_lora.bounds import has_parameters, with_path_triangle, witness_path_triangle

    print(
        f"{'unit':22s} {'C triples':>9s} {'path max':>8s} {'C used':>7s} {'witnesses':>9s}  "
        "by witness D"
    )
    for through, est, L in UNITS:
        path = units / f"{through}__{est}__L{L}.parquet"
        rows = pd.read_parquet(path)
        if "theta" not in rows:
            print(f"{through}/{est} L={L}: no witness parameters (unit computed before theta)")
            continue
        truth, model = headline_truth(through, seed), estimator_model(est, seed)
        if write:
            rows = with_path_triangle(truth, model, rows)
            rows.to_parquet(path)
        d = rows[rows["loss"] == "D"]
        used = d["triangle_constant"].iloc[0]
        triples = d["triangle_random"].iloc[0] if "triangle_random" in d else used
        rows = rows[(rows["loss"] == "D") & rows["theta"].map(has_parameters)]
        rows = rows.drop_duplicates(subset=["D", "l2"])
        if rows.empty:
            print(f"{through}/{est} L={L}: no witness with parameters")
            continue
        t0 = time.perf_counter()
        C = witness_path_triangle(truth, model, L, rows["theta"].tolist())
        ok = np.isfinite(C)
        by = []
        for lo, hi in BINS:
            m = ok & (rows["D"].to_numpy() > lo) & (rows["D"].to_numpy() <= hi)
            by.append(f"D in ({lo:g}, {hi:g}]: {C[m].max():.2f} ({m.sum()})" if m.any() else "")
        print(
            f"{through + '/' + est + ' L=' + str(L):22s} {triples:9.2f} {C[ok].max():8.2f} "
            f"{used:7.2f} {int(ok.sum()):9d}  "
            + "; ".join(b for b in by if b)
            + f"  [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("units", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="raise the units' C to the paths'")
    args = ap.parse_args()
    main(args.units, args.seed, args.write)
