"""A run directory: its manifest, the atomic result file of every unit, logs, and the merge.

Layout of ``DIR``:

* ``manifest.json``: the resolved config, seed, package and library versions, git commit
  (``-dirty`` if the tree had changes), float64 flag and the truths (atoms, weights,
  separations); a run into a ``DIR`` holding another config is refused;
* ``units/<unit id>.parquet``: one file per computed unit, written atomically (a temporary file
  in the same folder, then a rename), so an interrupted run loses at most the unit in progress;
  its parquet metadata records ``config_hash`` (``config_hash``: the part of the config that
  changes numbers), and a run refuses a unit file whose hash differs from its config's;
* ``units/<unit id>.lock``: the claim of a unit being computed (an ``flock``, released when its
  process ends, however it ends), so two runs into one directory never compute a unit twice;
* ``.lock``: held while the manifest is checked or written and while the table is merged;
* ``timings.jsonl``: one line per computed unit (wall and CPU seconds, whether it compiled);
* ``failed.jsonl``: one line per unit a distributed backend gave up on;
* ``results.parquet`` and ``results.csv``: the merged table, written once every unit is present
  and each records the manifest's config hash (``refuse_foreign_units``).

Every function here is public: the local runner and the Ray backend (``moe_lora.runs``) share it.
None takes an experiment: they take a manifest (a dict), units (anything with an ``id``) and the
table's key columns; only ``experiment_of`` builds one, from a manifest, through the registry of
kinds (``moe_lora.kinds``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


#: Parquet metadata key of a unit file's config hash.
HASH_KEY = b"moe_lora.config_hash"
#: Keys of a resolved config that change no number of the table (``[rates]`` reads the table).
_NOT_COMPUTED = ("name", "description", "rates")


def config_hash(config: dict) -> str:
    """SHA-256 (hex, 16 characters) of the part of a resolved config (``config.to_dict()``, any
    kind) that changes the numbers of the table: all but ``name``, ``description`` and
    ``[rates]``.

    >>> config_hash({"seed": 0, "name": "a"}) == config_hash({"seed": 0, "name": "b"})
    True
    >>> config_hash({"seed": 0}) == config_hash({"seed": 1})
    False
    """
    computed = {k: v for k, v in config.items() if k not in _NOT_COMPUTED}
    text = json.dumps(computed, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_unit(out: str | Path, unit, frame: pd.DataFrame, config_hash: str | None = None) -> None:
    """Store a computed unit's rows atomically, with the hash of the config that made them in the
    file's metadata."""
    path = unit_path(out, unit)
    if config_hash is None:
        write_frame(path, frame)
        return
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), HASH_KEY: config_hash.encode()}
    )
    fd, tmp = _temp_next_to(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def unit_hash(path: str | Path) -> str | None:
    """The config hash recorded in a unit file (None for files written before 0.2.0).

    Raises:
        ValueError: the file is not a complete parquet file (corrupt or half-written).
    """
    try:
        metadata = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such unit file") from None
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    value = metadata.get(HASH_KEY)
    return None if value is None else value.decode()


def unit_complete(out: str | Path, unit) -> bool:
    """Whether ``unit``'s result file is present and a complete parquet file."""
    try:
        unit_hash(unit_path(out, unit))
    except ValueError:
        return False
    return True


def check_units(out: str | Path, all_units: list, expected: str, *, manifest_was_there: bool):
    """Check the present unit files of ``out`` before a run: remove corrupt or half-written ones
    (they are computed again), refuse any whose config hash differs from ``expected``.

    A unit file without a hash (written before 0.2.0) is accepted only when the manifest was
    already there (it was checked against the config); without one nothing tells which config made
    it.

    Returns:
        The paths removed as corrupt.

    Raises:
        ConfigError: a unit written for another config, or without a hash and without manifest.
    """
    removed, other, unhashed = [], [], []
    for u in all_units:
        path = unit_path(out, u)
        if not path.exists():
            continue
        try:
            h = unit_hash(path)
        except ValueError:
            path.unlink(missing_ok=True)
            removed.append(path)
            continue
        if h is None:
            unhashed.append(path)
        elif h != expected:
            other.append(path)
    if other:
        raise ConfigError(
            f"{out}: {len(other)} unit files were computed with another config (config hash "
            f"{unit_hash(other[0])} in {other[0].name}, this config's is {expected}); "
            "resume with the config that made them or write to another --out directory"
        )
    if unhashed and not manifest_was_there:
        raise ConfigError(
            f"{out}: {len(unhashed)} unit files without a config hash (written before 0.2.0, "
            f"e.g. {unhashed[0].name}) and no manifest.json to tell which config made them; "
            "restore the manifest or write to another --out directory"
        )
    for path in removed:
        print(f"warning: {path}: corrupt or half-written; computing it again", file=sys.stderr)
    return removed


def manifest_hash(m: dict) -> str:
    """The config hash every unit file of the run with manifest ``m`` must record."""
    return config_hash(experiment_of(m).config.to_dict())


def refuse_foreign_units(out: str | Path, all_units: list, expected: str) -> None:
    """Refuse to merge the unit files of ``out`` if one was computed with another config: its
    recorded config hash is not ``expected`` (a shard or unit copied in from another run). Unit
    files without a hash (written before 0.2.0) pass: the manifest present vouches for them.

    Raises:
        ConfigError: naming the first such file, its hash and the expected one.
        ValueError: a unit file is not a complete parquet file (naming it).
    """
    for u in all_units:
        path = unit_path(out, u)
        if not path.exists():
            continue
        recorded = unit_hash(path)
        if recorded is not None and recorded != expected:
            raise ConfigError(
                f"{path}: computed with config hash {recorded}, expected {expected} (the config "
                f"of {Path(out) / 'manifest.json'}); a unit of another config cannot be merged: "
                "remove it, or merge it in the run directory of its own config"
            )


# --------------------------------------------------------------------------------------------
# Locks and claims


@contextlib.contextmanager
def directory_lock(out: str | Path) -> Iterator[None]:
    """Hold ``out/.lock`` (an exclusive ``flock``; waits for another run to release it)."""
    with _flock(Path(out) / ".lock", blocking=True) as held:
        assert held
        yield


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent); yields whether it is held.

    A claim's file is removed by its holder when it lets go, so a process that opened the file
    just before may then lock a file no longer at ``path`` while a third locks a new one there:
    the lock counts only if ``path`` still names the locked file, else it is taken again.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield True
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # a removed claim file: lock the one at ``path`` now
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def claim(out: str | Path, unit) -> Iterator[bool]:
    """Claim ``unit`` of run directory ``out`` for this process, the one way every backend claims
    a unit (this process's loop, ``claimed``; a Ray task, ``moe_lora.runs.ray.unit_task``).

    Yields True while this process holds ``units/<id>.lock`` (an exclusive ``flock``) and the
    unit has no result file: compute the unit and write its result inside the ``with``. Yields
    False when another live process holds the claim or the result file is present: leave the
    unit alone. The claim is released (and its file removed) when the ``with`` ends, and by the
    system when its process dies, however it dies.
    """
    lock = Path(out) / "units" / f"{unit.id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _flock(lock, blocking=False) as held:
        if not held or unit_path(out, unit).exists():
            yield False
            return
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)


