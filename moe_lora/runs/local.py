"""Computing units: the shared inputs of a sweep, one unit's fit, and the one run loop.

``compute_unit`` fits one unit in this process; its rows depend only on the config and the unit
(replicate keys are fixed, ``moe_lora.simulate``), never on the process or on what it computed
before. ``run_units`` is the only loop over units: it consumes the results of a backend (this
process, ``compute_locally``; Ray, ``moe_lora.runs.ray``), shows one progress line (tqdm) and
hands each result to its caller. Three callers use it:

* ``run_frame``: every unit in memory, the table returned, nothing written (notebooks);
* ``run_sweep``: the units of a shard without a result file, each stored atomically in the run
  directory (``moe-lora run``), resumable;
* ``moe_lora.runs.ray.run_sweep_ray``: the same with Ray tasks.

``run_variants`` and ``run_estimator`` are in-memory runs for explorations.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import ConfigError, with_values
from ..experiment import Experiment, TruthLabel
from ..parameterization import Model
from ..simulate import TRACE_COUNT, simulate_replicates
from ..table import record_rows, sort_rows
from . import store
from .plan import Unit, shard_units, units


def require_float64(what: str) -> None:
    """Refuse to measure rates in float32: raise ``ValueError`` unless float64 is on."""
    if not jax.config.jax_enable_x64:
        raise ValueError(f"{what} measures rates in float64; call jax.config.update('jax_enable_x64', True) first "
                         "(the moe-lora command does)")


@dataclasses.dataclass(frozen=True)
class UnitContext:
    """What every unit of one experiment shares: the truths, the estimators and the eval inputs."""

    exp: Experiment
    truths: dict
    models: dict
    X_eval: object

    @classmethod
    def of(cls, exp: Experiment, truths: dict | None = None) -> UnitContext:
        truths = exp.draw_truths() if truths is None else truths
        return cls(exp, truths, {name: exp.model(name) for name in exp.estimators}, exp.x_eval())

    def compute(self, unit: Unit) -> tuple[pd.DataFrame, float, bool]:
        """Fit one unit: (its table rows, wall seconds, whether it compiled)."""
        exp = self.exp
        traces = sum(TRACE_COUNT.values())
        t0 = time.perf_counter()
        rec = simulate_replicates(
            exp.sim_key(unit.truth), self.truths[unit.truth], self.models[unit.estimator], unit.n, sigma=exp.sigma,
            replicates=np.arange(unit.start, unit.stop), config=exp.fit_config(unit.extra), X_eval=self.X_eval,
            design=exp.design, batch=exp.batch,
        )
        rec = jax.block_until_ready(rec)
        seconds = time.perf_counter() - t0
        return unit_rows(self, unit, rec), seconds, sum(TRACE_COUNT.values()) > traces


def unit_rows(context: UnitContext, unit: Unit, record) -> pd.DataFrame:
    """The table rows of a unit's ``Record``."""
    exp, truth = context.exp, context.truths[unit.truth]
    identifiers = {
        "experiment": exp.name, "truth": str(unit.truth), "through": unit.truth.through, "delta": unit.truth.delta,
        "estimator": unit.estimator, "extra": unit.extra, "L": exp.components + unit.extra, "L_star": exp.components,
        "n": unit.n, "sigma": exp.sigma, "truth_separation": float(truth.separation),
        "truth_gate_strength": float(truth.gate_strength), "truth_expert_separation": float(truth.expert_separation),
    }
    return record_rows(record, identifiers, unit.replicates)


def compute_unit(context, unit) -> tuple[pd.DataFrame, float, bool]:
    """Compute one unit in this process: (its table rows, wall seconds, whether it compiled).

    ``context`` is the experiment's (``exp.context()``): a sweep's ``UnitContext`` or another
    kind's; the rows depend only on the config and the unit.
    """
    return context.compute(unit)


class UnitResult(NamedTuple):
    """A finished unit as a backend reports it.

    ``frame`` holds its rows (None when the backend stored them itself); ``timing`` is its
    ``timings.jsonl`` record; ``error`` is set, and the others are None, when the unit failed.
    """

    unit: Unit
    frame: pd.DataFrame | None
    timing: dict | None
    error: str | None = None


def compute_locally(context: UnitContext, todo: Iterable[Unit], compute: Callable = compute_unit) -> Iterator[UnitResult]:
    """The local backend: compute the units one after another in this process."""
    for u in todo:
        cpu = time.process_time()
        frame, seconds, compiled = compute(context, u)
        timing = {"unit": u.id, "fits": u.fits, "seconds": seconds, "cpu_seconds": time.process_time() - cpu,
                  "compiled": compiled}
        yield UnitResult(u, frame, timing)


def run_units(results: Iterable[UnitResult], todo: list[Unit], total: int, *, on_result: Callable[[UnitResult], None],
              progress: bool = True, stream=None) -> None:
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
    bar = tqdm(total=work, disable=not (progress and tty), file=stream, mininterval=0, dynamic_ncols=True, bar_format=fmt)
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
                line = tqdm.format_meter(done_work, work, elapsed, bar_format=fmt, prefix=f"{done}/{total}", postfix=postfix)
                stream.write(line + "\n")
                stream.flush()
    finally:
        bar.close()


