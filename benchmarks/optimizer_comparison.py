"""Side-by-side comparison of finishers on least-squares fits of a LoRA mixture.

Every finisher is run on the SAME truth, the SAME data sets and the SAME starts: one
``simulate_replicates`` key per (estimator, sample size), shared by all finishers, so the
replicate k data set and near-truth start are identical across rows of one block.

Finishers (each with the same ``--max-iter`` cap and gtol = 1e-6):

* ``LM``          LevenbergMarquardt(damping="levenberg"), iterates canonicalized;
* ``LM-marquardt`` LevenbergMarquardt(damping="marquardt") (the FitConfig default), canonicalized;
* ``LM-nocanon``  as ``LM`` with FitConfig(canonicalize=False);
* ``L-BFGS``      OptaxFinisher(optax.lbfgs());
* ``adam+LM``     500 adam(1e-2) warm-up steps, then ``LM``.

Timing: ``simulate_replicates`` is called twice with identical arguments. The first call
compiles and runs, the second hits the jit cache; run time per fit = second / R and
compile time ~ first - second. Replicates are vmapped, so a batch runs until its slowest
replicate stops and the per-fit time is the batch time divided by R, not the mean of
individual fit times.

Usage:
    PYTHONPATH=. python benchmarks/optimizer_comparison.py --replicates 8 --sizes 1000 10000
"""

from __future__ import annotations

import functools

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import optax  # noqa: E402
import pandas as pd  # noqa: E402

import moe_lora as ml  # noqa: E402

SIGMA = 0.02
GTOL = 1e-6
WARMUP_STEPS = 500
N_EVAL = 2000
L_STAR = 2

# Created ONCE: FitConfig is a static jit argument and optax transformations hash by identity,
# so a fresh optax.lbfgs() / optax.adam() per call would recompile every time.
LBFGS = optax.lbfgs()
ADAM_WARMUP = optax.adam(1e-2)

FINISHERS = ("LM", "LM-marquardt", "LM-nocanon", "L-BFGS", "adam+LM")


def fit_config(finisher: str, n_components: int, max_iter: int) -> ml.FitConfig:
    """The FitConfig of one named finisher, from the oracle start (as these results were
    measured; the truth-free default screens its restarts with Levenberg-Marquardt only)."""
    lm = ml.LevenbergMarquardt(max_iter=max_iter, gtol=GTOL, damping="levenberg")
    FitConfig = functools.partial(ml.FitConfig, init=ml.InitConfig(starts="oracle"))
    if finisher == "LM-marquardt":
        return FitConfig(
            n_components=n_components, finisher=dataclasses.replace(lm, damping="marquardt")
        )
    if finisher == "LM":
        return FitConfig(n_components=n_components, finisher=lm)
    if finisher == "LM-nocanon":
        return FitConfig(n_components=n_components, finisher=lm, canonicalize=False)
    if finisher == "L-BFGS":
        return FitConfig(
            n_components=n_components,
            finisher=ml.OptaxFinisher(LBFGS, max_iter=max_iter, gtol=GTOL),
        )
    if finisher == "adam+LM":
        return FitConfig(
            n_components=n_components, finisher=lm, warmup=ADAM_WARMUP, warmup_steps=WARMUP_STEPS
        )
    raise ValueError(f"Unknown finisher {finisher!r}; expected one of {FINISHERS}")


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def summarize(rec: ml.Record) -> dict:
    """Per-configuration summary of a Record with a leading replicate axis."""
    it = np.asarray(rec.iterations)
    stop = np.asarray(rec.stop_reason)
    return {
        "iter_mean": float(it.mean()),
        "iter_median": float(np.median(it)),
        "converged": float(np.mean(rec.converged)),
        "certified": float(np.mean(rec.certified)),
        "excess_risk": float(np.mean(np.asarray(rec.risk) - np.asarray(rec.risk_truth))),
        "D_mean": float(np.mean(rec.D)),
        "n_stalled": int(np.sum(stop == 1)),
        "n_max_iter": int(np.sum(stop == 2)),
        "n_nonfinite": int(np.sum(stop == 3)),
    }


