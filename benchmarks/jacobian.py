"""Cost of one Levenberg-Marquardt linearization, (R, J^T J, J^T r): closed form against jax.jacfwd.

The setting of ``simulations/verdicts.toml``: d = 2, r = 1, d_out = 1, gate scale 3, a truth with
L* = 2 atoms fitted with L = 3 (over-specified by one), rows in chunks of 16384, ``--replicates``
fits vmapped together as in a work unit. For each estimator and n, both linearizations are
jitted, checked to agree (largest relative difference of J^T J), compiled, and timed over
``--repeats`` calls; printed: milliseconds per call per replicate and the ratio.

    python benchmarks/jacobian.py                      # n = 1e3 .. 1e6 (about 3 minutes on 2 cores)
    python benchmarks/jacobian.py --sizes 1000 10000

Results go to ``benchmarks/results/jacobian.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def case(estimator: str, n: int, replicates: int, repeats: int, chunk: int) -> list[dict]:
    from jax.flatten_util import ravel_pytree

    import moe_lora as ml
    from moe_lora.jacobian import structured_normal_equations
    from moe_lora.optimize import normal_equations

    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    param = (
        ml.Vanilla() if estimator == "vanilla" else ml.Shared(activation=estimator, latent_dim=2)
    )
    model = ml.make_model(spec, param, key=jax.random.key(1))
    params = jax.vmap(lambda k: ml.init_params(k, model, 3, 0.5))(
        jax.random.split(jax.random.key(2), replicates)
    )
    theta = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], params))
    X = jax.random.uniform(jax.random.key(3), (replicates, n, 2), minval=-1.0, maxval=1.0)
    Y = jax.random.normal(jax.random.key(4), (replicates, n, 1))
    w = jnp.ones((replicates, n))

    def residual(t, X, Y, weight):
        f = ml.regression_function(spec, model.base, ml.atoms(model, unravel(t)), X)
        return (weight[:, None] * (f - Y) / jnp.sqrt(n)).ravel()

    structured = structured_normal_equations(model, unravel, n)
    ways = {
        "jacfwd": jax.jit(
            jax.vmap(lambda t, X, Y, w: normal_equations(residual, t, (X, Y, w), chunk))
        ),
        "structured": jax.jit(jax.vmap(lambda t, X, Y, w: structured(t, (X, Y, w), chunk))),
    }
    out, A = {}, {}
    for name, fn in ways.items():
        A[name] = jax.block_until_ready(fn(theta, X, Y, w))[1]
        start = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(fn(theta, X, Y, w))
        out[name] = (time.perf_counter() - start) / repeats / replicates
    diff = float(jnp.max(jnp.abs(A["jacfwd"] - A["structured"])) / jnp.max(jnp.abs(A["jacfwd"])))
    return [
        dict(
            estimator=estimator,
            n=n,
            P=theta.shape[1],
            replicates=replicates,
            jacfwd_ms=1e3 * out["jacfwd"],
            structured_ms=1e3 * out["structured"],
            ratio=out["jacfwd"] / out["structured"],
            max_rel_diff=diff,
            backend=jax.default_backend(),
        )
    ]


def main(sizes, estimators, replicates: int, repeats: int, chunk: int, out: Path) -> pd.DataFrame:
    jax.config.update("jax_enable_x64", True)
    rows = []
    for estimator in estimators:
        for n in sizes:
            reps = (
                max(1, min(replicates, 10**6 // n * replicates // 8)) if n > 10**5 else replicates
            )
            rows += case(estimator, n, reps, repeats if n < 10**6 else max(1, repeats // 4), chunk)
            r = rows[-1]
            print(
                f"{estimator:8s} n={n:>8d} P={r['P']:3d}  jacfwd {r['jacfwd_ms']:9.3f} ms  "
                "structured "
                f"{r['structured_ms']:9.3f} ms  ratio {r['ratio']:5.1f}x  (J^T J agree to "
                f"{r['max_rel_diff']:.1e})",
                flush=True,
            )
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--estimators", nargs="+", default=["vanilla", "tanh"])
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "jacobian.csv")
    a = ap.parse_args()
    main(a.sizes, a.estimators, a.replicates, a.repeats, a.chunk, a.out)
