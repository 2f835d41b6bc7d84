r"""The truth-free least-squares estimate against the oracle start, paired on the same data.

    python simulations/analysis/estimator_vs_oracle.py figures/data/verdicts_estimator

The run must record the oracle diagnostic (``fit.oracle = true``: ``risk_oracle``, ``D_oracle``
beside every estimate; the oracle fit never takes part in choosing). Prints, and writes to
``DIR/oracle_paired.csv``, per estimator and n:

- the median D of the estimate and of the oracle-start fit, and the median of their ratio;
- ``estimate_lower``: the fraction of fits whose estimate's empirical risk is more than
  ``--tol`` sigma^2 / n below the oracle fit's (the oracle fit is not the least-squares
  estimate there);
- ``oracle_lower``: the fraction where the oracle fit is more than ``--tol`` below the estimate
  (the search missed a lower minimum the truth knew; a failure of the optimizer, not of the
  theory);
- the median gap (risk - risk_oracle) in sigma^2 / n, the fractions certified, saturated and at
  the iteration cap.

Then the study's own verdict rules (its ``[rates]``) applied to ``D_oracle`` in place of D, pooled
rows beside the estimate's, written to ``DIR/oracle_verdicts.csv``: the same rules on the same
data, so the two columns differ only by the start. With ``--figure OUT`` it also draws
``moe_lora.figures.figure_oracle`` to ``OUT/<run>_vs_oracle.{pdf,png}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from moe_lora.palette import save_figure
from moe_lora.verdict_runs import load_run
from moe_lora.verdicts import verdicts_by


def paired(df: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Per (estimator, n): the estimate against the oracle-start fit on the same data."""
    d = df[np.isfinite(df["risk_oracle"])].copy()
    d["gap"] = (d["risk"] - d["risk_oracle"]) * d["n"] / d["sigma"] ** 2
    d["ratio"] = d["D"] / d["D_oracle"]
    d["at_cap"] = d["stop_reason"].astype(str).eq("max_iter")
    g = d.groupby(["estimator", "n"])
    return pd.DataFrame(
        {
            "fits": g.size(),
            "D": g["D"].median(),
            "D_oracle": g["D_oracle"].median(),
            "ratio": g["ratio"].median(),
            "estimate_lower": g["gap"].apply(lambda x: (x < -tol).mean()),
            "oracle_lower": g["gap"].apply(lambda x: (x > tol).mean()),
            "gap": g["gap"].median(),
            "certified": g["certified"].mean(),
            "saturated": g["saturated"].mean(),
            "at_cap": g["at_cap"].mean(),
        }
    )


def verdicts_side_by_side(df: pd.DataFrame, rates) -> pd.DataFrame:
    """The pooled rows of the study's D rules, for the estimate and for the oracle fit."""
    rules = [r for r in rates.verdicts if r["metric"] == "D"]
    rates = rates.__class__(**{**rates.__dict__, "verdicts": rules})
    keep = ["rule", "estimator", "slope", "ci_low", "ci_high", "verdict"]
    est = verdicts_by(df, rates)
    ora = verdicts_by(df.assign(D=df["D_oracle"]), rates)
    est, ora = (t[t["truth"].astype(str) == "pooled"][keep] for t in (est, ora))
    return est.merge(ora, on=["rule", "estimator"], suffixes=("", "_oracle"))


def main(run_dir: Path, tol: float, figure: Path | None) -> None:
    run = load_run(run_dir)
    df = run.table
    if "D_oracle" not in df or not np.isfinite(df["D_oracle"]).any():
        raise SystemExit(f"{run_dir} records no oracle diagnostic (fit.oracle = true)")
    table = paired(df, tol)
    table.to_csv(run_dir / "oracle_paired.csv", float_format="%.6g")
    print(f"{run_dir}: estimate against the oracle-start fit, same data (tol {tol} sigma^2/n)")
    print(table.to_string(float_format=lambda x: f"{x:.3g}"))
    side = verdicts_side_by_side(df, run.rates)
    side.to_csv(run_dir / "oracle_verdicts.csv", index=False, float_format="%.6g")
    print("\npooled D verdicts, estimate and oracle start (same rules, same data):")
    print(side.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    if figure is not None:
        from moe_lora.figures import figure_oracle

        for path in save_figure(figure_oracle(df), figure, f"{run_dir.name}_vs_oracle"):
            print(path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a run directory recorded with fit.oracle = true")
    ap.add_argument("--tol", type=float, default=0.1, help="risk gap in sigma^2/n (default 0.1)")
    ap.add_argument("--figure", type=Path, help="directory for <run>_vs_oracle.{pdf,png}")
    args = ap.parse_args()
    main(args.run_dir, args.tol, args.figure)
