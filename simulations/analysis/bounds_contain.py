r"""Containment on the headline bound units: vanilla's curves with the shared family's witnesses
merged in (``moe_lora.bounds.containment``), and the check that vanilla's M is then at least the
family's at every eta.

    python simulations/analysis/bounds_contain.py benchmarks/results/bounds_recompute \
        benchmarks/results/bounds_contain > benchmarks/results/bounds_contain/report.txt

For each truth (tanh, linear) and L (2, 3): the family's unit is recomputed into OUT with the
witnesses' raw parameters (the units of RECOMPUTE predate them; the recomputation's D and L2 are
checked against RECOMPUTE's), then vanilla's unit of RECOMPUTE is merged with it and written to
OUT. Prints, per unit and loss, the etas at which the family's M is above vanilla's, before and
after, and how many of vanilla's M rows the family's search now supplies.
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

from moe_lora.bounds.containment import containment_failures, envelope  # noqa: E402


def above(family: pd.Series, vanilla: pd.Series) -> tuple[int, float]:
    """(etas at which the family's M is above vanilla's, the largest ratio there)."""
    bad = containment_failures(family, vanilla)
    return int(bad.sum()), float((family[bad] / vanilla[bad]).max()) if bad.any() else 1.0


def main(recompute: Path, out: Path, seed: int) -> None:
    jax.config.update("jax_enable_x64", True)
    from moe_lora.bounds import BoundConfig, bound_curves, quadrature
    from moe_lora.bounds.containment import contained_in_vanilla
    from moe_lora.truth import Design

    out.mkdir(parents=True, exist_ok=True)
    for through in ("tanh", "linear"):
        truth = headline_truth(through, seed)
        family, vanilla = estimator_model(through, seed), estimator_model("vanilla", seed)
        for L in (2, 3):
            old_family = pd.read_parquet(recompute / f"{through}__{through}__L{L}.parquet")
            losses = tuple(dict.fromkeys(old_family["loss"]))
            config = BoundConfig(losses=losses)
            path = out / f"{through}__{through}__L{L}.parquet"
            if not path.exists():
                t0 = time.perf_counter()
                rows = bound_curves(
                    jax.random.key(seed),
                    truth,
                    family,
                    L,
                    config,
                    truth_label=through,
                    estimator_label=through,
                )
                rows["delta"] = np.nan
                rows.to_parquet(path)
                print(f"{through} L={L}: recomputed in {time.perf_counter() - t0:.0f} s")
            rows = pd.read_parquet(path)
            # The solves are sensitive to round-off (threaded reductions): the recomputation
            # need not repeat RECOMPUTE bit for bit; say how far it is.
            ratio = {
                kind: (rows.loc[rows.kind == kind, "value"].to_numpy() + 1e-300)
                / (old_family.loc[old_family.kind == kind, "value"].to_numpy() + 1e-300)
                for kind in ("m", "M")
            }
            print(
                f"{through} L={L}: recomputed family unit against RECOMPUTE's: M equal at "
                f"{int(np.sum(np.isclose(ratio['M'], 1, rtol=1e-9)))} of {len(ratio['M'])} rows, "
                f"m at {int(np.sum(np.isclose(ratio['m'], 1, rtol=1e-9)))} of {len(ratio['m'])} "
                f"(m ratios {ratio['m'].min():.3g} to {ratio['m'].max():.3g})"
            )
            own = pd.read_parquet(recompute / f"{through}__vanilla__L{L}.parquet")
            own = own.assign(theta=None, source="vanilla")
            quad = quadrature(
                vanilla.spec.d, Design(), config.quadrature_order, key=jax.random.key(0)
            )
            merged = contained_in_vanilla(own, [(family, rows)], vanilla, truth, config, quad)
            merged.to_parquet(out / f"{through}__vanilla__L{L}.parquet")
            for loss in losses:
                f = envelope(rows, loss)
                before, after = above(f, envelope(own, loss)), above(f, envelope(merged, loss))
                M = merged[(merged.kind == "M") & (merged.loss == loss)]
                print(
                    f"  {loss:4s} {through}'s M above vanilla's: before at {before[0]} of {len(f)} "
                    f"etas (largest ratio {before[1]:.3g}), after at {after[0]} (largest ratio "
                    f"{after[1]:.3g}); vanilla's M rows from {through}'s search: "
                    f"{int((M.source == through).sum())} of {len(M)}"
                )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recompute", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    main(args.recompute, args.out, args.seed)
