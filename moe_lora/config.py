"""Experiment configs: a TOML file read into frozen, typed sections, each checked once.

A config has top-level keys (``name``, ``description``, ``seed``, ``estimators``) and the
sections ``[model]``, ``[truth]``, ``[data]``, ``[fit]``, ``[execution]``, ``[rates]`` and the
optional ``[minimax]``. Each section is a frozen dataclass whose fields are its keys; reading a
section checks every key's type, fills the defaults, builds the domain objects the section
describes (``ModelSpec``, ``Design``, ``LevenbergMarquardt``, ``InitConfig``, ``Vanilla``) and
turns their ``FieldError`` into a ``ConfigError`` that names the config key. So every error
names its key by construction (``data.sizes: ...``, ``fit.damping: ...``) and no check of a
domain object is written twice. A key's default is read from the domain object it builds
(``default_of``), so it is written once, there.

The section framework is public, for every kind's schema (``moe_lora.head_study``): ``Section``
(parse, ``fail``, ``build``), ``key`` (a key's types and default), ``check_type``, ``parse_sizes``,
``parse_grid``, ``read_toml`` and the error, ``ConfigError``.

Three size knobs, three names (the old names are still read, with a ``FutureWarning``):

* ``execution.replicates_per_unit`` (was ``data.chunk``): replicates in one work unit, the
  grain of resume, shards and Ray tasks; default all replicates;
* ``execution.replicates_per_batch`` (was ``fit.replicate_batch``): replicates vmapped together
  inside a unit (default 1);
* ``fit.rows_per_chunk`` (was ``fit.chunk_rows``): data rows per chunk of J^T J in
  Levenberg-Marquardt (default 16384), which bounds memory at large n.

Example:
    >>> sizes = {"min": 100, "max": 1000, "count": 3}
    >>> cfg = Config.from_dict({"estimators": ["tanh"], "model": {"d": 2},
    ...                         "data": {"sigma": 0.02, "sizes": sizes, "replicates": 4}})
    >>> cfg.data.sizes, cfg.replicates_per_unit, cfg.model.spec.d
    ((100, 316, 1000), 4, 2)
    >>> Config.from_dict({"estimators": ["tanh"], "model": {"d": 2},
    ...                   "data": {"sigma": -1.0, "sizes": [100], "replicates": 4}})
    Traceback (most recent call last):
    ...
    moe_lora.config.ConfigError: data.sigma: sigma must be positive and finite, got -1.0
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import math
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import checks
from .fit import JACOBIANS, SCREENS, STARTS, FitConfig, InitConfig, Screen
from .model import FieldError, ModelSpec
from .optimize import LevenbergMarquardt
from .parameterization import Vanilla
from .slopes import STATISTICS, SlopeSettings
from .truth import Design, draw_truth
from .verdicts import check_reference

#: Estimator names a config may use, in the order that fixes their keys (``moe_lora.experiment``).
ESTIMATORS = ("vanilla", "linear", "tanh", "sigmoid", "gelu", "relu")

_NUM = (int, float)
_REQUIRED = dataclasses.MISSING


class ConfigError(ValueError):
    """A bad experiment config; the message names the offending key."""


#: The largest sample size (``data.sizes``, ``data.n_eval``, a study's sizes) a config may ask
#: for. A replicate holds its n inputs and outputs, the residual and a chunk of the Jacobian in
#: float64, about 100 bytes per row at d = 2 before the optimizer's copies, times the replicates
#: vmapped together: 10^8 rows is about 10 GB per replicate, the most a workstation holds; and
#: XLA indexes arrays with 32-bit integers, so n must stay far below 2^31 whatever the memory.
MAX_N = 10**8
#: Why: said in every error about ``MAX_N``.
_WHY_MAX_N = "about 10 GB of float64 rows per replicate, and XLA's 32-bit array indices"
#: The most replicates (or seeds) a config may ask for: each is one fit per (truth, estimator,
#: setting, n) and one row of the table; 10^6 fits of a cell are already CPU-months.
MAX_REPLICATES = 10**6
#: Seeds are 0 <= seed < 2^63: ``jax.random.key`` takes a 64-bit signed integer.
MAX_SEED = 2**63 - 1
#: A run name is a single, safe path component: ``runs/<name>`` and ``figures/data/<name>``.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name) -> str:
    """Refuse a run ``name`` that is not a single safe path component (letters, digits, ``.``,
    ``_``, ``-``; not starting with ``.``; at most 100 characters).

    >>> check_name("quick_s0")
    'quick_s0'
    >>> check_name("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    moe_lora.config.ConfigError: name: expected a single path component ..., got '../x'
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            "name: expected a single path component of letters, digits, '.', '_' and '-' (not "
            f"starting with '.' or '-', at most 100 characters), got {name!r}"
        )
    return name


def check_seed(seed) -> int:
    """Refuse a seed outside 0 <= seed <= 2^63 - 1 (what ``jax.random.key`` takes)."""
    check_type("seed", seed, (int,))
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed: expected an integer in [0, 2^63 - 1], got {seed}")
    return seed


