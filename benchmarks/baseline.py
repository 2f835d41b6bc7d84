"""Throughput of moe_lora against a conventional implementation of the same fits.

The baseline is written the way research code usually is: numpy, one replicate at a time, a
Python loop over Levenberg-Marquardt steps, a central-difference Jacobian (2P model evaluations
per step). It fits the same model (the over-specified fits of ``simulations/overspecified.toml``:
L = L* + 1), to the same data sets, from the same starts, with the same damping (Marquardt,
Nielsen's update) and the same stopping rule (relative gradient <= gtol, or the
statistical-precision rule with ``--stat-tol``, and the same iteration cap). What it lacks is
what moe_lora adds: jit compilation, forward-mode Jacobians, vmapping over replicates, and the
canonicalization of flat directions (so its path can differ; iterations and certification are
printed for both).

    python benchmarks/baseline.py    # n = 1e3, 1e4, 1e5; tanh and vanilla on the tanh truth
    python benchmarks/baseline.py --sizes 1000 --replicates 2 --stat-tol 0.1

Both fit the same replicates. Prints one row per (estimator, n): fits per second of each
implementation (moe_lora's compile time excluded and printed apart), total iterations, certified
fraction, the throughput ratio, the ratio of time per iteration (the paths can differ), and the
mean difference of final risks in units of sigma^2 / n; writes them to
``benchmarks/results/baseline.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from math import nan
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import moe_lora as ml  # noqa: E402
from moe_lora.experiment import load_experiment  # noqa: E402
from moe_lora.fit import initial_params, truth_in  # noqa: E402
from moe_lora.parameterization import param_shapes  # noqa: E402
from moe_lora.simulate import RISK_SLACK, replicate_keys  # noqa: E402
from moe_lora.truth import sample_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ACT = {"tanh": np.tanh, "identity": lambda x: x}


# --------------------------------------------------------------------------------------------
# The baseline: plain numpy


class NumpyModel:
    """f_G(X) of a vanilla or shared-activation estimator, from a flat raw parameter vector."""

    def __init__(self, model: ml.Model, L: int):
        self.p, self.s, self.L = model.parameterization, model.spec, L
        self.maps = None if model.maps is None else [np.asarray(w) for w in model.maps]
        self.K0 = np.asarray(model.base.K0)
        shapes = param_shapes(model, L)
        self.shapes = list(shapes)
        self.sizes = [math.prod(s) for s in shapes]

    def unflatten(self, theta):
        parts, i = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            parts.append(theta[i : i + size].reshape(shape))
            i += size
        return parts

    def predict(self, theta, X):
        p, s, L = self.p, self.s, self.L
        sq = lambda x, b: b * np.tanh(x / b)
        parts = self.unflatten(theta)
        c = sq(parts[-1], p.bias_bound)
        if self.maps is None:
            B_Q, A_Q, B_V, A_V = (sq(x, p.bound) for x in parts[:4])
        else:
            act = ACT[p.activation]
            a, b = sq(parts[0], p.bound), sq(parts[1], p.bound)
            W_AQ, W_AV, W_BQ, W_BV = self.maps
            B_Q = act(b @ W_BQ.T).reshape(L, s.d, s.r)
            A_Q = act(a @ W_AQ.T).reshape(L, s.r, s.d_k)
            B_V = act(b @ W_BV.T).reshape(L, s.d, s.r)
            A_V = act(a @ W_AV.T).reshape(L, s.r, s.d_out)
        M = B_Q @ A_Q @ self.K0.T
        S = s.gate_scale * 0.5 * (M + np.swapaxes(M, -1, -2)) / math.sqrt(s.d_k)
        V = B_V @ A_V
        score = np.einsum("ni,lij,nj->nl", X, S, X) + c
        score -= score.max(axis=1, keepdims=True)
        gate = np.exp(score)
        gate /= gate.sum(axis=1, keepdims=True)
        experts = np.einsum("ni,lio->nlo", X, V)
        return np.einsum("nl,nlo->no", gate, experts)


def baseline_fit(model: NumpyModel, X, Y, theta, *, max_iter, gtol, stat_tol, floor=1e-9, tau=1e-3):
    """Levenberg-Marquardt (Marquardt scaling, Nielsen's update) with a central-difference
    Jacobian."""
    n = X.shape[0]
    m = Y.size

    def residual(t):
        return ((model.predict(t, X) - Y) / math.sqrt(n)).ravel()

    def evaluate(t):
        r = residual(t)
        J = np.empty((r.size, t.size))
        for k in range(t.size):
            h = 1e-6 * max(1.0, abs(t[k]))
            e = np.zeros_like(t)
            e[k] = h
            J[:, k] = (residual(t + e) - residual(t - e)) / (2 * h)
        return r @ r, J.T @ J, J.T @ r

    def stop(t, R, A, g, k):
        rel = np.max(np.abs(2 * g) * np.maximum(np.abs(t), 1.0)) / R
        if rel <= gtol:
            return "converged"
        if stat_tol is not None:
            ridge = floor * np.max(np.diag(A))
            if g @ np.linalg.solve(A + ridge * np.eye(t.size), g) <= stat_tol * R / m:
                return "precise"
        return "max_iter" if k >= max_iter else None

    R, A, g = evaluate(theta)
    mu, nu, k = tau, 2.0, 0
    reason = stop(theta, R, A, g, k)
    while reason is None:
        D = np.diag(A) + floor * np.max(np.diag(A))
        h = np.linalg.solve(A + mu * np.diag(D), -g)
        trial = theta + h
        R_new, A_new, g_new = evaluate(trial)
        rho = (R - R_new) / (h @ (mu * D * h - g))
        if np.isfinite(R_new) and rho > 0:
            theta, R, A, g = trial, R_new, A_new, g_new
            mu, nu = mu * max(1 / 3, 1 - (2 * rho - 1) ** 3), 2.0
        else:
            mu, nu = mu * nu, 2 * nu
        k += 1
        reason = stop(theta, R, A, g, k)
    return theta, R, k, reason


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "simulations" / "overspecified.toml"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--estimators", nargs="+", default=["tanh", "vanilla"])
    ap.add_argument(
        "--replicates",
        type=int,
        default=4,
        help="replicates per size, the same ones for both implementations",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=1,
        help="moe_lora replicates vmapped together (simulate_replicates(batch=...); 0: all)",
    )
    ap.add_argument(
        "--stat-tol",
        type=float,
        default=None,
        help="statistical-precision rule for both (default: gradient test only)",
    )
    ap.add_argument(
        "--max-iter", type=int, default=None, help="iteration cap for both (default: the config's)"
    )
    ap.add_argument(
        "--skip-baseline",
        action="store_true",
        help="time moe_lora only (e.g. to compare --batch values)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "baseline.csv"))
    args = ap.parse_args()

    exp = load_experiment(args.config)
    truths = exp.draw_truths()
    through = exp.config.truth.through
    label = ml.TruthLabel(through[-1] if "tanh" not in through else "tanh", seed=exp.seed)
    truth = truths[label]
    extra = max(exp.extra_components)
    base_cfg = exp.fit_config(extra)
    finisher = dataclasses.replace(
        base_cfg.finisher,
        stat_tol=args.stat_tol,
        max_iter=args.max_iter or base_cfg.finisher.max_iter,
    )
    config = dataclasses.replace(base_cfg, finisher=finisher)
    key = exp.sim_key(label)
    X_eval = exp.x_eval()
    print(
        f"config {args.config}: truth {label}, L = L* + {extra}, sigma {exp.sigma}, gtol "
        f"{finisher.gtol}, "
        f"stat_tol {finisher.stat_tol}, max_iter {finisher.max_iter}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, "
        f"{jax.device_count()} device(s)",
        flush=True,
    )
    header = (
        f"{'estimator':9} {'n':>7} | {'moe_lora fits/s':>15} {'compile s':>9} {'its':>6} "
        f"{'cert':>5} | "
        f"{'baseline fits/s':>15} {'its':>6} {'cert':>5} | {'ratio':>6} {'per it':>6} | "
        f"{'mean risk diff (base - ours) n/s2':>33}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for est_name in args.estimators:
        est = exp.model(est_name)
        true_params = truth_in(est, truth)
        np_model = NumpyModel(est, config.n_components)
        for n in args.sizes:
            # moe_lora, replicates in vmapped batches of --batch: the first call compiles, the
            # second is timed.
            t0 = time.perf_counter()
            batch = args.batch or None
            rec = ml.simulate_replicates(
                key,
                truth,
                est,
                n,
                sigma=exp.sigma,
                replicates=args.replicates,
                config=config,
                X_eval=X_eval,
                batch=batch,
            )
            jax.block_until_ready(rec)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec = ml.simulate_replicates(
                key,
                truth,
                est,
                n,
                sigma=exp.sigma,
                replicates=args.replicates,
                config=config,
                X_eval=X_eval,
                batch=batch,
            )
            jax.block_until_ready(rec)
            ours = time.perf_counter() - t0
            # The baseline: the same data and starts (the simulate keys), one replicate at a time.
            keys = replicate_keys(key, n, np.arange(0 if args.skip_baseline else args.replicates))
            base_time, base_it, base_cert, risk_diff = 0.0, [], [], []
            for k, rk in enumerate(keys):
                k_data, k_init = jax.random.split(rk)
                data = sample_dataset(k_data, truth, n, exp.sigma, exp.design)
                start = initial_params(k_init, est, true_params, config)
                theta0 = np.asarray(
                    jax.flatten_util.ravel_pytree(jax.tree.map(lambda x: x[0], start))[0]
                )
                X, Y = np.asarray(data.X), np.asarray(data.Y)
                t0 = time.perf_counter()
                theta, R, it, reason = baseline_fit(
                    np_model,
                    X,
                    Y,
                    theta0,
                    max_iter=finisher.max_iter,
                    gtol=finisher.gtol,
                    stat_tol=finisher.stat_tol,
                )
                base_time += time.perf_counter() - t0
                base_it.append(it)
                base_cert.append(
                    reason in ("converged", "precise")
                    and R <= float(rec.risk_truth[k]) * (1 + RISK_SLACK)
                )
                risk_diff.append((R - float(rec.risk[k])) * n / exp.sigma**2)
            row = dict(
                estimator=est_name,
                n=n,
                replicates=args.replicates,
                batch=args.batch,
                ours_fits_per_s=args.replicates / ours,
                ours_compile_s=first - ours,
                ours_iterations=int(np.sum(rec.iterations)),
                ours_certified=float(np.mean(rec.certified)),
                base_fits_per_s=len(keys) / base_time if base_time else nan,
                base_iterations=int(np.sum(base_it)),
                base_certified=float(np.mean(base_cert)) if base_cert else nan,
                risk_diff_over_s2n=float(np.mean(risk_diff)) if risk_diff else nan,
            )
            row["ratio"] = row["ours_fits_per_s"] / row["base_fits_per_s"]
            # Per iteration: the two can take different paths (central differences, no
            # canonicalization).
            row["ratio_per_iteration"] = (
                (base_time / row["base_iterations"]) / (ours / row["ours_iterations"])
                if base_it
                else nan
            )
            rows.append(row)
            print(
                f"{est_name:9} {n:>7} | {row['ours_fits_per_s']:>15.3g} "
                f"{row['ours_compile_s']:>9.1f} {row['ours_iterations']:>6} "
                f"{row['ours_certified']:>5.2f} | {row['base_fits_per_s']:>15.3g} "
                f"{row['base_iterations']:>6} "
                f"{row['base_certified']:>5.2f} | {row['ratio']:>6.1f} "
                f"{row['ratio_per_iteration']:>6.1f} | "
                f"{row['risk_diff_over_s2n']:>33.3g}",
                flush=True,
            )
    import pandas as pd

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
