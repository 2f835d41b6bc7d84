"""Sample-size sweeps: work units, resumable atomic results, shards, progress and the results table.

A sweep is a list of work units (truth, estimator, setting, n, block of replicates), in a fixed
order that depends only on the config. ``run_sweep`` computes the units of its shard that have
no result file yet and writes each unit's table to ``DIR/units/<unit id>.parquet`` atomically
(written to a temporary file, then renamed), so a run killed at any point loses at most the unit
in progress and, started again with the same arguments, resumes where it stopped. Shard i of k
takes units i, i + k, i + 2k, ... of the order; shards may write into one directory, and their
outputs merge into one table. Replicate k at size n always uses the same key, so a unit's rows do
not depend on which process or shard computed them.

``DIR/manifest.json`` holds the resolved config, seed, package and library versions, git commit
and the truths; ``DIR/results.parquet`` (and ``results.csv``) is the merged tidy table, one row
per (truth, estimator, setting, n, replicate), written once every unit is present.
``DIR/timings.jsonl`` has one line per computed unit and ``DIR/failed.jsonl`` one line per unit a
distributed backend gave up on (``moe_lora.ray_backend``); ``merge`` checks that every unit is
present and names the missing ones.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from .experiment import ConfigError, Experiment, parse_truth_label
from .model import mixture_weights
from .optimize import STOP_REASONS
from .simulate import TRACE_COUNT, Record, simulate_replicates

#: Columns that identify a row of the results table, in sort order.
KEY_COLUMNS = ["truth", "estimator", "extra", "n", "replicate"]


@dataclasses.dataclass(frozen=True)
class Unit:
    """One work unit: replicates [start, stop) of (truth, estimator, L* + extra, n)."""

    truth: str
    estimator: str
    extra: int
    n: int
    start: int
    stop: int

    @property
    def id(self) -> str:
        return f"{self.truth}__{self.estimator}__L+{self.extra}__n{self.n}__r{self.start}-{self.stop - 1}"

    @property
    def fits(self) -> int:
        return self.stop - self.start


def units(exp: Experiment) -> list[Unit]:
    """All units of an experiment, in the fixed order shards are cut from (small n first)."""
    out = []
    for n in exp.sizes:
        for truth, est in exp.pairs():
            for extra in exp.settings:
                for start in range(0, exp.replicates, exp.chunk):
                    out.append(Unit(truth, est, extra, n, start, min(start + exp.chunk, exp.replicates)))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/k"`` -> (i, k) with 0 <= i < k."""
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected i/k with integers 0 <= i < k, got {text!r}") from None
    if not 0 <= i < k:
        raise ValueError(f"--shard: expected i/k with 0 <= i < k, got {text!r}")
    return i, k


def shard_units(all_units: list[Unit], shard: tuple[int, int]) -> list[Unit]:
    i, k = shard
    return all_units[i::k]


def unit_path(out: Path, unit: Unit) -> Path:
    return Path(out) / "units" / f"{unit.id}.parquet"


