r"""Lower-bound curves for issue 12's "Measurements": headline truths, near-merging truths,
exponents.

    # vanilla/linear/tanh/sigmoid/gelu, L* and L*+1
    nice -n 10 python simulations/analysis/bounds_measure.py --part headline
    # vanilla and tanh, L = L*, minimax.toml deltas
    nice -n 10 python simulations/analysis/bounds_measure.py --part merging
    nice -n 10 python simulations/analysis/bounds_measure.py --part report \
        > benchmarks/results/bounds_exponents.txt

Each (truth, estimator, L) unit is written to figures/data/bounds/units/ (or ``--units DIR``) as it
finishes (a rerun skips finished units; ``--estimators`` computes only those). Vanilla's units come
after the other families' on the same truth and take their witnesses in, as ``moe-lora bound``
does (``moe_lora.bounds.containment``). The near-merging units and sigmoid's and gelu's were
recomputed this way with the current solver:

    nice -n 10 python simulations/analysis/bounds_measure.py --part merging \
        --units benchmarks/results/bounds_recompute_ii
    nice -n 10 python simulations/analysis/bounds_measure.py --part headline \
        --estimators sigmoid gelu \
        --units benchmarks/results/bounds_recompute_ii

``--part report`` concatenates them into figures/data/bounds/curves.parquet
and prints the flat sets, the exponents a of M(eta) ~ eta^a (from m(eps) ~ eps^(1/a)) with their fit
ranges, the ratios M(eta) / eta^(1/r) of the near-merging family (worst case over delta at each
eta), and the two-point bound at the sweeps' sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headline_units import estimator_model, headline_truth  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "figures" / "data" / "bounds"
ROOT = OUT.parents[2]
HEADLINE_LOSSES = ("D", "D_1", "D_2", "D_3", "D_4")
DELTAS = (0.5, 0.25, 0.125, 0.0625)
SIGMA = 0.02


def units(part: str):
    if part == "headline":
        for name, through in (
            ("tanh", "tanh"),
            ("vanilla", "tanh"),
            ("linear", "linear"),
            ("vanilla", "linear"),
            ("sigmoid", "sigmoid"),
            ("gelu", "gelu"),
        ):
            for L in (2, 3):
                yield through, None, name, L
    else:
        for delta in DELTAS:
            for name in ("tanh", "vanilla"):
                yield "tanh", delta, name, 2


def _unit_path(units_dir: Path, through: str, delta, name: str, L: int) -> Path:
    label = through if delta is None else f"{through}@delta={delta:g}"
    return units_dir / f"{label}__{name}__L{L}.parquet"


def compute(part: str, seed: int, losses, units_dir: Path, estimators=None) -> None:
    """Each unit of ``part`` without a file in ``units_dir`` (only ``estimators`` if given).
    Vanilla's units come after the other families' on the same truth and take their witnesses
    in (``bounds.containment``, as ``moe-lora bound`` does): vanilla's family contains them."""
    import pandas as pd

    from moe_lora.bounds import BoundConfig, bound_curves

    config = BoundConfig(losses=tuple(losses))
    units_dir.mkdir(parents=True, exist_ok=True)
    every = list(units(part))
    for through, delta, name, L in every:
        if estimators and name not in estimators:
            continue
        path = _unit_path(units_dir, through, delta, name, L)
        if path.exists():
            continue
        contained = ()
        if name == "vanilla":
            others = [
                _unit_path(units_dir, t, dl, n, ll)
                for t, dl, n, ll in every
                if (t, dl, ll) == (through, delta, L) and n != "vanilla"
            ]
            missing = [str(p) for p in others if not p.exists()]
            if missing:
                raise SystemExit(f"vanilla's unit {path.name} needs first: {', '.join(missing)}")
            contained = tuple(
                (estimator_model(p.name.split("__")[1], seed), pd.read_parquet(p)) for p in others
            )
        label = through if delta is None else f"{through}@delta={delta:g}"
        t0 = time.perf_counter()
        df = bound_curves(
            jax.random.key(seed),
            headline_truth(through, seed, delta),
            estimator_model(name, seed),
            L,
            config,
            truth_label=label,
            estimator_label=name,
            contained=contained,
        )
        df["delta"] = np.nan if delta is None else delta
        df.to_parquet(path)
        print(f"{label:18s} {name:8s} L={L}: {time.perf_counter() - t0:6.1f} s", flush=True)


def _fit(x, y):
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    return slope


