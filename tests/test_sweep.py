"""The main job end to end on a tiny config: run, kill, resume, shard, merge, rates, plots."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moe_lora import cli
from moe_lora.experiment import Experiment
from moe_lora.runs import load_results, run_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_toml):
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(tiny_toml("tiny", 3, ["vanilla", "tanh"]))
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """An uninterrupted, unsharded run through the CLI."""
    out = tmp_path_factory.mktemp("ref")
    assert cli.main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    return out


def _table(out):
    return pd.read_parquet(Path(out) / "results.parquet")


def test_reference_run_writes_a_complete_tidy_table(reference, config):
    from moe_lora.experiment import load_experiment

    exp = load_experiment(config)
    df = _table(reference)
    assert len(exp.units()) == 2 * 4 * 2  # sizes x (truth, estimator) pairs x replicate blocks
    assert (
        len(df) == 2 * 4 * 2
        and not df.duplicated(["truth", "estimator", "extra", "n", "replicate"]).any()
    )
    assert set(df["truth"]) == {"tanh", "tanh@delta=0.5"} and set(df["estimator"]) == {
        "vanilla",
        "tanh",
    }
    for col in [
        "risk",
        "risk_truth",
        "grad_norm",
        "rel_grad",
        "iterations",
        "converged",
        "certified",
        "min_weight",
        "D",
        "l2_error",
        "cell_size_0",
        "cell_size_1",
        "stop_reason",
    ]:
        assert col in df
    assert np.isfinite(df["D"]).all()
    cert = df[df["certified"]]
    assert (cert["risk"] <= cert["risk_truth"] * (1 + 1e-10)).all()
    csv = pd.read_csv(reference / "results.csv")
    assert len(csv) == len(df)
    m = json.loads((reference / "manifest.json").read_text())
    assert m["seed"] == 3 and m["config"]["fit"]["max_iter"] == 30 and m["package_version"]
    assert {"jax", "numpy", "pandas"} <= set(m["libraries"]) and "git_commit" in m
    assert m["truths"]["tanh"]["gate_strength"] >= 0.5


def test_shards_merge_to_the_unsharded_table(reference, config, tmp_path):
    for i in range(2):
        assert (
            cli.main(["run", str(config), "--out", str(tmp_path), "--shard", f"{i}/2", "--quiet"])
            == 0
        )
        assert (tmp_path / "results.parquet").exists() == (i == 1)
    pd.testing.assert_frame_equal(_table(tmp_path), _table(reference))


def test_in_memory_run_gives_the_written_table(reference, config):
    from moe_lora.experiment import load_experiment
    from moe_lora.runs import run_frame

    df = run_frame(load_experiment(config), progress=False)
    pd.testing.assert_frame_equal(df, _table(reference))


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_repetition(reference, config, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moe_lora.cli",
            "run",
            str(config),
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    unit_dir = tmp_path / "units"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(unit_dir.glob("*.parquet")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name for p in unit_dir.glob("*.parquet")}
    assert 1 <= len(done) < 16, "the kill should land mid-run"
    exp = Experiment.from_dict(json.loads((tmp_path / "manifest.json").read_text())["config"])
    summary = run_sweep(exp, tmp_path, progress=False)
    assert (
        summary.computed == 16 - len(done) and summary.skipped == len(done) and not summary.missing
    )
    pd.testing.assert_frame_equal(_table(tmp_path), _table(reference))
    # A second start finds nothing to do.
    assert run_sweep(exp, tmp_path, progress=False).computed == 0


def test_other_config_in_same_directory_is_refused(reference, config, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("max_iter = 30", "max_iter = 31"))
    assert cli.main(["run", str(other), "--out", str(reference), "--quiet"]) == 2
    assert "holds a different config" in capsys.readouterr().err


def test_bad_config_fails_before_any_work(config, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("max_iter = 30", "max_iters = 30"))
    out = tmp_path / "out"
    assert cli.main(["run", str(bad), "--out", str(out)]) == 2
    assert "fit.max_iters: unknown key" in capsys.readouterr().err
    assert not out.exists()


def test_bad_shard_is_refused(config, tmp_path, capsys):
    assert cli.main(["run", str(config), "--out", str(tmp_path / "out"), "--shard", "2/2"]) == 2
    assert "--shard: expected i/k with 0 <= i < k, got '2/2'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rates_and_plot_commands(reference, tmp_path, capsys):
    assert cli.main(["rates", str(reference)]) == 0
    printed = capsys.readouterr().out
    assert "minimax-mean" in printed and "l2_error" in printed
    rates = pd.read_csv(reference / "rates.csv")
    assert set(rates["estimator"]) == {"vanilla", "tanh"}
    assert cli.main(["plot", str(reference), "--out", str(tmp_path)]) == 0
    for stem in ["loss_D", "loss_l2", "minimax", "diagnostics"]:
        for ext in ["pdf", "png"]:
            assert (tmp_path / f"tiny_{stem}.{ext}").stat().st_size > 0
    # n = 60..120 spans no decade of eps: no sample-complexity figure, and a stale one is removed
    assert not (tmp_path / "tiny_sample_complexity.png").exists()
    (tmp_path / "tiny_sample_complexity_median.png").write_bytes(b"old")
    assert cli.main(["plot", str(reference), "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "tiny_sample_complexity_median.png").exists()
    assert "removed tiny_sample_complexity_median" in capsys.readouterr().err
    data = tmp_path / "data" / "tiny"
    pd.testing.assert_frame_equal(pd.read_parquet(data / "results.parquet"), _table(reference))
    assert json.loads((data / "manifest.json").read_text())["name"] == "tiny"
    assert len(pd.read_csv(data / "rates.csv")) == len(rates)
    assert (
        reference / "results.parquet"
    ).stat().st_mode & 0o777 != 0o600  # not mkstemp's private mode


def test_load_results_merges_partial_runs(reference, tmp_path, capsys):
    import shutil

    shutil.copyfile(reference / "manifest.json", tmp_path / "manifest.json")
    kept = sorted((reference / "units").glob("*.parquet"))[::2]  # every other unit: a partial run
    (tmp_path / "units").mkdir()
    for path in kept:
        shutil.copyfile(path, tmp_path / "units" / path.name)
    df, manifest = load_results(tmp_path)
    assert (
        manifest["name"] == "tiny"
        and f"{16 - len(kept)} of 16 units missing" in capsys.readouterr().err
    )
    expected = pd.concat([pd.read_parquet(p) for p in kept], ignore_index=True)
    assert len(df) == len(expected) == len(kept) < 16
    key = ["truth", "estimator", "extra", "n", "replicate"]
    pd.testing.assert_frame_equal(
        df, expected.sort_values(key, kind="stable").reset_index(drop=True)
    )
    full, _ = load_results(reference)  # a finished run reads its merged table
    assert len(full) == 16


def test_progress_reports_units_rate_and_time_left():
    import io

    from moe_lora.experiment import Unit
    from moe_lora.runs.local import UnitResult, run_units

    todo = [Unit("t", "vanilla", 0, n, 0, 2) for n in (100, 300)]
    stream = io.StringIO()
    seen = []
    results = (UnitResult(u, None, {"seconds": 1.0}) for u in todo[:1])
    run_units(results, todo, 3, on_result=seen.append, progress=True, stream=stream)
    text = stream.getvalue()
    assert "[2/3 units]" in text and "fits/s" in text and "left ~" in text and todo[0].id in text
    assert "25%" in text  # work counts fits x n: 2 x 100 of 2 x 100 + 2 x 300
    assert [r.unit for r in seen] == todo[:1]


def test_both_kinds_meet_the_kind_contract_and_the_run_layer_imports_no_kind():
    import ast

    import moe_lora
    from moe_lora.kinds import ExperimentKind, UnitContext, WorkUnit, kind_class, load_experiment

    for path in ("simulations/quick.toml", "simulations/attention_head_quick.toml"):
        exp = load_experiment(Path(moe_lora.__file__).parents[1] / path)
        assert isinstance(exp, ExperimentKind) and kind_class(exp.kind) is type(exp)
        assert all(isinstance(u, WorkUnit) for u in exp.units()) and len(
            {u.id for u in exp.units()}
        ) == len(exp.units())
    assert isinstance(Experiment.from_dict(_TINY_DICT).context(), UnitContext)
    # No import circle: the kinds import nothing from the run layer, the run layer no kind module.
    root = Path(moe_lora.__file__).parent
    imported = {}
    for module in ("experiment.py", "kinds.py", "runs/local.py", "runs/store.py", "runs/ray.py"):
        tree = ast.parse((root / module).read_text())
        imported[module] = {
            (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        }
    assert not any("runs" in m for m in imported["experiment.py"] | imported["kinds.py"])
    assert not any(
        m.endswith(("experiment", "head_study"))
        for f in ("runs/local.py", "runs/store.py", "runs/ray.py")
        for m in imported[f]
    )


_TINY_DICT = {
    "estimators": ["tanh"],
    "model": {"d": 2, "gate_scale": 3.0},
    "data": {"sigma": 0.05, "sizes": [60], "replicates": 1, "n_eval": 50},
}


def test_a_run_drops_compiled_programs_only_near_the_limit_on_memory_mappings(monkeypatch):
    from types import SimpleNamespace

    from moe_lora.runs import local

    cleared = []
    monkeypatch.setattr(local.jax, "clear_caches", lambda: cleared.append(1))
    assert not local.release_compiled_programs(mappings=lambda: (30_000, 65_530))
    assert not local.release_compiled_programs(mappings=lambda: None)  # no /proc: nothing
    assert cleared == []
    assert local.release_compiled_programs(mappings=lambda: (40_000, 65_530))
    assert cleared == [1]
    held = local._mappings()
    assert held is None or 0 < held[0] < held[1]
    # The local backend checks after every unit.
    checks = []
    monkeypatch.setattr(local, "release_compiled_programs", lambda: checks.append(1))
    units = [SimpleNamespace(id=f"u{i}", fits=1) for i in range(3)]
    fake = lambda context, u: (pd.DataFrame({"unit": [u.id]}), 0.0, False)  # noqa: E731
    results = list(local.compute_locally(None, units, compute=fake))
    assert [r.unit.id for r in results] == ["u0", "u1", "u2"] and len(checks) == 3