def unknown_key(where: str, key: str, known) -> ConfigError:
    """The error of an unknown key, with the closest known key when one is near.

    >>> str(unknown_key("data", "sigam", ["sigma", "sizes"]))
    "data.sigam: unknown key; did you mean 'sigma'? Expected one of ['sigma', 'sizes']"
    """
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? Expected" if close else "expected"
    prefix = f"{where}.{key}: unknown key" if where else f"{key}: unknown key at top level"
    return ConfigError(f"{prefix}; {hint} one of {sorted(known)}")


def default_of(owner, name: str):
    """The default of field ``name`` of the dataclass ``owner``, or of keyword ``name`` of the
    function ``owner``: a section key's default, read from the domain object it configures.

    >>> default_of(LevenbergMarquardt, "max_iter"), default_of(draw_truth, "min_separation")
    (2000, 0.1)
    """
    if dataclasses.is_dataclass(owner):
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        return field.default_factory() if field.default is dataclasses.MISSING else field.default
    return inspect.signature(owner).parameters[name].default


def key(types, default=_REQUIRED, **kwargs):
    """A section key: its accepted TOML types and its default (none: required)."""
    meta = {"types": types if isinstance(types, tuple) else (types,)}
    if default is _REQUIRED:
        return dataclasses.field(metadata=meta, **kwargs)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: default, metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def _built():
    """A domain object built from the section's keys: not a key, not compared."""
    return dataclasses.field(init=False, repr=False, compare=False, default=None)


def _type_name(types) -> str:
    if types == _NUM:
        return "a number"
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    return " or ".join(names[t] for t in types)


def check_type(key: str, value, types) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``value`` is of one of the TOML ``types``
    (``bool`` is not an ``int`` here)."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ConfigError(
            f"{key}: expected {_type_name(types)}, got {value!r} ({type(value).__name__})"
        )


class Section:
    """Reading, checking and writing back one section; subclasses are frozen dataclasses whose
    fields are made with ``key``. Every error names ``<NAME>.<key>``."""

    NAME: ClassVar[str]
    #: Domain-object field name -> this section's key, where they differ.
    FIELD_KEYS: ClassVar[dict] = {}

    @classmethod
    def parse(cls, body) -> Section:
        if not isinstance(body, dict):
            raise ConfigError(f"{cls.NAME}: expected a table [{cls.NAME}], got {body!r}")
        keys = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for k in body:
            if k not in keys:
                raise unknown_key(cls.NAME, k, keys)
        values = {}
        for k, f in keys.items():
            if k in body and body[k] is not None:
                check_type(f"{cls.NAME}.{k}", body[k], f.metadata["types"])
                values[k] = body[k]
            elif f.default is _REQUIRED and f.default_factory is _REQUIRED:
                raise ConfigError(f"{cls.NAME}.{k}: missing required key")
        return cls(**values)

    def fail(self, key: str, message: str):
        raise ConfigError(f"{self.NAME}.{key}: {message}")

    def positive(self, *keys: str) -> None:
        """Each key is a positive finite number (``moe_lora.checks.positive``)."""
        for k in keys:
            self.build(checks.positive, name=k, value=getattr(self, k))

    def count(self, *keys: str, minimum: int = 1) -> None:
        """Each key is None or an integer >= ``minimum`` (``moe_lora.checks.integer``)."""
        for k in keys:
            if getattr(self, k) is not None:
                self.build(checks.integer, name=k, value=getattr(self, k), minimum=minimum)

    def build(self, factory, **kwargs):
        """``factory(**kwargs)``; its ``FieldError`` becomes a ``ConfigError`` naming this section's
        key."""
        try:
            return factory(**kwargs)
        except FieldError as e:
            self.fail(self.FIELD_KEYS.get(e.field, e.field), str(e))

    def set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class ModelSection(Section):
    """``[model]``: the ``ModelSpec`` (input and output dimensions, rank, gating)."""

    NAME: ClassVar[str] = "model"
    d: int = key(int)
    d_out: int = key(int, 1)  # ModelSpec has no defaults for d_out and r
    r: int = key(int, 1)
    d_k: int | None = key(int, None)  # None: d (ModelSpec's rule)
    gate_scale: float = key(_NUM, default_of(ModelSpec, "gate_scale"))
    gating: str = key(str, default_of(ModelSpec, "gating"))
    spec: ModelSpec = _built()

    def __post_init__(self):
        self.set(
            "spec",
            self.build(
                ModelSpec,
                d=self.d,
                d_out=self.d_out,
                r=self.r,
                d_k=self.d if self.d_k is None else self.d_k,
                gating=self.gating,
                gate_scale=float(self.gate_scale),
            ),
        )


