"""A run directory: its manifest, the atomic result file of every unit, logs, and the merge.

Layout of ``DIR``:

* ``manifest.json``: the resolved config, seed, package and library versions, git commit
  (``-dirty`` if the tree had changes), float64 flag and the truths (atoms, weights,
  separations); a run into a ``DIR`` holding another config is refused;
* ``units/<unit id>.parquet``: one file per computed unit, written atomically (a temporary file
  in the same folder, then a rename), so an interrupted run loses at most the unit in progress;
* ``timings.jsonl``: one line per computed unit (wall and CPU seconds, whether it compiled);
* ``failed.jsonl``: one line per unit a distributed backend gave up on;
* ``results.parquet`` and ``results.csv``: the merged table, written once every unit is present.

Every function here is public: the local runner and the Ray backend (``moe_lora.runs``) share it.
None takes an experiment: they take a manifest (a dict), units (anything with an ``id``) and the
table's key columns; only ``experiment_of`` builds one, from a manifest, through the registry of
kinds (``moe_lora.kinds``).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import pandas as pd

from ..config import ConfigError, manifest_config
from ..kinds import experiment_from_dict, manifest_entries
from ..table import sort_rows
from ..truth import truth_summary as truth_summary

_LIBRARIES = ("jax", "jaxlib", "optax", "numpy", "scipy", "pandas", "matplotlib", "pyarrow")


# --------------------------------------------------------------------------------------------
# Atomic files


def _temp_next_to(path: Path) -> tuple[int, str]:
    """A temporary file in ``path``'s folder (same file system: the rename is atomic), with the
    permissions of a normally created file (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    fd, tmp = _temp_next_to(Path(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_frame(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` to ``path`` (``.csv`` or parquet) atomically."""
    path = Path(path)
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


def unit_path(out: str | Path, unit) -> Path:
    """The result file of ``unit`` in run directory ``out``."""
    return Path(out) / "units" / f"{unit.id}.parquet"


def write_unit(out: str | Path, unit, frame: pd.DataFrame) -> None:
    """Store a computed unit's rows atomically."""
    write_frame(unit_path(out, unit), frame)


# --------------------------------------------------------------------------------------------
# Manifest


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if res.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def library_versions() -> dict:
    """Python's and the numerical libraries' versions (None for one that is not installed)."""
    out = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    return out


def provenance() -> dict:
    """Package version, git commit, library versions and the float64 flag of this process."""
    from .. import __version__

    return {
        "package_version": __version__,
        "git_commit": _git_commit(),
        "libraries": library_versions(),
        "x64": bool(jax.config.jax_enable_x64),
    }


def manifest(entries: dict) -> dict:
    """The manifest of a run: the experiment's ``entries`` (``moe_lora.kinds.manifest_entries``:
    name, seed, kind, config, truths, units) with this process's provenance and the time."""
    first = {k: entries[k] for k in ("name", "seed", "kind", "config")}
    return {
        **first,
        **provenance(),
        **{k: v for k, v in entries.items() if k not in first},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def read_manifest(out: str | Path) -> dict:
    """The manifest of run directory ``out``."""
    path = Path(out) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no manifest; is {out} the output directory of `moe-lora run`?"
        )
    return json.loads(path.read_text())


def experiment_of(m: dict):
    """The experiment a manifest was written for."""
    return experiment_from_dict(manifest_config(m["config"]), name=m["name"])


def computed_part(config):
    """The part of a config that decides the results: all but ``[rates]`` (the reading of them)."""
    return dataclasses.replace(config, rates=None) if hasattr(config, "rates") else config


def write_or_check(out: str | Path, m: dict) -> dict:
    """Create ``manifest.json`` holding the manifest ``m``, or check that an existing one holds the
    same config (both read back through their kind); a config that differs only in ``[rates]``
    (fit range, statistic, verdict rules) replaces the recorded one."""
    path = Path(out) / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        before, config = experiment_of(old).config, experiment_of(m).config
        if computed_part(before) != computed_part(config):
            raise ConfigError(
                f"{path} holds a different config (experiment {old.get('name')!r}); "
                "resume with the same config or write to another --out directory"
            )
        if before != config:
            # Only [rates] changed: how the table is read, not what was computed. Record the new
            # reading.
            old["config"] = m["config"]
            write_text(path, json.dumps(old, indent=1) + "\n")
        return old
    write_text(path, json.dumps(m, indent=1) + "\n")
    return m


def write_or_check_manifest(out: str | Path, exp, truths: dict) -> dict:
    """``write_or_check`` with the manifest of ``exp`` and its drawn ``truths`` (for callers that
    hold the experiment, such as ``moe_lora.runs.bound``)."""
    return write_or_check(out, manifest(manifest_entries(exp, truths)))


# --------------------------------------------------------------------------------------------
# Logs


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def record_timing(out: str | Path, record: dict) -> None:
    """Append one computed unit's timing (a JSON object) to ``out/timings.jsonl``."""
    _append(Path(out) / "timings.jsonl", record)


def record_failure(out: str | Path, unit, error: str, attempts: int) -> dict:
    """Append a unit that failed ``attempts`` times, with its last error, to ``out/failed.jsonl``.

    The unit keeps no result file, so it stays missing: a later run retries it, and ``merge``
    names it with this error until it succeeds.

    Returns:
        The record written.
    """
    rec = {
        "unit": unit.id,
        "error": error,
        "attempts": attempts,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    _append(Path(out) / "failed.jsonl", rec)
    return rec


def read_failures(out: str | Path) -> dict[str, dict]:
    """Unit id -> its latest record in ``out/failed.jsonl`` (empty if there is none)."""
    path = Path(out) / "failed.jsonl"
    if not path.exists():
        return {}
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {rec["unit"]: rec for rec in lines}


# --------------------------------------------------------------------------------------------
# Merge


def missing_units(all_units: list, out: str | Path) -> list:
    """The units of ``all_units`` (every shard's) without a result file in ``out``."""
    return [u for u in all_units if not unit_path(out, u).exists()]


def merge_units(all_units: list, key_columns, out: str | Path) -> pd.DataFrame:
    """The table of every present unit, in canonical row order (``key_columns``)."""
    frames = [pd.read_parquet(unit_path(out, u)) for u in all_units if unit_path(out, u).exists()]
    if not frames:
        raise FileNotFoundError(f"{out}: no unit results yet; run `moe-lora run` first")
    return sort_rows(pd.concat(frames, ignore_index=True), key_columns)


def write_results(
    all_units: list, key_columns, out: str | Path, df: pd.DataFrame | None = None
) -> Path:
    """Merge all units (or write the already merged ``df``) into ``results.parquet`` and
    ``results.csv``."""
    out = Path(out)
    df = merge_units(all_units, key_columns, out) if df is None else df
    write_frame(out / "results.parquet", df)
    write_frame(out / "results.csv", df)
    return out / "results.parquet"


@dataclasses.dataclass
class MergeReport:
    """What ``merge_run`` found: the units still missing (with their failure records, if any)
    and, when none is missing, the results table written."""

    name: str
    total: int
    missing: list
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
    exp = experiment_of(read_manifest(out))
    all_units, keys = exp.units(), exp.key_columns
    missing = missing_units(all_units, out)
    failures = read_failures(out)
    if missing:
        return MergeReport(
            exp.name,
            len(all_units),
            missing,
            {u.id: failures[u.id] for u in missing if u.id in failures},
            None,
        )
    df = merge_units(all_units, keys, out)
    expected = sum(u.fits for u in all_units)
    duplicated = int(df.duplicated(list(keys)).sum())
    if len(df) != expected or duplicated:
        raise ValueError(
            f"{out}/units: expected {expected} distinct rows for {len(all_units)} units, got "
            f"{len(df)} rows "
            f"({duplicated} duplicated); were units of another config copied in?"
        )
    return MergeReport(exp.name, len(all_units), [], {}, write_results(all_units, keys, out, df))


def load_results(out: str | Path) -> tuple[pd.DataFrame, dict]:
    """(table, manifest) of a run directory; merges the present units if ``results.parquet`` is
    absent."""
    out = Path(out)
    m = read_manifest(out)
    path = out / "results.parquet"
    if path.exists():
        return pd.read_parquet(path), m
    exp = experiment_of(m)
    all_units = exp.units()
    missing = missing_units(all_units, out)
    if missing:
        print(
            f"warning: {len(missing)} of {m['units']} units missing in {out}; using the present "
            "ones",
            file=sys.stderr,
        )
    return merge_units(all_units, exp.key_columns, out), m
