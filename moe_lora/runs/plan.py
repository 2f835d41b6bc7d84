"""The work plan of a sweep: units in a fixed order, and shards of them.

A unit is replicates [start, stop) of one (truth, estimator, setting L* + extra, sample size n).
The order depends only on the config (small n first, so early units are cheap and a progress
estimate is soon available); shard i of k takes units i, i + k, i + 2k, ... of it.
"""

from __future__ import annotations

import dataclasses

from ..experiment import Experiment, TruthLabel


@dataclasses.dataclass(frozen=True)
class Unit:
    """One work unit: replicates [start, stop) of (truth, estimator, L* + extra, n)."""

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

    @property
    def fits(self) -> int:
        return self.stop - self.start

    @property
    def replicates(self) -> range:
        return range(self.start, self.stop)


def units(exp: Experiment) -> list[Unit]:
    """All units of an experiment, in the fixed order shards are cut from (small n first)."""
    step = exp.chunk
    return [Unit(truth, est, extra, n, start, min(start + step, exp.replicates))
            for n in exp.sizes for truth, est in exp.pairs() for extra in exp.settings
            for start in range(0, exp.replicates, step)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/k"`` -> (i, k) with 0 <= i < k.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected i/k with integers 0 <= i < k, got {text!r}") from None
    if not 0 <= i < k:
        raise ValueError(f"--shard: expected i/k with 0 <= i < k, got {text!r}")
    return i, k


def shard_units(all_units: list[Unit], shard: tuple[int, int]) -> list[Unit]:
    """Units i, i + k, i + 2k, ... of ``all_units`` for ``shard = (i, k)``."""
    i, k = shard
    return all_units[i::k]