@dataclasses.dataclass(frozen=True)
class TruthSection(Section):
    """``[truth]``: how the true mixing measures are drawn (``moe_lora.truth.draw_truth``).

    ``through``: the parameterizations they are drawn through (default: every non-vanilla
    estimator, or tanh if there is none).
    """

    NAME: ClassVar[str] = "truth"
    through: tuple[str, ...] | None = key(list, None)
    #: The truth axis: the seeds every family in ``through`` is drawn at (default: the config's
    #: ``seed``). Each seed roots its truths' keys exactly as the top-level ``seed`` of a config
    #: of that seed alone (``moe_lora.experiment``).
    seeds: tuple[int, ...] | None = key(list, None)
    #: Per family: ``[[truth.draws]]`` with ``through``, ``seeds`` and optionally ``estimators``
    #: (those that fit its truths; default every estimator that contains it). Resolved by
    #: ``Config.from_dict`` from ``through`` and ``seeds`` when not given.
    draws: tuple[dict, ...] | None = key(list, None)
    components: int = key(int, 2)
    latent_dim: int = key(int, 2)
    scale: float = key(_NUM, default_of(draw_truth, "scale"))
    min_separation: float = key(_NUM, default_of(draw_truth, "min_separation"))
    min_gate_strength: float = key(_NUM, default_of(draw_truth, "min_gate_strength"))
    min_expert_separation: float = key(_NUM, default_of(draw_truth, "min_expert_separation"))

    def __post_init__(self):
        self.count("components", "latent_dim")
        self.positive("scale")
        for k in ("min_separation", "min_gate_strength", "min_expert_separation"):
            if not (math.isfinite(getattr(self, k)) and getattr(self, k) >= 0):
                self.fail(k, f"expected a finite number >= 0, got {getattr(self, k)!r}")
        if self.through is not None:
            for e in self.through:
                if e not in ESTIMATORS[1:]:
                    self.fail(
                        "through",
                        f"expected non-vanilla estimators {list(ESTIMATORS[1:])}, got {e!r}",
                    )
            self.set("through", tuple(self.through))
        if self.draws is not None:
            self.set("draws", tuple(self.draws))
        if self.seeds is not None:
            self.set("seeds", check_seeds(self, "seeds", self.seeds))
            if self.draws is not None:
                self.fail("seeds", "give the seeds either here or in [[truth.draws]], not both")


def check_seeds(section: Section, where: str, seeds) -> tuple[int, ...]:
    """A non-empty list of distinct integer seeds, as a tuple; errors name ``<section>.<where>``."""
    if not isinstance(seeds, (list, tuple)):
        section.fail(where, f"expected a list of integer seeds, got {seeds!r}")
    for s in seeds:
        check_type(f"{section.NAME}.{where}[]", s, (int,))
    if not seeds or len(set(seeds)) != len(seeds):
        section.fail(where, f"expected distinct integer seeds, got {list(seeds)!r}")
    return tuple(seeds)


def resolve_draws(truth: TruthSection, estimators, seed: int) -> tuple[dict, ...]:
    """The truth axis of a config: one ``{through, seeds, estimators}`` per family drawn.

    From ``[[truth.draws]]`` if given, else every family of ``truth.through`` at ``truth.seeds``
    (default: the config's ``seed``), fitted by every estimator that contains it (itself and
    vanilla). Errors name the key.
    """
    fitting = lambda t: [e for e in estimators if e in ("vanilla", t)]  # noqa: E731
    if truth.draws is None:
        seeds = truth.seeds or (seed,)
        return tuple(
            {"through": t, "seeds": list(seeds), "estimators": fitting(t)} for t in truth.through
        )
    if not truth.draws:
        truth.fail("draws", "expected at least one [[truth.draws]] table")
    out, seen = [], set()
    for i, draw in enumerate(truth.draws):
        where = f"draws[{i}]"
        if not isinstance(draw, dict):
            truth.fail(where, f"expected a table, got {draw!r}")
        unknown, missing = (
            set(draw) - {"through", "seeds", "estimators"},
            {"through", "seeds"} - set(draw),
        )
        if unknown or missing:
            truth.fail(
                where,
                f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; expected "
                "through, seeds and optionally estimators",
            )
        t = draw["through"]
        if t not in ESTIMATORS[1:]:
            truth.fail(
                f"{where}.through",
                f"expected a non-vanilla estimator {list(ESTIMATORS[1:])}, got {t!r}",
            )
        seeds = check_seeds(truth, f"{where}.seeds", draw["seeds"])
        fit = draw.get("estimators", fitting(t))
        for e in fit:
            if e not in estimators or e not in ("vanilla", t):
                truth.fail(
                    f"{where}.estimators",
                    f"{e!r} cannot fit a truth drawn through {t!r}; expected estimators of the "
                    f"config that contain it: {fitting(t)}",
                )
        if not fit:
            truth.fail(f"{where}.estimators", "expected at least one estimator")
        for s in seeds:
            if (t, s) in seen:
                truth.fail(f"{where}.seeds", f"the truth through {t!r} at seed {s} is listed twice")
            seen.add((t, s))
        out.append(
            {"through": t, "seeds": list(seeds), "estimators": [e for e in estimators if e in fit]}
        )
    return tuple(out)


