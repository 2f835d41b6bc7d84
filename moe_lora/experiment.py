"""A sample-size sweep built from a checked ``Config``: its estimators, truths, keys and settings.

An ``Experiment`` holds a ``moe_lora.config.Config`` and derives from it everything a sweep
needs: the estimators' models (with their fixed maps), the truths, the held-out inputs of the
L2 error, the simulation keys and the fit configuration of every setting L = L* + extra.

Truths are drawn through each ``truth.through`` parameterization; with a ``[minimax]`` section
each drawn truth also gets the family ``moe_lora.truth.merging_truth(truth, delta)`` for every
delta < 1. Truth labels are ``TruthLabel(through, delta)``, written ``tanh`` and
``tanh@delta=0.25`` in the results table. Every estimator fits every truth its family contains:
vanilla fits all of them, a shared estimator the truth drawn through itself (same maps), so each
reparameterized estimator is compared with vanilla on the same truth, data sets and starts.

A config's truths form an axis (``[truth] seeds`` or ``[[truth.draws]]``): every family is
drawn at each of its seeds, and the table's ``seed`` column says which. A config with one seed
is the sweep it always was.

Keys (all from the truth's seed; changing them would change every committed table):
``keys(seed) = split(key(seed), 4)`` are the maps, truth, held-out and simulation roots of the
truths drawn at ``seed``. Estimator names fold into the maps and truth roots by their index in
``ESTIMATORS``; truth labels fold into the simulation root by the CRC-32 of their text
(``label_index``), so a truth's data do not depend on which other truths a config has. So the
rows of seed ``s`` of a study are bit for bit those of the config of seed ``s`` alone (its
top-level ``seed = s``): every single-seed run is a slice of the study that lists its seed.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
from jaxtyping import PRNGKeyArray

from . import kinds
from .config import ESTIMATORS, Config, ConfigError
from .fit import FitConfig
from .parameterization import Model, Vanilla, linear, make_model, nonlinear
from .simulate import TRACE_COUNT, simulate_replicates
from .slopes import SlopeSettings
from .table import KEY_COLUMNS, record_rows
from .truth import (
    Design,
    Truth,
    draw_truth,
    merging_truth,
    sample_inputs,
    shared_gate_truth,
    truth_summary,
)

#: The key of the sample that reports a family member's gate strength (``make_truth``).
_FAMILY_GATE_KEY = 0


class TruthLabel(NamedTuple):
    """A truth of a sweep: the parameterization it is drawn through, its family's delta, and the
    seed it is drawn at (the table's ``seed`` column; None where only the text matters).

    ``str(label)`` is its name in the table's ``truth`` column: ``tanh`` or ``tanh@delta=0.25``
    (the seed is a column of its own).

    >>> label = TruthLabel("tanh", 0.25, seed=3)
    >>> str(label), TruthLabel.parse("tanh@delta=0.25", seed=3) == label
    ('tanh@delta=0.25', True)
    """

    through: str
    delta: float | None = None
    seed: int | None = None
    #: None: the drawn truth or its merging family; ``"shared_gate"``: vanilla's hardest family
    #: (``moe_lora.truth.shared_gate_truth``), written ``tanh@shared_gate=0.25``.
    family: str | None = None

    def __str__(self) -> str:
        if self.delta is None:
            return self.through
        return f"{self.through}@{self.family or 'delta'}={self.delta:g}"

    @classmethod
    def parse(cls, text, seed: int | None = None) -> TruthLabel:
        """The label of ``str(label)`` drawn at ``seed`` (a ``TruthLabel`` is returned as is)."""
        if isinstance(text, TruthLabel):
            return text
        through, _, delta = str(text).partition("@delta=")
        if not delta and "@shared_gate=" in through:
            through, _, delta = through.partition("@shared_gate=")
            return cls(through, float(delta), seed, "shared_gate")
        return cls(through, float(delta) if delta else None, seed)


def label_index(label) -> int:
    """The 31-bit integer a truth label folds into the simulation key: CRC-32 of its text
    (Python's ``hash`` is salted per process)."""
    return zlib.crc32(str(label).encode()) & 0x7FFFFFFF


class ReplicateBlock:
    """What the run loop needs of a unit whose fields ``start``, ``stop`` and ``n`` say which
    replicates (seeds) it computes at which sample size."""

    @property
    def fits(self) -> int:
        return self.stop - self.start

    @property
    def replicates(self) -> range:
        return range(self.start, self.stop)


@dataclasses.dataclass(frozen=True)
class Unit(ReplicateBlock):
    """One work unit of a sweep: replicates [start, stop) of (truth, estimator, L* + extra, n);
    the truth's label carries its seed."""

    truth: TruthLabel
    estimator: str
    extra: int
    n: int
    start: int
    stop: int

    def __post_init__(self):
        object.__setattr__(self, "truth", TruthLabel.parse(self.truth))

    @property
    def id(self) -> str:
        """The unit's name, unique in its experiment: also its result file's name."""
        block = f"r{self.start}-{self.stop - 1}"
        seed = "" if self.truth.seed is None else f"s{self.truth.seed}__"
        return f"{seed}{self.truth}__{self.estimator}__L+{self.extra}__n{self.n}__{block}"

    @property
    def seed(self) -> int | None:
        return self.truth.seed


@dataclasses.dataclass(frozen=True)
class SweepContext:
    """What every unit of a sweep shares (``moe_lora.kinds.UnitContext``): the truths, the
    estimators, the held-out inputs, and the settings of the fits; no ``Experiment``.

    ``compute(unit)`` fits one unit in this process; its rows depend only on the config and the
    unit (replicate keys are fixed, ``moe_lora.simulate.replicate_keys``).
    """

    name: str
    truths: dict
    #: (seed, estimator name) -> Model: an estimator's maps are drawn from its truth's seed.
    models: dict
    #: seed -> held-out inputs.
    X_eval: dict
    sim_keys: dict
    fit_configs: dict
    components: int
    sigma: float
    design: Design
    replicates_per_batch: int

    def with_models(self, models: dict) -> SweepContext:
        """The same context with other estimators, name -> Model, the same at every seed
        (``moe_lora.runs.run_estimator``)."""
        seeds = {s for s, _ in self.models}
        return dataclasses.replace(
            self, models={(s, name): m for s in seeds for name, m in models.items()}
        )

    def compute(self, unit: Unit) -> tuple[pd.DataFrame, float, bool]:
        """Fit one unit: (its table rows, wall seconds, whether it compiled)."""
        traces = sum(TRACE_COUNT.values())
        t0 = time.perf_counter()
        rec = simulate_replicates(
            self.sim_keys[unit.truth],
            self.truths[unit.truth],
            self.models[unit.seed, unit.estimator],
            unit.n,
            sigma=self.sigma,
            replicates=np.arange(unit.start, unit.stop),
            config=self.fit_configs[unit.extra],
            X_eval=self.X_eval[unit.seed],
            design=self.design,
            batch=self.replicates_per_batch,
        )
        rec = jax.block_until_ready(rec)
        seconds = time.perf_counter() - t0
        return self.rows(unit, rec), seconds, sum(TRACE_COUNT.values()) > traces

    def rows(self, unit: Unit, record) -> pd.DataFrame:
        """The table rows of a unit's ``Record``."""
        truth = self.truths[unit.truth]
        identifiers = {
            "experiment": self.name,
            "seed": unit.seed,
            "truth": str(unit.truth),
            "through": unit.truth.through,
            "delta": unit.truth.delta,
            "estimator": unit.estimator,
            "extra": unit.extra,
            "L": self.components + unit.extra,
            "L_star": self.components,
            "n": unit.n,
            "sigma": self.sigma,
            "truth_separation": float(truth.separation),
            "truth_gate_strength": float(truth.gate_strength),
            "truth_expert_separation": float(truth.expert_separation),
        }
        return record_rows(record, identifiers, unit.replicates)


@kinds.register
@dataclasses.dataclass(frozen=True)
class Experiment:
    """A sample-size sweep: a ``Config`` and what follows from it; the ``sweep`` experiment kind
    (``moe_lora.kinds.ExperimentKind``).

    Build it with ``load_experiment(path)``, ``Experiment.from_dict(d)`` or ``Experiment(config)``.
    """

    config: Config
    kind = "sweep"
    #: Columns that identify a row of its table, in sort order.
    key_columns = tuple(KEY_COLUMNS)

    @classmethod
    def from_dict(cls, raw: dict, name: str = "experiment") -> Experiment:
        if raw.get("kind", cls.kind) != cls.kind:
            raise ConfigError(f"kind: expected {cls.kind!r} for a sweep, got {raw['kind']!r}")
        return cls(Config.from_dict({k: v for k, v in raw.items() if k != "kind"}, name=name))

    def units(self) -> list[Unit]:
        """All units, in the fixed order shards are cut from (small n first)."""
        step, total = self.config.replicates_per_unit, self.replicates
        return [
            Unit(truth, est, extra, n, start, min(start + step, total))
            for n in self.sizes
            for truth, est in self.pairs()
            for extra in self.extra_components
            for start in range(0, total, step)
        ]

    def estimator_units(
        self, truth: TruthLabel, estimator: str, extra: int, sizes=None
    ) -> list[Unit]:
        """The units of one (truth, estimator, setting) at ``sizes`` (default: the config's), as
        ``units`` cuts them (``moe_lora.runs.run_estimator`` fits an estimator the config cannot
        name)."""
        step, total = self.config.replicates_per_unit, self.replicates
        return [
            Unit(truth, estimator, extra, int(n), start, min(start + step, total))
            for n in (self.sizes if sizes is None else sizes)
            for start in range(0, total, step)
        ]

    def truth_summaries(self, truths: dict) -> dict:
        """Truth name -> ``truth_summary`` (for the manifest and the Ray workers' check): the
        label's text, with ``@seed=<seed>`` where the config has several seeds."""
        return {self.truth_name(label): truth_summary(t) for label, t in truths.items()}

    def truth_name(self, label: TruthLabel) -> str:
        """A truth's name in the manifest: ``tanh``, or ``tanh@seed=3`` in a study of several
        seeds."""
        return str(label) if len(self.seeds) == 1 else f"{label}@seed={label.seed}"

    def context(self, truths: dict | None = None) -> SweepContext:
        """What every unit shares: the truths (drawn unless given), estimators, held-out inputs,
        keys."""
        truths = self.draw_truths() if truths is None else truths
        return SweepContext(
            name=self.name,
            truths=truths,
            models={
                (seed, name): self.model(name, seed)
                for seed in {label.seed for label in truths}
                for name in self.estimators
            },
            X_eval={seed: self.x_eval(seed) for seed in {label.seed for label in truths}},
            sim_keys={label: self.sim_key(label) for label in truths},
            fit_configs={extra: self.fit_config(extra) for extra in self.extra_components},
            components=self.components,
            sigma=self.sigma,
            design=self.design,
            replicates_per_batch=self.config.execution.replicates_per_batch,
        )

    def describe(self) -> str:
        blocks = -(-self.replicates // self.config.replicates_per_unit)
        seeds = f" at {len(self.seeds)} truth seeds" if len(self.seeds) > 1 else ""
        return (
            f"{len(self.units())} units ({len(self.sizes)} sizes x {len(self.pairs())} "
            f"truth-estimator pairs{seeds} "
            f"x {len(self.extra_components)} settings x {blocks} replicate blocks)"
        )

    def summaries(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``rates.csv``: the slope table, with the fit range and bootstrap of ``[rates]``."""
        from .rates import slope_table

        return {"rates.csv": slope_table(df, slopes=self.config.rates.slopes(seed=self.seed))}

    def format_summaries(self, summaries: dict[str, pd.DataFrame]) -> str:
        """The slope table as ``moe-lora rates`` prints it."""
        from .rates import format_slope_table

        return format_slope_table(summaries["rates.csv"], level=self.config.rates.level)

    def figures(self, df: pd.DataFrame, summaries: dict[str, pd.DataFrame]) -> dict:
        """Figure stem -> Figure: every figure of ``moe_lora.figures.run_figures``."""
        from .figures import run_figures

        rates = self.config.rates
        rows = summaries["rates.csv"]
        if "seed" in df and df["seed"].nunique() > 1:
            # One panel per truth of the axis: its label with its seed (display only).
            df = df.assign(truth=df["truth"] + " s" + df["seed"].astype(str))
            rows = rows.assign(truth=rows["truth"] + " s" + rows["seed"].astype(str))
        # The config's fit range; the figures' bands keep their own bootstrap (the default).
        fit_range = SlopeSettings(n_min=rates.n_min, n_max=rates.n_max)
        return run_figures(df, rows, slopes=fit_range)

    def holds(self, other: Experiment) -> bool:
        """Whether ``other`` is a slice of this sweep: every unit of ``other`` is a unit of this
        one (the same id: seed, truth, estimator, setting, n, replicates) computed with the same
        model, truth thresholds, data, fit, execution and minimax family, so its rows are bit for
        bit this sweep's (a single-seed run and the study that lists its seed)."""
        a, b = self.config, other.config
        if any(
            getattr(a, k) != getattr(b, k)
            for k in ("model", "data", "fit", "execution", "minimax", "bound")
        ):
            return False
        plain = [dataclasses.replace(c.truth, through=None, draws=None) for c in (a, b)]
        units = {u.id for u in self.units()}
        return plain[0] == plain[1] and all(u.id in units for u in other.units())

    # Shorthands for what every caller reads.
    name = property(lambda self: self.config.name)
    #: The config's top-level seed: with one truth seed (no truth axis) the root of every key;
    #: with a truth axis only the bootstraps' seed (``summaries``).
    seed = property(lambda self: self.config.seed)
    estimators = property(lambda self: self.config.estimators)
    spec = property(lambda self: self.config.model.spec)
    components = property(lambda self: self.config.truth.components)
    sizes = property(lambda self: self.config.data.sizes)
    replicates = property(lambda self: self.config.data.replicates)
    sigma = property(lambda self: float(self.config.data.sigma))
    design = property(lambda self: self.config.data.input_design)
    #: The settings L - L* (``fit.extra_components``).
    extra_components = property(lambda self: self.config.fit.extra_components)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The truth axis: every seed a truth is drawn at, in increasing order."""
        return tuple(sorted({s for d in self.config.truth.draws for s in d["seeds"]}))

    def _seed(self, seed: int | None) -> int:
        """``seed``, or the only truth seed if None."""
        if seed is not None:
            return seed
        if len(self.seeds) != 1:
            raise ValueError(
                f"{self.name} draws its truths at seeds {list(self.seeds)}; name the seed"
            )
        return self.seeds[0]

    @property
    def deltas(self) -> tuple[float, ...] | None:
        return None if self.config.minimax is None else self.config.minimax.deltas

    def fit_config(self, extra: int) -> FitConfig:
        """The ``FitConfig`` of a setting with L = L* + extra fitted components."""
        f = self.config.fit
        return FitConfig(
            n_components=self.components + extra,
            finisher=f.finisher,
            init=f.init,
            canonicalize=f.canonicalize,
            jacobian=f.jacobian,
        )

    def keys(self, seed: int | None = None) -> PRNGKeyArray:
        """(maps, truth, eval, sim) keys of the truths drawn at ``seed`` (default: the only
        one), all derived from it as a config's top-level ``seed`` alone once did."""
        return jax.random.split(jax.random.key(self._seed(seed)), 4)

    def model(self, name: str, seed: int | None = None) -> Model:
        """The estimator ``name`` with its fixed maps (drawn from the truth seed and the name)."""
        f, t = self.config.fit, self.config.truth
        bounds = dict(bound=float(f.bound), bias_bound=float(f.bias_bound))
        if name == "vanilla":
            return make_model(self.spec, Vanilla(**bounds))
        param = (
            linear(t.latent_dim, **bounds)
            if name == "linear"
            else nonlinear(name, t.latent_dim, **bounds)
        )
        return make_model(
            self.spec, param, key=jax.random.fold_in(self.keys(seed)[0], ESTIMATORS.index(name))
        )

    @property
    def family(self) -> str | None:
        """The ``[minimax]`` family (``"merging"`` or ``"shared_gate"``), None without one."""
        return None if self.config.minimax is None else self.config.minimax.family

    def truth_labels(self) -> list[TruthLabel]:
        """Every truth: per seed, each drawn one, then its family members (delta < 1), in
        config order. Under ``family = "shared_gate"`` the merging members (for the shared maps)
        are followed by the shared-gate members at every delta (for vanilla; delta = 1 is not
        the drawn truth there)."""
        gate = [("shared_gate", x) for x in self.deltas] if self.family == "shared_gate" else []
        return [
            TruthLabel(draw["through"], d, seed, f)
            for seed in self.seeds
            for draw in self.config.truth.draws
            if seed in draw["seeds"]
            for f, d in (
                (None, None),
                *((None, x) for x in self.deltas or () if x != 1),
                *gate,
            )
        ]

    def draw_truths(self) -> dict[TruthLabel, Truth]:
        """Truth label -> Truth, for every label of ``truth_labels``."""
        t = self.config.truth
        out = {}
        for label in self.truth_labels():
            if label.family == "shared_gate":
                try:
                    out[label] = shared_gate_truth(
                        out[TruthLabel(label.through, None, label.seed)],
                        label.delta,
                        self.model("vanilla", label.seed),
                        key=jax.random.key(_FAMILY_GATE_KEY),
                        design=self.design,
                    )
                except ValueError as e:
                    raise ConfigError(f"minimax.deltas: delta={label.delta} gives {e}") from None
            elif label.delta is None:
                key = jax.random.fold_in(self.keys(label.seed)[1], ESTIMATORS.index(label.through))
                try:
                    out[label] = draw_truth(
                        key,
                        self.model(label.through, label.seed),
                        self.components,
                        scale=float(t.scale),
                        min_separation=float(t.min_separation),
                        min_gate_strength=float(t.min_gate_strength),
                        min_expert_separation=float(t.min_expert_separation),
                        design=self.design,
                    )
                except ValueError as e:
                    raise ConfigError(
                        f"[truth] (through {label.through}, seed {label.seed}): {e}"
                    ) from None
            else:
                try:
                    out[label] = merging_truth(
                        out[TruthLabel(label.through, None, label.seed)],
                        label.delta,
                        key=jax.random.key(_FAMILY_GATE_KEY),
                        design=self.design,
                    )
                except ValueError as e:
                    raise ConfigError(f"minimax.deltas: delta={label.delta} gives {e}") from None
        return out

    def x_eval(self, seed: int | None = None):
        """Fixed held-out inputs for the L2 error of the truths drawn at ``seed``."""
        return sample_inputs(self.keys(seed)[2], self.config.data.n_eval, self.spec.d, self.design)

    def sim_key(self, label) -> PRNGKeyArray:
        """Simulation key of one truth: shared by all its estimators and settings (paired data)."""
        label = TruthLabel.parse(label)
        return jax.random.fold_in(self.keys(label.seed)[3], label_index(label))

    def pairs(self) -> list[tuple[TruthLabel, str]]:
        """(truth label, estimator) pairs that are fitted: an estimator fits the truths it
        contains that its ``[[truth.draws]]`` entry lists (default all), in the config's order."""
        fitting = {
            (d["through"], s): d["estimators"] for d in self.config.truth.draws for s in d["seeds"]
        }
        return [
            (lab, e)
            for lab in self.truth_labels()
            for e in self.estimators
            if e in self._fitters(lab, fitting[lab.through, lab.seed])
        ]

    def _fitters(self, label: TruthLabel, fitting) -> tuple[str, ...]:
        """Estimators that fit ``label``, of those its draw names (``fitting``): under the
        shared-gate family vanilla fits the shared-gate members and the maps their merging
        members."""
        if label.family == "shared_gate":
            return tuple(e for e in fitting if e == "vanilla")
        if label.delta is not None and self.family == "shared_gate":
            return tuple(e for e in fitting if e == label.through)
        return tuple(fitting)


# Kept for the callers of the module's old home of the loader (``moe_lora.load_experiment``).
experiment_from_dict = kinds.experiment_from_dict
load_experiment = kinds.load_experiment
