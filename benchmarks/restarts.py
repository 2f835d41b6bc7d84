"""Screened against unscreened multi-start, paired on the same data and the same random starts.

The headline setting (``simulations/verdicts_identifiable_s0.toml``: d = 3, r = 1, p = 2,
L = L* + 1, sigma 0.02, ``stat_tol = 0.1``): each shared map fitted on the truth drawn through
itself, vanilla on the tanh truth's data. Replicate k at size n has the study's data
(``replicate_keys(sim_key(truth), n, [k])``) and R random starts (N(0, 1) raw parameters, the
truth-free default, drawn from the replicate's init key). For each fit:

* ``unscreened``: every start fitted to the finisher's own stop on all rows, one after another
  (each stops on its own, so the cost is the sum of the restarts' costs, not R times the slowest:
  the fairest unscreened reference); its best risk and D, and for every start its final risk, so
  that best-of-R' for R' <= R (the first R' starts) comes out of the same fits;
* each screening scheme of ``SCHEMES`` (``moe_lora.fit.Screen``) from the same R starts;
* ``oracle``: the single near-truth start of the committed tables (the cost of today's study).

Printed per (family, n, scheme): fits, the share whose best risk is within 0.1 sigma^2 / n of the
unscreened best (gap = screened - unscreened, in sigma^2 / n; negative: screening went lower),
the worst gap, how often the chosen D differs from the unscreened one by more than 1%, and the
cost ratio against the unscreened reference and against the oracle single start. Compilation is
excluded (every function is compiled ahead of time).

    python benchmarks/restarts.py --sizes 1000 10000 --replicates 4
    python benchmarks/restarts.py --sizes 100000 --families vanilla tanh --replicates 2

Rows go to ``benchmarks/results/restarts.csv`` (one per fit and scheme, appended, so an
interrupted run resumes: finished (family, n, replicate) are skipped); ``--summary`` prints the
table of a results file without computing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

jax.config.update("jax_enable_x64", True)

import moe_lora as ml  # noqa: E402
from moe_lora.fit import (  # noqa: E402
    InitConfig,
    Screen,
    fit_least_squares,
    initial_params,
    random_starts,
    screened_fit,
    truth_in,
)
from moe_lora.losses import score  # noqa: E402
from moe_lora.parameterization import atoms  # noqa: E402
from moe_lora.simulate import replicate_keys  # noqa: E402
from moe_lora.truth import sample_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "simulations" / "verdicts_identifiable_s0.toml"
FAMILIES = ("vanilla", "linear", "tanh", "sigmoid", "gelu")
#: Screening schemes compared (name -> Screen): fits on a subsample of 1000 rows with the best 4
#: finished on all rows, and successive halving (20 iterations a round, down to 4) on all rows
#: or on 2000 rows.
SCHEMES = {
    "subsample": Screen("subsample", rows=1000, iters=200, keep=4),
    "halving": Screen("halving", rows=0, iters=20, keep=4),
    "halving_sub": Screen("halving", rows=2000, iters=20, keep=4),
}


def setting(config=CONFIG):
    """The experiment with every family, and its truths (vanilla fits the tanh truth)."""
    raw = ml.config.read_toml(config)
    raw["estimators"] = list(FAMILIES)
    raw["truth"]["through"] = [f for f in FAMILIES if f != "vanilla"]
    raw["fit"]["starts"] = "random"
    exp = ml.Experiment.from_dict(raw, name="restarts")
    return exp, exp.draw_truths()


_COMPILED: dict = {}


def _aot(name, fn, *args):
    """``fn`` jitted and compiled for ``args`` (compilation kept out of the timings), once per
    ``name`` (the functions of one (family, n) differ only in their arguments)."""
    if name not in _COMPILED:
        _COMPILED[name] = jax.jit(fn).lower(*args).compile()
    return _COMPILED[name]


def _timed(compiled, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - t


def one_fit(exp, truths, family: str, n: int, k: int, restarts: int, schemes) -> list[dict]:
    """Every scheme's row for one (family, n, replicate)."""
    label = ml.TruthLabel("tanh" if family == "vanilla" else family)
    truth, est = truths[label], exp.model(family)
    base = exp.fit_config(1)
    key = replicate_keys(exp.sim_key(label), n, [k])[0]
    k_data, k_init = jax.random.split(key)
    data = sample_dataset(k_data, truth, n, exp.sigma, exp.design)
    X_eval = exp.x_eval()
    starts = random_starts(
        jax.random.fold_in(k_init, 1), est, base.n_components, restarts, base.init.random_scale
    )
    D_of = lambda params: score(est, atoms(est, params), truth.model, truth.atoms, X_eval).D.total
    scale = exp.sigma**2 / n
    common = dict(family=family, n=n, replicate=k, restarts=restarts)

    single_cfg = dataclasses.replace(base, init=InitConfig(starts="oracle", random=1, near_truth=0))

    def single(data, start):
        fit = fit_least_squares(est, data, jax.tree.map(lambda x: x[None], start), single_cfg)
        return fit.stats.risk, fit.stats.iterations, fit.stats.stop_reason, D_of(fit.params)

    first = jax.tree.map(lambda x: x[0], starts)
    run_single = _aot((family, n, "single"), single, data, first)
    ref = [
        _timed(run_single, data, jax.tree.map(lambda x, i=i: x[i], starts)) for i in range(restarts)
    ]
    risks = np.array([float(r[0][0]) for r in ref])
    iters = np.array([int(r[0][1]) for r in ref])
    capped = np.array([int(r[0][2]) == 2 for r in ref])
    Ds = np.array([float(r[0][3]) for r in ref])
    ref_seconds = sum(r[1] for r in ref)
    finite = np.where(np.isfinite(risks), risks, np.inf)
    best = int(np.argmin(finite))
    rows = [
        {
            **common,
            "scheme": "unscreened",
            "risk": risks[best],
            "gap": 0.0,
            "D": Ds[best],
            "D_ref": Ds[best],
            "seconds": ref_seconds,
            "iterations": int(iters.sum()),
            "capped": int(capped.sum()),
            "restart_risks": " ".join(f"{r:.17g}" for r in risks),
            "restart_D": " ".join(f"{d:.6g}" for d in Ds),
        }
    ]

    oracle_cfg = dataclasses.replace(base, init=InitConfig(starts="oracle"))

    true_params = truth_in(est, truth)

    def oracle(data, k_init):
        start = initial_params(k_init, est, true_params, oracle_cfg)
        fit = fit_least_squares(est, data, start, oracle_cfg)
        return fit.stats.risk, fit.stats.iterations, fit.stats.stop_reason, D_of(fit.params)

    run_oracle = _aot((family, n, "oracle"), oracle, data, k_init)
    (o_risk, o_it, o_stop, o_D), o_seconds = _timed(run_oracle, data, k_init)
    rows.append(
        {
            **common,
            "scheme": "oracle",
            "risk": float(o_risk),
            "gap": (float(o_risk) - risks[best]) / scale,
            "D": float(o_D),
            "D_ref": Ds[best],
            "seconds": o_seconds,
            "iterations": int(o_it),
            "capped": int(int(o_stop) == 2),
        }
    )
    for name, screen in schemes.items():
        cfg = dataclasses.replace(base, init=dataclasses.replace(base.init, screen=screen))

        def screened(data, starts, cfg=cfg):
            fit = screened_fit(est, data, starts, cfg)
            return fit.stats.risk, fit.stats.iterations, fit.stats.stop_reason, D_of(fit.params)

        run = _aot((family, n, name, restarts), screened, data, starts)
        (s_risk, s_it, s_stop, s_D), s_seconds = _timed(run, data, starts)
        rows.append(
            {
                **common,
                "scheme": name,
                "risk": float(s_risk),
                "gap": (float(s_risk) - risks[best]) / scale,
                "D": float(s_D),
                "D_ref": Ds[best],
                "seconds": s_seconds,
                "iterations": int(s_it),
                "capped": int(int(s_stop) == 2),
            }
        )
    return rows


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (family, n, scheme): the paired figures of the module docstring."""
    ref = df[df.scheme == "unscreened"].set_index(["family", "n", "replicate"])
    oracle = df[df.scheme == "oracle"].set_index(["family", "n", "replicate"])
    out = []
    for (family, n, scheme), g in df.groupby(["family", "n", "scheme"], sort=False):
        if scheme == "unscreened":
            continue
        g = g.set_index(["family", "n", "replicate"])
        r, o = ref.loc[g.index], oracle.loc[g.index]
        out.append(
            {
                "family": family,
                "n": n,
                "scheme": scheme,
                "fits": len(g),
                "same_best": float(np.mean(g.gap <= 0.1)),
                "worst_gap": float(g.gap.max()),
                "D_differs": float(np.mean(np.abs(g.D / g.D_ref - 1) > 0.01)),
                "capped": float(g.capped.mean()),
                "cost_vs_unscreened": float(g.seconds.sum() / r.seconds.sum()),
                "cost_vs_oracle": float(g.seconds.sum() / o.seconds.sum()),
                "seconds_per_fit": float(g.seconds.mean()),
            }
        )
    return pd.DataFrame(out)


#: Restart counts of the saturation curves (the first R' of the unscreened restarts).
SATURATION_R = (1, 2, 4, 8, 16, 32, 64, 128)


def saturation(df: pd.DataFrame, sigma: float = 0.02) -> pd.DataFrame:
    """Best-of-R' curves from the unscreened fits: per (family, n, R'), over fits, the share whose
    best of the first R'/2 restarts is within 0.1 sigma^2 / n of the best of the first R'
    (saturated at R' in the sense of docs/optimizer.md), and the median and largest gap of the
    best of R' above the best of all R (sigma^2 / n)."""
    out = []
    for (family, n), g in df[df.scheme == "unscreened"].groupby(["family", "n"], sort=False):
        scale = sigma**2 / n
        risks = [np.array(r.split(), float) for r in g.restart_risks]
        R = min(len(r) for r in risks)
        for r in (r for r in SATURATION_R if r <= R):
            best = lambda k: np.array([np.nanmin(x[:k]) for x in risks])
            half = (best(max(r // 2, 1)) - best(r)) / scale
            gap = (best(r) - best(R)) / scale
            out.append(
                {
                    "family": family,
                    "n": n,
                    "R": r,
                    "fits": len(risks),
                    "saturated": float(np.mean(half <= 0.1)) if r > 1 else np.nan,
                    "median_gap_to_best_of_all": float(np.median(gap)),
                    "worst_gap_to_best_of_all": float(np.max(gap)),
                }
            )
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    """A markdown table (3 significant digits)."""
    fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    rows = table.itertuples(index=False)
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--replicates", type=int, default=4)
    p.add_argument("--restarts", type=int, default=32)
    p.add_argument("--schemes", nargs="*", default=list(SCHEMES), choices=list(SCHEMES))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "restarts.csv")
    p.add_argument("--summary", action="store_true", help="print the table of --out only")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    a = p.parse_args()
    if not a.summary:
        exp, truths = setting()
        done = set()
        if a.out.exists():
            old = pd.read_csv(a.out)
            done = set(zip(old.family, old.n, old.replicate, old.restarts))
        print(
            f"{CONFIG.name}: R = {a.restarts}, schemes {a.schemes}; jax on {jax.default_backend()}"
        )
        for n in a.sizes:
            for family in a.families:
                for k in range(a.replicates):
                    if (family, n, k, a.restarts) in done:
                        continue
                    t = time.perf_counter()
                    rows = one_fit(
                        exp, truths, family, n, k, a.restarts, {s: SCHEMES[s] for s in a.schemes}
                    )
                    frame = pd.DataFrame(rows)
                    frame.to_csv(a.out, mode="a", header=not a.out.exists(), index=False)
                    gaps = ", ".join(f"{r['scheme']} {r['gap']:+.2f}" for r in rows[1:])
                    print(
                        f"{family:8s} n={n:<7d} rep {k}: {time.perf_counter() - t:6.1f} s; "
                        f"gap (sigma^2/n) {gaps}",
                        flush=True,
                    )
    df = pd.read_csv(a.out)
    tables = {"Screened against unscreened": summary(df)}
    tables["Saturation of the unscreened restarts (best of the first R' of R)"] = saturation(df)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        for title, table in tables.items():
            if table.empty:
                continue
            print(f"\n{title}:")
            fmt = lambda x: f"{x:.3g}"
            print(markdown(table) if a.markdown else table.to_string(index=False, float_format=fmt))


if __name__ == "__main__":
    main()