def parse_sizes(section: Section, spec) -> tuple[int, ...]:
    """Sample sizes: a list of distinct positive integers, or ``{min, max, count}`` log-spaced
    (rounded); errors name ``<section>.sizes``."""
    if isinstance(spec, dict):
        if set(spec) != {"min", "max", "count"}:
            section.fail(
                "sizes", f"expected a list of sizes or a table {{min, max, count}}, got {spec!r}"
            )
        for k in ("min", "max", "count"):
            check_type(f"{section.NAME}.sizes.{k}", spec[k], _NUM if k != "count" else (int,))
        lo, hi, count = spec["min"], spec["max"], spec["count"]
        if not (1 <= lo < hi <= MAX_N) or not 2 <= count <= 1000:
            section.fail(
                "sizes",
                f"expected 1 <= min < max <= {MAX_N:.0e} (config.MAX_N, the largest supported n: "
                f"{_WHY_MAX_N}) and 2 <= count <= 1000, got {spec!r}",
            )
        sizes = np.unique(np.round(np.geomspace(lo, hi, count)).astype(int))
        if len(sizes) != count:
            section.fail(
                "sizes",
                f"{count} log-spaced sizes in [{lo}, {hi}] round to duplicates; lower count",
            )
        return tuple(int(s) for s in sizes)
    for s in spec:
        check_type(f"{section.NAME}.sizes[]", s, (int,))
    if not spec or any(s < 1 for s in spec) or len(set(spec)) != len(spec):
        section.fail("sizes", f"expected distinct positive integers, got {spec!r}")
    if max(spec) > MAX_N:
        section.fail(
            "sizes",
            f"{max(spec)} is above the largest supported n, {MAX_N:.0e} (config.MAX_N: "
            f"{_WHY_MAX_N})",
        )
    return tuple(sorted(int(s) for s in spec))


@dataclasses.dataclass(frozen=True)
class DataSection(Section):
    """``[data]``: noise, sample sizes (a list or ``{min, max, count}`` log-spaced), replicates,
    design."""

    NAME: ClassVar[str] = "data"
    FIELD_KEYS: ClassVar[dict] = {"kind": "design", "scale": "design_scale"}
    sigma: float = key(_NUM)
    sizes: tuple[int, ...] = key((list, dict))
    replicates: int = key(int)
    design: str = key(str, default_of(Design, "kind"))
    # The config's box is [-1, 1]^d (Design's own default, 0.5, is the library's; the committed
    # configs were run with 1.0).
    design_scale: float = key(_NUM, 1.0)
    n_eval: int = key(int, 2000)
    input_design: Design = _built()

    def __post_init__(self):
        self.positive("sigma")
        self.count("replicates", "n_eval")
        if self.replicates > MAX_REPLICATES:
            self.fail("replicates", f"expected at most {MAX_REPLICATES:.0e}, got {self.replicates}")
        if self.n_eval > MAX_N:
            self.fail(
                "n_eval",
                f"expected at most {MAX_N:.0e} (config.MAX_N: {_WHY_MAX_N}), got {self.n_eval}",
            )
        self.set("sizes", parse_sizes(self, self.sizes))
        self.set(
            "input_design", self.build(Design, kind=self.design, scale=float(self.design_scale))
        )


