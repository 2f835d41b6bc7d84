"""The README's verdict summary: the D rules of the runs "well inside the thresholds", two settings.

Reads the pooled verdict rows that ``benchmarks/verdicts_inside.py --pool`` saved (one CSV per
setting, every truth's row and the pooled row) and prints one markdown row per estimator and
setting: the pooled mean-rule and median-rule slopes with their intervals and verdicts, and how the
four truths' mean-rule verdicts split. No verdict is typed: each cell is a row of those tables.

    python benchmarks/verdicts_summary.py > benchmarks/results/verdicts_summary.md
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (
    (
        "d = 2, r = 1, p = 2 (exact flat sets for tanh, sigmoid, gelu)",
        "verdicts_inside_d2_pooled_verdicts.csv",
    ),
    ("d = 3, r = 1, p = 2 (none found)", "verdicts_inside_pooled_verdicts.csv"),
)
ORDER = ("tanh", "sigmoid", "gelu", "linear", "vanilla")


def _is_d_rule(rows: pd.DataFrame) -> pd.Series:
    return rows["metric"] == "D"


def _cell(row: pd.Series) -> str:
    side = f", {row['side']}" if isinstance(row["side"], str) and row["side"] else ""
    return (
        f"{row['slope']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] **{row['verdict']}**{side}"
    )


def _split(rows: pd.DataFrame) -> str:
    """How the per-truth mean-rule verdicts split, e.g. '2 agree, 2 shallower'."""
    plain = {"agrees": "agree", "undecided": "undecided"}
    words = rows.apply(
        lambda r: r["side"] if r["verdict"] == "disagrees" else plain[r["verdict"]], axis=1
    )
    return ", ".join(f"{k} {w}" for w, k in words.value_counts().items())


def summary(table: pd.DataFrame) -> list[dict]:
    out = []
    d = table[_is_d_rule(table)]
    for est in ORDER:
        rows = d[d["estimator"] == est]
        if rows.empty:
            continue
        pooled = rows[rows["truth"] == "pooled"]
        per_truth = rows[(rows["truth"] != "pooled") & (rows["statistic"] == "mean")]
        mean = pooled[pooled["statistic"] == "mean"].iloc[0]
        median = pooled[pooled["statistic"] == "median"].iloc[0]
        out.append(
            {
                "estimator": est,
                "prediction": f"{mean['prediction']} ({mean['prediction_slope']:.2f})",
                "alternative": f"{mean['alternative']} ({mean['alternative_slope']:.2f})",
                "mean": _cell(mean),
                "median": _cell(median),
                "truths": f"{int(mean['truths'])}: {_split(per_truth)}",
            }
        )
    return out


def main() -> None:
    print(
        "| setting | estimator | pooled mean D slope | pooled median D slope "
        "| per truth (mean rule) | prediction (local slope) | alternative (local slope) |"
    )
    print("|---|---|---|---|---|---|---|")
    ranges = set()
    for setting, name in SETTINGS:
        table = pd.read_csv(ROOT / "figures" / "data" / name)
        ranges |= set(table[["n_min", "n_max", "points"]].itertuples(index=False, name=None))
        for r in summary(table):
            print(
                f"| {setting} | {r['estimator']} | {r['mean']} | {r['median']} | {r['truths']} "
                f"| {r['prediction']} | {r['alternative']} |"
            )
    print()
    print(
        "Fit ranges (n_min, n_max, sizes) of the rows: "
        + "; ".join(f"{a:.3g}..{b:.3g} ({k})" for a, b, k in sorted(ranges))
    )


if __name__ == "__main__":
    main()