def claimed(out: str | Path, todo: list) -> Iterator:
    """The units of ``todo`` this process claims (``claim``), one at a time: each is yielded while
    its claim is held, and only if no other live process holds it and its result file is still
    absent. The claim is released when the next unit is asked for, so the caller writes a unit's
    result before asking for the next one."""
    for u in todo:
        with claim(out, u) as mine:
            if mine:
                yield u


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Remove the temporary files a killed writer left in ``out/units``: those of units whose
    claim no live process holds. Call it holding ``directory_lock`` (which guards the temporary
    files of the manifest and the merged table, also removed here)."""
    out, removed = Path(out), []
    for tmp in sorted((out / "units").glob(".*.tmp")):
        unit_id = tmp.name[1:].split(".parquet.")[0]
        with _flock(out / "units" / f"{unit_id}.lock", blocking=False) as free:
            if free and tmp.exists():
                tmp.unlink()
                removed.append(tmp)
    for name in ("manifest.json", "results.parquet", "results.csv"):  # written under the lock
        for tmp in sorted(out.glob(f".{name}.*.tmp")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# --------------------------------------------------------------------------------------------
# Manifest


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)


def _git_commit() -> str | None:
    """The commit of moe_lora's own source tree: only if the package's folder is ``moe_lora/``
    at the top of a git work tree (an editable install of the repository); None otherwise, e.g.
    for a package installed into a ``.venv`` inside another project's repository."""
    here = package = Path(__file__).resolve().parents[1]
    try:
        top = _git(["rev-parse", "--show-toplevel"], here)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() / "moe_lora" != package:
            return None
        res = _git(["rev-parse", "HEAD"], here)
        if res.returncode != 0:
            return None
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], here)
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