@dataclasses.dataclass(frozen=True)
class FitSection(Section):
    """``[fit]``: fitted components (``extra_components`` = L - L* settings), compact space,
    Levenberg-Marquardt and restarts."""

    NAME: ClassVar[str] = "fit"
    FIELD_KEYS: ClassVar[dict] = {
        "chunk_size": "rows_per_chunk",
        "rows": "screen_rows",
        "iters": "screen_iters",
        "keep": "screen_keep",
    }
    extra_components: tuple[int, ...] = key(list, [0])
    bound: float = key(_NUM, default_of(Vanilla, "bound"))
    bias_bound: float = key(_NUM, default_of(Vanilla, "bias_bound"))
    max_iter: int = key(int, default_of(LevenbergMarquardt, "max_iter"))
    gtol: float = key(_NUM, default_of(LevenbergMarquardt, "gtol"))
    damping: str = key(str, default_of(LevenbergMarquardt, "damping"))
    stat_tol: float = key(_NUM, 0.0)  # 0: off (LevenbergMarquardt's None; TOML has no null)
    # A config always chunks J^T J (LevenbergMarquardt's None, unchunked, is for small problems).
    rows_per_chunk: int = key(int, 16384)
    #: Truth-free starts by default (``InitConfig``); ``"oracle"``: the near-truth starts of
    #: the committed oracle-start tables, counted by ``near_truth`` and ``random``.
    starts: str = key(str, default_of(InitConfig, "starts"))
    restarts: int = key(int, default_of(InitConfig, "restarts"))
    split_scale: float = key(_NUM, default_of(InitConfig, "split_scale"))
    #: ``"subsample"`` or ``"halving"`` (``Screen``); ``"none"``: every restart to the end.
    screen: str = key(str, default_of(Screen, "kind"))
    screen_rows: int = key(int, default_of(Screen, "rows"))
    screen_iters: int = key(int, default_of(Screen, "iters"))
    screen_keep: int = key(int, default_of(Screen, "keep"))
    #: Run the oracle fit beside a truth-free estimate (``risk_oracle``, ``D_oracle``).
    oracle: bool = key(bool, default_of(InitConfig, "oracle"))
    near_truth: int = key(int, default_of(InitConfig, "near_truth"))
    random: int = key(int, default_of(InitConfig, "random"))
    near_truth_scale: float = key(_NUM, default_of(InitConfig, "near_truth_scale"))
    random_scale: float = key(_NUM, default_of(InitConfig, "random_scale"))
    canonicalize: bool = key(bool, default_of(FitConfig, "canonicalize"))
    jacobian: str = key(str, default_of(FitConfig, "jacobian"))
    finisher: LevenbergMarquardt = _built()
    init: InitConfig = _built()

    def __post_init__(self):
        extras = self.extra_components
        for s in extras:
            check_type("fit.extra_components[]", s, (int,))
        if not extras or any(s < 0 for s in extras) or len(set(extras)) != len(extras):
            self.fail(
                "extra_components", f"expected distinct integers >= 0 (L - L*), got {extras!r}"
            )
        self.set("extra_components", tuple(extras))
        if not (math.isfinite(self.stat_tol) and self.stat_tol >= 0):
            self.fail(
                "stat_tol",
                f"expected a finite number >= 0 (0 turns the rule off), got {self.stat_tol!r}",
            )
        self.build(Vanilla, bound=float(self.bound), bias_bound=float(self.bias_bound))
        if self.jacobian not in JACOBIANS:
            self.fail("jacobian", f"expected one of {JACOBIANS}, got {self.jacobian!r}")
        self.set(
            "finisher",
            self.build(
                LevenbergMarquardt,
                max_iter=self.max_iter,
                gtol=float(self.gtol),
                damping=self.damping,
                stat_tol=float(self.stat_tol) or None,
                chunk_size=self.rows_per_chunk,
            ),
        )
        if self.starts not in STARTS:
            self.fail("starts", f"expected one of {list(STARTS)}, got {self.starts!r}")
        if self.screen not in (*SCREENS, "none"):
            self.fail("screen", f"expected one of {[*SCREENS, 'none']}, got {self.screen!r}")
        kind = "subsample" if self.screen == "none" else self.screen
        screen = self.build(
            Screen, kind=kind, rows=self.screen_rows, iters=self.screen_iters, keep=self.screen_keep
        )
        self.set(
            "init",
            self.build(
                InitConfig,
                starts=self.starts,
                restarts=self.restarts,
                split_scale=float(self.split_scale),
                screen=None if self.screen == "none" else screen,
                oracle=self.oracle,
                near_truth=self.near_truth,
                random=self.random,
                near_truth_scale=float(self.near_truth_scale),
                random_scale=float(self.random_scale),
            ),
        )


@dataclasses.dataclass(frozen=True)
class ExecutionSection(Section):
    """``[execution]``: how the work is cut, none of which changes a number of the results table
    except ``replicates_per_batch`` (vmapped and mapped code round differently)."""

    NAME: ClassVar[str] = "execution"
    replicates_per_unit: int | None = key(int, None)
    replicates_per_batch: int = key(int, 1)

    def __post_init__(self):
        self.count("replicates_per_unit", "replicates_per_batch")


@dataclasses.dataclass(frozen=True)
class MinimaxSection(Section):
    """``[minimax]``: ``deltas`` in (0, 1] of a family of truths (stored largest first).

    ``family``: ``"merging"`` (default): atoms 0 and 1 merge in the parameterization the truth was
    drawn through (``moe_lora.truth.merging_truth``), fitted by vanilla and by that
    parameterization. ``"shared_gate"``: vanilla's hardest family, two atoms with gates S and
    S + delta E and experts V +- Delta (``moe_lora.truth.shared_gate_truth``), a vanilla truth
    fitted by vanilla only; the shared maps, which cannot represent it, fit their own family
    ``maps_family`` on the same deltas (only ``"merging"``).
    """

    NAME: ClassVar[str] = "minimax"
    FAMILIES: ClassVar[tuple[str, ...]] = ("merging", "shared_gate")
    MAPS_FAMILIES: ClassVar[tuple[str, ...]] = ("merging",)
    deltas: tuple[float, ...] = key(list)
    family: str = key(str, "merging")
    maps_family: str = key(str, "merging")

    def __post_init__(self):
        for k, allowed in (("family", self.FAMILIES), ("maps_family", self.MAPS_FAMILIES)):
            if getattr(self, k) not in allowed:
                self.fail(k, f"expected one of {list(allowed)}, got {getattr(self, k)!r}")
        for x in self.deltas:
            check_type("minimax.deltas[]", x, _NUM)
        d = self.deltas
        if not d or any(not (0 < x <= 1) for x in d) or len(set(d)) != len(d):
            self.fail("deltas", f"expected distinct numbers in (0, 1], got {list(d)!r}")
        self.set("deltas", tuple(float(x) for x in sorted(d, reverse=True)))

    def to_dict(self) -> dict:
        # Keys at their defaults are left out, so the manifests of runs made before the keys
        # existed still match.
        out = super().to_dict()
        return {k: v for k, v in out.items() if k == "deltas" or v != "merging"}


