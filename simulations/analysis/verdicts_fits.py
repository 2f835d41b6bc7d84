r"""The fits behind a verdict table: per run and estimator, what the slopes rest on.

    python simulations/analysis/verdicts_fits.py figures/data/verdicts_identifiable \
        > benchmarks/results/verdicts_fits.txt

(the file's first 21 lines; its last four are the seed-0 runs to n = 1e6, now read by
``verdicts_fits.py figures/data/verdicts_identifiable_1e6``, which names them by that study.)

A run directory may hold several truth seeds (a study): its rows are read per seed. A row's
``run`` is its ``experiment``: in a study assembled from single-seed runs, the run it came from
(verdicts_identifiable_s0, ...); otherwise the study's name, with the seed where it holds several.

Over the run's fit range (``[rates] n_min``): the truth's gate strength and expert separation
(the rejection thresholds are 0.5), the certified fraction, the fraction at the iteration cap,
the fits that are local minima (not certified, risk more than 100 sigma^2 / n above the truth's on
the same data) with their largest D, the fits with a shared gate (two atoms of one cell with the
same gate: vanilla's flat direction at fixed L) and the share of the summed D they carry, and the
ratio of the mean to the median D at the largest n.

The least D over a fit's flat set equals D when no cell holds two atoms with one gate (the
softmax mixture is identified up to permutation, the gauge of the factors and the softmax shift,
none of which moves D); a shared gate lets the two atoms trade experts, which can lower D by at
most the part of D in that cell (``D_shared_gate``). So the share printed bounds how far the
least D over the flat set can fall below D.

With ``--tail K``, the K largest-D fits of each run and estimator over the fit range follow, with
what they are made of: the share of D in the gate block (D_S / D), the smallest fitted weight,
whether the fit is certified, its excess risk (risk - risk_truth) n / sigma^2 on its own data
(negative: it fits the data better than the truth does) and each true atom's cell gate gap (the
largest Frobenius distance between the gates of two fitted atoms in one cell; inf: one atom).

    python simulations/analysis/verdicts_fits.py figures/data/verdicts_inside --tail 4 \
        --estimator linear > benchmarks/results/verdicts_tail_linear.txt

(linear's four inside truths, seeds 1-4; the committed output was made from the single-seed runs
they were assembled from, verdicts_identifiable_s1..s3 and verdicts_inside_linear_s4, and names
them where this command names verdicts_inside and the seed.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_lora.runs import load_results
from moe_lora.runs.store import experiment_of
from moe_lora.verdicts import truth_summary_of


def _tail(name: str, est: str, sub, k: int) -> None:
    top = sub.nlargest(k, "D")
    gaps = sorted(c for c in sub.columns if c.startswith("cell_gate_gap_"))
    print(f"  {name} / {est}: the {len(top)} largest D over the fit range")
    for _, r in top.iterrows():
        excess = (r["risk"] - r["risk_truth"]) * r["n"] / r["sigma"] ** 2
        gap = ", ".join(f"{r[c]:.3g}" for c in gaps)
        print(
            f"    n = {int(r['n']):7d} replicate {int(r['replicate']):2d}: D = {r['D']:.4g}, "
            f"D_S / D = {r['D_S'] / r['D']:.3f}, min weight {r['min_weight']:.4f}, "
            f"certified {bool(r['certified'])}, excess risk {excess:.1f}, cell gate gaps [{gap}]"
        )


def main(dirs: list[Path], tail: int = 0, estimator: str | None = None) -> None:
    print(
        f"{'run':36s} {'estimator':9s} {'gate':>5s} {'sep':>5s} {'cert':>6s} {'cap':>5s} "
        f"{'local min (max D)':>18s} {'shared gate (D share)':>22s} {'mean/median at n_max':>21s}"
    )
    for d in dirs:
        df, manifest = load_results(d)
        config = experiment_of(manifest).config
        fit = df[df["n"] >= (config.rates.n_min or 0)]
        max_iter = config.fit.max_iter
        fit = fit.assign(
            run=fit["experiment"] if "experiment" in fit else manifest["name"],
            seed=fit["seed"] if "seed" in fit else manifest["seed"],
        )
        seeds = fit.groupby("run")["seed"].nunique()
        for (run, seed, est), sub in fit.groupby(["run", "seed", "estimator"]):
            if estimator is not None and est != estimator:
                continue
            name = f"{run} seed {seed}" if seeds[run] > 1 else run
            truth = truth_summary_of(manifest["truths"], seed, str(sub["truth"].iloc[0]))
            excess = (sub["risk"] - sub["risk_truth"]) * sub["n"] / sub["sigma"] ** 2
            local = sub[~sub["certified"] & (excess > 100)]
            top = sub[sub["n"] == sub["n"].max()]["D"]
            shared = int(sub["shared_gate"].sum())
            share = sub["D_shared_gate"].sum() / sub["D"].sum()
            lm = f"{len(local)} ({local['D'].max():.3g})" if len(local) else "0"
            print(
                f"{name:36s} {est:9s} {truth['gate_strength']:5.3f} "
                f"{truth['expert_separation']:5.3f} {sub['certified'].mean():6.1%} "
                f"{(sub['iterations'] >= max_iter).mean():5.1%} {lm:>18s} "
                f"{f'{shared} ({share:.1e})':>22s} {top.mean() / top.median():21.2f}"
            )
            if tail:
                _tail(name, est, sub, tail)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", type=Path, nargs="+")
    ap.add_argument("--tail", type=int, default=0, help="list the K largest-D fits per run")
    ap.add_argument("--estimator", help="only this estimator's rows")
    args = ap.parse_args()
    main(args.dirs, args.tail, args.estimator)
