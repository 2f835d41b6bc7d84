"""The contract of an experiment kind, and the registry of kinds keyed by a config's ``kind``.

An experiment kind is what ``moe-lora run``, ``merge``, ``rates`` and ``plot`` (and the run
layer, ``moe_lora.runs``) need of an experiment, and nothing more (docs/architecture.md):

* ``units()``: its work units in a fixed order (shards are cut from it), each with an ``id``
  (its result file's name), ``fits`` and ``n`` (the run loop weighs a unit by fits x n);
* ``draw_truths()`` and ``truth_summaries(truths)``: what the manifest records and what Ray
  workers check they drew too;
* ``context(truths)``: what every unit shares; ``context.compute(unit)`` fits one unit in this
  process and returns (its table rows, wall seconds, whether it compiled);
* ``key_columns``: the columns that identify a row of its table, in sort order;
* ``summaries(df)``, ``format_summaries(summaries)`` and ``figures(df, summaries)``: file name
  -> summary table, the text ``moe-lora rates`` prints, and figure stem -> matplotlib Figure of
  a finished table (``moe-lora rates`` and ``plot``);
* ``describe()``: one line on its units; ``kind``, ``name``, ``seed`` and ``config`` (with
  ``to_dict()``, the resolved config that ``from_dict`` reads back).

Two kinds ship: ``sweep`` (``moe_lora.experiment.Experiment``, the default) and
``attention_head`` (``moe_lora.head_study.HeadStudy``). A kind registers itself with
``register``; a built-in kind's module is imported the first time its name is asked for, so
importing this module imports no kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from .config import ConfigError, read_toml


@runtime_checkable
class WorkUnit(Protocol):
    """One unit of work: ``fits`` replicates at sample size ``n``, stored under ``id``."""

    @property
    def id(self) -> str: ...

    @property
    def fits(self) -> int: ...

    @property
    def n(self) -> int: ...


@runtime_checkable
class UnitContext(Protocol):
    """What every unit of one experiment shares; computes one unit in this process."""

    def compute(self, unit: Any) -> tuple[pd.DataFrame, float, bool]:
        """(the unit's table rows, wall seconds, whether it compiled)."""
        ...


@runtime_checkable
class ExperimentKind(Protocol):
    """What an experiment of any kind provides to the run layer and the command line."""

    kind: str
    key_columns: tuple[str, ...]

    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def config(self) -> Any:
        """The checked config; ``config.to_dict()`` is the resolved TOML layout."""
        ...

    def units(self) -> list: ...

    def draw_truths(self) -> dict: ...

    def truth_summaries(self, truths: dict) -> dict: ...

    def context(self, truths: dict | None = None) -> UnitContext: ...

    def describe(self) -> str: ...

    def summaries(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]: ...

    def format_summaries(self, summaries: dict[str, pd.DataFrame]) -> str: ...

    def figures(self, df: pd.DataFrame, summaries: dict[str, pd.DataFrame]) -> dict: ...


#: Built-in kinds: ``kind`` -> ``"module:class"`` of the class that implements it; the module is
#: imported on first use (it registers the class, or the class is registered then).
BUILTIN = {
    "sweep": "moe_lora.experiment:Experiment",
    "attention_head": "moe_lora.head_study:HeadStudy",
}
#: The kind of a config without a ``kind`` key.
DEFAULT_KIND = "sweep"

_REGISTRY: dict[str, Callable[..., ExperimentKind]] = {}


def register(cls):
    """Class decorator: register ``cls`` (with a ``kind`` name and ``from_dict(raw, name)``)."""
    _REGISTRY[cls.kind] = cls
    return cls


def kind_names() -> tuple[str, ...]:
    """Every kind a config may name: the built-in and the registered ones."""
    return tuple(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def kind_class(kind: str):
    """The class of experiment kind ``kind`` (imports a built-in kind's module on first use)."""
    if kind not in _REGISTRY and kind in BUILTIN:
        module, cls = BUILTIN[kind].split(":")
        _REGISTRY.setdefault(kind, getattr(importlib.import_module(module), cls))
    if kind not in _REGISTRY:
        raise ConfigError(
            f"kind: unknown experiment kind {kind!r}; expected one of {list(kind_names())}"
        )
    return _REGISTRY[kind]


def experiment_from_dict(raw: dict, name: str = "experiment") -> ExperimentKind:
    """The experiment a config dict describes, of the kind its ``kind`` key names (default
    sweep)."""
    kind = raw.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise ConfigError(f"kind: expected a string, got {kind!r} ({type(kind).__name__})")
    return kind_class(kind).from_dict(raw, name=name)


def manifest_entries(exp: ExperimentKind, truths: dict) -> dict:
    """What an experiment contributes to its run's ``manifest.json``: name, seed, kind, the
    resolved config, the truths' summaries and the number of units (``moe_lora.runs.store``
    adds the provenance)."""
    return {
        "name": exp.name,
        "seed": exp.seed,
        "kind": exp.kind,
        "config": exp.config.to_dict(),
        "truths": exp.truth_summaries(truths),
        "units": len(exp.units()),
    }


def load_experiment(path: str | Path) -> ExperimentKind:
    """Read and check a TOML config into its experiment; errors name the file and the key."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return experiment_from_dict(raw, name=path.stem)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
