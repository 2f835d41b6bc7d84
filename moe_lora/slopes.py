"""How a log-log slope and its interval are read off a table: one settings object.

The sweep's slope tables and verdicts (``moe_lora.rates``, ``moe_lora.verdicts``, a config's
``[rates]``) and the head study's rate slopes (``moe_lora.head.rate_slopes``) take the same
``SlopeSettings``; the defaults are stated here once, and the head study's own choices are
``HEAD_SLOPES``, a ``SlopeSettings`` too.
"""

from __future__ import annotations

import dataclasses
import math

#: The statistics over replicates (or seeds) a slope is fitted to.
STATISTICS = ("mean", "median")


@dataclasses.dataclass(frozen=True)
class SlopeSettings:
    """The statistic, fit range and bootstrap of a log-log slope.

    Attributes:
        statistic: ``"mean"`` or ``"median"`` over replicates at each n.
        n_min, n_max: the fit range, n_min <= n <= n_max (None: unbounded).
        bootstrap: number of bootstrap draws of the interval.
        level: the interval's coverage.
        seed: the bootstrap generator's seed (``numpy.random.default_rng(seed)``).

    >>> SlopeSettings().replace(n_min=1000)
    SlopeSettings(statistic='mean', n_min=1000, n_max=None, bootstrap=1000, level=0.95, seed=0)
    """

    statistic: str = "mean"
    n_min: int | None = None
    n_max: int | None = None
    bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.statistic not in STATISTICS:
            raise ValueError(f"Unknown statistic {self.statistic!r}; expected one of {STATISTICS}")
        if isinstance(self.bootstrap, bool) or int(self.bootstrap) != self.bootstrap:
            raise ValueError(f"bootstrap: expected an integer >= 1, got {self.bootstrap!r}")
        if self.bootstrap < 1:
            raise ValueError(f"bootstrap: expected an integer >= 1, got {self.bootstrap!r}")
        if not (isinstance(self.level, (int, float)) and 0 < self.level < 1):
            raise ValueError(f"level: expected a number in (0, 1), got {self.level!r}")
        if self.n_min is not None and self.n_max is not None and self.n_min > self.n_max:
            raise ValueError(
                f"rates: expected n_min <= n_max, got n_min = {self.n_min} > n_max = {self.n_max}"
            )

    def replace(self, **changes) -> SlopeSettings:
        """A copy with ``changes`` (field names), checked."""
        return dataclasses.replace(self, **changes)

    def in_range(self, n):
        """Whether each size of ``n`` lies in the fit range (a boolean mask)."""
        lo = -math.inf if self.n_min is None else self.n_min
        hi = math.inf if self.n_max is None else self.n_max
        return (n >= lo) & (n <= hi)


def settings(slopes: SlopeSettings | None, overrides: dict) -> SlopeSettings:
    """``slopes`` (default ``SlopeSettings()``) with the field ``overrides`` of a call, so a
    caller may write ``slope_table(df, bootstrap=200)`` for
    ``slope_table(df, slopes=SlopeSettings(bootstrap=200))``.

    Raises:
        TypeError: an override that is not a field of ``SlopeSettings``.
    """
    fields = {f.name for f in dataclasses.fields(SlopeSettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"unexpected keyword arguments {unknown}; slope settings are {sorted(fields)}"
        )
    base = SlopeSettings() if slopes is None else slopes
    return base.replace(**overrides) if overrides else base
