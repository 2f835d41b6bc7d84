"""Cost of one Levenberg-Marquardt iteration against n and against the number of replicates, and
peak memory, each case in a fresh process.

Every case runs ``simulate_replicates`` (over-specified tanh estimator of
``simulations/overspecified.toml``) twice with a fixed number of iterations (``gtol`` unreachable,
``max_iter`` = ``--iterations``): the first call compiles, the second is timed. Printed per case:
compile time, run time, seconds per iteration per replicate, and the process's peak resident
memory (``ru_maxrss``: data, Jacobian chunks, XLA buffers, the Python interpreter and JAX itself).
Then the log-log slopes of time per iteration against n and against replicates.

    python benchmarks/scaling.py                # the default grid (about 4 minutes on 2 cores)
    python benchmarks/scaling.py --memory-only  # n = 1e6 only

Results go to ``benchmarks/results/scaling.csv``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_case(
    n: int,
    replicates: int,
    chunk_rows: int | None,
    iterations: int,
    estimator: str,
    batch: int | None,
) -> dict:
    import dataclasses

    import jax

    jax.config.update("jax_enable_x64", True)
    import moe_lora as ml
    from moe_lora.experiment import load_experiment

    exp = load_experiment(ROOT / "simulations" / "overspecified.toml")
    label = "tanh"
    truth = exp.draw_truths()[ml.TruthLabel(label, seed=exp.seed)]
    est = exp.model(estimator)
    base = exp.fit_config(max(exp.extra_components))
    finisher = dataclasses.replace(
        base.finisher, max_iter=iterations, gtol=1e-300, chunk_size=chunk_rows
    )
    config = dataclasses.replace(base, finisher=finisher)
    X_eval = exp.x_eval()
    go = lambda: jax.block_until_ready(
        ml.simulate_replicates(
            exp.sim_key(label),
            truth,
            est,
            n,
            sigma=exp.sigma,
            replicates=replicates,
            config=config,
            X_eval=X_eval,
            batch=batch,
        )
    )
    t0 = time.perf_counter()
    go()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = go()
    run = time.perf_counter() - t0
    assert int(rec.iterations.max()) == iterations, rec.iterations
    return dict(
        estimator=estimator,
        n=n,
        replicates=replicates,
        chunk_rows=chunk_rows,
        batch=batch,
        iterations=iterations,
        compile_s=first - run,
        run_s=run,
        s_per_iteration_replicate=run / iterations / replicates,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )


def spawn(n, replicates, chunk_rows, iterations, estimator, batch=None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        str(n),
        str(replicates),
        str(chunk_rows or 0),
        str(iterations),
        estimator,
        str(batch or 0),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return dict(
            estimator=estimator,
            n=n,
            replicates=replicates,
            chunk_rows=chunk_rows,
            batch=batch,
            iterations=iterations,
            error=out.stderr.strip().splitlines()[-1]
            if out.stderr.strip()
            else f"exit {out.returncode}",
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(row):
    if "error" in row:
        print(
            f"{row['estimator']:8} n={row['n']:>8} R={row['replicates']:>3} "
            f"chunk={row['chunk_rows']}: FAILED {row['error']}",
            flush=True,
        )
        return
    print(
        f"{row['estimator']:8} n={row['n']:>8} R={row['replicates']:>3} "
        f"chunk={str(row['chunk_rows']):>6} "
        f"batch={str(row['batch']):>4} | compile {row['compile_s']:6.1f} s | "
        f"run {row['run_s']:7.2f} s | {1e3 * row['s_per_iteration_replicate']:9.3f} "
        "ms/iteration/replicate | "
        f"peak RSS {row['peak_rss_gb']:.2f} GB",
        flush=True,
    )


def slope(xs, ys):
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--estimator", default="tanh")
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument(
        "--memory-batch",
        type=int,
        default=8,
        help="replicates vmapped together in the n = 1e6 runs",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.csv"))
    args = ap.parse_args()
    if args.case:
        n, R, chunk, it, est, batch = args.case
        print(
            json.dumps(
                run_case(int(n), int(R), int(chunk) or None, int(it), est, int(batch) or None)
            )
        )
        return

    rows = []
    print(
        f"over-specified {args.estimator} fits, {args.iterations} LM iterations per case, each "
        "case in a fresh process"
    )
    if not args.memory_only:
        print("time against n (8 replicates):")
        for n in (1000, 10_000, 100_000):
            rows.append(spawn(n, 8, args.chunk_rows, args.iterations, args.estimator))
            show(rows[-1])
        print("the same at n = 1e5 with all rows in one chunk:")
        rows.append(spawn(100_000, 8, None, args.iterations, args.estimator))
        show(rows[-1])
        print("time against replicates (n = 1e4):")
        for R in (1, 4, 32):
            rows.append(spawn(10_000, R, args.chunk_rows, args.iterations, args.estimator))
            show(rows[-1])
    print(
        f"peak memory, n = 1e6, 32 replicates: rows in chunks of {args.chunk_rows}, replicates in "
        "vmapped batches of"
    )
    print(
        f"{args.memory_batch}, one batch after another "
        "(benchmarks/results/scaling_memory_first.txt has all 32 in one batch):"
    )
    rows.append(spawn(1_000_000, 32, args.chunk_rows, 2, args.estimator, args.memory_batch))
    show(rows[-1])

    ok = [r for r in rows if "error" not in r]
    by_n = sorted(
        {
            (r["n"], r["s_per_iteration_replicate"])
            for r in ok
            if r["replicates"] == 8 and r["chunk_rows"] == args.chunk_rows
        }
    )
    by_R = sorted({(r["replicates"], r["run_s"] / r["iterations"]) for r in ok if r["n"] == 10_000})
    if len(by_n) > 1:
        print(
            "log-log slope of time per iteration per replicate against n (R = 8): "
            f"{slope(*zip(*by_n)):.2f}"
        )
    if len(by_R) > 1:
        print(
            "log-log slope of time per iteration of the batch against replicates (n = 1e4): "
            f"{slope(*zip(*by_R)):.2f}"
        )
    import pandas as pd

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
