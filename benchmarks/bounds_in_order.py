r"""Compute the units of a ``[bound]`` config in a given order: the same computation as
``moe-lora bound`` (``moe_lora.runs.bound.run_bounds``) for non-vanilla units, with the same unit
keys, ``bound_curves`` call and result paths, so ``moe-lora bound`` afterwards finds them and
merges. Used for ``simulations/bound_identifiable_s0.toml`` (every L = L* + 1 unit first):

    nice -n 10 python benchmarks/bounds_in_order.py simulations/bound_identifiable_s0.toml \
        figures/data/bounds_identifiable/bound_identifiable_s0 linear__linear__L+1 \
        sigmoid__sigmoid__L+1 gelu__gelu__L+1 linear__linear__L+0 sigmoid__sigmoid__L+0 \
        gelu__gelu__L+0
"""

import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
from moe_lora.bounds import bound_curves
from moe_lora.experiment import label_index
from moe_lora.kinds import load_experiment
from moe_lora.runs import store
from moe_lora.runs.bound import _path, bound_units

config, out, order = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
exp = load_experiment(config)
truths = exp.draw_truths()
store.write_or_check_manifest(out, exp, truths)
units = {u.id: u for u in bound_units(exp)}
for uid in order:
    u = units[uid]
    assert exp.model(u.estimator).parameterization.name != "vanilla"
    if _path(out, u).exists():
        continue
    t0, cpu = time.perf_counter(), time.process_time()
    key = jax.random.fold_in(jax.random.key(exp.seed), label_index(u.id))
    rows = bound_curves(
        key,
        truths[u.truth],
        exp.model(u.estimator),
        exp.components + u.extra,
        exp.config.bound.bound_config,
        truth_label=str(u.truth),
        estimator_label=u.estimator,
        contained=(),
    )
    store.write_frame(_path(out, u), rows)
    rec = {
        "unit": f"bound/{u.id}",
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu,
    }
    store.record_timing(out, rec)
    print(rec, flush=True)
