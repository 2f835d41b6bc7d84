"""Run an attention-head study config in this process, unit by unit (resumable), and summarise it.

    python benchmarks/head_measure.py simulations/attention_head.toml
    python benchmarks/head_measure.py simulations/attention_head_coupled.toml --slopes-min-n 64
    python benchmarks/head_measure.py simulations/attention_head.toml --summary-only

The units are those of ``moe-lora run`` (``moe_lora.head_study``; the same keys, so the same
rows). Each unit's rows go to ``<work>/<name>/<unit id>.parquet`` (``--work``, default
``/tmp/head_units``) as soon as it is done, with its wall time; a unit whose file exists is not
recomputed. Once all are there: ``figures/data/<name>/results.parquet`` (the table), and there
``data_efficiency.csv`` (n_ratio from fitted power laws with bootstrap intervals, and the earlier
crossing fraction), ``improvement.csv`` (per n: means, medians, paired per-seed log-ratios,
wins, underfit counts), ``slopes.csv`` (log-log slopes of the median error on the declared
range, bootstrap intervals), ``underfit.csv`` (fits flagged: training loss > 1.5 x the
teacher's), and the figures ``figures/<name>_data_efficiency.{png,pdf}`` and
``figures/<name>_rates.{png,pdf}``. The statistic (median over seeds) and the fit ranges are the
arguments' defaults, fixed before the runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import pandas as pd

from moe_lora.experiment import load_experiment
from moe_lora.head import FIT_MIN_N, data_efficiency, improvement, rate_slopes


def run_units(study, work: Path) -> pd.DataFrame:
    """Every unit of the study, computed unless its file exists; prints each unit's wall time."""
    work.mkdir(parents=True, exist_ok=True)
    context = study.context()
    parts = []
    for unit in study.units():
        path = work / f"{unit.id}.parquet"
        if not path.exists():
            rows, wall, compiled = context.compute(unit)
            rows["wall_s"] = wall
            rows.to_parquet(path)
            print(
                f"  {unit.id:50s} {wall:6.1f}s  median function_error "
                f"{rows['function_error'].median():.4f}  "
                f"underfit {int(rows['underfit'].sum())}/{len(rows)}",
                flush=True,
            )
        parts.append(pd.read_parquet(path))
    return pd.concat(parts, ignore_index=True)


def summarize(
    table: pd.DataFrame, out: Path, fit_min_n: int, slopes_min_n: int
) -> dict[str, pd.DataFrame]:
    """Write and print the summaries of a finished table."""
    metrics = ("function_error", "gate_error", "value_error")
    tables = {
        "data_efficiency": pd.concat(
            [data_efficiency(table, metric=m, fit_min_n=fit_min_n) for m in metrics]
        ),
        "improvement": pd.concat([improvement(table, metric=m) for m in metrics]),
        "slopes": rate_slopes(table, metrics=metrics, n_min=slopes_min_n),
        "underfit": table.groupby(["variation", "student", "n"], sort=False)["underfit"]
        .agg(["sum", "count"])
        .reset_index(),
    }
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        for name, t in tables.items():
            t.to_csv(out / f"{name}.csv", index=False)
            print(f"\n{name}:\n{t.to_string(index=False)}")
    return tables


def main(
    config: Path,
    work: Path,
    figures: Path,
    fit_min_n: int,
    slopes_min_n: int,
    summary_only: bool = False,
):
    jax.config.update("jax_enable_x64", True)
    study = load_experiment(config)
    out = figures / "data" / study.name
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if summary_only:
        table = pd.read_parquet(out / "results.parquet")
    else:
        print(f"{study.name}: {study.describe()}", flush=True)
        table = run_units(study, work / study.name)
        table.to_parquet(out / "results.parquet", index=False)
        print(
            f"compute wall time in this call {time.perf_counter() - start:.1f}s; "
            "sum of unit wall times "
            f"{table.drop_duplicates(['variation', 'student', 'n', 'wall_s'])['wall_s'].sum():.0f}s"
        )
    summarize(table, out, fit_min_n, slopes_min_n)
    from moe_lora.head_figure import figure_data_efficiency, figure_rates
    from moe_lora.palette import save_figure

    for stem, fig in (
        (f"{study.name}_data_efficiency", figure_data_efficiency(table)),
        (f"{study.name}_rates", figure_rates(table, n_min=slopes_min_n)),
    ):
        save_figure(fig, figures, stem, dpi=120)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "config",
        type=Path,
        help="an attention_head study config (simulations/attention_head*.toml)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/head_units"), help="per-unit results (resume)"
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=Path("figures"),
        help="figures folder (data under data/<name>)",
    )
    parser.add_argument(
        "--fit-min-n", type=int, default=FIT_MIN_N, help="power laws of n_ratio fitted on n >= this"
    )
    parser.add_argument(
        "--slopes-min-n", type=int, default=FIT_MIN_N, help="rate slopes fitted on n >= this"
    )
    parser.add_argument(
        "--summary-only", action="store_true", help="summarise figures/data/<name>/results.parquet"
    )
    args = parser.parse_args()
    main(args.config, args.work, args.figures, args.fit_min_n, args.slopes_min_n, args.summary_only)
