r"""The ``moe-lora`` command: run a sweep, print its rates, draw its figures.

    moe-lora run CONFIG.toml [--out DIR] [--shard i/k] [--backend local|ray] [--address ADDR] \
        [--retries N]
    moe-lora bound CONFIG.toml [--out DIR] [--quiet]
    moe-lora merge DIR
    moe-lora rates DIR [--partial]
    moe-lora plot DIR [--out figures/] [--partial]
    moe-lora --version        (also: python -m moe_lora ...)

A config's ``kind`` picks the experiment (``moe_lora.kinds``): ``sweep`` (the default;
``moe_lora.experiment``) or ``attention_head`` (``moe_lora.head_study``). The commands know an
experiment only through the kind contract (``moe_lora.kinds.ExperimentKind``): its units and
context (run, merge, shards and Ray), its summaries (rates) and its figures (plot).

``run --backend ray`` computes the units as Ray tasks (``moe_lora.runs.ray``); ``merge`` checks
that every unit of a run (sharded, e.g. a SLURM job array, or not) is present, names the missing
ones, and writes the results table.

``plot`` saves every figure as PDF and PNG (the only place figures are written: the figure
functions return Figures) and copies the results table, the manifest and the slope table next to
them, into ``<out>/data/<experiment name>/``, so committed figures carry the data they came from.
``rates`` and ``plot`` refuse a run with missing units unless ``--partial`` is given; then every
file they write is marked: ``rates.partial.csv``, ``<stem>_partial.pdf`` with "PARTIAL" on the
figure, ``data/<name>/results.partial.parquet``.

Every user error (a bad config, path, manifest or option) is one line on stderr,
``moe-lora <command>: error: ...``, naming the value and what was expected, with exit status 2.
This module imports nothing heavy at the top, so that ``moe-lora --help`` starts fast
(benchmarks/cli_startup.py); each command imports what it needs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

#: Resolution of the PNG files.
DPI = 150


def save_figure(fig, out_dir, stem: str) -> list[Path]:
    """Write ``fig`` to ``<out_dir>/<stem>.pdf`` and ``.png`` in the one figure style
    (``moe_lora.palette.save_figure``: TrueType fonts, no creation date, so an unchanged figure
    gives the same bytes); returns the paths."""
    from .palette import save_figure as save

    return save(fig, out_dir, stem, dpi=DPI)


def _partial_note(directory, partial: bool) -> int:
    """The number of units missing in run ``directory``; refuses a partial run unless
    ``partial``."""
    from .runs.store import PartialRunError, experiment_of, missing_units, read_manifest

    directory = Path(directory)
    if (directory / "results.parquet").exists():
        return 0
    all_units = experiment_of(read_manifest(directory)).units()
    missing = len(missing_units(all_units, directory))
    if missing and not partial:
        raise PartialRunError(
            f"{directory}: {missing} of {len(all_units)} units missing; finish the run (the same "
            "`moe-lora run` again) or pass --partial to use the present ones, marked PARTIAL"
        )
    return missing


def _partial_name(name: str, missing: int) -> str:
    """``rates.csv`` -> ``rates.partial.csv`` when units are missing."""
    if not missing:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.partial.{suffix}" if dot else f"{name}.partial"


def _check_backend_options(args) -> None:
    """Refuse options that mean nothing for the chosen backend (before any work)."""
    if args.backend == "ray":
        if args.retries is not None and args.retries < 0:
            raise ValueError(f"--retries: expected a non-negative integer, got {args.retries}")
        if args.num_cpus is not None and args.num_cpus < 1:
            raise ValueError(f"--num-cpus: expected a positive integer, got {args.num_cpus}")
        if args.num_cpus is not None and args.address is not None:
            raise ValueError(
                "--num-cpus sizes a local Ray instance started by this command; "
                f"it cannot be combined with --address {args.address}"
            )
        return
    for flag, value in (
        ("--address", args.address),
        ("--retries", args.retries),
        ("--num-cpus", args.num_cpus),
    ):
        if value is not None:
            raise ValueError(f"{flag} is an option of --backend ray, got --backend {args.backend}")


def _run(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .kinds import load_experiment
    from .runs import parse_shard, run_sweep

    _check_backend_options(args)
    exp = load_experiment(args.config)
    shard = parse_shard(args.shard)
    out = Path(args.out) if args.out else Path("runs") / exp.name
    if args.backend == "ray":
        from .runs.ray import import_ray

        import_ray()  # fail before any work if Ray is not installed
    print(
        f"moe-lora run: {exp.name} ({exp.kind}), {exp.describe()}, shard {shard[0]}/{shard[1]}, "
        f"backend {args.backend}, out {out}",
        file=sys.stderr,
    )
    try:
        if args.backend == "ray":
            from .runs.ray import run_sweep_ray

            retries = 2 if args.retries is None else args.retries
            summary = run_sweep_ray(
                exp,
                out,
                shard=shard,
                address=args.address,
                num_cpus=args.num_cpus,
                retries=retries,
                progress=not args.quiet,
            )
        else:
            summary = run_sweep(exp, out, shard=shard, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished units are kept in {out}/units. Run the same command again to "
            "resume.",
            file=sys.stderr,
        )
        return 130
    print(
        f"computed {summary.computed} units, {summary.skipped} already present, in "
        f"{summary.seconds:.0f}s",
        file=sys.stderr,
    )
    if summary.failed:
        print(
            f"{len(summary.failed)} units FAILED (recorded in {out}/failed.jsonl; run the same "
            "command again to retry them):",
            file=sys.stderr,
        )
        for rec in summary.failed:
            print(f"  {rec['unit']}: {rec['error']} ({rec['attempts']} attempts)", file=sys.stderr)
    others = len(summary.missing) - len(summary.failed)
    if summary.missing and others:
        print(
            f"{others} units of other shards are still missing in {out}; "
            "the results table is written when all are present (check with `moe-lora merge`)",
            file=sys.stderr,
        )
    elif not summary.missing:
        print(f"results: {summary.results} (and .csv)", file=sys.stderr)
    return 1 if summary.failed else 0


def _bound(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .bound_stage import bound_units, run_bounds
    from .kinds import load_experiment

    exp = load_experiment(args.config)
    if getattr(exp.config, "bound", None) is None:
        raise ValueError(
            f"{args.config}: no [bound] section (a sweep config's); add one to compute lower-bound "
            "curves"
        )
    out = Path(args.out) if args.out else Path("runs") / exp.name
    print(
        f"moe-lora bound: {exp.name}, {len(bound_units(exp))} units (truth x estimator x setting), "
        f"out {out}",
        file=sys.stderr,
    )
    try:
        path = run_bounds(exp, out, order=args.units, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished units are kept in {out}/bound. Run the same command again to "
            "resume.",
            file=sys.stderr,
        )
        return 130
    print(f"curves: {path}", file=sys.stderr)
    return 0


def _merge(args) -> int:
    from .runs import merge_run

    report = merge_run(args.dir)
    if report.missing:
        print(
            f"moe-lora merge: {report.name}: {len(report.missing)} of {report.total} units missing "
            f"in {args.dir}; "
            "nothing written:",
            file=sys.stderr,
        )
        for u in report.missing:
            rec = report.failed.get(u.id)
            why = f"  (failed after {rec['attempts']} attempts: {rec['error']})" if rec else ""
            print(f"  {u.id}{why}", file=sys.stderr)
        print(
            "Run the same `moe-lora run` command (or the missing shards) again to compute them, "
            "then merge.",
            file=sys.stderr,
        )
        return 1
    print(
        f"moe-lora merge: {report.name}: all {report.total} units present; results: "
        f"{report.results} (and .csv)"
    )
    return 0


def _rates(args) -> int:
    from .runs import load_results
    from .runs.store import experiment_of

    missing = _partial_note(args.dir, args.partial)
    df, manifest = load_results(args.dir)
    exp = experiment_of(manifest)
    summaries = exp.summaries(df)
    if missing:
        print(f"PARTIAL: {missing} of {len(exp.units())} units missing; read with care")
    print(exp.format_summaries(summaries))
    for name, table in summaries.items():
        path = Path(args.dir) / _partial_name(name, missing)
        table.to_csv(path, index=False)
        print(f"saved {path}", file=sys.stderr)
    return 0


def _plot(args) -> int:
    import pandas as pd

    from .runs import load_results
    from .runs.store import experiment_of, read_manifest

    bound = Path(args.dir) / "bound.parquet"
    try:
        if bound.exists():
            # curves of `moe-lora bound` beside a sweep with no unit computed: no sweep to plot
            missing = _partial_note(args.dir, True)
            if missing == len(experiment_of(read_manifest(args.dir)).units()):
                raise FileNotFoundError(args.dir)
        missing = _partial_note(args.dir, args.partial)
        df, manifest = load_results(args.dir)
    except FileNotFoundError:
        if not bound.exists():
            raise
        df, manifest = None, read_manifest(args.dir)  # curves of `moe-lora bound` without a sweep
        missing = 0
    figures, summaries = {}, {}
    if df is not None:
        exp = experiment_of(manifest)
        summaries = exp.summaries(df)
        figures = exp.figures(df, summaries)
    if bound.exists():
        from .bounds_figure import run_bound_figures

        figures |= run_bound_figures(pd.read_parquet(bound), df, manifest)
    if missing:
        from .palette import mark_partial

        total = len(experiment_of(manifest).units())
        figures = {
            f"{stem}_partial": mark_partial(fig, missing, total) for stem, fig in figures.items()
        }
    for stem, fig in figures.items():
        for p in save_figure(fig, args.out, stem):
            print(p)
    # A sample-complexity figure is drawn only where a curve's eps spans a decade; one left from
    # an earlier version of this run would no longer describe it.
    for base in ("sample_complexity", "sample_complexity_median"):
        stem = f"{manifest['name']}_{base}"
        stale = [Path(args.out) / f"{stem}.{ext}" for ext in ("pdf", "png")]
        if (
            df is not None
            and not missing
            and stem not in figures
            and any(p.exists() for p in stale)
        ):
            for p in stale:
                p.unlink(missing_ok=True)
            print(f"removed {stem}: no curve's eps spans a decade of 1 / eps", file=sys.stderr)
    # The figures travel with the table, manifest and summaries they came from.
    data = Path(args.out) / "data" / manifest["name"]
    data.mkdir(parents=True, exist_ok=True)
    if df is not None:
        df.to_parquet(data / _partial_name("results.parquet", missing), index=False)
    for source, target in (
        (bound, data / "bound.parquet"),
        (Path(args.dir) / "manifest.json", data / "manifest.json"),
    ):
        if source.exists() and not (target.exists() and source.samefile(target)):
            shutil.copyfile(source, target)  # (re-plotting figures/data/<name> copies nothing)
    for name, table in summaries.items():
        table.to_csv(data / _partial_name(name, missing), index=False)
    print(data)
    return 0


def _verdicts(args) -> int:
    from .verdict_runs import command

    return command(args.dirs, args.out, args.config, args.summary, args.pool, args.rule)


def _report(args) -> int:
    from .report import write_report

    missing = _partial_note(args.dir, args.partial)
    path = write_report(args.dir, config_path=args.config, extends=args.extends or ())
    if missing:  # marked: the header, and the file's name
        marked = path.with_name(_partial_name(path.name, missing))
        note = f"**PARTIAL: {missing} units missing; read with care.**\n\n"
        marked.write_text(note + path.read_text())
        path.unlink()
        path = marked
    print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moe-lora",
        description="Sample-complexity simulations of LoRA as a mixture of experts.",
    )
    p.add_argument("--version", action="version", version=f"moe-lora {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep described by a TOML config (resumable)")
    run.add_argument("config", help="experiment config, e.g. simulations/quick.toml")
    run.add_argument("--out", help="output directory (default runs/<name>)")
    run.add_argument(
        "--shard", default="0/1", help="run shard i of k of the work units (default 0/1: all)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: one Ray task per unit (pip "
        "install 'moe_lora[ray]')",
    )
    run.add_argument(
        "--address",
        help="ray only: cluster address (auto, HOST:PORT, ray://HOST:PORT); "
        "default RAY_ADDRESS, a cluster on this machine, or a new local instance",
    )
    run.add_argument(
        "--retries",
        type=int,
        help="ray only: retries of a failed unit before it is recorded as failed (default 2)",
    )
    run.add_argument(
        "--num-cpus",
        type=int,
        help="ray only: CPUs (parallel units) of a local instance started by this command",
    )
    run.set_defaults(func=_run)
    bound = sub.add_parser(
        "bound", help="compute the lower-bound curves of a config's [bound] section (resumable)"
    )
    bound.add_argument("config", help="experiment config with a [bound] section")
    bound.add_argument(
        "--out", help="run directory (default runs/<name>; shared with `moe-lora run`)"
    )
    bound.add_argument(
        "--units",
        nargs="+",
        metavar="ID",
        help="compute only these units, in this order (ids as in DIR/bound/<id>.parquet, e.g. "
        "linear__linear__L+1); a later call without --units computes the rest and merges",
    )
    bound.add_argument("--quiet", action="store_true", help="no progress bar")
    bound.set_defaults(func=_bound)
    merge = sub.add_parser(
        "merge",
        help="check that every unit of a run is present (names the missing ones) "
        "and write the table",
    )
    merge.add_argument("dir", help="output directory of `moe-lora run` (all shards)")
    merge.set_defaults(func=_merge)
    rates = sub.add_parser(
        "rates", help="print and save (DIR/rates.csv) the slope table of a finished run"
    )
    rates.add_argument("dir", help="output directory of `moe-lora run`")
    rates.add_argument("--partial", action="store_true", help=PARTIAL_HELP)
    rates.set_defaults(func=_rates)
    verdicts = sub.add_parser(
        "verdicts",
        help="apply each run's [rates] verdict rules; print a markdown table, save "
        "DIR/verdicts.csv",
    )
    verdicts.add_argument(
        "dirs", nargs="+", help="output directories of `moe-lora run` (or figures/data/<name>)"
    )
    verdicts.add_argument("--out", help="also write the markdown table to this file")
    verdicts.add_argument(
        "--config",
        nargs="+",
        help="read the rules from these configs (one per DIR; the same computation)",
    )
    verdicts.add_argument(
        "--summary",
        action="store_true",
        help="print pooled rows only where a rule covers several truths",
    )
    verdicts.add_argument(
        "--pool",
        metavar="NAME",
        help="read the runs as one table (same rules; each run's truths its own; the same truth "
        "twice is refused)",
    )
    verdicts.add_argument(
        "--rule", nargs="+", help="print only the rules with these labels (every rule is saved)"
    )
    verdicts.set_defaults(func=_verdicts)
    report = sub.add_parser(
        "report", help="write DIR/report.md: config, truths, verdicts, figure, diagnostics"
    )
    report.add_argument("dir", help="output directory of `moe-lora run` (a study)")
    report.add_argument("--config", help="the config it was run from, for the commands")
    report.add_argument(
        "--extends",
        nargs="+",
        metavar="BASE",
        help="run directories this study extends to more sizes (same truths): their rows of its "
        "truths, estimators and settings are read with it as one table",
    )
    report.add_argument("--partial", action="store_true", help=PARTIAL_HELP)
    report.set_defaults(func=_report)
    plot = sub.add_parser("plot", help="write the figures of a run as PDF and PNG")
    plot.add_argument("dir", help="output directory of `moe-lora run`")
    plot.add_argument("--out", default="figures", help="figure directory (default figures/)")
    plot.add_argument("--partial", action="store_true", help=PARTIAL_HELP)
    plot.set_defaults(func=_plot)
    return p


PARTIAL_HELP = (
    "use a run with missing units; every file written is marked partial (refused without it)"
)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("moe_lora")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``moe-lora`` command; returns its exit status (2 for a user error, printed as one line
    on stderr)."""
    import warnings

    args = parser().parse_args(argv)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_: (
        f"moe-lora {args.command}: warning: {message}\n"
    )
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # ConfigError is a ValueError; OSError: paths
        message = str(e) if not isinstance(e, OSError) or not e.filename else _os_error(e)
        one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        print(f"moe-lora {args.command}: error: {one_line}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


def _os_error(e: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` -> ``x: permission denied``."""
    what = (e.strerror or str(e)).lower()
    return f"{e.filename}: {what}" + (f" -> {e.filename2}" if e.filename2 else "")


if __name__ == "__main__":
    sys.exit(main())
