r"""The committed bound units at L = L* + 1 with their exact flat sets merged in.

``bound_curves`` now searches each cell's flat set when L > L* (``witnesses.flat_edge``) and merges
its largest-D witness into the curves (``containment.with_flat_set``). The committed units predate
that; this applies the same step to them, with the key ``bound_curves`` uses
(``fold_in(key(seed), 2)``), instead of recomputing every eps target:

- each shared family's L = 3 unit (tanh, linear, sigmoid, gelu truths) gets its own flat set;
- each vanilla L = 3 unit gets its own flat set and the augmented family unit of its truth
  (``containment.contained_in_vanilla``), as ``moe-lora bound`` does.

    python simulations/analysis/bounds_flat.py figures/data/bounds/units

Units are rewritten in place (a unit already holding a ``flat_edge`` row is skipped; with
``--again`` it is searched again with ``BoundConfig``'s current ``flat_edge_starts`` and the new
witnesses merged on top, so M can only grow). Prints, per unit and loss, M(eta) at the smallest
eta before and after, and where the M rows come from.

    python simulations/analysis/bounds_flat.py figures/data/bounds/units --again

was run after the default went from 24 to 96 starts (24 missed sigmoid's thin flat band).
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
from bounds_measure import HEADLINE_LOSSES  # noqa: E402
from headline_units import estimator_model, headline_truth  # noqa: E402

FAMILIES = ("tanh", "linear", "sigmoid", "gelu")


def _summary(name: str, before: pd.DataFrame, after: pd.DataFrame) -> None:
    for loss in dict.fromkeys(after["loss"]):
        b = before[(before.kind == "M") & (before.loss == loss)].sort_values("eta")
        a = after[(after.kind == "M") & (after.loss == loss)].sort_values("eta")
        sources = a["source"].value_counts().to_dict()
        print(
            f"  {name:24s} {loss:4s} M(eta = {a.eta.iloc[0]:.0e}): {b.value.iloc[0]:.4g} -> "
            f"{a.value.iloc[0]:.4g}; M at the largest eta {b.value.iloc[-1]:.4g} -> "
            f"{a.value.iloc[-1]:.4g}; M rows by source {sources}",
            flush=True,
        )


def main(units: Path, seed: int, again: bool = False) -> None:
    jax.config.update("jax_enable_x64", True)
    from moe_lora.bounds import BoundConfig, quadrature
    from moe_lora.bounds.containment import contained_in_vanilla, with_flat_set
    from moe_lora.truth import Design

    config = BoundConfig(losses=HEADLINE_LOSSES)
    key = jax.random.fold_in(jax.random.key(seed), 2)
    augmented = {}
    for through in FAMILIES:
        path = units / f"{through}__{through}__L3.parquet"
        rows = pd.read_parquet(path)
        if "theta" not in rows.columns:
            print(f"{path.name}: skipped, its witnesses carry no parameters (recompute it)")
            continue
        truth, family = headline_truth(through, seed), estimator_model(through, seed)
        quad = quadrature(family.spec.d, Design(), config.quadrature_order, key=jax.random.key(0))
        if (rows["source"] == "flat_edge").any() and not again:
            augmented[through] = (family, rows)
            print(f"{path.name}: already has its flat set", flush=True)
            continue
        t0 = time.perf_counter()
        new = with_flat_set(key, truth, family, rows, config, quad)
        new["delta"] = np.nan
        new.to_parquet(path)
        augmented[through] = (family, new)
        print(f"{path.name}: {time.perf_counter() - t0:.0f} s", flush=True)
        _summary(through, rows, new)
    vanilla = estimator_model("vanilla", seed)
    for through in ("tanh", "linear"):
        path = units / f"{through}__vanilla__L3.parquet"
        rows = pd.read_parquet(path)
        if (rows["source"] == "flat_edge").any() and not again:
            print(f"{path.name}: already has the flat sets", flush=True)
            continue
        truth = headline_truth(through, seed)
        quad = quadrature(vanilla.spec.d, Design(), config.quadrature_order, key=jax.random.key(0))
        t0 = time.perf_counter()
        new = with_flat_set(key, truth, vanilla, rows, config, quad)
        new = contained_in_vanilla(new, [augmented[through]], vanilla, truth, config, quad)
        new["delta"] = np.nan
        new.to_parquet(path)
        print(f"{path.name}: {time.perf_counter() - t0:.0f} s", flush=True)
        _summary(f"vanilla on {through}", rows, new)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("units", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--again", action="store_true", help="search units that have a flat set again")
    args = ap.parse_args()
    main(args.units, args.seed, args.again)
