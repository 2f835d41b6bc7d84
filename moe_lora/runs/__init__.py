"""Running experiments of any kind: the run directory, the local run loop and the Ray backend.

* ``moe_lora.runs.store``: the run directory (manifest, atomic unit files, logs, merge);
* ``moe_lora.runs.local``: shards, computing units, the run loop, ``run_frame`` and ``run_sweep``;
* ``moe_lora.runs.ray``: the optional Ray backend (imports Ray only when it runs).

An experiment is known here only through ``moe_lora.kinds.ExperimentKind``: its units (in the
fixed order shards are cut from), its context and its key columns.
"""

from ..kinds import UnitContext as UnitContext
from .local import RunSummary as RunSummary
from .local import compute_unit as compute_unit
from .local import parse_shard as parse_shard
from .local import run_estimator as run_estimator
from .local import run_frame as run_frame
from .local import run_sweep as run_sweep
from .local import run_variants as run_variants
from .local import shard_units as shard_units
from .store import MergeReport as MergeReport
from .store import load_results as load_results
from .store import merge_run as merge_run


def units(exp) -> list:
    """``exp.units()``: kept for callers of the removed ``moe_lora.runs.plan``
    (tests/test_head_study.py)."""
    return exp.units()
