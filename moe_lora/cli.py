"""The ``moe-lora`` command: run a sweep, print its rates, draw its figures.

    moe-lora run CONFIG.toml [--out DIR] [--shard i/k]
    moe-lora rates DIR
    moe-lora plot DIR [--out figures/]

``plot`` also copies the results table, the manifest and the slope table next to the figures,
into ``<out>/data/<experiment name>/``, so committed figures carry the data they came from.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence


def _slopes(df, manifest):
    """The slope table of a run, with the fit range and bootstrap settings of its config."""
    from .rates import slope_table

    r = manifest["config"].get("rates") or {}
    return slope_table(df, n_min=r.get("n_min"), n_max=r.get("n_max"), bootstrap=r.get("bootstrap", 1000),
                       level=r.get("level", 0.95), seed=manifest["seed"])


def _run(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .experiment import load_experiment
    from .sweep import parse_shard, run_sweep, units

    exp = load_experiment(args.config)
    shard = parse_shard(args.shard)
    out = Path(args.out) if args.out else Path("runs") / exp.name
    total = len(units(exp))
    print(f"moe-lora run: {exp.name}, {total} units ({len(exp.sizes)} sizes x {len(exp.pairs())} truth-estimator pairs "
          f"x {len(exp.settings)} settings x {-(-exp.replicates // exp.chunk)} replicate blocks), shard {shard[0]}/{shard[1]}, out {out}",
          file=sys.stderr)
    try:
        summary = run_sweep(exp, out, shard=shard, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished units are kept in {out}/units. Run the same command again to resume.", file=sys.stderr)
        return 130
    print(f"computed {summary.computed} units, {summary.skipped} already present, in {summary.seconds:.0f}s", file=sys.stderr)
    if summary.missing:
        print(f"{len(summary.missing)} units of other shards are still missing in {out}; "
              "the results table is written when all are present", file=sys.stderr)
    else:
        print(f"results: {summary.results} (and .csv)", file=sys.stderr)
    return 0


def _rates(args) -> int:
    from .rates import format_slope_table
    from .sweep import load_results

    df, manifest = load_results(args.dir)
    table = _slopes(df, manifest)
    path = Path(args.dir) / "rates.csv"
    table.to_csv(path, index=False)
    print(format_slope_table(table, level=(manifest["config"].get("rates") or {}).get("level", 0.95)))
    print(f"\nsaved {path}", file=sys.stderr)
    return 0


def _plot(args) -> int:
    from .plots import plot_all
    from .sweep import load_results

    df, manifest = load_results(args.dir)
    slopes = _slopes(df, manifest)
    for p in plot_all(df, Path(args.out), slopes=slopes):
        print(p)
    # The figures travel with the table, manifest and slopes they came from.
    data = Path(args.out) / "data" / manifest["name"]
    data.mkdir(parents=True, exist_ok=True)
    df.to_parquet(data / "results.parquet", index=False)
    slopes.to_csv(data / "rates.csv", index=False)
    shutil.copyfile(Path(args.dir) / "manifest.json", data / "manifest.json")
    print(data)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-lora", description="Sample-complexity simulations of LoRA as a mixture of experts.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep described by a TOML config (resumable)")
    run.add_argument("config", help="experiment config, e.g. simulations/quick.toml")
    run.add_argument("--out", help="output directory (default runs/<name>)")
    run.add_argument("--shard", default="0/1", help="run shard i of k of the work units (default 0/1: all)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    rates = sub.add_parser("rates", help="print and save (DIR/rates.csv) the slope table of a finished run")
    rates.add_argument("dir", help="output directory of `moe-lora run`")
    rates.set_defaults(func=_rates)
    plot = sub.add_parser("plot", help="write the figures of a run as PDF and PNG")
    plot.add_argument("dir", help="output directory of `moe-lora run`")
    plot.add_argument("--out", default="figures", help="figure directory (default figures/)")
    plot.set_defaults(func=_plot)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"moe-lora {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