_SLOPES = SlopeSettings()


@dataclasses.dataclass(frozen=True)
class RatesSection(Section):
    """``[rates]``: the slope settings of the slope table and the verdicts (``slopes``, a
    ``moe_lora.slopes.SlopeSettings``, whose defaults these are), and the verdict rules."""

    NAME: ClassVar[str] = "rates"
    n_min: int | None = key(int, _SLOPES.n_min)
    n_max: int | None = key(int, _SLOPES.n_max)
    bootstrap: int = key(int, _SLOPES.bootstrap)
    level: float = key(_NUM, _SLOPES.level)
    #: The statistic over replicates that the verdicts read (``moe_lora.verdicts``), fixed before
    #: the run.
    statistic: str = key(str, _SLOPES.statistic)
    #: Verdict rules, ``[[rates.verdicts]]``: label, metric, prediction, alternative, optional
    #: estimators/extra/statistic, and ``worst_case = true`` for the worst case over each family
    #: of truths (``[minimax]``) with its drawn truth (``moe_lora.verdicts.family_rows``).
    verdicts: tuple = key(list, [])

    def __post_init__(self):
        self.count("bootstrap")
        self.count("n_min", "n_max")
        if self.n_min is not None and self.n_max is not None and self.n_min > self.n_max:
            self.fail("n_min", f"expected n_min <= n_max, got {self.n_min} > {self.n_max}")
        if not 0 < self.level < 1:
            self.fail("level", f"expected a number in (0, 1), got {self.level!r}")
        if self.statistic not in STATISTICS:
            self.fail("statistic", f"expected 'mean' or 'median', got {self.statistic!r}")
        rules = []
        for i, rule in enumerate(self.verdicts):
            where = f"verdicts[{i}]"
            if not isinstance(rule, dict):
                self.fail(where, f"expected a table, got {rule!r}")
            unknown = set(rule) - {
                "label",
                "metric",
                "prediction",
                "alternative",
                "estimators",
                "extra",
                "statistic",
                "worst_case",
            }
            missing = {"label", "metric", "prediction", "alternative"} - set(rule)
            if unknown or missing:
                self.fail(
                    where,
                    f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; expected "
                    "label, metric, "
                    "prediction, alternative and optionally estimators, extra, statistic, "
                    "worst_case",
                )
            if not isinstance(rule.get("worst_case", False), bool):
                self.fail(
                    f"{where}.worst_case", f"expected true or false, got {rule['worst_case']!r}"
                )
            if rule["metric"] not in ("D", "l2_error"):
                self.fail(f"{where}.metric", f"expected 'D' or 'l2_error', got {rule['metric']!r}")
            if rule.get("statistic", "mean") not in ("mean", "median"):
                self.fail(
                    f"{where}.statistic", f"expected 'mean' or 'median', got {rule['statistic']!r}"
                )
            for k in ("prediction", "alternative"):
                try:
                    check_reference(f"{self.NAME}.{where}.{k}", rule[k])
                except ValueError as e:
                    raise ConfigError(str(e)) from None
            rules.append(dict(rule))
        self.set("verdicts", tuple(rules))

    def slopes(self, seed: int = 0) -> SlopeSettings:
        """The slope settings of this section, with bootstrap seed ``seed``."""
        return SlopeSettings(
            statistic=self.statistic,
            n_min=self.n_min,
            n_max=self.n_max,
            bootstrap=self.bootstrap,
            level=self.level,
            seed=seed,
        )


def parse_grid(section: Section, name: str, spec) -> tuple[float, ...]:
    """A list of positive numbers, or ``{min, max, count}`` log-spaced; errors name
    ``<section>.<name>``."""
    if isinstance(spec, dict):
        if set(spec) != {"min", "max", "count"} or not all(isinstance(spec[k], _NUM) for k in spec):
            section.fail(
                name, f"expected a list of numbers or a table {{min, max, count}}, got {spec!r}"
            )
        if not (0 < spec["min"] < spec["max"]) or spec["count"] < 2:
            section.fail(name, f"expected 0 < min < max and count >= 2, got {spec!r}")
        return tuple(float(x) for x in np.geomspace(spec["min"], spec["max"], int(spec["count"])))
    for x in spec:
        check_type(f"{section.NAME}.{name}[]", x, _NUM)
    return tuple(float(x) for x in spec)