def package_version() -> str:
    """moe_lora's version, from its installed metadata (setup.cfg's ``version``); ``0+unknown``
    when the package runs from a source tree that was never installed."""
    try:
        return importlib.metadata.version("moe_lora")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def provenance() -> dict:
    """Package version, git commit (None unless moe_lora runs from its own git tree), library
    versions and the float64 flag of this process."""
    return {
        "package_version": package_version(),
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


#: Keys every manifest has (older ones included).
MANIFEST_KEYS = ("name", "seed", "config")


def read_manifest(out: str | Path) -> dict:
    """The manifest of run directory ``out``.

    Raises:
        FileNotFoundError: ``out`` has no manifest.
        ConfigError: the manifest is not JSON or lacks a key (naming the file).
    """
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest; is {out} the output directory of `moe-lora run`?"
        )
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); restore it or start a new run") from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(m, dict) or k not in m]
    if missing or not isinstance(m["config"], dict):
        raise ConfigError(
            f"{path}: not a manifest of `moe-lora run` (missing keys {missing or ['config']}); "
            "restore it or start a new run"
        )
    return m


def experiment_of(m: dict):
    """The experiment a manifest was written for."""
    return experiment_from_dict(manifest_config(m["config"]), name=m["name"])


def computed_part(config):
    """The part of a config that decides the results: all but ``[rates]`` (the reading of them)."""
    return dataclasses.replace(config, rates=None) if hasattr(config, "rates") else config


