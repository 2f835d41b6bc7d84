"""Replicates and units of the head simulation: keys, one jitted block per (student, n), table rows.

Seed k at sample size n uses ``fold_in(fold_in(key, n), k)``; the teacher and the test inputs
come from ``fold_in(key, 0)`` (n >= 2, so no replicate shares it). ``simulate_head`` is jitted
once per (student, n, config); ``TRACE_COUNT`` counts its traces.
"""

from __future__ import annotations

import collections
import functools

import jax
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, PRNGKeyArray

from ..simulate import replicate_keys
from .config import HeadConfig
from .fitting import HeadRecord, fit_replicate, split_sizes
from .forward import check_head, sample_sequences
from .students import HeadStudent, student_of
from .teacher import Teacher, draw_teacher

#: Traces of the jitted unit, per (student name, n): a compile counter for tests.
TRACE_COUNT: collections.Counter = collections.Counter()

METRICS = ("function_error", "function_rmse", "gate_error", "value_error")


@functools.partial(jax.jit, static_argnames=("config", "student", "n"))
def _simulate_block(keys, teacher, X_test, *, config, student, n):
    TRACE_COUNT[(student.name, n)] += 1
    return jax.vmap(lambda k: fit_replicate(k, teacher, X_test, config, student, n))(keys)


def teacher_and_test(
    key: PRNGKeyArray, config: HeadConfig
) -> tuple[Teacher, Float[Array, "m N d"]]:
    """The experiment's teacher and test sequences, both from ``fold_in(key, 0)``."""
    k_teacher, k_test = jax.random.split(jax.random.fold_in(key, 0))
    return draw_teacher(k_teacher, config), sample_sequences(k_test, config, config.n_test)


def seed_list(seeds) -> np.ndarray:
    """Seed indices from a count S (0..S-1) or a sequence."""
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(
                f"seeds must be a positive count or a sequence of seed indices, got {seeds!r}"
            )
        return np.arange(seeds)
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or (seeds < 0).any():
        raise ValueError(
            f"seeds must be a non-empty sequence of non-negative indices, got {seeds!r}"
        )
    return seeds


def simulate_head(
    key: PRNGKeyArray,
    config: HeadConfig,
    student: str | HeadStudent,
    n: int,
    seeds,
    *,
    teacher: Teacher | None = None,
) -> HeadRecord:
    """Fit ``student`` to n noisy sequences from the teacher, for each seed (vmapped, one
    compilation per (student, n)).

    Args:
        key: the experiment's key: the teacher and test set come from fold_in(key, 0) (unless
            ``teacher`` is given), seed k uses fold_in(fold_in(key, n), k).
        config: the setting. student: a name of ``STUDENTS`` or a ``HeadStudent``.
        n: sequences per sample (>= 2). seeds: a count S (seeds 0..S-1) or a sequence of indices.
        teacher: reuse an already drawn teacher (then the test set still comes from ``key``).

    Returns:
        A ``HeadRecord`` with a leading seed axis.

    Example:
        >>> import jax
        >>> c = HeadConfig(steps=50, starts=1, n_test=16)
        >>> rec = simulate_head(jax.random.key(0), c, "learned_generator", 8, 2)
        >>> rec.function_error.shape
        (2,)
    """
    student = student_of(student)
    split_sizes(config, n)
    drawn, X_test = teacher_and_test(key, config)
    teacher = drawn if teacher is None else teacher
    check_head(config, teacher.weights, teacher.lora)
    keys = replicate_keys(key, int(n), seed_list(seeds))  # the sweep's key derivation
    return _simulate_block(keys, teacher, X_test, config=config, student=student, n=int(n))


def head_rows(
    record: HeadRecord, *, student: str, n: int, seeds, labels: dict | None = None
) -> pd.DataFrame:
    """Tidy rows (one per seed) of a batched record: student, n, seed, every record field, and the
    labels."""
    seeds = seed_list(seeds)
    table = pd.DataFrame({name: np.asarray(value) for name, value in record._asdict().items()})
    table.insert(0, "seed", seeds.astype(int))
    table.insert(0, "n", int(n))
    table.insert(0, "student", student)
    for name, value in (labels or {}).items():
        table[name] = value
    return table


def head_unit(
    key: PRNGKeyArray,
    config: HeadConfig,
    student: str,
    n: int,
    seeds,
    *,
    variation: str = "headline",
) -> pd.DataFrame:
    """The unit of work: one (variation, student, n, block of seeds), as table rows.

    Deterministic in (key, config, student, n, seeds): any process computing the same unit gets
    the same rows. The rows carry the variation's label and the settings that vary between
    variations (gating, truth, rank, rank_true, hidden width, trunks, update_q).
    """
    s = student_of(student)
    record = simulate_head(key, config, s, n, seeds)
    labels = {
        "variation": variation,
        "gating": config.gating,
        "truth": config.truth,
        "rank": config.rank,
        "rank_true": config.rank_true,
        "hidden": config.width,
        "separate_trunks": config.separate_trunks,
        "update_q": config.update_q,
        "parameters": s.parameter_count(config),
    }
    return head_rows(record, student=s.name, n=n, seeds=seeds, labels=labels)