@dataclasses.dataclass(frozen=True)
class BoundSection(Section):
    """``[bound]``: the lower-bound curves of ``moe-lora bound`` (``moe_lora.bounds.BoundConfig``).

    ``extra``: the settings L - L* to compute (default: ``fit.extra_components``); the other keys
    are ``BoundConfig``'s (etas and epsilons as lists or ``{min, max, count}``).
    """

    NAME: ClassVar[str] = "bound"
    # The keys below default to None: BoundConfig's default, filled in when the section is read
    # (``moe_lora.bounds`` is imported only then).
    extra: tuple[int, ...] | None = key(list, None)
    etas: tuple[float, ...] = key((list, dict), None)
    epsilons: tuple[float, ...] = key((list, dict), None)
    losses: tuple[str, ...] = key(list, None)
    radius: float = key(_NUM, None)
    kappa: float | None = key(_NUM, None)
    split_starts: int = key(int, None)
    flat_starts: int = key(int, None)
    random_starts: int = key(int, None)
    quadrature_order: int = key(int, None)
    max_iter: int = key(int, None)
    refine: int = key(int, None)
    flat_edge_starts: int = key(int, None)
    bound_config: Any = _built()

    #: The keys that are ``BoundConfig``'s fields.
    BOUND_KEYS: ClassVar[tuple] = (
        "etas",
        "epsilons",
        "losses",
        "radius",
        "kappa",
        "split_starts",
        "flat_starts",
        "random_starts",
        "quadrature_order",
        "max_iter",
        "refine",
        "flat_edge_starts",
    )

    def __post_init__(self):
        from .bounds import BoundConfig

        for k in self.BOUND_KEYS:
            if getattr(self, k) is None:
                self.set(k, default_of(BoundConfig, k))
        self.set("etas", parse_grid(self, "etas", self.etas))
        self.set("epsilons", parse_grid(self, "epsilons", self.epsilons))
        self.set("losses", tuple(self.losses))
        if self.extra is not None:
            if not self.extra or any(not isinstance(x, int) or x < 0 for x in self.extra):
                self.fail("extra", f"expected integers >= 0 (L - L*), got {list(self.extra)!r}")
            self.set("extra", tuple(self.extra))
        self.set(
            "bound_config",
            self.build(BoundConfig, **{k: getattr(self, k) for k in self.BOUND_KEYS}),
        )


#: Old key -> (new section, new key), read with a FutureWarning.
RENAMED = {
    ("data", "chunk"): ("execution", "replicates_per_unit"),
    ("fit", "replicate_batch"): ("execution", "replicates_per_batch"),
    ("fit", "chunk_rows"): ("fit", "rows_per_chunk"),
}

SECTIONS = {
    s.NAME: s
    for s in (
        ModelSection,
        TruthSection,
        DataSection,
        FitSection,
        ExecutionSection,
        MinimaxSection,
        RatesSection,
        BoundSection,
    )
}
#: Sections that are absent (None) unless given; the others take their defaults.
OPTIONAL = ("minimax", "bound")
_TOP = {"name": (str,), "description": (str,), "seed": (int,), "estimators": (list,)}


