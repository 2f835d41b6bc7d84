r"""Lower-bound curves in the identifiable setting (issue 37): d = 3, r = 1, p = 2, the seed-0
truths of the d = 3 verdict study; the report and the figure.

The units are computed by ``moe-lora bound`` (commands in the configs'
headers: ``simulations/bound_identifiable_vanilla_s0.toml`` for vanilla and tanh on the tanh truth,
``simulations/bound_identifiable_s0.toml`` for tanh, linear, sigmoid and gelu on their own truths),
into ``figures/data/bounds_identifiable/<config name>/bound/``. Then

    nice -n 10 python simulations/analysis/bounds_identifiable.py --part report \
        > benchmarks/results/bounds_identifiable.txt
    nice -n 10 python simulations/analysis/bounds_identifiable.py --part table
    nice -n 10 python simulations/analysis/bounds_identifiable.py --part figures

``--part report`` concatenates every unit present (the tanh units are in both directories, the
same unit ids computed once and copied; they are read once) into
``figures/data/bounds_identifiable/curves.parquet`` and prints, per unit and loss:

- the exact flat set: the largest D of a witness inside the neighbourhood with L2 <= 1e-13
  (``L2_FLOOR``), from the targets or the flat-set search; n(eps) is infinite for eps below it;
- M(eta) at the smallest and the largest eta;
- the exponent a of M(eta) ~ eta^a, read as in ``bounds_measure.py`` (the same points:
  non-dominated on-target witnesses above the floor and the flat set, the largest eps left
  out), from log m = b log eps + const, a = 1 / b, with a 95% interval (t interval of b,
  inverted) and the eps and m/eps ranges;
- the two-point bound LB(n) = M(sigma / sqrt(n)) / (4 C) (sigma = 0.02, c = 1) and the implied
  n(eps) = sigma^2 / m(eps)^2 at eps = 1e-3, 1e-2, 1e-1.

``--part figures`` draws ``figures/bounds_identifiable.{png,pdf}``: for L = L* (top) and L* + 1
(bottom), M(eta), LB(n) and n(eps) for loss D, one line per family (vanilla on the tanh truth).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "figures" / "data" / "bounds_identifiable"
SIGMA = 0.02
FAMILIES = ("vanilla", "tanh", "linear", "sigmoid", "gelu")


def load() -> pd.DataFrame:
    frames, seen = [], set()
    for path in sorted(DATA.glob("*/bound/*.parquet")):
        if path.name in seen:
            continue
        seen.add(path.name)
        frames.append(pd.read_parquet(path))
    if not frames:
        raise SystemExit(f"no units under {DATA}")
    return pd.concat(frames, ignore_index=True)


def exponent(m: pd.DataFrame, floor: float, flat: float):
    """(a, low, high, fitted rows) of M ~ eta^a from the on-target witnesses ``m``, or None."""
    from scipy import stats

    rest = m[(m.l2 > floor) & (m.D > flat)].sort_values("eps")
    if len(rest) == 0:
        return None
    later_min = np.minimum.accumulate(rest.l2.to_numpy()[::-1])[::-1]
    fit = rest[rest.l2.to_numpy() <= later_min]
    fit = fit[fit.eps < fit.eps.max()] if len(fit) > 3 else fit
    if len(fit) < 3:
        return None
    x, y = np.log(fit.eps.to_numpy()), np.log(fit.l2.to_numpy())
    res = stats.linregress(x, y)
    t = stats.t.ppf(0.975, len(fit) - 2)
    b_lo, b_hi = res.slope - t * res.stderr, res.slope + t * res.stderr
    a = 1 / res.slope
    # a = 1 / b; an interval of b that contains 0 leaves a unbounded on one side.
    lo = 1 / b_hi if b_hi > 0 else np.inf
    hi = 1 / b_lo if b_lo > 0 else np.inf
    return a, min(lo, hi), max(lo, hi), fit


def summaries(df: pd.DataFrame) -> list[dict]:
    """One dict per (truth, estimator, L, loss): flat edge, M at the ends, a, LB(n), n(eps)."""
    from moe_lora.bounds import L2_FLOOR, le_cam_lower_bound

    out = []
    for (truth, est, L), g in df.groupby(["truth", "estimator", "L"], sort=False):
        for loss, h in g.groupby("loss", sort=False):
            inside = h[h.inside.astype(bool)]
            m = inside[(inside.kind == "m") & inside.on_target.astype(bool)]
            flat_rows = inside[inside.l2 <= L2_FLOOR]
            flat = float(flat_rows.D.max()) if len(flat_rows) else 0.0
            M = h[h.kind == "M"].sort_values("eta")
            C = float(h.triangle_constant.max())
            ne = {}
            for x in EPS_N:
                # n(eps) from the least on-target L2 at a target >= eps (m is an upper bound, so
                # n(eps) a lower estimate); infinite where an exact flat witness reaches eps.
                above = m[m.eps >= x]
                ne[x] = (
                    np.inf
                    if flat >= x
                    else (SIGMA**2 / above.l2.min() ** 2 if len(above) else np.nan)
                )
            out.append(
                dict(
                    truth=truth,
                    estimator=est,
                    L=int(L),
                    extra=int(h.extra.iloc[0]),
                    loss=loss,
                    C=C,
                    flat=flat,
                    M_first=(float(M.eta.iloc[0]), float(M.value.iloc[0])),
                    M_last=(float(M.eta.iloc[-1]), float(M.value.iloc[-1])),
                    exponent=exponent(m, L2_FLOOR, flat),
                    LB=le_cam_lower_bound(inside.D, inside.l2, N_LB, SIGMA, max(C, 1.0)),
                    n_eps=ne,
                )
            )
    return out


N_LB = np.array([1e2, 1e3, 1e4, 1e5, 1e6])
EPS_N = (1e-3, 1e-2, 1e-1)


def _a(e) -> str:
    if e is None:
        return "-"
    a, lo, hi, fit = e
    return f"{a:.2f} [{lo:.2f}, {hi:.2f}]"


def report() -> None:
    from moe_lora.bounds import L2_FLOOR

    df = load()
    df.to_parquet(DATA / "curves.parquet")
    units = df.groupby(["truth", "estimator", "L"]).ngroups
    print(
        f"curves: {len(df)} rows from {units} units -> "
        f"{(DATA / 'curves.parquet').relative_to(ROOT)}"
    )
    print(
        f"L2 floor {L2_FLOOR:g}; witnesses inside the neighbourhood only; radius "
        f"{[float(x) for x in sorted(df.radius.unique())]}; sigma = {SIGMA} for LB and n(eps)\n"
    )
    for s in summaries(df):
        line = f"{s['truth']:8s} {s['estimator']:8s} L={s['L']} {s['loss']:4s} C={s['C']:.2f}: "
        line += f"flat set D >= {s['flat']:.3g}" if s["flat"] > 0 else "no exact flat witness"
        (e0, v0), (e1, v1) = s["M_first"], s["M_last"]
        line += f"; M({e0:.0e}) = {v0:.3g}, M({e1:.0e}) = {v1:.3g}"
        e = s["exponent"]
        if e is None:
            line += "; too few points above the flat set to fit a"
        else:
            a, lo, hi, fit = e
            line += (
                f"; a = {_a(e)} ({len(fit)} pts, eps "
                f"[{fit.eps.min():.2g}, {fit.eps.max():.2g}], m/eps "
                f"[{(fit.l2 / fit.eps).min():.2g}, {(fit.l2 / fit.eps).max():.2g}])"
            )
        line += "; LB " + " ".join(f"{v:.2g}" for v in s["LB"])
        line += "; n(eps) " + " ".join(f"{v:.2g}" for v in s["n_eps"].values())
        print(line)
    print(
        "\nLB at n = "
        + " ".join(f"{x:.0e}" for x in N_LB)
        + "; n(eps) at eps = "
        + " ".join(f"{x:g}" for x in EPS_N)
    )


def table() -> None:
    """The markdown table of docs/bounds.md (from curves.parquet)."""
    df = pd.read_parquet(DATA / "curves.parquet")
    rows = summaries(df)
    by = {(s["truth"], s["estimator"], s["L"], s["loss"]): s for s in rows}
    print(
        "| family (truth) | L | exact flat set: largest D at L2 <= 1e-13, D (D_1 .. D_4) "
        "| a for D [95%] | a for D_2 [95%] | n(eps), D: eps = 1e-3, 1e-2, 1e-1 | reading |"
    )
    print("|---|---|---|---|---|---|---|")
    seen = []
    for s in rows:
        k = (s["truth"], s["estimator"], s["L"])
        if k in seen:
            continue
        seen.append(k)
        get = {loss: by.get(k + (loss,)) for loss in ("D", "D_1", "D_2", "D_3", "D_4")}
        flats = [get[x]["flat"] if get[x] else np.nan for x in get]
        flat = (
            "none"
            if np.nansum(flats) == 0
            else f"{flats[0]:.3g} ({', '.join(f'{x:.3g}' for x in flats[1:])})"
        )
        d, d2 = get["D"], get["D_2"]
        ne = " / ".join("inf" if np.isinf(v) else f"{v:.1e}" for v in d["n_eps"].values())
        if flats[0] > 0:
            reading = f"infinite below eps = {flats[0]:.3g}"
        elif d["exponent"] is not None:
            reading = "polynomial"
        else:
            reading = "-"
        L = "L*" if s["extra"] == 0 else f"L* + {s['extra']}"
        # Above an exact flat set the few remaining points say nothing about a rate.
        a_d = "- (flat set)" if flats[0] > 0 else _a(d["exponent"])
        print(
            f"| {s['estimator']} ({s['truth']}) | {L} | {flat} | {a_d} "
            f"| {_a(d2['exponent']) if d2 else '-'} | {ne} | {reading} |"
        )


def figure():
    from matplotlib.figure import Figure

    from moe_lora.bounds import L2_FLOOR, le_cam_lower_bound
    from moe_lora.cli import save_figure
    from moe_lora.palette import estimator_color

    df = pd.read_parquet(DATA / "curves.parquet")
    df = df[df.loss == "D"]
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)
    n = np.geomspace(1e2, 1e7, 40)
    for row, extra in enumerate((0, 1)):
        for est in FAMILIES:
            g = df[(df.estimator == est) & (df.extra == extra)]
            if est == "vanilla":
                g = g[g.truth == "tanh"]
            if not len(g):
                continue
            color = estimator_color(est)
            label = f"{est} ({g.truth.iloc[0]} truth)"
            M = g[g.kind == "M"].sort_values("eta")
            M = M[M.value > 0]  # M = 0: no witness but G* itself at L2 <= eta
            axes[row, 0].plot(M.eta, M.value, "o-", color=color, label=label)
            inside = g[g.inside.astype(bool)]
            lb = le_cam_lower_bound(
                inside.D, inside.l2, n, SIGMA, max(float(g.triangle_constant.max()), 1.0)
            )
            axes[row, 1].plot(n[lb > 0], lb[lb > 0], "-", color=color, label=label)
            m = inside[(inside.kind == "m") & inside.on_target.astype(bool)].sort_values("eps")
            finite = m[m.l2 > L2_FLOOR]
            axes[row, 2].plot(finite.eps, SIGMA**2 / finite.l2**2, "o-", color=color, label=label)
            flat = inside[inside.l2 <= L2_FLOOR]
            if len(flat):
                edge = float(flat.D.max())
                axes[row, 2].axvline(edge, color=color, ls=":", lw=1.5)
        L = "L*" if extra == 0 else "L* + 1"
        ax = axes[row, 0]
        ax.set(xscale="log", yscale="log", xlabel="eta (L2 distance)", ylabel="M(eta), loss D")
        ax.set_title(f"L = {L}: largest D at L2 <= eta", fontsize=10)
        ax = axes[row, 1]
        ax.set(xscale="log", yscale="log", xlabel="n", ylabel="LB(n) = M(sigma/sqrt n) / 4C")
        ax.set_title(f"L = {L}: Le Cam's two-point bound, sigma = {SIGMA}", fontsize=10)
        ax = axes[row, 2]
        ax.set(xscale="log", yscale="log", xlabel="eps", ylabel="n(eps) = sigma^2 / m(eps)^2")
        ax.set_title(f"L = {L}: n(eps); dotted: flat-set edge (n = inf below)", fontsize=10)
        if axes[row, 0].get_legend_handles_labels()[0]:
            axes[row, 0].legend(fontsize=7)
    fig.suptitle(
        "Lower-bound curves at d = 3, r = 1, p = 2 (seed-0 truths of the d = 3 verdict study), "
        f"radius {sorted(df.radius.unique())[0]:g}, loss D",
        fontsize=11,
    )
    for path in save_figure(fig, ROOT / "figures", "bounds_identifiable"):
        print(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("report", "table", "figures"), required=True)
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    {"report": report, "table": table, "figures": figure}[args.part]()
