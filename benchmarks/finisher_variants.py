"""Levenberg-Marquardt variants and stopping rules, paired fit by fit on a subsample of the verdict
sweeps.

For every estimator of the configs (default ``simulations/verdicts.toml``, its vanilla arm
included), every size of ``--sizes`` and replicates 0..R-1, the same
data are fitted from the same starts by each variant of the configs' finisher:

* ``rule``: the config's finisher as it is (``stat_tol`` = 0.1, Nielsen damping update);
* ``gradient``: the gradient test alone (``stat_tol`` off), the reference for the rule;

The geodesic-acceleration and delayed-gratification variants measured with it (commit 254e7ca,
``benchmarks/results/finisher_variants_1e4.*``) were removed after that measurement
(docs/optimizer.md, "Tried and not kept").

Printed per (estimator, n, variant): mean and largest iterations, the share of fits at the
iteration cap, the certified share, mean D with its Monte Carlo standard error, the largest
paired |D - D_rule| / D_rule, the mean paired risk difference to ``rule`` in units of
sigma^2 / n, and the seconds (compile included). Per-fit rows go to ``--out``, appended cell by cell
as they finish.

    python benchmarks/finisher_variants.py --sizes 1000 10000 --replicates 8
    python benchmarks/finisher_variants.py --sizes 100000 --replicates 2 --variants rule gradient
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "rule": {},
    "gradient": {"stat_tol": None},
}


def fits(config: str, sizes, replicates: int, variants, out: Path) -> pd.DataFrame:
    import moe_lora as ml

    exp = ml.load_experiment(config)
    truths = exp.draw_truths()
    extra = max(exp.extra_components)
    base = exp.fit_config(extra)
    X_eval = exp.x_eval()
    rows = []
    for label, est in exp.pairs():
        for n in sizes:
            for variant in variants:
                cfg = dataclasses.replace(
                    base, finisher=dataclasses.replace(base.finisher, **VARIANTS[variant])
                )
                t0 = time.perf_counter()
                rec = jax.block_until_ready(
                    ml.simulate_replicates(
                        exp.sim_key(label),
                        truths[label],
                        exp.model(est),
                        n,
                        sigma=exp.sigma,
                        replicates=replicates,
                        config=cfg,
                        X_eval=X_eval,
                        batch=1,
                    )
                )
                seconds = time.perf_counter() - t0
                for k in range(replicates):
                    rows.append(
                        dict(
                            config=exp.name,
                            truth=str(label),
                            estimator=est,
                            n=n,
                            variant=variant,
                            replicate=k,
                            D=float(rec.D[k]),
                            risk=float(rec.risk[k]),
                            iterations=int(rec.iterations[k]),
                            stop=ml.STOP_REASONS[int(rec.stop_reason[k])],
                            certified=bool(rec.certified[k]),
                            seconds=seconds / replicates,
                            sigma=exp.sigma,
                            max_iter=cfg.finisher.max_iter,
                        )
                    )
                print(f"{est:8s} n={n:>7d} {variant:9s} {seconds:7.1f} s", flush=True)
                # Every finished cell is on disk at once: an interrupted run keeps what it computed.
                pd.DataFrame(rows[-replicates:]).to_csv(
                    out, mode="a", header=not out.exists(), index=False
                )
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    ref = table[table.variant == "rule"].set_index(["estimator", "n", "replicate"])
    out = []
    for (est, n, variant), g in table.groupby(["estimator", "n", "variant"], sort=False):
        r = ref.loc[[(est, n, k) for k in g.replicate]]
        out.append(
            dict(
                estimator=est,
                n=n,
                variant=variant,
                fits=len(g),
                mean_iter=g.iterations.mean(),
                max_iter=g.iterations.max(),
                at_cap=(g.stop == "max_iter").mean(),
                certified=g.certified.mean(),
                mean_D=g.D.mean(),
                se_D=g.D.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else np.nan,
                max_rel_dD=np.max(np.abs(g.D.to_numpy() - r.D.to_numpy()) / r.D.to_numpy()),
                d_risk=np.mean(
                    (g.risk.to_numpy() - r.risk.to_numpy()) * n / g.sigma.to_numpy() ** 2
                ),
                seconds=g.seconds.sum(),
            )
        )
    return pd.DataFrame(out)


def main(configs, sizes, replicates: int, variants, out: Path) -> pd.DataFrame:
    jax.config.update("jax_enable_x64", True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    table = pd.concat(
        [fits(c, sizes, replicates, variants, out) for c in configs], ignore_index=True
    )
    s = summary(table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(s.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    s.to_csv(out.with_name(out.stem + "_summary.csv"), index=False)
    return s


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["simulations/verdicts.toml"],
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "finisher_variants.csv"
    )
    a = ap.parse_args()
    main(a.configs, a.sizes, a.replicates, a.variants, a.out)
