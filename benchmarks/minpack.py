"""moe_lora against MINPACK: the same fits with ``scipy.optimize.least_squares(method="lm")``.

MINPACK's Levenberg-Marquardt (``lmdif``: forward-difference Jacobian, its default tolerances)
fits a plain numpy model of f_G (``benchmarks/baseline.py``'s ``NumpyModel``) to the same data
sets, from the same near-truth starts, as moe_lora's jitted, closed-form-Jacobian LM with the
config's stopping rule. Over-specified fits (L = L* + 1) of vanilla and tanh on the tanh truth.

Printed per (estimator, n): fits per second of each (moe_lora's compile excluded: its first call
compiles, the second is timed), Jacobian evaluations / iterations, the paired mean and largest
risk difference (MINPACK - moe_lora) in units of sigma^2 / n (positive: moe_lora went lower), and
the throughput ratio. "Equal risk" means |difference| <= 0.1 sigma^2 / n in every pair.

    python benchmarks/minpack.py    # n = 1e3, 1e4, 1e5 (about 6 minutes on 2 cores)
    python benchmarks/minpack.py --sizes 1000 --replicates 2

Results go to ``benchmarks/results/minpack.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from scipy.optimize import least_squares

jax.config.update("jax_enable_x64", True)

import moe_lora as ml  # noqa: E402
from moe_lora.fit import initial_params, truth_in  # noqa: E402
from moe_lora.simulate import replicate_keys  # noqa: E402
from moe_lora.truth import sample_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from baseline import NumpyModel  # noqa: E402


def main(
    config: str, sizes, estimators, replicates: int, stat_tol: float, out: Path
) -> pd.DataFrame:
    exp = ml.load_experiment(config)
    label = ml.TruthLabel("tanh", seed=exp.seed)
    truth = exp.draw_truths()[label]
    base = exp.fit_config(max(exp.extra_components))
    # 0 turns the precision rule off (the gradient test alone), as ``fit.stat_tol = 0`` does.
    rule = float(stat_tol) or None
    cfg = dataclasses.replace(base, finisher=dataclasses.replace(base.finisher, stat_tol=rule))
    key, X_eval = exp.sim_key(label), exp.x_eval()
    print(
        f"{config}: truth {label}, L = {cfg.n_components}, sigma {exp.sigma}, moe_lora stat_tol "
        f"{stat_tol}, "
        f"jacobian {cfg.jacobian}; jax {jax.__version__} on {jax.default_backend()}",
        flush=True,
    )
    rows = []
    for name in estimators:
        est = exp.model(name)
        np_model, true_params = NumpyModel(est, cfg.n_components), truth_in(est, truth)
        for n in sizes:
            reps = replicates if n < 100_000 else max(1, replicates // 2)
            run = lambda: jax.block_until_ready(
                ml.simulate_replicates(
                    key,
                    truth,
                    est,
                    n,
                    sigma=exp.sigma,
                    replicates=reps,
                    config=cfg,
                    X_eval=X_eval,
                    batch=1,
                )
            )
            run()
            t0 = time.perf_counter()
            rec = run()
            ours = time.perf_counter() - t0
            theirs, nfev, diff = 0.0, [], []
            for k, rk in enumerate(replicate_keys(key, n, np.arange(reps))):
                k_data, k_init = jax.random.split(rk)
                data = sample_dataset(k_data, truth, n, exp.sigma, exp.design)
                start = jax.tree.map(lambda x: x[0], initial_params(k_init, est, true_params, cfg))
                theta0 = np.asarray(jax.flatten_util.ravel_pytree(start)[0])
                X, Y = np.asarray(data.X), np.asarray(data.Y)
                residual = lambda t: ((np_model.predict(t, X) - Y) / math.sqrt(n)).ravel()
                t0 = time.perf_counter()
                sol = least_squares(residual, theta0, method="lm")
                theirs += time.perf_counter() - t0
                nfev.append(sol.nfev)
                diff.append((2 * sol.cost - float(rec.risk[k])) * n / exp.sigma**2)
            row = dict(
                estimator=name,
                n=n,
                replicates=reps,
                ours_fits_per_s=reps / ours,
                minpack_fits_per_s=reps / theirs,
                ours_iterations=float(np.mean(rec.iterations)),
                minpack_nfev=float(np.mean(nfev)),
                ours_certified=float(np.mean(rec.certified)),
                mean_risk_diff=float(np.mean(diff)),
                median_risk_diff=float(np.median(diff)),
                min_risk_diff=float(np.min(diff)),
                max_risk_diff=float(np.max(diff)),
                backend=jax.default_backend(),
            )
            row["ratio"] = row["ours_fits_per_s"] / row["minpack_fits_per_s"]
            row["equal_risk"] = bool(np.all(np.abs(diff) <= 0.1))
            rows.append(row)
            print(
                f"{name:8s} n={n:>7d}: moe_lora {row['ours_fits_per_s']:8.3g} fits/s "
                f"({row['ours_iterations']:.0f} its, "
                f"certified {row['ours_certified']:.2f}) | MINPACK "
                f"{row['minpack_fits_per_s']:8.3g} fits/s "
                f"({row['minpack_nfev']:.0f} evaluations) | ratio {row['ratio']:6.1f}x | risk "
                "MINPACK - ours "
                f"mean {row['mean_risk_diff']:+.3g}, median {row['median_risk_diff']:+.3g} "
                f"[{row['min_risk_diff']:+.3g}, "
                f"{row['max_risk_diff']:+.3g}] sigma^2/n",
                flush=True,
            )
            # Written after every cell: an interrupted run keeps what it measured.
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="simulations/verdicts.toml")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--estimators", nargs="+", default=["vanilla", "tanh"])
    ap.add_argument("--replicates", type=int, default=4)
    ap.add_argument(
        "--stat-tol", type=float, default=0.1, help="moe_lora's rule; 0: the gradient test alone"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "minpack.csv")
    a = ap.parse_args()
    main(a.config, a.sizes, a.estimators, a.replicates, a.stat_tol, a.out)