def _migrate(raw: dict) -> dict:
    """Move renamed keys to their new place, with one ``FutureWarning`` naming every rename."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    moved = []
    for (sec, old), (new_sec, new) in RENAMED.items():
        body = raw.get(sec)
        if not isinstance(body, dict) or old not in body:
            continue
        value = body.pop(old)
        target = raw.setdefault(new_sec, {})
        if not isinstance(target, dict):
            continue  # the section check names it
        if target.get(new) is not None and value is not None:
            raise ConfigError(
                f"{sec}.{old}: renamed {new_sec}.{new}, which is also given; keep only "
                f"{new_sec}.{new}"
            )
        if value is not None:
            target[new] = value
        moved.append(f"{sec}.{old} -> {new_sec}.{new}")
    if moved:
        warnings.warn(
            f"config keys renamed: {', '.join(moved)}; the old names will stop working in a later "
            "version",
            FutureWarning,
            stacklevel=4,
        )
    return raw


@dataclasses.dataclass(frozen=True)
class Config:
    """A checked experiment config: top-level keys and one typed section each.

    Build it with ``Config.from_dict`` or ``load_config``; ``to_dict`` gives the resolved config
    (every default filled in), which ``from_dict`` reads back to an equal ``Config``.
    """

    name: str
    description: str
    seed: int
    estimators: tuple[str, ...]
    model: ModelSection
    truth: TruthSection
    data: DataSection
    fit: FitSection
    execution: ExecutionSection
    rates: RatesSection
    minimax: MinimaxSection | None = None
    bound: BoundSection | None = None

    @classmethod
    def from_dict(cls, raw: dict, name: str = "experiment") -> Config:
        """Check ``raw`` (the TOML layout) and build the config; errors name the key."""
        raw = _migrate({k: v for k, v in raw.items() if v is not None})
        for k in raw:
            if k not in _TOP and k not in SECTIONS:
                raise unknown_key("", k, [*_TOP, *SECTIONS])
        for k, types in _TOP.items():
            if k in raw:
                check_type(k, raw[k], types)
        check_name(raw.get("name") or name)
        check_seed(raw.get("seed", 0))
        if "estimators" not in raw:
            raise ConfigError("estimators: missing required key")
        sections = {}
        for sec, kind in SECTIONS.items():
            if sec not in raw and sec in OPTIONAL:
                sections[sec] = None
            elif sec not in raw and any(
                f.default is _REQUIRED and f.default_factory is _REQUIRED and f.init
                for f in dataclasses.fields(kind)
            ):
                raise ConfigError(f"[{sec}]: missing required section")
            else:
                sections[sec] = kind.parse(raw.get(sec, {}))
        estimators = raw["estimators"]
        for e in estimators:
            if e not in ESTIMATORS:
                raise ConfigError(
                    f"estimators: unknown estimator {e!r}; expected one of {list(ESTIMATORS)}"
                )
        if not estimators or len(set(estimators)) != len(estimators):
            raise ConfigError(
                f"estimators: expected a non-empty list without repeats, got {estimators!r}"
            )
        truth = sections["truth"]
        seed = raw.get("seed", 0)
        if truth.draws is not None:
            draws = resolve_draws(truth, estimators, seed)
            through = tuple(dict.fromkeys(d["through"] for d in draws))
            if truth.through is not None and set(truth.through) != set(through):
                raise ConfigError(
                    f"truth.through: {list(truth.through)} differs from the families of "
                    f"[[truth.draws]] {list(through)}; give one of them"
                )
        else:
            through = truth.through or tuple(e for e in estimators if e != "vanilla") or ("tanh",)
            truth = dataclasses.replace(truth, through=list(through))
            draws = resolve_draws(truth, estimators, seed)
        for e in estimators:
            if not any(e in d["estimators"] for d in draws):
                raise ConfigError(
                    f"estimators: {e!r} fits no truth (truth.through = {list(through)}); "
                    "a shared estimator only contains the truth drawn through itself"
                )
        sections["truth"] = dataclasses.replace(
            truth, through=list(through), seeds=None, draws=list(draws)
        )
        fit = sections["fit"]
        if fit.starts in ("split", "mix") and truth.components + min(fit.extra_components) < 2:
            raise ConfigError(
                f"fit.starts: {fit.starts!r} splits an (L - 1)-component fit, so needs L >= 2; "
                f"truth.components + min(fit.extra_components) = "
                f"{truth.components + min(fit.extra_components)}"
            )
        if sections["minimax"] is not None and truth.components < 2:
            raise ConfigError(
                "minimax: the family merges true atoms 0 and 1; truth.components must be >= 2"
            )
        if (
            sections["minimax"] is not None
            and sections["minimax"].family == "shared_gate"
            and "vanilla" not in estimators
        ):
            raise ConfigError(
                "minimax.family: 'shared_gate' is a vanilla truth (only vanilla represents it); "
                "estimators must include 'vanilla'"
            )
        return cls(
            name=raw.get("name") or name,
            description=raw.get("description", ""),
            seed=seed,
            estimators=tuple(estimators),
            **sections,
        )

    def to_dict(self) -> dict:
        """The resolved config as plain data (TOML layout; absent optional sections are None)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "estimators": list(self.estimators),
        }
        for sec in SECTIONS:
            section = getattr(self, sec)
            out[sec] = None if section is None else section.to_dict()
        return out

    @property
    def replicates_per_unit(self) -> int:
        """Replicates in one work unit (``execution.replicates_per_unit``, at most all)."""
        per_unit = self.execution.replicates_per_unit
        return self.data.replicates if per_unit is None else min(per_unit, self.data.replicates)


def manifest_config(raw: dict) -> dict:
    """A manifest's recorded config, read as the computation that made it.

    Runs made before truth-free starts (``fit.starts``) record no ``fit.starts``: every one of
    them was fitted from the oracle start, so they read back as ``starts = "oracle"``, not as
    today's truth-free default.

    >>> manifest_config({"fit": {"max_iter": 10}})["fit"]["starts"]
    'oracle'
    """
    fit = raw.get("fit")
    if isinstance(fit, dict) and "starts" not in fit and raw.get("kind", "sweep") == "sweep":
        return {**raw, "fit": {**fit, "starts": "oracle"}}
    return raw


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict; ``ConfigError`` names a missing or malformed file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, expected a TOML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file, expected a TOML config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_config(path: str | Path) -> Config:
    """Read and check a TOML config; errors name the file and the key."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return Config.from_dict(raw, name=path.stem)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def with_values(config: dict, updates: dict) -> dict:
    """A deep copy of ``config`` (a dict in the TOML layout) with dotted keys set.

    Sections missing from ``config`` are created; the result is checked only when it is read
    (``Config.from_dict``, which names a bad key or value).

    >>> with_values({"data": {"sigma": 0.02}}, {"data.sigma": 0.1, "model.d": 3})
    {'data': {'sigma': 0.1}, 'model': {'d': 3}}
    """
    out = copy.deepcopy(config)
    for dotted, value in updates.items():
        *sections, key = dotted.split(".")
        if len(sections) > 1 or not key:
            raise ConfigError(f"{dotted!r}: expected 'key' or 'section.key'")
        target = out
        for s in sections:
            if not isinstance(target.setdefault(s, {}), dict):
                raise ConfigError(f"{dotted!r}: {s!r} is not a section of the config")
            target = target[s]
        target[key] = copy.deepcopy(value)
    return out
