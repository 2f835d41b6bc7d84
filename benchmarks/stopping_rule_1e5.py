r"""The statistical-precision rule against the gradient test at n = 1e5, paired fit by fit.

For each estimator of a config (default ``simulations/verdicts.toml``) and replicates
0..R-1 at one sample size (default the config's largest), fits the same data from the same
starts twice: with the config's ``fit.stat_tol`` and with the gradient test alone
(``stat_tol`` off). Prints, per fit, D under both rules, the risk the rule leaves on the table in
units of sigma^2 / n, the iterations and the seconds, and per estimator the mean D under both.

    python benchmarks/stopping_rule_1e5.py [--config simulations/verdicts.toml] \
        [--replicates 2] [--n 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

import moe_lora as ml


def main(config: str, replicates: int, n: int | None) -> None:
    exp = ml.load_experiment(config)
    n = n or max(exp.sizes)
    truths = exp.draw_truths()
    extra = max(exp.extra_components)
    base = exp.fit_config(extra)
    rules = {
        "stat_tol": base,
        "gradient": dataclasses.replace(
            base, finisher=dataclasses.replace(base.finisher, stat_tol=None)
        ),
    }
    print(
        f"{config}: n = {n}, L = L* + {extra}, replicates 0..{replicates - 1}, sigma {exp.sigma}, "
        f"stat_tol {base.finisher.stat_tol}, gtol {base.finisher.gtol}, max_iter "
        f"{base.finisher.max_iter}"
    )
    X_eval = exp.x_eval()
    for label, est in exp.pairs():
        out = {}
        for rule, cfg in rules.items():
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
            out[rule] = (rec, time.perf_counter() - t0)
        (a, ta), (b, tb) = out["stat_tol"], out["gradient"]
        for k in range(replicates):
            print(
                f"{str(label):8s} {est:8s} rep {k}: D {float(a.D[k]):.5g} (rule) vs "
                f"{float(b.D[k]):.5g} (gradient); "
                "risk rule - gradient = "
                f"{(float(a.risk[k]) - float(b.risk[k])) * n / exp.sigma**2:+.4f} sigma^2/n; "
                f"iterations {int(a.iterations[k])} vs {int(b.iterations[k])} "
                f"({ml.STOP_REASONS[int(a.stop_reason[k])]} / "
                f"{ml.STOP_REASONS[int(b.stop_reason[k])]}); certified {bool(a.certified[k])} / "
                f"{bool(b.certified[k])}",
                flush=True,
            )
        print(
            f"{str(label):8s} {est:8s} mean D {np.mean(a.D):.5g} (rule) vs {np.mean(b.D):.5g} "
            "(gradient), "
            f"max |relative difference| {np.max(np.abs(a.D - b.D) / b.D):.3g}; seconds {ta:.0f} vs "
            f"{tb:.0f} (compile included)",
            flush=True,
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="simulations/verdicts.toml")
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--n", type=int, default=None)
    args = ap.parse_args()
    main(args.config, args.replicates, args.n)
