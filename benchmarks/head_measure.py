"""LoRA against RepLoRA on a full attention head: the data-efficiency headline and its variations.

    python benchmarks/head_measure.py                 # full: 4 variations x 2 students x 8 sizes x 16 seeds
    python benchmarks/head_measure.py --quick         # headline only, n = 4, 16, 64, 4 seeds (< 3 min on 2 cores)
    python benchmarks/head_measure.py --variations headline sigmoid --seeds 16

Each (variation, student, n) unit is ``moe_lora.head.head_unit`` on a block of seeds (one
compilation each); its wall time is printed. The rows of every variation go to
``figures/data/<name>/<variation>.parquet`` as soon as the variation is done, the data-efficiency
fractions and improvements to ``data_efficiency.parquet`` and ``improvement.parquet`` there, and
the figure to ``figures/<name>_data_efficiency.{png,pdf}`` (unless ``--no-figure``). The name is
``attention_head`` (``attention_head_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import pandas as pd

from moe_lora.head import STUDENTS, HeadConfig, data_efficiency, head_unit, improvement, parameter_counts

HEADLINE = HeadConfig()
VARIATIONS = {
    "headline": HEADLINE,
    "overspecified": dataclasses.replace(HEADLINE, rank=4),
    "reparameterized_truth": dataclasses.replace(HEADLINE, truth="reparameterized"),
    "sigmoid": dataclasses.replace(HEADLINE, gating="sigmoid"),
}
FULL_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
QUICK_SIZES = (4, 16, 64)


def run_variation(key, name: str, config: HeadConfig, sizes, seeds) -> pd.DataFrame:
    """Every (student, n) unit of one variation, in order; prints each unit's wall time."""
    parts = []
    for student in STUDENTS:
        for n in sizes:
            t0 = time.perf_counter()
            rows = head_unit(key, config, student, n, seeds, variation=name)
            print(
                f"  {name:22s} {student:8s} n={n:4d}  {time.perf_counter() - t0:6.1f}s  "
                f"mean function_error {rows['function_error'].mean():.4f}",
                flush=True,
            )
            parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def summarize(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Print and return the data-efficiency fractions and the improvements, per variation."""
    eff, imp = data_efficiency(table), improvement(table)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
        print("\nData efficiency (smallest n where RepLoRA reaches LoRA's error at n_max, / n_max; 95% bootstrap):")
        print(eff.to_string(index=False))
        print("\nRelative improvement of RepLoRA over LoRA, 1 - mean_RepLoRA / mean_LoRA (95% bootstrap):")
        print(imp.to_string(index=False))
    return eff, imp


def main(seed: int, name: str, figures: Path, variations, sizes, seeds: int, figure: bool = True) -> pd.DataFrame:
    jax.config.update("jax_enable_x64", True)
    out = figures / "data" / name
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(seed)
    start = time.perf_counter()
    tables = []
    for variation in variations:
        config = VARIATIONS[variation]
        print(f"{variation}: {config}\n  parameters {parameter_counts(config)}", flush=True)
        t0 = time.perf_counter()
        table = run_variation(key, variation, config, sizes, list(range(seeds)))
        table.to_parquet(out / f"{variation}.parquet")
        print(f"  {variation} done in {time.perf_counter() - t0:.1f}s", flush=True)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    eff, imp = summarize(table)
    eff.to_parquet(out / "data_efficiency.parquet")
    imp.to_parquet(out / "improvement.parquet")
    if figure:
        from moe_lora.head_figure import figure_data_efficiency

        fig = figure_data_efficiency(table)
        for ext in ("png", "pdf"):
            fig.savefig(figures / f"{name}_data_efficiency.{ext}", dpi=120)
    print(
        f"\nwall time {time.perf_counter() - start:.1f}s "
        f"(variations {list(variations)}, n {list(sizes)}, {seeds} seeds)"
    )
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the experiment's integer seed (the key)")
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="figures folder (data under data/<name>)")
    parser.add_argument("--name", default=None, help="attention_head, or attention_head_quick with --quick")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--quick", action="store_true", help="headline only, n = 4, 16, 64, 4 seeds")
    parser.add_argument("--variations", nargs="+", choices=tuple(VARIATIONS), default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args()
    variations = args.variations or (["headline"] if args.quick else list(VARIATIONS))
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    seeds = args.seeds or (4 if args.quick else 16)
    name = args.name or ("attention_head_quick" if args.quick else "attention_head")
    main(args.seed, name, args.figures, variations, sizes, seeds, figure=not args.no_figure)