def main(
    replicates: int = 8,
    sizes: Sequence[int] = (1000, 10000),
    max_iter: int = 2000,
    out: Path | None = Path("benchmarks/results/optimizer_comparison.csv"),
    seed: int = 0,
    finishers: Sequence[str] = FINISHERS,
    skip: Sequence[str] = (),
    txt: Path | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Run every (estimator, exact/over, n, finisher) configuration and return the table.

    Args:
        replicates: R, replicates per configuration (vmapped in one batch).
        sizes: sample sizes n.
        max_iter: iteration cap of every finisher (warm-up steps not included).
        out: CSV path (None: do not write).
        seed: master seed; truth maps, truth, X_eval and data keys derive from it.
        finishers: subset of ``FINISHERS`` to run.
        skip: entries ``"FINISHER:n"`` to leave out (e.g. ``"L-BFGS:10000"``), reported in a note.
        txt: text-table path (None: ``out`` with suffix .txt, if ``out`` is given).
        command: command line recorded at the top of the text file.
    """
    for f in finishers:
        if f not in FINISHERS:
            raise ValueError(f"Unknown finisher {f!r}; expected one of {FINISHERS}")
    skipped = {(s.split(":")[0], int(s.split(":")[1])) for s in skip}

    k_maps, k_truth, k_eval, k_sim = jax.random.split(jax.random.key(seed), 4)
    spec = ml.ModelSpec(d=2, d_out=1, r=1)
    model_tanh = ml.make_model(spec, ml.nonlinear("tanh"), key=k_maps)
    truth = ml.draw_truth(k_truth, model_tanh, L_STAR)
    X_eval = ml.sample_inputs(k_eval, N_EVAL, spec.d)
    estimators = {"vanilla": ml.make_model(spec, ml.Vanilla()), "tanh": model_tanh}
    fits = {"exact": L_STAR, "over": L_STAR + 1}

    rows, notes = [], []
    if replicates < 8:
        notes.append(
            f"replicates reduced from the default 8 to {replicates} to keep the total wall time "
            "down"
        )
    t_total = time.perf_counter()
    for est_name, estimator in estimators.items():
        for fit_name, L in fits.items():
            for n in sizes:
                for fin in finishers:
                    if (fin, n) in skipped:
                        notes.append(
                            f"{est_name}/{fit_name}/n={n}/{fin}: left out (--skip) to keep the "
                            "total wall time down"
                        )
                        continue
                    cfg = fit_config(fin, L, max_iter)
                    # Same key for every finisher: same data and starts across rows of a block.
                    call = lambda: ml.simulate_replicates(
                        k_sim,
                        truth,
                        estimator,
                        n,
                        sigma=SIGMA,
                        replicates=replicates,
                        config=cfg,
                        X_eval=X_eval,
                    )
                    _, t_first = _timed(call)
                    rec, t_second = _timed(call)
                    row = {
                        "estimator": est_name,
                        "fit": fit_name,
                        "L": L,
                        "n": n,
                        "finisher": fin,
                        "R": replicates,
                    }
                    row |= summarize(rec)
                    row |= {
                        "run_s_per_fit": t_second / replicates,
                        "compile_s": max(t_first - t_second, 0.0),
                    }
                    rows.append(row)
                    print(
                        f"[{time.perf_counter() - t_total:7.1f}s] {est_name:7s} {fit_name:5s} "
                        f"n={n:<6d} {fin:10s} "
                        f"first {t_first:6.1f}s second {t_second:6.1f}s conv "
                        f"{row['converged']:.2f} "
                        f"iter {row['iter_mean']:.0f}",
                        file=sys.stderr,
                        flush=True,
                    )

    df = pd.DataFrame(rows)
    table = format_table(df)
    total = time.perf_counter() - t_total
    footer = [
        f"Setup: ModelSpec(d=2, d_out=1, r=1), tanh truth with L*={L_STAR}, sigma={SIGMA}, "
        f"seed={seed}, "
        f"R={replicates}, max_iter={max_iter}, gtol={GTOL}, near-truth start (scale 0.1), X_eval "
        f"m={N_EVAL}.",
        "iter: finisher iterations of the best restart (adam+LM: LM iterations only, after "
        f"{WARMUP_STEPS} adam steps). conv: stop reason 'converged'; cert: converged and risk <= "
        "risk at truth.",
        "dRisk: mean (R_n(G_n) - R_n(G*)), negative = below the truth. stops: s=stalled, "
        "m=max_iter, f=non-finite.",
        "run/fit: second (cached) call / R, a vmapped batch runs until its slowest replicate "
        "stops. "
        "compile: first call - second call.",
        f"Total wall time {total:.0f}s.",
    ] + [f"Note: {n}" for n in notes]
    text = table + "\n\n" + "\n".join(footer)
    print(text)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        txt = Path(txt) if txt is not None else out.with_suffix(".txt")
        header = f"# command: {command}\n\n" if command else ""
        txt.write_text(header + text + "\n")
    return df


def format_table(df: pd.DataFrame) -> str:
    """Fixed-width text table of the summary frame."""
    head = (
        f"{'estim':7s} {'fit':5s} {'n':>6s} {'finisher':10s} {'R':>2s} {'iter':>7s} {'med':>6s} "
        f"{'conv':>5s} {'cert':>5s} {'dRisk':>10s} {'run/fit s':>9s} {'compile s':>9s} "
        f"{'mean D':>9s} stops"
    )
    lines = [head, "-" * len(head)]
    prev = None
    for r in df.itertuples(index=False):
        block = (r.estimator, r.fit, r.n)
        if prev is not None and block != prev:
            lines.append("")
        prev = block
        stops = f"s{r.n_stalled} m{r.n_max_iter} f{r.n_nonfinite}"
        lines.append(
            f"{r.estimator:7s} {r.fit:5s} {r.n:>6d} {r.finisher:10s} {r.R:>2d} {r.iter_mean:>7.1f} "
            f"{r.iter_median:>6.0f} "
            f"{r.converged:>5.2f} {r.certified:>5.2f} {r.excess_risk:>10.2e} "
            f"{r.run_s_per_fit:>9.3f} "
            f"{r.compile_s:>9.1f} {r.D_mean:>9.2e} {stops}"
        )
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--replicates", type=int, default=8, help="replicates per configuration (default 8)"
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1000, 10000],
        help="sample sizes (default 1000 10000)",
    )
    p.add_argument(
        "--max-iter", type=int, default=2000, help="finisher iteration cap (default 2000)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/optimizer_comparison.csv"),
        help="CSV path",
    )
    p.add_argument(
        "--txt", type=Path, default=None, help="text-table path (default: --out with .txt)"
    )
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument(
        "--finishers",
        nargs="+",
        default=list(FINISHERS),
        choices=FINISHERS,
        help="finishers to run",
    )
    p.add_argument(
        "--skip", nargs="*", default=[], metavar="FINISHER:N", help="configurations to leave out"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    args = _parse()
    main(
        replicates=args.replicates,
        sizes=args.sizes,
        max_iter=args.max_iter,
        out=args.out,
        seed=args.seed,
        finishers=args.finishers,
        skip=args.skip,
        txt=args.txt,
        command=" ".join(
            (
                [f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"]
                if os.environ.get("PYTHONPATH")
                else []
            )
            + [shlex.quote(a) for a in [sys.executable, *sys.argv]]
        ),
    )
