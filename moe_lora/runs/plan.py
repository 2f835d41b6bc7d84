"""The work plan of a run: its units in a fixed order, and shards of them.

An experiment (a sweep, ``moe_lora.experiment.Experiment``, or another kind such as
``moe_lora.head_study.HeadStudy``) lists its units; each has an ``id`` (its result file's name),
``fits`` and ``n`` (so the run loop can weigh its cost). The order depends only on the config
(small n first, so early units are cheap and a progress estimate is soon available); shard i of k
takes units i, i + k, i + 2k, ... of it.
"""

from __future__ import annotations

from ..experiment import Unit as Unit


def units(exp) -> list:
    """All units of an experiment, in the fixed order shards are cut from."""
    return exp.units()


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


def shard_units(all_units: list, shard: tuple[int, int]) -> list:
    """Units i, i + k, i + 2k, ... of ``all_units`` for ``shard = (i, k)``."""
    i, k = shard
    return all_units[i::k]
