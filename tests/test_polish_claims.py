"""Runs sharing one output directory (issue 38): every backend claims a unit the same way
(``store.claim``), so no unit is computed twice, whether the other run is local or on Ray. The
Ray task's claim is tested without Ray (its task body is a plain function); a Ray run where Ray,
the ``ray`` extra, is installed."""

import contextlib
import json
import os
import types
import warnings

import pandas as pd
import pytest

from moe_lora.kinds import load_experiment
from moe_lora.runs import ray as ray_backend
from moe_lora.runs import store


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_toml):
    path = tmp_path_factory.mktemp("cfg") / "tiny_claims.toml"
    path.write_text(tiny_toml("tiny_claims", 5, ["tanh"]))
    return path


def _logged(log):
    """A stand-in for ``compute_unit`` that logs the unit and fits nothing (Ray pickles it)."""

    def compute(context, unit):
        with open(log, "a") as f:
            f.write(unit.id + "\n")
        return pd.DataFrame({"unit": [unit.id]}), 0.0, False

    return compute


def test_a_ray_task_claims_its_unit_as_the_local_backend_does(config, tmp_path):
    exp = load_experiment(config)
    raw, units, out = exp.config.to_dict(), exp.units(), str(tmp_path)
    expected = ray_backend.fingerprint(exp, exp.draw_truths())
    log = tmp_path / "calls.log"

    def task(unit, compute=_logged(log)):
        return ray_backend.unit_task(raw, exp.name, expected, unit, out, compute)

    local_run = store.claimed(out, units)
    assert next(local_run).id == units[0].id  # a local run sharing ``out`` computes units[0]
    assert task(units[0]) is None  # so the task leaves it
    store.unit_path(out, units[1]).write_bytes(b"x")  # another run finished units[1]
    assert task(units[1]) is None
    timing = task(units[2])
    assert timing["unit"] == units[2].id and timing["backend"] == "ray"
    assert log.read_text().split() == [units[2].id]
    assert store.unit_hash(store.unit_path(out, units[2])) == store.config_hash(raw)
    # The local run skips what tasks did, and a task that raises lets go of its claim (for Ray's
    # retry, or the next run).
    assert next(local_run).id == units[3].id
    local_run.close()

    def fail(context, unit):
        raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        task(units[4], fail)
    with store.claim(out, units[4]) as mine:
        assert mine


def test_a_claim_file_removed_under_a_waiting_claimer_is_taken_again(tmp_path, monkeypatch):
    """A holder that gives up removes its claim file; a claimer that opened it just before must
    not count a lock on the removed file, or a third would lock a new file and compute too."""
    unit = types.SimpleNamespace(id="u")
    first = store.claim(tmp_path, unit)
    assert first.__enter__()
    real_open = os.open

    def open_then_holder_gives_up(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        monkeypatch.setattr(os, "open", real_open)
        first.__exit__(None, None, None)  # no result written: the claim file is removed
        return fd

    monkeypatch.setattr(os, "open", open_then_holder_gives_up)
    with store.claim(tmp_path, unit) as second:
        assert second
        with store.claim(tmp_path, unit) as third:
            assert not third


@pytest.mark.slow
def test_a_ray_run_leaves_the_units_another_run_claimed(config, tmp_path):
    ray = pytest.importorskip("ray")
    exp = load_experiment(config)
    units, out, log = exp.units(), tmp_path / "out", tmp_path / "calls.log"
    with contextlib.ExitStack() as other_run:  # another live run computes units[2:]
        assert all(other_run.enter_context(store.claim(out, u)) for u in units[2:])
        with warnings.catch_warnings():  # as in test_scaleout: ray.init forks once JAX started
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            ray.init(address="local", num_cpus=2, include_dashboard=False)
        try:
            summary = ray_backend.run_sweep_ray(exp, out, progress=False, compute=_logged(log))
        finally:
            ray.shutdown()
    mine = sorted(u.id for u in units[:2])
    assert sorted(log.read_text().split()) == mine  # each once, and none of the others
    assert (summary.computed, summary.skipped, summary.failed) == (2, len(units) - 2, [])
    assert summary.missing == [u.id for u in units[2:]] and summary.results is None
    timings = (out / "timings.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["unit"] for line in timings) == mine
    assert sorted(p.stem for p in (out / "units").glob("*.parquet")) == mine
