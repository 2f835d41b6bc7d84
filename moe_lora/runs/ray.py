"""Run a sweep's work units as Ray tasks: ``moe-lora run CONFIG --backend ray [--address ADDR]``.

Ray is optional (``pip install 'moe_lora[ray]'``) and imported only when this backend runs, so
``import moe_lora`` never imports it. Each unit without a result file becomes one task. The task
claims its unit as the local backend does (``store.claim``, an ``flock`` on
``DIR/units/<unit id>.lock``), so runs of any backend may share ``DIR`` and no unit is computed
twice; a unit another run holds is left to it. The task runs in a Ray worker, a fresh process
started by the raylet (never a fork of a process that has started JAX), turns on float64 before
any JAX computation, rebuilds the experiment from its resolved config (the truths are drawn once
per worker process and cached), computes the unit with ``compute_unit`` and writes
``DIR/units/<unit id>.parquet`` atomically itself. The workers therefore need the driver's
``DIR`` on a shared file system (one whose ``flock`` reaches every node, e.g. NFSv4). The driver
appends each finished unit's line to ``DIR/timings.jsonl`` (one writer, so lines never
interleave).

A task that raises, or whose worker dies, is retried ``retries`` times. A unit that still fails
is appended to ``DIR/failed.jsonl`` (unit id, error, attempts) and reported; it has no result
file, so it stays missing: the run exits non-zero, ``moe-lora merge`` names it, and running the
same command again retries it. Rows do not depend on the process that computed them, so the
table is the local run's, bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax

from ..kinds import experiment_from_dict, manifest_entries
from . import store
from .local import (
    RunSummary,
    UnitResult,
    compute_unit,
    finish,
    release_compiled_programs,
    require_float64,
    run_units,
    shard_units,
)

#: Environment of the Ray workers: float64 from the process's first JAX call on.
WORKER_ENV = {"JAX_ENABLE_X64": "1"}

INSTALL_HINT = "pip install 'moe_lora[ray]'"


def import_ray():
    """The ``ray`` module, or a ``ValueError`` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ValueError(
            f"--backend ray needs Ray, which is not importable here ({e}); install it with: "
            f"{INSTALL_HINT}"
        ) from None
    return ray


# --------------------------------------------------------------------------------------------
# Worker side


#: Per worker process: the last experiment's shared inputs, keyed by its config.
_CONTEXTS: dict = {}


def fingerprint(exp, truths: dict) -> str:
    """The truths' summaries (atoms, weights, separations, ...) as exact JSON (floats
    round-trip)."""
    return json.dumps(exp.truth_summaries(truths), sort_keys=True)


def worker_context(raw: dict, name: str, expected: str):
    """The experiment's ``UnitContext``, built once per worker process and checked against the
    driver's truths (a worker whose truths differ, e.g. another library version, must not write).

    Args:
        raw: the resolved config (``exp.config.to_dict()``), of any experiment kind.
        name: the experiment name.
        expected: ``fingerprint`` of the truths the driver drew.

    Returns:
        The cached context (``exp.context()``).
    """
    key = json.dumps([name, raw], sort_keys=True)
    if key not in _CONTEXTS:
        exp = experiment_from_dict(raw, name=name)
        truths = exp.draw_truths()
        if fingerprint(exp, truths) != expected:
            raise RuntimeError(
                f"worker {socket.gethostname()}:{os.getpid()} drew other truths than the driver "
                "for "
                f"experiment {name!r}; check that every node runs the same moe_lora, jax and jaxlib"
            )
        _CONTEXTS.clear()
        _CONTEXTS[key] = exp.context(truths)
    return _CONTEXTS[key]


