"""Scale-out on a tiny config: Ray tasks on a local Ray instance, a SLURM job array run under bash,
``moe-lora merge``, failed units, and bad option combinations. The tables must equal the local
run's bit for bit."""

import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from moe_lora import cli
from moe_lora.kinds import load_experiment
from moe_lora.runs import compute_unit
from moe_lora.runs import ray as ray_backend

ROOT = Path(__file__).resolve().parents[1]
N_UNITS = 8  # 2 sizes x 2 truths (tanh, tanh@delta=0.5) x 1 estimator x 2 replicate blocks


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_toml):
    path = tmp_path_factory.mktemp("cfg") / "tiny_scaleout.toml"
    path.write_text(tiny_toml("tiny_scaleout", 5, ["tanh"]))
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """The local, unsharded run."""
    out = tmp_path_factory.mktemp("local")
    assert cli.main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    return _table(out)


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for this module; the CLI and ``run_sweep_ray`` use it as it is (the
    tests that use it skip where Ray, the ``ray`` extra, is not installed)."""
    ray = pytest.importorskip("ray")

    with warnings.catch_warnings():
        # JAX warns at any fork once it has started (earlier tests started it here); ray.init's
        # fork is subprocess's fork + exec, which does not run JAX in the child.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(
            address="local", num_cpus=2, include_dashboard=False
        )  # never a cluster named by RAY_ADDRESS
    yield ray
    ray.shutdown()


def _table(out):
    return pd.read_parquet(Path(out) / "results.parquet")


def test_the_package_does_not_import_ray():
    code = (
        "import sys, moe_lora, moe_lora.cli, moe_lora.runs.ray; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.slow
def test_ray_run_gives_the_local_table(ray_instance, config, reference, tmp_path, capsys):
    assert len(load_experiment(config).units()) == N_UNITS
    assert (
        cli.main(["run", str(config), "--out", str(tmp_path), "--backend", "ray", "--quiet"]) == 0
    )
    pd.testing.assert_frame_equal(_table(tmp_path), reference)
    timings = [json.loads(line) for line in (tmp_path / "timings.jsonl").read_text().splitlines()]
    assert len(timings) == N_UNITS and {t["backend"] for t in timings} == {"ray"}
    assert all(t["pid"] != os.getpid() for t in timings), (
        "units must run in Ray workers, not in the driver"
    )
    assert not (tmp_path / "failed.jsonl").exists()
    # A second run finds every unit present and starts no task.
    capsys.readouterr()
    assert (
        cli.main(["run", str(config), "--out", str(tmp_path), "--backend", "ray", "--quiet"]) == 0
    )
    assert f"computed 0 units, {N_UNITS} already present" in capsys.readouterr().err


def _injected(always: str, crash: str, log: Path):
    """A unit function that raises for ``always`` on every attempt and kills its worker process on
    the first attempt of ``crash``; logs each call."""

    def compute(context, unit):
        with open(log, "a") as f:
            f.write(unit.id + "\n")
        if unit.id == always:
            raise RuntimeError(f"injected failure in {unit.id}")
        if unit.id == crash and log.read_text().splitlines().count(crash) == 1:
            os._exit(3)
        return compute_unit(context, unit)

    return compute


@pytest.mark.slow
def test_failing_unit_is_retried_recorded_and_named_by_merge(
    ray_instance, config, reference, tmp_path, monkeypatch, capsys
):
    ids = [u.id for u in load_experiment(config).units()]
    always, crash = ids[0], ids[5]
    log = tmp_path / "calls.log"
    out = tmp_path / "out"
    monkeypatch.setattr(
        ray_backend,
        "run_sweep_ray",
        functools.partial(ray_backend.run_sweep_ray, compute=_injected(always, crash, log)),
    )
    assert (
        cli.main(
            ["run", str(config), "--out", str(out), "--backend", "ray", "--retries", "2", "--quiet"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert (
        "1 units FAILED" in err
        and f"{always}: RuntimeError: injected failure in {always} (3 attempts)" in err
    )
    calls = log.read_text().splitlines()
    assert calls.count(always) == 3  # retried twice after the first failure
    assert calls.count(crash) == 2  # its worker died once; the retry on a new worker succeeded
    assert sorted(set(calls)) == sorted(ids)
    assert {p.stem for p in (out / "units").glob("*.parquet")} == set(ids) - {always}
    (rec,) = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert (
        rec["unit"] == always
        and rec["attempts"] == 3
        and rec["error"] == f"RuntimeError: injected failure in {always}"
    )
    assert not (out / "results.parquet").exists()

    assert cli.main(["merge", str(out)]) == 1
    printed = capsys.readouterr().err  # a refusal: on stderr
    assert f"1 of {N_UNITS} units missing" in printed
    assert (
        f"  {always}  (failed after 3 attempts: RuntimeError: injected failure in {always})"
        in printed
    )
    assert not (out / "results.parquet").exists()

    # Running again retries the failed unit only; then the table is complete and exact.
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(["run", str(config), "--out", str(out), "--backend", "ray", "--quiet"]) == 0
    assert f"computed 1 units, {N_UNITS - 1} already present" in capsys.readouterr().err
    assert cli.main(["merge", str(out)]) == 0
    pd.testing.assert_frame_equal(_table(out), reference)


@pytest.mark.slow
def test_run_joins_a_running_cluster_by_address(ray_instance, config, reference, tmp_path):
    """A separate driver process joins the test's Ray instance with --address, as on a cluster."""
    out = tmp_path / "out"
    address = ray_instance.get_runtime_context().gcs_address
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "moe_lora.cli",
            "run",
            str(config),
            "--out",
            str(out),
            "--backend",
            "ray",
            "--address",
            address,
            "--shard",
            "0/8",
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "computed 1 units" in res.stderr and "Started a local Ray instance" not in res.stderr
    (unit,) = load_experiment(config).units()[0::8]
    (timing,) = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    assert timing["unit"] == unit.id and timing["backend"] == "ray"
    rows = reference[
        (reference["truth"] == str(unit.truth))
        & (reference["estimator"] == unit.estimator)
        & (reference["extra"] == unit.extra)
        & (reference["n"] == unit.n)
        & reference["replicate"].between(unit.start, unit.stop - 1)
    ]
    assert len(rows) == unit.fits
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "units" / f"{unit.id}.parquet"), rows.reset_index(drop=True)
    )


