"""Computing units, shards of them, and the one run loop, for an experiment of any kind.

The run layer knows an experiment only through ``moe_lora.kinds.ExperimentKind``, and below the
entry points (``run_frame``, ``run_sweep``) only through what it needs: a list of units, a
context (``context.compute(unit)`` fits one unit in this process) and the key columns of the
table. ``compute_unit`` fits one unit; its rows depend only on the config and the unit, never on
the process or on what it computed before. ``run_units`` is the only loop over units: it
consumes the results of a backend (this process, ``compute_locally``; Ray, ``moe_lora.runs.ray``),
shows one progress line (tqdm) and hands each result to its caller. Three callers use it:

* ``run_frame``: every unit in memory, the table returned, nothing written (notebooks);
* ``run_sweep``: the units of a shard without a result file, each stored atomically in the run
  directory (``moe-lora run``), resumable;
* ``moe_lora.runs.ray.run_sweep_ray``: the same with Ray tasks.

``run_variants`` and ``run_estimator`` are in-memory runs for explorations.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import pandas as pd
from tqdm.auto import tqdm

from ..config import ConfigError, with_values
from ..kinds import ExperimentKind, UnitContext, experiment_from_dict, manifest_entries
from ..parameterization import Model
from ..table import sort_rows
from . import store


def require_float64(what: str) -> None:
    """Refuse to measure rates in float32: raise ``ValueError`` unless float64 is on."""
    if not jax.config.jax_enable_x64:
        raise ValueError(
            f"{what} measures rates in float64; call jax.config.update('jax_enable_x64', True) "
            "first "
            "(the moe-lora command does)"
        )


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/k"`` -> (i, k) with 0 <= i < k.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected i/k with integers 0 <= i < k, got {text!r}") from None
    if not 0 <= i < k:
        raise ValueError(f"--shard: expected i/k with 0 <= i < k, got {text!r}")
    return i, k


def shard_units(all_units: list, shard: tuple[int, int]) -> list:
    """Units i, i + k, i + 2k, ... of ``all_units`` (an experiment's fixed order) for ``shard = (i,
    k)``."""
    i, k = shard
    return all_units[i::k]


def compute_unit(context: UnitContext, unit) -> tuple[pd.DataFrame, float, bool]:
    """Compute one unit in this process: (its table rows, wall seconds, whether it compiled).

    ``context`` is the experiment's (``exp.context()``, any kind); the rows depend only on the
    config and the unit.
    """
    return context.compute(unit)


class UnitResult(NamedTuple):
    """A finished unit as a backend reports it.

    ``frame`` holds its rows (None when the backend stored them itself); ``timing`` is its
    ``timings.jsonl`` record; ``error`` is set, and the others are None, when the unit failed.
    """

    unit: Any
    frame: pd.DataFrame | None
    timing: dict | None
    error: str | None = None


#: Fraction of the system's limit on memory mappings (``vm.max_map_count``) above which a
#: process running units drops JAX's compiled programs (``release_compiled_programs``).
MAP_FRACTION = 0.5


def _mappings() -> tuple[int, int] | None:
    """(mappings this process holds, the system's limit), or None where Linux's /proc is absent."""
    try:
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f), limit
    except (OSError, ValueError):
        return None


def release_compiled_programs(fraction: float = MAP_FRACTION, mappings=_mappings) -> bool:
    """Drop JAX's compiled programs (``jax.clear_caches``) when this process holds more than
    ``fraction`` of the system's memory mappings; returns whether it did.

    Every XLA:CPU compilation maps memory for its code and keeps it while the program is cached.
    A long run compiles a program per (estimator, n, shape), and a study of 160 units reached
    39,000 of Linux's default 65,530 mappings; past the limit ``mmap`` fails inside XLA's
    compiler and the process aborts. Dropping the cache costs a recompilation of the programs the
    next units need, and is done only near the limit. Results do not change: a recompiled program
    is the same program.
    """
    held = mappings()
    if held is None or held[0] <= fraction * held[1]:
        return False
    jax.clear_caches()
    gc.collect()
    return True


def compute_locally(
    context: UnitContext, todo: Iterable, compute: Callable = compute_unit
) -> Iterator[UnitResult]:
    """The local backend: compute the units one after another in this process (dropping
    compiled programs near the system's limit on memory mappings, ``release_compiled_programs``)."""
    for u in todo:
        cpu = time.process_time()
        frame, seconds, compiled = compute(context, u)
        timing = {
            "unit": u.id,
            "fits": u.fits,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu,
            "compiled": compiled,
        }
        yield UnitResult(u, frame, timing)
        release_compiled_programs()


def run_units(
    results: Iterable[UnitResult],
    todo: list,
    total: int,
    *,
    on_result: Callable[[UnitResult], None],
    progress: bool = True,
    stream=None,
) -> None:
    """The run loop: hand every result of a backend to ``on_result``, with a progress line.

    Progress counts work as fits x n (a fit's cost grows about linearly in n, and units run small
    n first), so the time left is an extrapolation by work, not by units; early units, where
    compilation dominates, make it pessimistic. On a terminal the line is a tqdm bar updated in
    place; in a log file (a batch job) tqdm's line is written once per finished unit.
    """
    stream = stream or sys.stderr
    work = sum(u.fits * u.n for u in todo)
    tty = hasattr(stream, "isatty") and stream.isatty()
    fmt = "[{desc} units] {percentage:3.0f}% | elapsed {elapsed}, left ~{remaining}{postfix}"
    bar = tqdm(
        total=work,
        disable=not (progress and tty),
        file=stream,
        mininterval=0,
        dynamic_ncols=True,
        bar_format=fmt,
    )
    done, fits, done_work, t0 = total - len(todo), 0, 0, time.perf_counter()
    try:
        for result in results:
            on_result(result)
            u = result.unit
            done, fits, done_work = done + 1, fits + u.fits, done_work + u.fits * u.n
            elapsed = time.perf_counter() - t0
            seconds = result.timing["seconds"] if result.timing else float("nan")
            postfix = f"{fits / max(elapsed, 1e-9):.2f} fits/s | {u.id} ({seconds:.1f}s)"
            if tty:
                bar.set_description_str(f"{done}/{total}", refresh=False)
                bar.set_postfix_str(postfix, refresh=False)
                bar.update(u.fits * u.n)
            elif progress:
                line = tqdm.format_meter(
                    done_work,
                    work,
                    elapsed,
                    bar_format=fmt,
                    prefix=f"{done}/{total}",
                    postfix=postfix,
                )
                stream.write(line + "\n")
                stream.flush()
    finally:
        bar.close()


def run_frame(exp: ExperimentKind, *, progress: bool = True, stream=None) -> pd.DataFrame:
    """Run every unit of ``exp`` (any kind) in this process and return the results table; writes no
    files.

    For notebooks and small explorations: the table is the one ``run_sweep`` writes to
    ``results.parquet`` (same rows, same order), but nothing survives an interruption. Use
    ``run_sweep`` (``moe-lora run``) for anything that takes long.

    Example:
        >>> import jax; jax.config.update("jax_enable_x64", True)
        >>> from moe_lora.experiment import Experiment
        >>> exp = Experiment.from_dict({"model": {"d": 2, "d_out": 1, "r": 1, "gate_scale": 3.0},
        ...     "data": {"sigma": 0.02, "sizes": [200], "replicates": 2},
        ...     "fit": {"extra_components": [0]}, "estimators": ["tanh"]})
        >>> df = run_frame(exp, progress=False)
        >>> len(df), list(df.estimator.unique())
        (2, ['tanh'])
    """
    require_float64("run_frame")
    todo = exp.units()
    frames = []
    run_units(
        compute_locally(exp.context(), todo),
        todo,
        len(todo),
        on_result=lambda r: frames.append(r.frame),
        progress=progress,
        stream=stream,
    )
    return sort_rows(pd.concat(frames, ignore_index=True), exp.key_columns)


@dataclasses.dataclass
class RunSummary:
    """What one run call did."""

    computed: int
    skipped: int
    missing: list[str]
    seconds: float
    results: Path | None
    failed: list[dict] = dataclasses.field(default_factory=list)


def finish(
    out: Path,
    all_units: list,
    key_columns,
    mine: list,
    todo: list,
    t_start: float,
    failed: list[dict] | None = None,
) -> RunSummary:
    """Merge when every unit of ``all_units`` is present, and summarise the run."""
    with store.directory_lock(out):
        missing = store.missing_units(all_units, out)
        results = None if missing else store.write_results(all_units, key_columns, out)
    failed = failed or []
    return RunSummary(
        len(todo) - len(failed),
        len(mine) - len(todo),
        [u.id for u in missing],
        time.perf_counter() - t_start,
        results,
        failed,
    )


def run_sweep(
    exp: ExperimentKind,
    out: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    stream=None,
) -> RunSummary:
    """Compute the units of ``shard`` that have no result file in ``out``; merge when all are
    present.

    ``exp`` is any experiment kind (a sweep, an attention-head study); it is read here only,
    for its manifest, units, context and key columns.

    Units are independent and written atomically: stop the run at any time and start it again
    with the same arguments to resume. Each unit file records the hash of the config that made
    it; a unit of another config is refused, a corrupt one computed again, and a unit another
    live process is computing (its claim, ``store.claimed``) is left to it, so runs may share
    ``out``. ``out/timings.jsonl`` gets one line per computed unit
    (wall and CPU seconds of this process, whether it compiled), kept apart from the results so
    that those do not depend on the machine.
    """
    require_float64("run_sweep")
    out = Path(out)
    t_start = time.perf_counter()
    truths = exp.draw_truths()
    all_units = exp.units()
    store.start_run(out, store.manifest(manifest_entries(exp, truths)), all_units)
    config_hash = store.config_hash(exp.config.to_dict())
    mine = shard_units(all_units, shard)
    todo = [u for u in mine if not store.unit_path(out, u).exists()]

    computed = []

    def keep(result: UnitResult) -> None:
        store.write_unit(out, result.unit, result.frame, config_hash)
        store.record_timing(out, result.timing)
        computed.append(result.unit)

    run_units(
        compute_locally(exp.context(truths), store.claimed(out, todo)),
        todo,
        len(mine),
        on_result=keep,
        progress=progress,
        stream=stream,
    )
    # Units claimed by another run sharing ``out`` count as skipped.
    return finish(out, all_units, exp.key_columns, mine, computed, t_start)


# --------------------------------------------------------------------------------------------
# In-memory explorations


def run_variants(
    config: dict, key: str, values, *, progress: bool = True, stream=None
) -> pd.DataFrame:
    """Run ``config`` once per value of the dotted ``key``, in memory; one table for all.

    Args:
        config: an experiment config as a dict (the TOML layout; see ``moe_lora.config``).
        key: the dotted key to vary, e.g. ``"data.sigma"``, ``"model.gating"``, ``"model.d"``.
        values: the values it takes, one run each.
        progress: print a progress line per unit (to ``stream``, default stderr).

    Returns:
        The ``run_frame`` tables of every run, concatenated, with a first column ``variant``
        holding the value (the table's ``attrs["variant_key"]`` names ``key``). Everything
        else in the config, the seed included, is the same in every run: runs that differ only
        in the noise level or the truth's draw share their inputs and noise draws.

    Raises:
        ConfigError: a value the config check refuses, naming the key and the value.
    """
    values = list(values)
    if not values:
        raise ValueError(f"run_variants: no values given for {key!r}")
    frames = []
    for v in values:
        try:
            exp = experiment_from_dict(
                with_values(config, {key: v}), name=str(config.get("name") or "variant")
            )
            df = run_frame(exp, progress=progress, stream=stream)
        except ConfigError as e:  # a bad value, or a truth the value makes impossible to draw
            raise ConfigError(f"{key} = {v!r}: {e}") from None
        df.insert(0, "variant", [v] * len(df))
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["variant_key"] = key
    return out


def run_estimator(
    exp, model: Model, label: str, *, extra: int, truth=None, sizes=None
) -> pd.DataFrame:
    """Fit an estimator the config cannot name (other bounds, maps, ...) to the experiment's data.

    The rows are those ``run_frame(exp)`` would give an estimator called ``label``: the same
    truth, data sets, start keys and evaluation inputs as the experiment's own estimators, so
    the comparison is paired. With ``model = exp.model(name)`` it reproduces that estimator's
    rows exactly.

    Args:
        exp: the sweep (``moe_lora.experiment.Experiment``) whose truths, data and fit settings are
        used. model: the estimator (``moe_lora.make_model``); its spec must be the experiment's.
        label: its name in the ``estimator`` column.
        extra: the setting, L - L*.
        truth: the truth label, text or ``TruthLabel`` (default: the experiment's first truth).
        sizes: sample sizes (default: the experiment's).

    Example:
        >>> import jax; jax.config.update("jax_enable_x64", True)
        >>> import moe_lora as ml
        >>> exp = ml.Experiment.from_dict({"model": {"d": 2, "gate_scale": 3.0},
        ...     "estimators": ["tanh"],
        ...     "data": {"sigma": 0.02, "sizes": [200], "replicates": 2}})
        >>> wide = ml.make_model(exp.spec, ml.Vanilla(bound=50.0))
        >>> run_estimator(exp, wide, "vanilla R=50", extra=0)[["estimator", "n"]].values.tolist()
        [['vanilla R=50', 200], ['vanilla R=50', 200]]
    """
    if model.spec != exp.spec:
        raise ValueError(
            f"The estimator's spec {model.spec} differs from the experiment's {exp.spec}"
        )
    if extra not in exp.extra_components:
        raise ValueError(
            f"extra={extra!r} is not a setting of the experiment; expected one of "
            f"{exp.extra_components}"
        )
    truths = exp.draw_truths()
    labels = {str(t): t for t in truths}
    name = str(next(iter(truths)) if truth is None else truth)
    if name not in labels:
        raise ValueError(f"Unknown truth {name!r}; expected one of {list(labels)}")
    truth = labels[name]
    # The experiment's own unit computation, with ``model`` standing in under the name ``label``.
    context = exp.context(truths).with_models({label: model})
    frames = [compute_unit(context, u)[0] for u in exp.estimator_units(truth, label, extra, sizes)]
    return sort_rows(pd.concat(frames, ignore_index=True), exp.key_columns)