def _flat(d, prefix: str = "") -> dict:
    """A nested dict as dotted keys -> values."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def differing_keys(before: dict, after: dict) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, in order.

    >>> differing_keys({"data": {"sigma": 0.1, "n": 2}}, {"data": {"sigma": 0.2, "n": 2}})
    ['data.sigma']
    """
    a, b = _flat(before), _flat(after)
    return [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def _describe_differences(before: dict, after: dict, limit: int = 6) -> str:
    a, b = _flat(before), _flat(after)
    keys = differing_keys(before, after)
    shown = [f"{k}: {a.get(k, '<absent>')!r} recorded, {b.get(k, '<absent>')!r} now" for k in keys]
    more = f"; and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown[:limit]) + more


def write_or_check(out: str | Path, m: dict) -> dict:
    """Create ``manifest.json`` holding the manifest ``m``, or check that an existing one holds the
    same config, ``[rates]`` included (both read back through their kind, so that a manifest of an
    older version with fewer defaults compares equal). The verdict rules are recorded when a run
    first starts: a resume with other rules is refused, like one with another computation
    (``moe-lora verdicts --config`` applies other rules to a finished run).

    Raises:
        ConfigError: the directory holds another config; the message names the keys that differ.
    """
    path = Path(out) / "manifest.json"
    if path.exists():
        old = read_manifest(out)
        try:
            before = experiment_of(old).config.to_dict()
        except ConfigError as e:
            raise ConfigError(f"{path}: the recorded config no longer reads: {e}") from None
        config = experiment_of(m).config.to_dict()
        if before != config:
            raise ConfigError(
                f"{path} holds a different config (experiment {old.get('name')!r}): "
                f"{_describe_differences(before, config)}; resume with the same config or write "
                "to another --out directory"
            )
        return old
    write_text(path, json.dumps(m, indent=1) + "\n")
    return m


def prepare_directory(out: str | Path) -> Path:
    """Create run directory ``out`` (and ``out/units``); a path that is a file, or a folder that
    cannot be written, is a ``ConfigError`` naming it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file, expected a run directory")
    try:
        (out / "units").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the run directory ({e.strerror})") from None
    for folder in (out, out / "units"):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: {folder} is not writable")
    return out


def start_run(out: str | Path, m: dict, all_units: list) -> dict:
    """Everything a run does to its directory before computing, under ``directory_lock`` (so two
    runs cannot race past the check): create it, write or check the manifest ``m``, remove the
    temporary files of killed writers, check the present unit files (``check_units``).

    Returns:
        The manifest in force (the recorded one on a resume).
    """
    out = prepare_directory(out)
    with directory_lock(out):
        was_there = (out / "manifest.json").exists()
        m = write_or_check(out, m)
        remove_stale_temporaries(out)
        check_units(out, all_units, manifest_hash(m), manifest_was_there=was_there)
    return m


def write_or_check_manifest(out: str | Path, exp, truths: dict) -> dict:
    """``write_or_check`` with the manifest of ``exp`` and its drawn ``truths`` (for callers that
    hold the experiment, such as ``moe_lora.bound_stage``)."""
    return write_or_check(out, manifest(manifest_entries(exp, truths)))


# --------------------------------------------------------------------------------------------
# Logs


def _append(path: Path, record: dict) -> None:
    """Append one JSON line; a last line left half-written by a killed process is ended first,
    so that it spoils only itself."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            ended = f.read(1) == b"\n"
        else:
            ended = True
        f.write((("" if ended else "\n") + json.dumps(record) + "\n").encode())


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log; a line that is not a JSON object (one left half-written
    by a killed process) is skipped with a warning naming the file and the line."""
    records = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            warning = f"warning: {path}:{i}: not a JSON record (half-written?); skipped"
            print(warning, file=sys.stderr)
            continue
        records.append(rec)
    return records


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
    return {rec["unit"]: rec for rec in read_jsonl(path) if "unit" in rec}


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


def is_partial(out: str | Path) -> bool:
    """Whether run directory ``out`` has no merged table and misses units."""
    out = Path(out)
    if (out / "results.parquet").exists():
        return False
    return bool(missing_units(experiment_of(read_manifest(out)).units(), out))


def merge_run(out: str | Path) -> MergeReport:
    """Check that every unit of the experiment in ``out/manifest.json`` has its result file, then
    merge them into ``results.parquet`` and ``results.csv``.

    Nothing is written while a unit is missing. A unit file computed with another config (its
    recorded config hash differs from the manifest's config's) is refused
    (``refuse_foreign_units``), and the merged table is checked to hold exactly one row per
    (truth, estimator, setting, n, replicate) of the config.

    Args:
        out: output directory of ``moe-lora run`` (any backend, any shards).

    Returns:
        A ``MergeReport``; ``results`` is None if units are missing.

    Raises:
        ConfigError: a unit file of another config, naming it and both hashes.
    """
    m = read_manifest(out)
    exp = experiment_of(m)
    all_units, keys = exp.units(), exp.key_columns
    refuse_foreign_units(out, all_units, manifest_hash(m))
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


def load_results(out: str | Path, *, partial: bool = True) -> tuple[pd.DataFrame, dict]:
    """(table, manifest) of a run directory; merges the present units if ``results.parquet`` is
    absent.

    Args:
        out: the run directory.
        partial: accept a run with missing units (the default: the table of the present ones,
            with a warning); False refuses such a run (``moe-lora rates`` and ``plot`` without
            ``--partial``).

    Raises:
        PartialRunError: units are missing and ``partial`` is false.
    """
    out = Path(out)
    m = read_manifest(out)
    path = out / "results.parquet"
    if path.exists():
        return with_recorded_keys(pd.read_parquet(path), m), m
    exp = experiment_of(m)
    all_units = exp.units()
    refuse_foreign_units(out, all_units, manifest_hash(m))
    missing = missing_units(all_units, out)
    if missing and not partial:
        raise PartialRunError(
            f"{out}: {len(missing)} of {len(all_units)} units missing; finish the run (`moe-lora "
            "run` again) or pass --partial to use the present ones, marked PARTIAL"
        )
    if missing:
        print(
            f"warning: {len(missing)} of {len(all_units)} units missing in {out}; using the "
            "present ones (PARTIAL)",
            file=sys.stderr,
        )
    return merge_units(all_units, exp.key_columns, out), m


def with_recorded_keys(df: pd.DataFrame, m: dict) -> pd.DataFrame:
    """The table of a run made before one of its kind's key columns existed, with that column
    filled from the manifest's value of the same name (a sweep's ``seed``: a run of one seed is
    the slice of that seed of a study)."""
    keys = experiment_of(m).key_columns
    for column in keys:
        if column not in df and column in m:
            at = df.columns.get_loc("experiment") + 1 if "experiment" in df else 0
            df.insert(at, column, m[column])
    return df


class PartialRunError(ValueError):
    """A run with missing units, read where a finished one is needed."""