def test_worker_refuses_truths_other_than_the_drivers(config):
    exp = load_experiment(config)
    good = ray_backend.fingerprint(exp, exp.draw_truths())
    bad = good.replace("0.", "1.", 1)
    with pytest.raises(RuntimeError, match="drew other truths than the driver"):
        ray_backend.worker_context(exp.config.to_dict(), exp.name, bad)
    context = ray_backend.worker_context(exp.config.to_dict(), exp.name, good)
    assert {str(label) for label in context.truths} == {"tanh", "tanh@delta=0.5"}


@pytest.mark.slow
def test_slurm_array_script_and_merge_give_the_local_table(config, reference, tmp_path, capsys):
    out = tmp_path / "out"
    script = ROOT / "simulations" / "slurm_array.sh"
    moe_lora = Path(sys.executable).with_name("moe-lora")
    assert moe_lora.exists(), f"{moe_lora}: the moe-lora command of this environment"
    for task in (4, 5):  # e.g. sbatch --array=4-5: shards 0/2 and 1/2
        env = dict(
            os.environ,
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_TASK_MIN="4",
            SLURM_ARRAY_TASK_COUNT="2",
            MOE_LORA=str(moe_lora),
        )
        res = subprocess.run(
            ["bash", str(script), str(config), str(out)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
        assert f"shard {task - 4}/2" in res.stderr
    (out / "results.parquet").unlink()
    (out / "results.csv").unlink()
    assert cli.main(["merge", str(out)]) == 0
    assert f"all {N_UNITS} units present" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_table(out), reference)
    assert len(pd.read_csv(out / "results.csv")) == len(reference)


@pytest.mark.slow
def test_slurm_resubmitted_indices_keep_their_shards(config, reference, tmp_path):
    """sbatch --export=ALL,SHARDS=3 --array=2 after a 3-task array lost its task 2: shard 2/3, not
    0/1."""
    out = tmp_path / "out"
    for i in (0, 1):
        assert (
            cli.main(["run", str(config), "--out", str(out), "--shard", f"{i}/3", "--quiet"]) == 0
        )
    assert not (out / "results.parquet").exists()
    env = dict(
        os.environ,
        SLURM_ARRAY_TASK_ID="2",
        SLURM_ARRAY_TASK_MIN="2",
        SLURM_ARRAY_TASK_COUNT="1",
        SHARDS="3",
        MOE_LORA=str(Path(sys.executable).with_name("moe-lora")),
    )
    res = subprocess.run(
        ["bash", str(ROOT / "simulations" / "slurm_array.sh"), str(config), str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "shard 2/3" in res.stderr
    pd.testing.assert_frame_equal(_table(out), reference)


def test_slurm_array_script_refuses_a_plain_run(config, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    res = subprocess.run(
        ["bash", str(ROOT / "simulations" / "slurm_array.sh"), str(config), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "submit with sbatch --array" in res.stderr
    assert not (tmp_path / "out").exists()


def test_merge_names_missing_units_and_writes_nothing(config, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", str(config), "--out", str(out), "--shard", "1/4", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["merge", str(out)]) == 1
    printed = capsys.readouterr().err  # a refusal: on stderr
    present = {p.stem for p in (out / "units").glob("*.parquet")}
    expected_missing = [u.id for u in load_experiment(config).units() if u.id not in present]
    assert len(present) == 2 and f"{len(expected_missing)} of {N_UNITS} units missing" in printed
    assert [
        line.strip() for line in printed.splitlines() if line.startswith("  ")
    ] == expected_missing
    assert not (out / "results.parquet").exists()


def test_merge_refuses_a_directory_without_manifest(tmp_path, capsys):
    assert cli.main(["merge", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_merge_refuses_units_of_another_run(config, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    frame = pd.read_parquet(next((out / "units").glob("*n60__r0-0.parquet")))
    dup = next((out / "units").glob("*n60__r1-1.parquet"))
    frame.to_parquet(dup, index=False)  # a unit file holding another unit's rows
    assert cli.main(["merge", str(out)]) == 2
    assert "duplicated" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--address", "auto"], "--address is an option of --backend ray, got --backend local"),
        (
            ["--backend", "local", "--retries", "3"],
            "--retries is an option of --backend ray, got --backend local",
        ),
        (["--num-cpus", "2"], "--num-cpus is an option of --backend ray, got --backend local"),
        (
            ["--backend", "ray", "--retries", "-1"],
            "--retries: expected a non-negative integer, got -1",
        ),
        (["--backend", "ray", "--num-cpus", "0"], "--num-cpus: expected a positive integer, got 0"),
        (
            ["--backend", "ray", "--num-cpus", "2", "--address", "auto"],
            "cannot be combined with --address auto",
        ),
    ],
)
def test_bad_backend_options_are_refused_before_any_work(config, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert cli.main(["run", str(config), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_backend_is_refused(config, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", str(config), "--backend", "dask"])
    assert e.value.code == 2 and "invalid choice: 'dask'" in capsys.readouterr().err


def test_missing_ray_says_how_to_install_it(config, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    out = tmp_path / "out"
    assert cli.main(["run", str(config), "--out", str(out), "--backend", "ray"]) == 2
    assert "pip install 'moe_lora[ray]'" in capsys.readouterr().err
    assert not out.exists()
