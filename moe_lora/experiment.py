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

Keys (all from ``seed``; changing them would change every committed table):
``keys = split(key(seed), 4)`` are the maps, truth, held-out and simulation roots. Estimator
names fold into the maps and truth roots by their index in ``ESTIMATORS``; truth labels fold
into the simulation root by the CRC-32 of their text (``label_index``), so a truth's data do not
depend on which other truths a config has.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
from jaxtyping import PRNGKeyArray

from .config import ESTIMATORS, Config, ConfigError, read_toml
from .fit import FitConfig
from .parameterization import Model, Vanilla, linear, make_model, nonlinear
from .table import KEY_COLUMNS
from .truth import Truth, draw_truth, merging_truth, sample_inputs, truth_summary

#: The key of the sample that reports a family member's gate strength (``make_truth``).
_FAMILY_GATE_KEY = 0


class TruthLabel(NamedTuple):
    """A truth of a sweep: the parameterization it is drawn through, and its family's delta.

    ``str(label)`` is its name in tables and unit ids: ``tanh`` or ``tanh@delta=0.25``.

    >>> str(TruthLabel("tanh", 0.25)), TruthLabel.parse("tanh@delta=0.25") == TruthLabel("tanh", 0.25)
    ('tanh@delta=0.25', True)
    """

    through: str
    delta: float | None = None

    def __str__(self) -> str:
        return self.through if self.delta is None else f"{self.through}@delta={self.delta:g}"

    @classmethod
    def parse(cls, text) -> TruthLabel:
        """The label of ``str(label)`` (a ``TruthLabel`` is returned as is)."""
        if isinstance(text, TruthLabel):
            return text
        through, _, delta = str(text).partition("@delta=")
        return cls(through, float(delta) if delta else None)


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
    """One work unit of a sweep: replicates [start, stop) of (truth, estimator, L* + extra, n)."""

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
        return f"{self.truth}__{self.estimator}__L+{self.extra}__n{self.n}__r{self.start}-{self.stop - 1}"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A sample-size sweep: a ``Config`` and what follows from it.

    Build it with ``load_experiment(path)``, ``Experiment.from_dict(d)`` or ``Experiment(config)``.
    """

    config: Config
    kind = "sweep"
    #: Columns that identify a row of its table, in sort order.
    key_columns = tuple(KEY_COLUMNS)

    @classmethod
    def from_dict(cls, raw: dict, name: str = "experiment") -> Experiment:
        return cls(Config.from_dict(raw, name=name))

    def units(self) -> list[Unit]:
        """All units, in the fixed order shards are cut from (small n first)."""
        step = self.chunk
        return [Unit(truth, est, extra, n, start, min(start + step, self.replicates))
                for n in self.sizes for truth, est in self.pairs() for extra in self.settings
                for start in range(0, self.replicates, step)]

    def truth_summaries(self, truths: dict) -> dict:
        """Truth label -> ``truth_summary`` (for the manifest and the Ray workers' check)."""
        return {str(label): truth_summary(t) for label, t in truths.items()}

    def context(self, truths: dict | None = None):
        """What every unit shares (``moe_lora.runs.local.UnitContext``)."""
        from .runs.local import UnitContext

        return UnitContext.of(self, truths)

    def describe(self) -> str:
        return (f"{len(self.units())} units ({len(self.sizes)} sizes x {len(self.pairs())} truth-estimator pairs "
                f"x {len(self.settings)} settings x {-(-self.replicates // self.chunk)} replicate blocks)")

    # Shorthands for what every caller reads.
    name = property(lambda self: self.config.name)
    seed = property(lambda self: self.config.seed)
    estimators = property(lambda self: self.config.estimators)
    spec = property(lambda self: self.config.model.spec)
    components = property(lambda self: self.config.truth.components)
    sizes = property(lambda self: self.config.data.sizes)
    replicates = property(lambda self: self.config.data.replicates)
    sigma = property(lambda self: float(self.config.data.sigma))
    design = property(lambda self: self.config.data.input_design)
    settings = property(lambda self: self.config.fit.extra_components)
    chunk = property(lambda self: self.config.replicates_per_unit)
    batch = property(lambda self: self.config.execution.replicates_per_batch)

    @property
    def deltas(self) -> tuple[float, ...] | None:
        return None if self.config.minimax is None else self.config.minimax.deltas

    def fit_config(self, extra: int) -> FitConfig:
        """The ``FitConfig`` of a setting with L = L* + extra fitted components."""
        f = self.config.fit
        return FitConfig(n_components=self.components + extra, finisher=f.finisher, init=f.init,
                         canonicalize=f.canonicalize, jacobian=f.jacobian)

    def keys(self) -> PRNGKeyArray:
        """(maps, truth, eval, sim) keys, all derived from ``seed``."""
        return jax.random.split(jax.random.key(self.seed), 4)

    def model(self, name: str) -> Model:
        """The estimator ``name`` with its fixed maps (drawn from the seed and the name)."""
        f, t = self.config.fit, self.config.truth
        bounds = dict(bound=float(f.bound), bias_bound=float(f.bias_bound))
        if name == "vanilla":
            return make_model(self.spec, Vanilla(**bounds))
        param = linear(t.latent_dim, **bounds) if name == "linear" else nonlinear(name, t.latent_dim, **bounds)
        return make_model(self.spec, param, key=jax.random.fold_in(self.keys()[0], ESTIMATORS.index(name)))

    def truth_labels(self) -> list[TruthLabel]:
        """Every truth: each drawn one, then its family members (delta < 1), in config order."""
        return [TruthLabel(t, d) for t in self.config.truth.through
                for d in (None, *(x for x in self.deltas or () if x != 1))]

    def draw_truths(self) -> dict[TruthLabel, Truth]:
        """Truth label -> Truth, for every label of ``truth_labels``."""
        t = self.config.truth
        out = {}
        for label in self.truth_labels():
            if label.delta is None:
                key = jax.random.fold_in(self.keys()[1], ESTIMATORS.index(label.through))
                try:
                    out[label] = draw_truth(
                        key, self.model(label.through), self.components, scale=float(t.scale),
                        min_separation=float(t.min_separation), min_gate_strength=float(t.min_gate_strength),
                        min_expert_separation=float(t.min_expert_separation), design=self.design)
                except ValueError as e:
                    raise ConfigError(f"[truth] (through {label.through}): {e}") from None
            else:
                try:
                    out[label] = merging_truth(out[TruthLabel(label.through)], label.delta,
                                               key=jax.random.key(_FAMILY_GATE_KEY), design=self.design)
                except ValueError as e:
                    raise ConfigError(f"minimax.deltas: delta={label.delta} gives {e}") from None
        return out

    def x_eval(self):
        """Fixed held-out inputs for the L2 error."""
        return sample_inputs(self.keys()[2], self.config.data.n_eval, self.spec.d, self.design)

    def sim_key(self, label) -> PRNGKeyArray:
        """Simulation key of one truth: shared by all its estimators and settings (paired data)."""
        return jax.random.fold_in(self.keys()[3], label_index(label))

    def pairs(self) -> list[tuple[TruthLabel, str]]:
        """(truth label, estimator) pairs that are fitted: an estimator fits the truths it contains."""
        return [(lab, e) for lab in self.truth_labels() for e in self.estimators if e in ("vanilla", lab.through)]


#: Experiment kinds: the top-level ``kind`` key of a config (default ``"sweep"``).
KINDS = ("sweep", "attention_head")


def experiment_from_dict(raw: dict, name: str = "experiment"):
    """The experiment a config dict describes: an ``Experiment`` (``kind = "sweep"``, the default)
    or a ``moe_lora.head_study.HeadStudy`` (``kind = "attention_head"``)."""
    kind = raw.get("kind", "sweep")
    if kind not in KINDS:
        raise ConfigError(f"kind: unknown experiment kind {kind!r}; expected one of {list(KINDS)}")
    if kind == "attention_head":
        from .head_study import HeadStudy

        return HeadStudy.from_dict(raw, name=name)
    return Experiment.from_dict({k: v for k, v in raw.items() if k != "kind"}, name=name)


def load_experiment(path: str | Path):
    """Read and check a TOML config into its experiment (``experiment_from_dict``); errors name the
    file and the key."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return experiment_from_dict(raw, name=path.stem)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
