"""Fits per second of whole work units on whatever backend jax finds (CPU, or a GPU with the
``cuda`` extra).

A unit is ``simulate_replicates`` as ``moe-lora run`` calls it: one estimator, one n,
``--replicates`` replicates in vmapped batches of ``--batch`` (data, fit, score), over-specified (L
= L* + 1) on the tanh truth of ``simulations/verdicts.toml`` with its stopping rule. The
first call compiles, the second is timed. Printed per (estimator, n): the backend and device,
compile seconds, fits per second, mean iterations, certified share.

    python benchmarks/backend_throughput.py                          # n = 1e4, 1e5, 1e6
    python benchmarks/backend_throughput.py --sizes 10000 --batch 8  # replicates vmapped together

Results go to ``benchmarks/results/backend_throughput_<backend>.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

jax.config.update("jax_enable_x64", True)

import moe_lora as ml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(
    config: str, sizes, estimators, replicates: int, batch: int, out: Path | None
) -> pd.DataFrame:
    exp = ml.load_experiment(config)
    label = ml.TruthLabel("tanh", seed=exp.seed)
    truth, key, X_eval = exp.draw_truths()[label], exp.sim_key(label), exp.x_eval()
    cfg = exp.fit_config(max(exp.extra_components))
    device = jax.devices()[0]
    print(
        f"backend {jax.default_backend()} ({device.device_kind}, {jax.device_count()} device(s)); "
        f"{config}, "
        f"L = {cfg.n_components}, {replicates} replicates in batches of {batch}",
        flush=True,
    )
    rows = []
    for name in estimators:
        est = exp.model(name)
        for n in sizes:
            run = lambda: jax.block_until_ready(
                ml.simulate_replicates(
                    key,
                    truth,
                    est,
                    n,
                    sigma=exp.sigma,
                    replicates=replicates,
                    config=cfg,
                    X_eval=X_eval,
                    batch=batch,
                )
            )
            t0 = time.perf_counter()
            run()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec = run()
            seconds = time.perf_counter() - t0
            rows.append(
                dict(
                    estimator=name,
                    n=n,
                    replicates=replicates,
                    batch=batch,
                    backend=jax.default_backend(),
                    device=device.device_kind,
                    compile_s=first - seconds,
                    fits_per_s=replicates / seconds,
                    mean_iterations=float(np.mean(rec.iterations)),
                    certified=float(np.mean(rec.certified)),
                )
            )
            r = rows[-1]
            print(
                f"{name:8s} n={n:>8d}: {r['fits_per_s']:8.3g} fits/s, compile "
                f"{r['compile_s']:5.1f} s, "
                f"{r['mean_iterations']:.0f} iterations, certified {r['certified']:.2f}",
                flush=True,
            )
    table = pd.DataFrame(rows)
    out = out or ROOT / "benchmarks" / "results" / f"backend_throughput_{jax.default_backend()}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="simulations/verdicts.toml")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--estimators", nargs="+", default=["vanilla", "tanh"])
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    main(a.config, a.sizes, a.estimators, a.replicates, a.batch, a.out)
