"""The attention-head experiment kind of ``moe-lora run``: its config, units and their computation.

A config with ``kind = "attention_head"`` describes a teacher-student study on a full attention
head (``moe_lora.head``): a base ``[head]`` section (the fields of ``HeadConfig``), optional
``[variations.<name>]`` tables that override some of them (the base itself is the variation
``headline``), and a ``[study]`` section::

    kind = "attention_head"
    name = "attention_head"
    seed = 0

    [head]                       # HeadConfig: d, d_k, d_v, N, rank_true, rank, sigma, gating, ...
    sigma = 0.1
    finisher = "lm_if_better"

    [variations.overspecified]   # the base with rank = 4
    rank = 4

    [study]
    sizes = [2, 4, 8, 16, 32, 64, 128, 256]   # or {min, max, count}, log-spaced
    seeds = 16
    seeds_per_unit = 4           # the grain of resume, shards and Ray tasks (default: all)
    # names of moe_lora.head.STUDENTS (default: these two)
    students = ["lora", "learned_generator"]

Its units are (variation, student, n, block of seeds), computed by ``moe_lora.head.head_unit``
with the key ``key(seed)``; seed k at size n uses ``fold_in(fold_in(key, n), k)`` whichever unit
holds it, so resume, shards and Ray give the same table as one uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import jax
import numpy as np
import pandas as pd

from . import kinds
from .config import (
    MAX_REPLICATES,
    ConfigError,
    Section,
    check_name,
    check_seed,
    check_type,
    key,
    parse_sizes,
)
from .experiment import ReplicateBlock
from .head import STUDENTS, TRACE_COUNT, HeadConfig, head_unit, parameter_counts, teacher_and_test

DEFAULT_STUDENTS = ("lora", "learned_generator")

KIND = "attention_head"
_HEAD_FIELDS = {f.name for f in dataclasses.fields(HeadConfig)}
_TOP = {
    "kind": (str,),
    "name": (str,),
    "description": (str,),
    "seed": (int,),
    "head": (dict,),
    "variations": (dict,),
    "study": (dict,),
}


def _head(where: str, fields: dict) -> HeadConfig:
    for k in fields:
        if k not in _HEAD_FIELDS:
            raise ConfigError(f"{where}.{k}: unknown key; expected one of {sorted(_HEAD_FIELDS)}")
    try:
        return HeadConfig(**fields)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class StudySection(Section):
    """``[study]``: sample sizes (a list or ``{min, max, count}``), seeds, their grain, students."""

    NAME: ClassVar[str] = "study"
    sizes: tuple[int, ...] = key((list, dict))
    seeds: int = key(int)
    #: Seeds per unit, the grain of resume, shards and Ray tasks (default: all of them).
    seeds_per_unit: int | None = key(int, None)
    students: tuple[str, ...] = key(list, list(DEFAULT_STUDENTS))

    def __post_init__(self):
        sizes = parse_sizes(self, self.sizes)
        if sizes[0] < 2:
            self.fail(
                "sizes",
                f"expected sizes >= 2 (a training and a validation sequence), got {list(sizes)}",
            )
        self.set("sizes", sizes)
        self.count("seeds", "seeds_per_unit")
        if self.seeds > MAX_REPLICATES:
            self.fail("seeds", f"expected at most {MAX_REPLICATES:.0e}, got {self.seeds}")
        self.set("seeds_per_unit", min(self.seeds_per_unit or self.seeds, self.seeds))
        students = tuple(self.students)
        if (
            not students
            or len(set(students)) != len(students)
            or any(s not in STUDENTS for s in students)
        ):
            self.fail(
                "students",
                f"expected distinct students of {list(STUDENTS)}, got {list(students)!r}",
            )
        if "lora" not in students or len(students) < 2:
            self.fail(
                "students",
                f"expected 'lora' (the reference) and another student, got {list(students)!r}",
            )
        self.set("students", students)


@dataclasses.dataclass(frozen=True)
class HeadStudyConfig:
    """A checked attention-head study config. ``to_dict`` gives it back resolved."""

    name: str
    description: str
    seed: int
    head: dict
    variations: dict
    sizes: tuple[int, ...]
    seeds: int
    seeds_per_unit: int
    students: tuple[str, ...]

    @classmethod
    def from_dict(cls, raw: dict, name: str = "attention_head") -> HeadStudyConfig:
        raw = {k: v for k, v in raw.items() if v is not None}
        for k, v in raw.items():
            if k not in _TOP:
                raise ConfigError(
                    f"{k}: unknown key at top level of an attention_head config; expected one of "
                    f"{sorted(_TOP)}"
                )
            check_type(k, v, _TOP[k])
        check_name(raw.get("name") or name)
        check_seed(raw.get("seed", 0))
        head = dict(raw.get("head", {}))
        _head("head", head)
        variations = {}
        for var, fields in raw.get("variations", {}).items():
            if var == "headline":
                raise ConfigError(
                    "variations.headline: the base [head] is the variation 'headline'; name the "
                    "others"
                )
            check_type(f"variations.{var}", fields, (dict,))
            _head(f"variations.{var}", head | fields)
            variations[var] = dict(fields)
        if "study" not in raw:
            raise ConfigError("study: missing required table [study] (sizes, seeds)")
        study = StudySection.parse(raw["study"])
        return cls(
            name=raw.get("name") or name,
            description=raw.get("description", ""),
            seed=raw.get("seed", 0),
            head=head,
            variations=variations,
            sizes=study.sizes,
            seeds=study.seeds,
            seeds_per_unit=study.seeds_per_unit,
            students=study.students,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "head": dict(self.head),
            "variations": {k: dict(v) for k, v in self.variations.items()},
            "study": {
                "sizes": list(self.sizes),
                "seeds": self.seeds,
                "seeds_per_unit": self.seeds_per_unit,
                "students": list(self.students),
            },
        }

    def head_configs(self) -> dict[str, HeadConfig]:
        """Variation name -> its ``HeadConfig``, the base ``headline`` first."""
        return {"headline": HeadConfig(**self.head)} | {
            k: HeadConfig(**(self.head | v)) for k, v in self.variations.items()
        }


@dataclasses.dataclass(frozen=True)
class HeadUnit(ReplicateBlock):
    """Seeds [start, stop) of one (variation, student, n)."""

    variation: str
    student: str
    n: int
    start: int
    stop: int

    @property
    def id(self) -> str:
        return f"{self.variation}__{self.student}__n{self.n}__s{self.start}-{self.stop - 1}"


@dataclasses.dataclass(frozen=True)
class HeadContext:
    """What every unit of a study shares: its configs per variation (teachers are redrawn, cheaply,
    per unit)."""

    study: HeadStudy
    configs: dict

    def compute(self, unit: HeadUnit) -> tuple[pd.DataFrame, float, bool]:
        traces = sum(TRACE_COUNT.values())
        t0 = time.perf_counter()
        rows = head_unit(
            jax.random.key(self.study.seed),
            self.configs[unit.variation],
            unit.student,
            unit.n,
            list(unit.replicates),
            variation=unit.variation,
        )
        return rows, time.perf_counter() - t0, sum(TRACE_COUNT.values()) > traces


@kinds.register
@dataclasses.dataclass(frozen=True)
class HeadStudy:
    """An attention-head study: the ``attention_head`` experiment kind
    (``moe_lora.kinds.ExperimentKind``)."""

    config: HeadStudyConfig
    kind = KIND
    key_columns = ("variation", "student", "n", "seed")

    @classmethod
    def from_dict(cls, raw: dict, name: str = "attention_head") -> HeadStudy:
        return cls(HeadStudyConfig.from_dict(raw, name=name))

    name = property(lambda self: self.config.name)
    seed = property(lambda self: self.config.seed)

    def units(self) -> list[HeadUnit]:
        """Every unit, small n first (so progress estimates come early)."""
        c = self.config
        return [
            HeadUnit(var, student, n, start, min(start + c.seeds_per_unit, c.seeds))
            for n in c.sizes
            for var in c.head_configs()
            for student in c.students
            for start in range(0, c.seeds, c.seeds_per_unit)
        ]

    def draw_truths(self) -> dict:
        """Variation -> its teacher (drawn from the study's key, as every unit draws it)."""
        return {
            var: teacher_and_test(jax.random.key(self.seed), cfg)[0]
            for var, cfg in self.config.head_configs().items()
        }

    def truth_summaries(self, truths: dict) -> dict:
        """The teachers as exact JSON: update sizes, gate diagnostics, factors, the students'
        parameter counts."""
        return {
            var: {
                "update_q": float(t.update_q),
                "update_v": float(t.update_v),
                "gate_change": float(t.gate_change),
                "gate_saturation": float(t.gate_saturation),
                "B_Q": np.asarray(t.lora.B_Q).tolist(),
                "A_V": np.asarray(t.lora.A_V).tolist(),
                "parameters": parameter_counts(self.config.head_configs()[var]),
            }
            for var, t in truths.items()
        }

    def context(self, truths: dict | None = None) -> HeadContext:
        return HeadContext(self, self.config.head_configs())

    def describe(self) -> str:
        c = self.config
        return (
            f"{len(self.units())} units ({len(c.sizes)} sizes x {len(c.head_configs())} variations "
            f"x {len(c.students)} "
            f"students x {-(-c.seeds // c.seeds_per_unit)} seed blocks)"
        )

    def summaries(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``data_efficiency.csv`` and ``improvement.csv`` (``moe_lora.head``)."""
        from .head import data_efficiency, improvement

        return {"data_efficiency.csv": data_efficiency(df), "improvement.csv": improvement(df)}

    def format_summaries(self, summaries: dict[str, pd.DataFrame]) -> str:
        return "\n".join(
            f"{name[:-4]}:\n{table.to_string(index=False)}\n" for name, table in summaries.items()
        )

    def figures(self, df: pd.DataFrame, summaries: dict[str, pd.DataFrame]) -> dict:
        from .head_figure import figure_data_efficiency

        return {f"{self.name}_data_efficiency": figure_data_efficiency(df)}