def report() -> None:
    import pandas as pd

    from moe_lora.bounds import L2_FLOOR, le_cam_lower_bound, modulus_from_witnesses

    df = pd.concat(
        [pd.read_parquet(p) for p in sorted((OUT / "units").glob("*.parquet"))], ignore_index=True
    )
    df.to_parquet(OUT / "curves.parquet")
    print(
        f"curves: {len(df)} rows from {df.groupby(['truth', 'estimator', 'L']).ngroups} units -> "
        f"{(OUT / 'curves.parquet').relative_to(ROOT)}"
    )
    print(f"L2 floor trusted: {L2_FLOOR:g}; witnesses counted only inside the neighbourhood\n")

    print(
        "== Flat sets (witnesses on target with L2 <= floor) and exponents a of M(eta) ~ eta^a =="
    )
    print(
        "Every reported m(eps) is an upper bound (a solve that failed gives a larger L2). The fit "
        "uses only the"
    )
    print(
        "non-dominated on-target witnesses (L2 below that of every larger eps: the corners of the "
        "M(eta) envelope),"
    )
    print(
        "above the floor and above the flat set, without the largest eps (the neighbourhood "
        "saturates there):"
    )
    print(
        "log m = b log eps + const, a = 1 / b. 'range' gives the eps and m spanned by the fitted "
        "points."
    )
    single = df[df["delta"].isna()]
    for (truth, est, L, loss), g in single.groupby(["truth", "estimator", "L", "loss"], sort=False):
        m = g[(g.kind == "m") & g.on_target & g.inside].sort_values("eps")
        flat = m[m.l2 <= L2_FLOOR]
        M0 = flat.D.max() if len(flat) else 0.0
        rest = m[(m.l2 > L2_FLOOR) & (m.D > M0)]
        later_min = np.minimum.accumulate(rest.l2.to_numpy()[::-1])[::-1]
        keep = rest.l2.to_numpy() <= later_min + 0.0
        fit = rest[keep]
        fit = fit[fit.eps < fit.eps.max()] if len(fit) > 3 else fit
        line = (
            f"{truth:8s} {est:8s} L={L} {loss:4s}: on target {len(m):2d}/{(g.kind == 'm').sum()}, "
        )
        line += (
            f"flat set up to D >= {M0:.3g} ({len(flat)} targets)"
            if len(flat)
            else "no flat witness"
        )
        if len(fit) >= 3:
            b = _fit(fit.eps, fit.l2)
            line += (
                f"; {len(fit)} pts: m ~ eps^{b:.2f} -> a = {1 / b:.2f}, range eps "
                f"[{fit.eps.min():.2g}, "
                f"{fit.eps.max():.2g}], m [{fit.l2.min():.2g}, {fit.l2.max():.2g}], "
                f"m/eps [{(fit.l2 / fit.eps).min():.2g}, {(fit.l2 / fit.eps).max():.2g}]"
            )
        else:
            line += f"; too few points above the flat set to fit ({len(fit)})"
        searched = g[(g.kind == "M") & (g.get("source") == "flat_edge")]
        if len(searched):
            w = searched.loc[searched.D.idxmax()]
            line += f"; flat-set search: witness D = {w.D:.4g} at L2 = {w.l2:.1e}"
        print(line)

    print(
        "\n== Near-merging truths (minimax.toml deltas), L = L*: worst case over delta of M(eta) =="
    )
    fam = df[df["delta"].notna()]
    etas = np.sort(df[df.kind == "M"].eta.dropna().unique())
    for (est, loss), g in fam.groupby(["estimator", "loss"], sort=False):
        worst = np.zeros(len(etas))
        for _, h in g.groupby("delta"):
            w = h[h.inside.astype(bool) & (h.kind == "m")]
            worst = np.maximum(worst, modulus_from_witnesses(w.D, w.l2, etas))
        r = 1.0 if loss == "D" else float(loss.split("_")[1])
        ratio = worst / etas ** (1 / r)
        print(f"{est:8s} {loss:4s} (r = {r:g}): M(eta) = " + " ".join(f"{x:.2g}" for x in worst))
        print(f"{'':14s}M/eta^(1/r) = " + " ".join(f"{x:.2g}" for x in ratio))
    print("etas: " + " ".join(f"{x:.2g}" for x in etas))

    print(f"\n== Two-point bound LB(n) = M(sigma/sqrt(n)) / (4 C) at sigma = {SIGMA} (loss D) ==")
    n = np.array([1e2, 1e3, 1e4, 1e5, 1e6])
    for (truth, est, L), g in single[single.loss == "D"].groupby(
        ["truth", "estimator", "L"], sort=False
    ):
        w = g[g.inside.astype(bool)]
        C = float(g.triangle_constant.max())
        lb = le_cam_lower_bound(w.D, w.l2, n, SIGMA, C)
        print(
            f"{truth:8s} {est:8s} L={L} C={C:.2f}: "
            + " ".join(f"n={k:.0e}: {v:.3g}" for k, v in zip(n, lb))
        )


def figures() -> None:
    """figures/overspecified_bound_<truth>_L+<extra>.{pdf,png}: the committed curves against the
    committed over-specified sweep (the same truths: seed 0, drawn as in overspecified.toml)."""
    import json

    import pandas as pd

    from moe_lora.bounds_figure import run_bound_figures
    from moe_lora.cli import save_figure

    root = OUT.parents[1]
    curves = pd.read_parquet(OUT / "curves.parquet")
    curves = curves[
        curves["truth"].isin(["tanh", "linear"]) & (curves["extra"] == 1)
    ]  # the sweep's truths and setting
    sweep = pd.read_parquet(root / "data" / "overspecified" / "results.parquet")
    manifest = json.loads((root / "data" / "overspecified" / "manifest.json").read_text())
    for stem, fig in run_bound_figures(curves, sweep, manifest).items():
        for path in save_figure(fig, root, stem):
            print(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=("headline", "merging", "report", "figures"), required=True
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", nargs="+", default=None)
    parser.add_argument(
        "--units",
        type=Path,
        default=OUT / "units",
        help="where the units are written (headline, merging) or read (report)",
    )
    parser.add_argument(
        "--estimators", nargs="+", default=None, help="compute only these estimators' units"
    )
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    if args.part == "report":
        report()
    elif args.part == "figures":
        figures()
    else:
        compute(args.part, args.seed, args.losses or HEADLINE_LOSSES, args.units, args.estimators)
