"""Which fitting rule reaches the teacher? The headline setting at a small and a large n, four
rules.

    python benchmarks/head_finisher.py                       # n = 16, 256; 16 seeds
    python benchmarks/head_finisher.py --sizes 256 --seeds 4 --rules lm lm_if_better

Rules: ``adam`` (2000 steps, patience 200: the first study), ``adam_long`` (6000 steps,
patience 1000), ``lm`` (Adam, then Levenberg-Marquardt always kept), ``lm_if_better`` (kept where
it does not raise the validation loss). Prints, per rule, student and n: the median and mean
function error, the fits flagged underfit (training loss > 1.5 x the teacher's), the median
training-loss ratio, and the unit's wall time; appends each unit's rows to
``benchmarks/results/head_finisher.csv`` as soon as it is done.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import pandas as pd

from moe_lora.head import HeadConfig, head_unit

RULES = {
    "adam": HeadConfig(),
    "adam_long": HeadConfig(steps=6000, patience=1000),
    "lm": HeadConfig(finisher="lm"),
    "lm_if_better": HeadConfig(finisher="lm_if_better"),
}


def main(
    seed: int, sizes, seeds: int, out: Path, rules, students=("lora", "learned_generator")
) -> pd.DataFrame:
    jax.config.update("jax_enable_x64", True)
    key = jax.random.key(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for rule in rules:
        config = RULES[rule]
        for n in sizes:
            for student in students:
                t0 = time.perf_counter()
                rows = head_unit(key, config, student, n, list(range(seeds)), variation=rule)
                rows["wall_s"] = time.perf_counter() - t0
                ratio = rows["train_loss"] / rows["train_loss_truth"]
                print(
                    f"{rule:13s} {student:18s} n={n:4d} median {rows.function_error.median():.4f} "
                    f"mean {rows.function_error.mean():.4f} underfit "
                    f"{int(rows.underfit.sum())}/{seeds} "
                    f"train/teacher median {ratio.median():.3f} max {ratio.max():.2f} "
                    f"{rows.wall_s.iloc[0]:.0f}s",
                    flush=True,
                )
                rows.to_csv(out, mode="a", header=not out.exists(), index=False)
                parts.append(rows)
    return pd.concat(parts, ignore_index=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", type=int, default=[16, 256])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--rules", nargs="+", choices=tuple(RULES), default=list(RULES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/head_finisher.csv"))
    args = parser.parse_args()
    main(args.seed, args.sizes, args.seeds, args.out, args.rules)