def run_frame(exp, *, progress: bool = True, stream=None) -> pd.DataFrame:
    """Run every unit of ``exp`` (any kind) in this process and return the results table; writes no files.

    For notebooks and small explorations: the table is the one ``run_sweep`` writes to
    ``results.parquet`` (same rows, same order), but nothing survives an interruption. Use
    ``run_sweep`` (``moe-lora run``) for anything that takes long.

    Example:
        >>> import jax; jax.config.update("jax_enable_x64", True)
        >>> exp = Experiment.from_dict({"model": {"d": 2, "d_out": 1, "r": 1, "gate_scale": 3.0},
        ...     "data": {"sigma": 0.02, "sizes": [200], "replicates": 2}, "fit": {"extra_components": [0]}, "estimators": ["tanh"]})
        >>> df = run_frame(exp, progress=False)
        >>> len(df), list(df.estimator.unique())
        (2, ['tanh'])
    """
    require_float64("run_frame")
    todo = units(exp)
    frames = []
    run_units(compute_locally(exp.context(), todo), todo, len(todo), on_result=lambda r: frames.append(r.frame),
              progress=progress, stream=stream)
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


def finish(exp, out: Path, mine: list, todo: list, t_start: float,
           failed: list[dict] | None = None) -> RunSummary:
    """Merge when every unit is present, and summarise the run."""
    missing = store.missing_units(exp, out)
    results = None if missing else store.write_results(exp, out)
    failed = failed or []
    return RunSummary(len(todo) - len(failed), len(mine) - len(todo), [u.id for u in missing],
                      time.perf_counter() - t_start, results, failed)


def run_sweep(exp, out: str | Path, *, shard: tuple[int, int] = (0, 1), progress: bool = True,
              stream=None) -> RunSummary:
    """Compute the units of ``shard`` that have no result file in ``out``; merge when all are present.

    ``exp`` is any experiment kind (a sweep, an attention-head study).

    Units are independent and written atomically: stop the run at any time and start it again
    with the same arguments to resume. ``out/timings.jsonl`` gets one line per computed unit
    (wall and CPU seconds of this process, whether it compiled), kept apart from the results so
    that those do not depend on the machine.
    """
    require_float64("run_sweep")
    out = Path(out)
    t_start = time.perf_counter()
    truths = exp.draw_truths()
    store.write_or_check_manifest(out, exp, truths)
    mine = shard_units(units(exp), shard)
    todo = [u for u in mine if not store.unit_path(out, u).exists()]

    def keep(result: UnitResult) -> None:
        store.write_unit(out, result.unit, result.frame)
        store.record_timing(out, result.timing)

    run_units(compute_locally(exp.context(truths), todo), todo, len(mine), on_result=keep,
              progress=progress, stream=stream)
    return finish(exp, out, mine, todo, t_start)


# --------------------------------------------------------------------------------------------
# In-memory explorations


def run_variants(config: dict, key: str, values, *, progress: bool = True, stream=None) -> pd.DataFrame:
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
            exp = Experiment.from_dict(with_values(config, {key: v}), name=str(config.get("name") or "variant"))
            df = run_frame(exp, progress=progress, stream=stream)
        except ConfigError as e:  # a bad value, or a truth the value makes impossible to draw
            raise ConfigError(f"{key} = {v!r}: {e}") from None
        df.insert(0, "variant", [v] * len(df))
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["variant_key"] = key
    return out


def run_estimator(exp: Experiment, model: Model, label: str, *, extra: int, truth=None, sizes=None) -> pd.DataFrame:
    """Fit an estimator the config cannot name (other bounds, maps, ...) to the experiment's data.

    The rows are those ``run_frame(exp)`` would give an estimator called ``label``: the same
    truth, data sets, start keys and evaluation inputs as the experiment's own estimators, so
    the comparison is paired. With ``model = exp.model(name)`` it reproduces that estimator's
    rows exactly.

    Args:
        exp: the experiment whose truths, data and fit settings are used.
        model: the estimator (``moe_lora.make_model``); its spec must be the experiment's.
        label: its name in the ``estimator`` column.
        extra: the setting, L - L*.
        truth: the truth label, text or ``TruthLabel`` (default: the experiment's first truth).
        sizes: sample sizes (default: the experiment's).

    Example:
        >>> import jax; jax.config.update("jax_enable_x64", True)
        >>> import moe_lora as ml
        >>> exp = Experiment.from_dict({"model": {"d": 2, "gate_scale": 3.0}, "estimators": ["tanh"],
        ...     "data": {"sigma": 0.02, "sizes": [200], "replicates": 2}})
        >>> wide = ml.make_model(exp.spec, ml.Vanilla(bound=50.0))
        >>> run_estimator(exp, wide, "vanilla R=50", extra=0)[["estimator", "n"]].values.tolist()
        [['vanilla R=50', 200], ['vanilla R=50', 200]]
    """
    if model.spec != exp.spec:
        raise ValueError(f"The estimator's spec {model.spec} differs from the experiment's {exp.spec}")
    if extra not in exp.settings:
        raise ValueError(f"extra={extra!r} is not a setting of the experiment; expected one of {exp.settings}")
    truths = exp.draw_truths()
    truth = next(iter(truths)) if truth is None else TruthLabel.parse(truth)
    if truth not in truths:
        raise ValueError(f"Unknown truth {str(truth)!r}; expected one of {[str(t) for t in truths]}")
    # The experiment's own unit computation, with ``model`` standing in under the name ``label``.
    context = UnitContext(exp, truths, {label: model}, exp.x_eval())
    frames = [compute_unit(context, Unit(truth, label, extra, int(n), start, min(start + exp.chunk, exp.replicates)))[0]
              for n in (exp.sizes if sizes is None else sizes) for start in range(0, exp.replicates, exp.chunk)]
    return sort_rows(pd.concat(frames, ignore_index=True))
