"""Throughput of ``moe-lora run --backend ray`` per worker, and its overheads, on a local Ray
instance with 1 and then 2 worker CPUs, against the local backend.

The config is ``simulations/quick.toml`` cut to one sample size n (each of ``--n``), R
replicates (``--replicates``, one value per n) in units of one replicate (``replicates_per_unit =
1``, ``replicates_per_batch = 1``): 2 estimators x 2 truths x 2 settings x R units. Each case runs
in a fresh process and writes into a fresh directory, so every worker compiles every (estimator,
setting) shape it meets. Printed per case:

- wall time (submit to last unit; Ray's start-up is printed apart) and fits/s, in all and per
  worker;
- steady fits/s per worker: fits / seconds of the units that did not compile (the rate a long
  sweep approaches), and the same per CPU-second of the computing process (``time.process_time``,
  all its threads): the rate of a worker with the CPU to itself, less sensitive to other load;
- compile overhead: a compiling unit's seconds less the mean of the non-compiling units of its
  shape, averaged; and the number of compiles (at most workers x shapes);
- worker start, idle and dispatch per unit: (wall x workers - sum of unit seconds) / units.

    # n = 1e3 (R = 8) and 1e4 (R = 2), about 7 minutes on 2 cores
    python benchmarks/ray_throughput.py
    python benchmarks/ray_throughput.py --n 3000 --replicates 4 --workers 2

Output: ``benchmarks/results/ray_throughput.txt`` (copy of what is printed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def experiment(n: int, replicates: int):
    from moe_lora.experiment import Experiment

    raw = tomllib.loads((ROOT / "simulations" / "quick.toml").read_text())
    raw["name"] = "ray_throughput"
    raw["data"].update(sizes=[n], replicates=replicates)
    raw["execution"] = {"replicates_per_unit": 1, "replicates_per_batch": 1}
    return Experiment.from_dict(raw, name="ray_throughput")


def summarize(label: str, workers: int, out: Path, wall: float) -> dict:
    rows = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    shape = lambda r: r["unit"].split("__")[1:4]  # estimator, setting, n
    steady = [r for r in rows if not r["compiled"]]
    fits = sum(r["fits"] for r in rows)
    steady_rate = sum(r["fits"] for r in steady) / sum(r["seconds"] for r in steady)
    steady_cpu = sum(r["fits"] for r in steady) / sum(r["cpu_seconds"] for r in steady)
    overheads = []
    for r in rows:
        same = [s["seconds"] for s in steady if shape(s) == shape(r)]
        if r["compiled"] and same:
            overheads.append(r["seconds"] - float(np.mean(same)))
    dispatch = (wall * workers - sum(r["seconds"] for r in rows)) / len(rows)
    return dict(
        case=label,
        workers=workers,
        units=len(rows),
        fits=fits,
        wall_s=wall,
        fits_per_s=fits / wall,
        fits_per_s_per_worker=fits / wall / workers,
        steady_fits_per_s_per_worker=steady_rate,
        steady_fits_per_cpu_s=steady_cpu,
        compiles=sum(r["compiled"] for r in rows),
        compile_overhead_s=float(np.mean(overheads)) if overheads else float("nan"),
        idle_and_dispatch_s_per_unit=dispatch,
    )


def show(row: dict) -> str:
    return (
        f"{row['case']:>14} | {row['workers']} worker(s) | {row['units']} units, {row['fits']} "
        f"fits | wall {row['wall_s']:6.1f} s | "
        f"{row['fits_per_s']:5.2f} fits/s = {row['fits_per_s_per_worker']:5.2f} per worker | "
        f"steady {row['steady_fits_per_s_per_worker']:5.2f} "
        f"fits/s per worker, {row['steady_fits_per_cpu_s']:5.2f} per CPU-second | "
        f"{row['compiles']} compiles, +{row['compile_overhead_s']:.1f} s each | "
        f"worker start, idle, dispatch {row['idle_and_dispatch_s_per_unit']:.2f} s/unit"
    )


def run_case(backend: str, workers: int, n: int, replicates: int, out: Path) -> dict:
    """One case, in this (fresh) process: the Ray instance is started before any JAX computation."""
    import jax

    jax.config.update("jax_enable_x64", True)
    exp = experiment(n, replicates)
    if backend == "local":
        from moe_lora.runs import run_sweep

        summary = run_sweep(exp, out, progress=False)
        return summarize("local", 1, out, summary.seconds)
    import ray

    from moe_lora.runs.ray import run_sweep_ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    try:
        summary = run_sweep_ray(exp, out, progress=False)
        assert not summary.failed and not summary.missing, summary
    finally:
        ray.shutdown()
    return dict(summarize("ray", workers, out, summary.seconds), ray_init_s=startup)


def spawn(backend: str, workers: int, n: int, replicates: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        backend,
        str(workers),
        str(n),
        str(replicates),
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{backend} with {workers} worker(s) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--n", type=int, nargs="+", default=[1000, 10_000], help="sample sizes (default 1000 10000)"
    )
    ap.add_argument(
        "--replicates",
        type=int,
        nargs="+",
        default=[8, 2],
        help="replicates per n, one per unit (default 8 2)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker CPUs of the local Ray instance (default 1 2)",
    )
    ap.add_argument(
        "--case", nargs=5, metavar=("BACKEND", "WORKERS", "N", "R", "DIR"), help=argparse.SUPPRESS
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_throughput.txt"))
    args = ap.parse_args()
    if args.case:
        backend, workers, n, R, out = args.case
        print(json.dumps(run_case(backend, int(workers), int(n), int(R), Path(out))))
        return
    if len(args.replicates) != len(args.n):
        ap.error(
            f"--replicates: expected one value per --n ({len(args.n)}), got {len(args.replicates)}"
        )

    lines = [
        f"float64, each case in a fresh process; arguments: {' '.join(sys.argv[1:]) or 'default'}"
    ]
    print(lines[0], flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="ray_throughput_"))
    try:
        for n, R in zip(args.n, args.replicates):
            exp = experiment(n, R)
            lines.append(
                f"quick.toml at n = {n}, {R} replicates, one per unit: {len(exp.pairs())} "
                "truth-estimator pairs x "
                f"{len(exp.extra_components)} settings; "
                f"{len(exp.estimators) * len(exp.extra_components)} shapes "
                "to compile per worker"
            )
            print(lines[-1], flush=True)
            cases = [("ray", w) for w in args.workers] + [("local", 1)]
            for backend, workers in cases:
                row = spawn(backend, workers, n, R, scratch / f"{n}_{backend}{workers}")
                lines.append(
                    show(row)
                    + (f" | ray.init {row['ray_init_s']:.1f} s" if "ray_init_s" in row else "")
                )
                print(lines[-1], flush=True)
            import pandas as pd

            tables = [
                pd.read_parquet(scratch / f"{n}_{b}{w}" / "results.parquet") for b, w in cases
            ]
            for t in tables[1:]:
                pd.testing.assert_frame_equal(t, tables[0])
            lines.append(f"results tables of all {len(tables)} runs at n = {n} identical: yes")
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
