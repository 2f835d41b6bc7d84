r"""The fits behind a verdict table: per run and estimator, what the slopes rest on.

    d=figures/data/verdicts_identifiable
    python benchmarks/verdicts_fits.py ${d}_s0 ${d}_s1 ${d}_s2 ${d}_s3 ${d}_vanilla_s0 \
        ${d}_vanilla_s1 ${d}_vanilla_s2 ${d}_vanilla_s3 > benchmarks/results/verdicts_fits.txt

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
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_lora.runs import load_results
from moe_lora.runs.store import experiment_of


def main(dirs: list[Path]) -> None:
    print(
        f"{'run':36s} {'estimator':9s} {'gate':>5s} {'sep':>5s} {'cert':>6s} {'cap':>5s} "
        f"{'local min (max D)':>18s} {'shared gate (D share)':>22s} {'mean/median at n_max':>21s}"
    )
    for d in dirs:
        df, manifest = load_results(d)
        config = experiment_of(manifest).config
        fit = df[df["n"] >= (config.rates.n_min or 0)]
        max_iter = config.fit.max_iter
        for est, sub in fit.groupby("estimator"):
            truth = manifest["truths"][str(sub["truth"].iloc[0])]
            excess = (sub["risk"] - sub["risk_truth"]) * sub["n"] / sub["sigma"] ** 2
            local = sub[~sub["certified"] & (excess > 100)]
            top = sub[sub["n"] == sub["n"].max()]["D"]
            shared = int(sub["shared_gate"].sum())
            share = sub["D_shared_gate"].sum() / sub["D"].sum()
            lm = f"{len(local)} ({local['D'].max():.3g})" if len(local) else "0"
            print(
                f"{manifest['name']:36s} {est:9s} {truth['gate_strength']:5.3f} "
                f"{truth['expert_separation']:5.3f} {sub['certified'].mean():6.1%} "
                f"{(sub['iterations'] >= max_iter).mean():5.1%} {lm:>18s} "
                f"{f'{shared} ({share:.1e})':>22s} {top.mean() / top.median():21.2f}"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", type=Path, nargs="+")
    main(ap.parse_args().dirs)
