"""``moe-lora bound CONFIG``: the lower-bound stage of a sweep, resumable.

A stage of the sweep kind (``moe_lora.experiment.Experiment``), run by the kind-agnostic run loop
of ``moe_lora.runs`` (``run_units``, ``store``), which knows nothing of sweeps.

A config with a ``[bound]`` section has one bound unit per (drawn truth, estimator that contains
it, setting L - L* in ``bound.extra``): ``moe_lora.bounds.bound_curves`` for that family. Each
unit's rows are written atomically to ``DIR/bound/<unit id>.parquet`` in the run directory (the
same ``manifest.json`` as ``moe-lora run``), so an interrupted computation resumes where it
stopped; when every unit is present they are merged into ``DIR/bound.parquet``, which
``moe-lora plot`` draws as ``<name>_bound``.

``order`` (``moe-lora bound --units ID...``) computes only the named units, in that order (for
example every L = L* + 1 unit first); a later call without it computes the rest and merges.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import pandas as pd

from .bounds import bound_curves
from .config import ConfigError
from .experiment import Experiment, TruthLabel, label_index
from .parameterization import Vanilla
from .runs import store
from .runs.local import UnitResult, require_float64, run_units


@dataclasses.dataclass(frozen=True)
class BoundUnit:
    """The curves of one (truth, estimator, L* + extra)."""

    truth: TruthLabel
    estimator: str
    extra: int
    fits = 1  # the run loop weighs units by fits x n; bound units cost about the same
    n = 1

    @property
    def id(self) -> str:
        return f"{self.truth}__{self.estimator}__L+{self.extra}"


def bound_units(exp: Experiment) -> list[BoundUnit]:
    """Every bound unit of a config: drawn truths (not family members), their estimators, the
    settings."""
    if exp.config.bound is None:
        raise ConfigError(f"{exp.name}: no [bound] section; add one to compute lower-bound curves")
    extras = exp.config.bound.extra or exp.extra_components
    return [
        BoundUnit(label, est, extra)
        for label, est in exp.pairs()
        if label.delta is None
        for extra in extras
    ]


def _path(out: Path, unit: BoundUnit) -> Path:
    return out / "bound" / f"{unit.id}.parquet"


def _ordered(every: list[BoundUnit], order: list[str], out: Path, vanilla) -> list[BoundUnit]:
    """The units of ``order`` without a result file, in that order, checked."""
    units = {u.id: u for u in every}
    unknown = [i for i in order if i not in units]
    if unknown:
        raise ValueError(
            f"bound units {unknown} are not units of this config; expected of {list(units)}"
        )
    todo = [units[i] for i in order if not _path(out, units[i]).exists()]
    for k, u in enumerate(todo):
        if not vanilla(u):
            continue
        for v in every:
            contained = v.truth == u.truth and v.extra == u.extra and not vanilla(v)
            if contained and not _path(out, v).exists() and v not in todo[:k]:
                raise ValueError(
                    f"bound unit {u.id} (vanilla) takes the witnesses of {v.id}, which is neither "
                    "computed nor before it in the order"
                )
    return todo


def run_bounds(
    exp: Experiment,
    out: str | Path,
    *,
    order: list[str] | None = None,
    progress: bool = True,
    stream=None,
) -> Path | None:
    """Compute the bound units without a result file in ``out``; merge when all are present.

    Args:
        exp: the sweep, with a ``[bound]`` section.
        out: its run directory.
        order: unit ids (``BoundUnit.id``) to compute, in this order, and no others; None: every
            unit, vanilla's last. A vanilla unit must come after the units it contains.
        progress, stream: the progress line.

    Returns:
        The path of ``out/bound.parquet``, or None if a unit is missing.

    Raises:
        ValueError: ``order`` names an unknown unit, or a vanilla unit before one it contains.
    """
    require_float64("run_bounds")
    out = Path(out)
    truths = exp.draw_truths()
    store.write_or_check_manifest(out, exp, truths)
    cfg = exp.config.bound.bound_config
    every = bound_units(exp)

    def vanilla(u: BoundUnit) -> bool:
        return isinstance(exp.model(u.estimator).parameterization, Vanilla)

    # Vanilla's units last: vanilla's family contains every other on the same truth, and its
    # curves take their witnesses in (bounds.containment), so they are computed first.
    todo = sorted((u for u in every if not _path(out, u).exists()), key=vanilla)
    if order is not None:
        todo = _ordered(every, order, out, vanilla)
    done: dict[str, pd.DataFrame] = {}

    def contained(u: BoundUnit):
        if not vanilla(u):
            return ()
        out_ = []
        for v in every:
            if v.truth == u.truth and v.extra == u.extra and not vanilla(v):
                rows = done.get(v.id)
                out_.append(
                    (
                        exp.model(v.estimator),
                        pd.read_parquet(_path(out, v)) if rows is None else rows,
                    )
                )
        return tuple(out_)

    def compute() -> Iterator[UnitResult]:
        for u in todo:
            t0, cpu = time.perf_counter(), time.process_time()
            key = jax.random.fold_in(jax.random.key(exp.seed), label_index(u.id))
            rows = bound_curves(
                key,
                truths[u.truth],
                exp.model(u.estimator),
                exp.components + u.extra,
                cfg,
                truth_label=str(u.truth),
                estimator_label=u.estimator,
                contained=contained(u),
            )
            done[u.id] = rows
            yield UnitResult(
                u,
                rows,
                {
                    "unit": f"bound/{u.id}",
                    "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - cpu,
                },
            )

    def keep(result: UnitResult) -> None:
        store.write_frame(_path(out, result.unit), result.frame)
        store.record_timing(out, result.timing)

    run_units(compute(), todo, len(every), on_result=keep, progress=progress, stream=stream)
    if any(not _path(out, u).exists() for u in every):
        return None
    merged = pd.concat([pd.read_parquet(_path(out, u)) for u in every], ignore_index=True)
    store.write_frame(out / "bound.parquet", merged)
    return out / "bound.parquet"
