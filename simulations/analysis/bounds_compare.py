r"""Two sets of lower-bound units, unit by unit: the certified M(eta) envelope of loss D (ratio
new / old over eta), the largest exact flat witness (m rows with L2 at most ``L2_FLOOR``,
1e-13), and containment on the tanh truth (vanilla's family contains tanh's, so vanilla's M must
be at least tanh's at every eta and L; every eta where it is not is a search artefact).

    mkdir -p /tmp/oldunits
    for f in $(git ls-tree --name-only 1db9047^ figures/data/bounds/units/); do
        git show 1db9047^:$f > /tmp/oldunits/$(basename $f); done
    python simulations/analysis/bounds_compare.py /tmp/oldunits \
        benchmarks/results/bounds_recompute > benchmarks/results/bounds_recompute/compare.txt

The old units are the committed ones before commit 1db9047, which replaced them with the
recompute's. Containment failures are counted by ``moe_lora.bounds.containment``'s one rule
(relative 1e-9, D above 1e-12), as in ``bounds_contain.py`` and the tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from moe_lora.bounds.config import L2_FLOOR
from moe_lora.bounds.containment import containment_failures, envelope


def flat_edge(d: pd.DataFrame) -> float:
    flat = d[(d.kind == "m") & (d.loss == "D") & (d.l2 <= L2_FLOOR)]
    return float(flat["D"].max()) if len(flat) else float("nan")


def main(old: Path, new: Path) -> None:
    for path in sorted(new.glob("*.parquet")):
        if not (old / path.name).exists():
            continue
        a, b = pd.read_parquet(old / path.name), pd.read_parquet(path)
        ratio = envelope(b) / envelope(a).replace(0, np.nan)
        print(
            f"{path.stem:28s} M new/old: min {ratio.min():.3g}, max {ratio.max():.3g}; "
            f"largest exact flat witness D: new {flat_edge(b):.4g}, old {flat_edge(a):.4g}"
        )
    for L in (2, 3):
        for tag, base in (("old", old), ("new", new)):
            if not (base / f"tanh__vanilla__L{L}.parquet").exists():
                continue
            v = envelope(pd.read_parquet(base / f"tanh__vanilla__L{L}.parquet"))
            t = envelope(pd.read_parquet(base / f"tanh__tanh__L{L}.parquet"))
            bad = containment_failures(t, v)
            worst = f", largest ratio {float((t[bad] / v[bad]).max()):.2f}" if bad.any() else ""
            print(
                f"containment, tanh truth, L = {L}, {tag}: tanh's M above vanilla's at "
                f"{int(bad.sum())} of {len(t)} etas{worst}"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args()
    main(args.old, args.new)