def unit_task(
    raw: dict, name: str, expected: str, unit, out: str, compute: Callable = compute_unit
) -> dict | None:
    """One Ray task: claim ``unit`` as the local backend does (``store.claim``), compute it and
    write its result file while the claim is held.

    Returns:
        Its timing record, or None when the unit was not claimed: another live run sharing
        ``out`` holds its claim, or its result file is present (so no unit is computed twice).
    """
    with store.claim(out, unit) as mine:
        if not mine:
            return None
        jax.config.update("jax_enable_x64", True)
        context = worker_context(raw, name, expected)
        cpu = time.process_time()
        frame, seconds, compiled = compute(context, unit)
        cpu = time.process_time() - cpu
        store.write_unit(out, unit, frame, store.config_hash(raw))
    release_compiled_programs()  # a Ray worker runs many units: the same limit as a local run
    return {
        "unit": unit.id,
        "fits": unit.fits,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "compiled": compiled,
        "backend": "ray",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


# --------------------------------------------------------------------------------------------
# Driver side


def _error_text(err) -> str:
    """One line for a failed task: the exception the unit raised, or Ray's own error."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    return f"{type(err).__name__}: {err}".splitlines()[0]


def compute_with_ray(
    ray,
    raw: dict,
    name: str,
    expected: str,
    out: Path,
    todo: list,
    *,
    retries: int,
    compute: Callable,
) -> Iterator[UnitResult]:
    """The Ray backend: one task per unit of ``todo``, results as the tasks finish.

    Each task claims its unit (``unit_task``), rebuilds the experiment from its resolved config
    ``raw`` and ``name`` (through the registry of kinds) and checks its truths against the
    driver's ``expected`` fingerprint. A unit whose task failed ``retries + 1`` times comes back
    with its ``error`` set; a unit another run had claimed, or had finished, does not come back.
    """
    task = ray.remote(unit_task).options(
        max_retries=retries, retry_exceptions=True, num_cpus=1, runtime_env={"env_vars": WORKER_ENV}
    )
    refs = {task.remote(raw, name, expected, u, str(out), compute): u for u in todo}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    timing = ray.get(ref)
                except ray.exceptions.RayError as e:
                    yield UnitResult(refs[ref], None, None, _error_text(e))
                    continue
                if timing is not None:  # None: claimed or finished by another run
                    yield UnitResult(refs[ref], None, timing)
    except (KeyboardInterrupt, GeneratorExit):
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def run_sweep_ray(
    exp,
    out: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    address: str | None = None,
    num_cpus: int | None = None,
    retries: int = 2,
    progress: bool = True,
    stream=None,
    compute: Callable = compute_unit,
) -> RunSummary:
    """``run_sweep`` with the units of ``shard`` computed as Ray tasks, one per unit.

    Args:
        exp: the experiment (any kind).
        out: output directory, on a file system every Ray node sees at the same path.
        shard: (i, k): only units i, i + k, ... (as ``run_sweep``).
        address: Ray cluster to connect to (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``).
            None connects to ``RAY_ADDRESS`` or a cluster started on this machine, else starts a
            local instance. If Ray is already initialised in this process, it is used as is.
        num_cpus: CPUs of a local instance started here (default: all); not with ``address``.
        retries: times a failed task is retried (exceptions and worker deaths) before its unit
            is recorded as failed.
        progress: show a progress line as tasks finish.
        stream: where progress and failures are printed (default stderr).
        compute: ``(UnitContext, Unit) -> (frame, seconds, compiled)``, run in the workers; a
            module-level function or a closure (Ray pickles it). Default ``compute_unit``.

    Returns:
        A ``RunSummary``; ``failed`` lists the failure records of this run.
    """
    require_float64("run_sweep_ray")
    if not (isinstance(retries, int) and retries >= 0):
        raise ValueError(f"--retries: expected a non-negative integer, got {retries!r}")
    if num_cpus is not None and address is not None:
        raise ValueError(
            f"num_cpus={num_cpus} sizes a local Ray instance; it cannot be combined with "
            f"address={address!r}"
        )
    ray = import_ray()
    stream = stream or sys.stderr
    out = Path(out).resolve()
    t_start = time.perf_counter()
    all_units = exp.units()
    mine = shard_units(all_units, shard)
    # A corrupt unit file counts as missing (``store.start_run`` removes it).
    todo = [u for u in mine if not store.unit_complete(out, u)]
    failed: list[dict] = []
    tried: list = []  # units this run computed or gave up on

    def keep(result: UnitResult) -> None:
        tried.append(result.unit)
        if result.error is None:
            store.record_timing(out, result.timing)
            return
        failed.append(store.record_failure(out, result.unit, result.error, attempts=retries + 1))
        print(
            f"\nunit {result.unit.id} failed after {retries + 1} attempts: {result.error}",
            file=stream,
            flush=True,
        )

    # Start Ray before this process runs any JAX computation: ray.init forks helper processes.
    started = bool(todo) and not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            include_dashboard=False,
            **({} if num_cpus is None else {"num_cpus": num_cpus}),
        )
    try:
        truths = exp.draw_truths()
        store.start_run(out, store.manifest(manifest_entries(exp, truths)), all_units)
        if todo:
            results = compute_with_ray(
                ray,
                exp.config.to_dict(),
                exp.name,
                fingerprint(exp, truths),
                out,
                todo,
                retries=retries,
                compute=compute,
            )
            run_units(results, todo, len(mine), on_result=keep, progress=progress, stream=stream)
    finally:
        if started:
            ray.shutdown()
    # Units claimed by another run sharing ``out`` count as skipped, as in ``run_sweep``.
    return finish(out, all_units, exp.key_columns, mine, tried, t_start, failed)
