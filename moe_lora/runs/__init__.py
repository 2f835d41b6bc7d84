"""Running sweeps: the work plan, the run directory, the local run loop and the Ray backend.

* ``moe_lora.runs.plan``: ``Unit``, ``units``, shards;
* ``moe_lora.runs.store``: the run directory (manifest, atomic unit files, logs, merge);
* ``moe_lora.runs.local``: computing units, the run loop, ``run_frame`` and ``run_sweep``;
* ``moe_lora.runs.ray``: the optional Ray backend (imports Ray only when it runs).
"""

from .local import RunSummary as RunSummary
from .local import UnitContext as UnitContext
from .local import compute_unit as compute_unit
from .local import run_estimator as run_estimator
from .local import run_frame as run_frame
from .local import run_sweep as run_sweep
from .local import run_variants as run_variants
from .plan import Unit as Unit
from .plan import parse_shard as parse_shard
from .plan import units as units
from .store import MergeReport as MergeReport
from .store import load_results as load_results
from .store import merge_run as merge_run
