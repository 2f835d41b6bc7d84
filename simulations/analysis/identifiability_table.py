r"""The identifiability map as a markdown table, from the CSVs of identifiability_map.py.

One row per (family, d, r, p, L - L*): the gate fiber's dimension at each true atom (and whether V
moves on it), and per atom the largest D of an exact flat witness within the radius (or, if none
was found, the smallest gate and mean residual reached). Verdict: "flat" if a witness was found at
some atom, "clean" if none was found and every atom's best residual is above 1e-4, else "undecided".

    python simulations/analysis/identifiability_table.py figures/data/identifiability/map.csv \
        figures/data/identifiability/map_extra2.csv > figures/data/identifiability/map.md
"""

from __future__ import annotations

import sys

import pandas as pd

#: A cell counts as clean only when no solve came closer than this to an exact witness; between
#: EXACT_TOL (1e-12) and this the search may have missed one ("undecided").
CLEAN = 1e-4


def verdict(group: pd.DataFrame) -> str:
    if (group["j"] < 0).any():
        return "no truth"
    if group["found"].astype(bool).any():
        return "flat"
    return "clean" if (group["best_exact"] > CLEAN).all() else "undecided"


def main(paths) -> None:
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    keys = ["family", "d", "r", "p", "extra"]
    print(
        "| family | d | r | p | L - L* | threshold | fiber dim (V moves) | per atom: D_max of a "
        "flat witness, "
        "or best residual | flat dim | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    order = {f: i for i, f in enumerate(["vanilla", "linear", "tanh", "sigmoid", "gelu", "relu"])}
    df["_o"] = df["family"].map(order)
    for key, g in df.sort_values(["r", "d", "p", "extra", "_o", "j"]).groupby(keys, sort=False):
        if (g["j"] < 0).any():
            print(f"| {' | '.join(str(x) for x in key)} | | | | | no truth |")
            continue
        fib = ", ".join(
            f"{int(x.fiber_dim)} ({'yes' if x.expert_motion > 1e-8 else 'no'})"
            for x in g.itertuples()
        )
        per = ", ".join(
            f"{x.D_max:.3g}" if bool(x.found) else f"none ({x.best_exact:.1e})"
            for x in g.itertuples()
        )
        dims = ", ".join(str(int(x.flat_dim)) for x in g.itertuples() if bool(x.found)) or "-"
        print(
            f"| {' | '.join(str(x) for x in key)} | {g['threshold'].iloc[0]:g} | {fib} | {per} | "
            f"{dims} | {verdict(g)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["figures/data/identifiability/map.csv"])