# --------------------------------------------------------------------------------------------
# Manifest


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
    return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for lib in ("jax", "jaxlib", "optax", "numpy", "scipy", "pandas", "matplotlib", "pyarrow"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            out[lib] = None
    return out


def _truth_summary(truth) -> dict:
    a = truth.atoms
    return {
        "parameterization": truth.model.parameterization.name,
        "separation": float(truth.separation),
        "gate_strength": float(truth.gate_strength),
        "expert_separation": float(truth.expert_separation),
        "weights": np.asarray(mixture_weights(a.c, truth.model.spec.gating)).tolist(),
        "S": np.asarray(a.S).tolist(),
        "V": np.asarray(a.V).tolist(),
    }


def manifest(exp: Experiment, truths: dict) -> dict:
    from . import __version__

    return {
        "name": exp.name,
        "seed": exp.seed,
        "config": exp.raw,
        "package_version": __version__,
        "git_commit": _git_commit(),
        "libraries": _library_versions(),
        "x64": bool(jax.config.jax_enable_x64),
        "truths": {label: _truth_summary(t) for label, t in truths.items()},
        "units": len(units(exp)),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _temp_next_to(path: Path) -> tuple[int, str]:
    """A temporary file in ``path``'s folder (same file system: the rename is atomic), with the
    permissions of a normally created file (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = _temp_next_to(path)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _atomic_write_frame(path: Path, df: pd.DataFrame) -> None:
    fd, tmp = _temp_next_to(path)
    os.close(fd)
    try:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _json_roundtrip(x):
    return json.loads(json.dumps(x))


def write_or_check_manifest(out: Path, exp: Experiment, truths: dict) -> dict:
    """Create ``manifest.json``, or check that an existing one holds the same config."""
    path = Path(out) / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("config") != _json_roundtrip(exp.raw):
            raise ConfigError(
                f"{path} holds a different config (experiment {old.get('name')!r}); "
                "resume with the same config or write to another --out directory"
            )
        return old
    m = manifest(exp, truths)
    _atomic_write_text(path, json.dumps(m, indent=1) + "\n")
    return m


def read_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; is {out} the output directory of `moe-lora run`?")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# Records -> tidy rows


def record_frame(rec: Record, unit: Unit, exp: Experiment, truth) -> pd.DataFrame:
    """The tidy rows (one per replicate) of a unit's ``Record``."""
    R = unit.fits
    through, delta = parse_truth_label(unit.truth)
    cols: dict = {
        "experiment": [exp.name] * R,
        "truth": [unit.truth] * R,
        "through": [through] * R,
        "delta": np.full(R, np.nan if delta is None else delta),
        "estimator": [unit.estimator] * R,
        "extra": np.full(R, unit.extra, dtype=np.int64),
        "L": np.full(R, exp.components + unit.extra, dtype=np.int64),
        "L_star": np.full(R, exp.components, dtype=np.int64),
        "n": np.full(R, unit.n, dtype=np.int64),
        "replicate": np.arange(unit.start, unit.stop, dtype=np.int64),
        "sigma": np.full(R, exp.sigma),
        "truth_separation": np.full(R, float(truth.separation)),
        "truth_gate_strength": np.full(R, float(truth.gate_strength)),
        "truth_expert_separation": np.full(R, float(truth.expert_separation)),
    }
    r = jax.device_get(rec)
    for name in ("risk", "risk_truth", "grad_norm", "rel_grad", "min_weight", "D", "D_unaligned", "l2_error"):
        cols[name] = np.asarray(getattr(r, name), dtype=np.float64)
    for name in ("iterations", "restart"):
        cols[name] = np.asarray(getattr(r, name), dtype=np.int64)
    cols["stop_reason"] = [STOP_REASONS[int(s)] for s in np.asarray(r.stop_reason)]
    cols["converged"] = np.asarray(r.converged, dtype=bool)
    cols["certified"] = np.asarray(r.certified, dtype=bool)
    for name, arr in (("cell_size", r.cell_size), ("cell_mass", r.cell_mass), ("cell_parameter", r.cell_parameter),
                      ("weight", r.weights), ("cell", r.cell), ("restart_risk", r.restart_risks),
                      ("value_norm", r.value_norm)):
        arr = np.asarray(arr)
        for j in range(arr.shape[1]):
            cols[f"{name}_{j}"] = arr[:, j]
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------------------------
# Progress


class Progress:
    """Units done, fits per second and time left, on one line (a TTY) or one line per unit.

    Time left extrapolates the elapsed time by the remaining work, counted as fits x n (the
    cost of a fit grows about linearly in n; units run small n first, so a count of fits alone
    would promise far too little time).
    """

    def __init__(self, todo: list[Unit], total_units: int, stream=None):
        self.total_units = total_units
        self.done_units = total_units - len(todo)
        self.done_fits, self.done_work = 0, 0
        self.todo_work = sum(u.fits * u.n for u in todo)
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, unit: Unit, seconds: float) -> None:
        self.done_units += 1
        self.done_fits += unit.fits
        self.done_work += unit.fits * unit.n
        elapsed = time.perf_counter() - self.t0
        rate = self.done_fits / elapsed if elapsed > 0 else float("nan")
        left = elapsed * (self.todo_work - self.done_work) / self.done_work
        line = (
            f"[{self.done_units}/{self.total_units} units] {rate:.2f} fits/s, "
            f"elapsed {_fmt(elapsed)}, left ~{_fmt(left)} | {unit.id} ({seconds:.1f}s)"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
            if self.done_units == self.total_units:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------------------------
# Running and merging


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


def compute_unit(context: UnitContext, unit: Unit) -> tuple[pd.DataFrame, float, bool]:
    """Fit one unit: (its tidy rows, wall seconds, whether it compiled).

    The rows depend only on the config and the unit, not on which process computes them or
    what it computed before (replicate keys are fixed; ``moe_lora.simulate``).
    """
    exp = context.exp
    traces = sum(TRACE_COUNT.values())
    t0 = time.perf_counter()
    rec = simulate_replicates(
        exp.sim_key(unit.truth), context.truths[unit.truth], context.models[unit.estimator], unit.n, sigma=exp.sigma,
        replicates=np.arange(unit.start, unit.stop), config=exp.fit_config(unit.extra), X_eval=context.X_eval,
        design=exp.design, batch=exp.raw["fit"]["replicate_batch"],
    )
    rec = jax.block_until_ready(rec)
    seconds = time.perf_counter() - t0
    return record_frame(rec, unit, exp, context.truths[unit.truth]), seconds, sum(TRACE_COUNT.values()) > traces


def run_frame(exp: Experiment, *, progress: bool = True, stream=None) -> pd.DataFrame:
    """Run every unit of ``exp`` in this process and return the results table; writes no files.

    For notebooks and small explorations: the table is the one ``run_sweep`` writes to
    ``results.parquet`` (same rows, same order), but nothing survives an interruption. Use
    ``run_sweep`` (``moe-lora run``) for anything that takes long.

    Example:
        >>> import jax; jax.config.update("jax_enable_x64", True)
        >>> from moe_lora.experiment import Experiment
        >>> exp = Experiment.from_dict({"model": {"d": 2, "d_out": 1, "r": 1, "gate_scale": 3.0},
        ...     "data": {"sigma": 0.02, "sizes": [200], "replicates": 2}, "fit": {"extra_components": [0]}, "estimators": ["tanh"]})
        >>> df = run_frame(exp, progress=False)
        >>> len(df), list(df.estimator.unique())
        (2, ['tanh'])
    """
    if not jax.config.jax_enable_x64:
        raise ValueError("run_frame measures rates in float64; call jax.config.update('jax_enable_x64', True) first")
    context = UnitContext.of(exp)
    todo = units(exp)
    bar = Progress(todo, len(todo), stream=stream) if progress else None
    frames = []
    try:
        for u in todo:
            frame, seconds, _ = compute_unit(context, u)
            frames.append(frame)
            if bar is not None:
                bar.update(u, seconds)
    finally:
        if bar is not None and bar.done_units < bar.total_units:
            bar.close()
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


@dataclasses.dataclass
class RunSummary:
    """What one ``run_sweep`` call did."""

    computed: int
    skipped: int
    missing: list[str]
    seconds: float
    results: Path | None
    failed: list[dict] = dataclasses.field(default_factory=list)


def run_sweep(exp: Experiment, out: str | Path, *, shard: tuple[int, int] = (0, 1), progress: bool = True, stream=None) -> RunSummary:
    """Compute the units of ``shard`` that have no result file in ``out``; merge when all are present.

    Units are independent and written atomically: stop the run at any time and start it again
    with the same arguments to resume. ``out/timings.jsonl`` gets one line per computed unit
    (wall and CPU seconds of this process, whether it compiled), kept apart from the results so that those do not depend on
    the machine.
    """
    if not jax.config.jax_enable_x64:
        raise ValueError("run_sweep measures rates in float64; call jax.config.update('jax_enable_x64', True) first (the CLI does)")
    out = Path(out)
    truths = exp.draw_truths()
    write_or_check_manifest(out, exp, truths)
    mine = shard_units(units(exp), shard)
    todo = [u for u in mine if not unit_path(out, u).exists()]
    bar = Progress(todo, len(mine), stream=stream) if progress else None
    context = UnitContext.of(exp, truths)
    t_start = time.perf_counter()
    try:
        for u in todo:
            cpu = time.process_time()
            frame, seconds, compiled = compute_unit(context, u)
            cpu = time.process_time() - cpu
            _atomic_write_frame(unit_path(out, u), frame)
            record_timing(out, {"unit": u.id, "fits": u.fits, "seconds": seconds, "cpu_seconds": cpu, "compiled": compiled})
            if bar is not None:
                bar.update(u, seconds)
    finally:
        if bar is not None and bar.done_units < bar.total_units:
            bar.close()
    missing = missing_units(exp, out)
    results = None
    if not missing:
        results = write_results(exp, out)
    return RunSummary(len(todo), len(mine) - len(todo), [u.id for u in missing], time.perf_counter() - t_start, results)


def record_timing(out: str | Path, record: dict) -> None:
    """Append one computed unit's timing (a JSON object) to ``out/timings.jsonl``."""
    with open(Path(out) / "timings.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def record_failure(out: str | Path, unit: Unit, error: str, attempts: int) -> dict:
    """Append a unit that failed ``attempts`` times, with its last error, to ``out/failed.jsonl``.

    The unit keeps no result file, so it stays missing: a later run retries it, and ``merge``
    names it with this error until it succeeds.

    Returns:
        The record written.
    """
    rec = {"unit": unit.id, "error": error, "attempts": attempts,
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with open(Path(out) / "failed.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def read_failures(out: str | Path) -> dict[str, dict]:
    """Unit id -> its latest record in ``out/failed.jsonl`` (empty if there is none)."""
    path = Path(out) / "failed.jsonl"
    if not path.exists():
        return {}
    out_ = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out_[rec["unit"]] = rec
    return out_


def missing_units(exp: Experiment, out: str | Path) -> list[Unit]:
    """Units of the experiment (all shards) without a result file in ``out``."""
    return [u for u in units(exp) if not unit_path(out, u).exists()]


def merge_units(exp: Experiment, out: str | Path) -> pd.DataFrame:
    """The tidy table of every present unit, sorted by ``KEY_COLUMNS``."""
    frames = [pd.read_parquet(unit_path(out, u)) for u in units(exp) if unit_path(out, u).exists()]
    if not frames:
        raise FileNotFoundError(f"{out}: no unit results yet; run `moe-lora run` first")
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def write_results(exp: Experiment, out: str | Path, df: pd.DataFrame | None = None) -> Path:
    """Merge all units (or write the already merged ``df``) into ``results.parquet`` and ``results.csv``."""
    out = Path(out)
    df = merge_units(exp, out) if df is None else df
    path = out / "results.parquet"
    _atomic_write_frame(path, df)
    _atomic_write_frame(out / "results.csv", df)
    return path


@dataclasses.dataclass
class MergeReport:
    """What ``merge_run`` found: the units still missing (with their failure records, if any)
    and, when none is missing, the results table written."""

    name: str
    total: int
    missing: list[Unit]
    failed: dict[str, dict]
    results: Path | None


def merge_run(out: str | Path) -> MergeReport:
    """Check that every unit of the experiment in ``out/manifest.json`` has its result file, then
    merge them into ``results.parquet`` and ``results.csv``.

    Nothing is written while a unit is missing. The merged table is checked to hold exactly one
    row per (truth, estimator, setting, n, replicate) of the config.

    Args:
        out: output directory of ``moe-lora run`` (any backend, any shards).

    Returns:
        A ``MergeReport``; ``results`` is None if units are missing.
    """
    out = Path(out)
    m = read_manifest(out)
    exp = Experiment.from_dict(m["config"], name=m["name"])
    all_units = units(exp)
    missing = missing_units(exp, out)
    failures = read_failures(out)
    failed = {u.id: failures[u.id] for u in missing if u.id in failures}
    if missing:
        return MergeReport(exp.name, len(all_units), missing, failed, None)
    df = merge_units(exp, out)
    expected = sum(u.fits for u in all_units)
    if len(df) != expected or df.duplicated(KEY_COLUMNS).any():
        raise ValueError(f"{out}/units: expected {expected} distinct rows for {len(all_units)} units, got {len(df)} rows "
                         f"({int(df.duplicated(KEY_COLUMNS).sum())} duplicated); were units of another config copied in?")
    return MergeReport(exp.name, len(all_units), [], {}, write_results(exp, out, df))


def load_results(out: str | Path) -> tuple[pd.DataFrame, dict]:
    """(table, manifest) of an output directory; merges units if ``results.parquet`` is absent."""
    out = Path(out)
    m = read_manifest(out)
    path = out / "results.parquet"
    if path.exists():
        return pd.read_parquet(path), m
    exp = Experiment.from_dict(m["config"], name=m["name"])
    missing = missing_units(exp, out)
    if missing:
        print(f"warning: {len(missing)} of {m['units']} units missing in {out}; using the present ones", file=sys.stderr)
    return merge_units(exp, out), m
