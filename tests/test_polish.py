"""What a new user meets first (issue 38): provenance and integrity of a run directory, bad input
refused before any work as one line on stderr, partial runs, the figure style, the version and
the command's start-up."""

import configparser
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import moe_lora
from moe_lora import cli
from moe_lora.config import MAX_N, Config, ConfigError
from moe_lora.experiment import load_experiment
from moe_lora.runs import store

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
name = "small"
seed = 1
estimators = ["tanh"]
[model]
d = 2
gate_scale = 3.0
[truth]
min_separation = 0.5
min_gate_strength = 0.5
[data]
sigma = {sigma}
sizes = [60, 120]
replicates = 2
n_eval = 200
[fit]
extra_components = [0]
max_iter = 20
[execution]
replicates_per_unit = 1
"""


def _config(tmp_path, name="small.toml", **values) -> Path:
    path = tmp_path / name
    path.write_text(SMALL.format(**({"sigma": 0.05} | values)))
    return path


def _error(capsys) -> str:
    """The command's stderr, checked to be one error line."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the small config (4 units)."""
    cfg = _config(tmp_path_factory.mktemp("cfg"))
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    return cfg, out


def _copy_run(src: Path, dst: Path, units=slice(None)) -> Path:
    (dst / "units").mkdir(parents=True)
    (dst / "manifest.json").write_bytes((src / "manifest.json").read_bytes())
    for p in sorted((src / "units").glob("*.parquet"))[units]:
        (dst / "units" / p.name).write_bytes(p.read_bytes())
    return dst


# --------------------------------------------------------------------------------------------
# Provenance and integrity


def test_unit_files_record_the_config_hash(finished):
    cfg, out = finished
    exp = load_experiment(cfg)
    expected = store.config_hash(exp.config.to_dict())
    for p in (out / "units").glob("*.parquet"):
        assert pq.read_schema(p).metadata[store.HASH_KEY].decode() == expected
    # name and description change no number; [data] does
    raw = exp.config.to_dict()
    assert store.config_hash(raw | {"name": "other", "description": "x"}) == expected
    assert store.config_hash(raw | {"data": raw["data"] | {"sigma": 0.1}}) != expected


def test_units_of_another_config_are_refused_without_a_manifest(finished, tmp_path, capsys):
    _, out = finished
    run = _copy_run(out, tmp_path / "run")
    (run / "manifest.json").unlink()
    other = _config(tmp_path, sigma=0.2)
    assert cli.main(["run", str(other), "--out", str(run), "--quiet"]) == 2
    line = _error(capsys)
    assert "4 unit files were computed with another config" in line
    assert not list((run / "units").glob("*.tmp"))


def test_resume_without_manifest_of_the_same_config_reuses_its_units(finished, tmp_path, capsys):
    cfg, out = finished
    run = _copy_run(out, tmp_path / "run")
    (run / "manifest.json").unlink()
    assert cli.main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0
    assert "computed 0 units, 4 already present" in capsys.readouterr().err


def test_old_units_without_hash_need_a_manifest(finished, tmp_path, capsys):
    cfg, out = finished
    run = _copy_run(out, tmp_path / "run")
    for p in (run / "units").glob("*.parquet"):  # as 0.1.0 wrote them: no hash
        pd.read_parquet(p).to_parquet(p, index=False)
    assert cli.main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0  # manifest matches
    (run / "manifest.json").unlink()
    (run / "results.parquet").unlink()
    assert cli.main(["run", str(cfg), "--out", str(run), "--quiet"]) == 2
    assert "without a config hash" in _error(capsys)


def test_a_refused_resume_names_the_keys_that_differ(finished, tmp_path, capsys):
    _, out = finished
    run = _copy_run(out, tmp_path / "run")
    assert cli.main(["run", str(_config(tmp_path, sigma=0.2)), "--out", str(run)]) == 2
    line = _error(capsys)
    assert "holds a different config" in line and "data.sigma: 0.05 recorded, 0.2 now" in line


def test_a_resume_with_other_verdict_rules_is_refused(finished, tmp_path, capsys):
    cfg, out = finished
    run = _copy_run(out, tmp_path / "run")
    other = tmp_path / "rules.toml"
    other.write_text(cfg.read_text() + "[rates]\nstatistic = 'median'\n")
    assert cli.main(["run", str(other), "--out", str(run), "--quiet"]) == 2
    assert "rates.statistic: 'mean' recorded, 'median' now" in _error(capsys)
    assert json.loads((run / "manifest.json").read_text())["config"]["rates"]["statistic"] == "mean"


def test_corrupt_and_half_written_units_are_computed_again(finished, tmp_path, capsys):
    cfg, out = finished
    run = _copy_run(out, tmp_path / "run")
    first, second = sorted((run / "units").glob("*.parquet"))[:2]
    first.write_bytes(first.read_bytes()[:100])  # half-written
    second.write_bytes(b"not parquet")
    stale = run / "units" / f".{second.name}.abc123.tmp"  # left by a kill -9
    stale.write_bytes(b"partial")
    stale_table = run / ".results.parquet.xyz.tmp"
    stale_table.write_bytes(b"partial")
    assert cli.main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "corrupt or half-written" in err and "computed 2 units, 2 already present" in err
    assert not stale.exists() and not stale_table.exists()
    pd.testing.assert_frame_equal(
        pd.read_parquet(run / "results.parquet"), pd.read_parquet(out / "results.parquet")
    )


def test_merge_and_run_refuse_a_shard_of_another_config(finished, tmp_path, capsys):
    cfg, out = finished
    other = tmp_path / "other"  # shard 1/4 of a run with another sigma: one unit, same name
    assert (
        cli.main(
            [
                "run",
                str(_config(tmp_path, sigma=0.2)),
                "--out",
                str(other),
                "--shard",
                "1/4",
                "--quiet",
            ]
        )
        == 0
    )
    (foreign,) = (other / "units").glob("*.parquet")
    run = _copy_run(out, tmp_path / "run")
    (run / "units" / foreign.name).write_bytes(foreign.read_bytes())  # copied in by mistake
    expected = store.config_hash(load_experiment(cfg).config.to_dict())
    recorded = store.unit_hash(foreign)
    assert recorded != expected
    capsys.readouterr()
    assert cli.main(["merge", str(run)]) == 2
    printed = capsys.readouterr()
    line = printed.err.strip()
    assert printed.out == "" and len(line.splitlines()) == 1
    assert line.startswith(f"moe-lora merge: error: {run / 'units' / foreign.name}: ")
    assert f"config hash {recorded}, expected {expected}" in line
    assert not (run / "results.parquet").exists()
    # Reading the unmerged units refuses it too, partial or not.
    for command in (["rates", str(run)], ["rates", str(run), "--partial"]):
        assert cli.main(command) == 2
        assert f"config hash {recorded}, expected {expected}" in _error(capsys)
    # A resume refuses it too, though the manifest matches the config.
    assert cli.main(["run", str(cfg), "--out", str(run), "--quiet"]) == 2
    line = _error(capsys)
    assert "1 unit files were computed with another config" in line
    assert f"config hash {recorded} in {foreign.name}, this config's is {expected}" in line


def test_a_claimed_unit_is_left_to_the_run_that_holds_it(finished, tmp_path):
    cfg, _ = finished
    units = load_experiment(cfg).units()
    first, second = store.claimed(tmp_path, units), store.claimed(tmp_path, units)
    assert next(first).id == units[0].id  # its claim is held until the next unit is asked for
    assert next(second).id == units[1].id  # the other run skips it
    # A unit whose file appeared meanwhile is not computed again.
    store.unit_path(tmp_path, units[2]).write_bytes(b"x")
    assert next(first).id == units[3].id
    assert [u.id for u in second] == []  # units[3] claimed by the first, [2] present
    first.close()


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on an ``flock`` (Linux's /proc/locks lists waiters
    with ``->``)."""
    return any(
        line.split()[1] == "->" and line.split()[5] == str(pid)
        for line in Path("/proc/locks").read_text().splitlines()
        if len(line.split()) > 5
    )


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_two_configs_cannot_race_past_the_manifest_check(tmp_path):
    """A run checks or writes the manifest holding DIR/.lock: while another run holds it (here the
    test, as a run of another sigma would), it waits, then finds the other config and refuses."""
    out = tmp_path / "out"
    out.mkdir()
    mine, other = _config(tmp_path, "a.toml"), _config(tmp_path, "b.toml", sigma=0.2)
    command = [sys.executable, "-m", "moe_lora", "run", str(mine), "--out", str(out), "--quiet"]
    with store.directory_lock(out):
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not _waits_for_a_lock(proc.pid):
            assert proc.poll() is None, proc.communicate()[1]
            assert not (out / "manifest.json").exists(), "the run wrote its manifest unlocked"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        exp = load_experiment(other)
        store.write_or_check_manifest(out, exp, exp.draw_truths())
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "holds a different config" in err and "data.sigma: 0.2 recorded, 0.05 now" in err
    assert json.loads((out / "manifest.json").read_text())["config"]["data"]["sigma"] == 0.2


def test_git_commit_comes_only_from_moe_loras_own_tree(tmp_path, monkeypatch):
    def git(*args, cwd):
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

    project = tmp_path / "project"  # a user's project with moe_lora installed in its .venv
    package = project / ".venv" / "lib" / "site-packages" / "moe_lora"
    (package / "runs").mkdir(parents=True)
    git("init", "-q", cwd=project)
    git(
        "-c",
        "user.name=u",
        "-c",
        "user.email=u@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
        cwd=project,
    )
    monkeypatch.setattr(store, "__file__", str(package / "runs" / "store.py"))
    assert store._git_commit() is None
    own = tmp_path / "source"  # the repository itself: moe_lora/ at its top
    (own / "moe_lora" / "runs").mkdir(parents=True)
    git("init", "-q", cwd=own)
    git(
        "-c",
        "user.name=u",
        "-c",
        "user.email=u@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
        cwd=own,
    )
    monkeypatch.setattr(store, "__file__", str(own / "moe_lora" / "runs" / "store.py"))
    assert re.fullmatch(r"[0-9a-f]{40}", store._git_commit())


# --------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, before any work


@pytest.mark.parametrize(
    "name", ["../../x", "/tmp/abs", ".", "a/b", "", "-rf", "x" * 101, "sp ace"]
)
def test_run_names_are_single_safe_path_components(name, tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace('name = "small"', f"name = {json.dumps(name)}"))
    if name == "":  # an empty name falls back to the file's name, which is safe
        return
    assert cli.main(["run", str(cfg), "--quiet"]) == 2
    assert "name: expected a single path component" in _error(capsys)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            "sizes = {min = 100, max = inf, count = 2}",
            "data.sizes: expected 1 <= min < max <= 1e+08",
        ),
        (
            "sizes = [100, 1000000000000]",
            "above the largest supported n, 1e+08 (config.MAX_N: about 10 GB",
        ),
        ("sizes = {min = 100, max = 1000, count = 1000000000}", "2 <= count <= 1000"),
        ("sizes = [100, 1e12]", "data.sizes[]: expected an integer, got 1000000000000.0"),
        ("replicates = 1000000000000", "data.replicates: expected at most 1e+06"),
        ("replicates = 1e12", "data.replicates: expected an integer"),
        ("n_eval = 1000000000", "data.n_eval: expected at most 1e+08"),
    ],
)
def test_sizes_and_replicates_are_range_checked(data, message, tmp_path, capsys):
    key = data.split(" =")[0]
    text = re.sub(rf"^{key} = .*$", data, _config(tmp_path).read_text(), flags=re.M)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", [2**64 - 1, 2**63, -1])
def test_seeds_are_range_checked(seed, tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("seed = 1", f"seed = {seed}"))
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert f"seed: expected an integer in [0, 2^63 - 1], got {seed}" in _error(capsys)


def test_largest_seed_is_accepted():
    raw = {"estimators": ["tanh"], "model": {"d": 2}, "seed": 2**63 - 1}
    raw |= {"data": {"sigma": 0.1, "sizes": [10], "replicates": 1}}
    assert Config.from_dict(raw).seed == 2**63 - 1 and MAX_N == 10**8


def test_unknown_keys_get_a_did_you_mean(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("sigma =", "sigam ="))
    assert cli.main(["run", str(cfg), "--quiet"]) == 2
    assert "data.sigam: unknown key; did you mean 'sigma'?" in _error(capsys)
    with pytest.raises(ConfigError, match="estimator: unknown key at top level; did you mean"):
        Config.from_dict({"estimator": ["tanh"]})


def test_rates_n_min_above_n_max_is_refused(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + "[rates]\nn_min = 1000\nn_max = 100\n")
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "rates.n_min: expected n_min <= n_max, got 1000 > 100" in _error(capsys)


def test_slope_tables_without_slopes_are_errors_and_two_sizes_warn(finished):
    from moe_lora import rates

    df = pd.read_parquet(finished[1] / "results.parquet")
    with pytest.raises(ValueError, match="n_min <= n_max"):
        rates.slope_table(df, n_min=120, n_max=60, bootstrap=10)
    with pytest.raises(ValueError, match="no slope"):
        rates.slope_table(df, n_min=100, n_max=110, bootstrap=10)
    with pytest.warns(UserWarning, match="only 2 sizes"):
        rates.slope_table(df, bootstrap=10)


def test_config_path_that_is_a_directory(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path), "--quiet"]) == 2
    assert f"{tmp_path}: a directory, expected a TOML config file" in _error(capsys)


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["run", str(_config(tmp_path)), "--out", str(tmp_path / "file")]) == 2
    assert "a file, expected a run directory" in _error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_that_is_read_only(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert cli.main(["run", str(_config(tmp_path)), "--out", str(tmp_path / "ro")]) == 2
    line = _error(capsys)
    assert "not writable" in line or "cannot create" in line


@pytest.mark.parametrize(
    "text, message", [("{not json", "not valid JSON"), ('{"name": "x"}', "missing keys")]
)
def test_a_broken_manifest_is_named(finished, tmp_path, capsys, text, message):
    run = _copy_run(finished[1], tmp_path / "run")
    (run / "manifest.json").write_text(text)
    for command in (["merge"], ["rates"], ["plot", "--out", str(tmp_path / "f")]):
        assert cli.main([command[0], str(run), *command[1:]]) == 2
        line = _error(capsys)
        assert f"{run / 'manifest.json'}: " in line and message in line
    assert cli.main(["run", str(finished[0]), "--out", str(run), "--quiet"]) == 2
    assert message in _error(capsys)


def test_a_half_written_failure_log_is_read(finished, tmp_path, capsys):
    run = _copy_run(finished[1], tmp_path / "run", units=slice(1))
    unit = load_experiment(finished[0]).units()[1]
    store.record_failure(run, unit, "boom", attempts=3)
    with open(run / "failed.jsonl", "a") as f:
        f.write('{"unit": "half')  # killed mid-line
    assert cli.main(["merge", str(run)]) == 1
    err = capsys.readouterr().err
    assert "failed.jsonl:2: not a JSON record" in err and "(failed after 3 attempts: boom)" in err
    store.record_failure(run, unit, "again", attempts=1)  # the next line is not glued to it
    assert store.read_failures(run)[unit.id]["error"] == "again"


def test_simulate_replicates_refuses_float32():
    import moe_lora as ml

    spec = ml.ModelSpec(d=2, d_out=1, r=1, gate_scale=3.0)
    model = ml.make_model(spec, ml.nonlinear("tanh"), key=jax.random.key(1))
    truth = ml.draw_truth(jax.random.key(2), model, 2, min_separation=0.5, min_gate_strength=0.5)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64.*allow_float32"):
            ml.simulate_replicates(
                jax.random.key(4),
                truth,
                model,
                100,
                sigma=0.02,
                replicates=1,
                config=ml.FitConfig(n_components=2),
                X_eval=np.zeros((10, 2)),
            )
    finally:
        jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------------------------
# Partial runs


def test_rates_and_plot_refuse_a_partial_run_unless_asked(finished, tmp_path, capsys):
    run = _copy_run(finished[1], tmp_path / "run", units=slice(3))
    figures = tmp_path / "fig"
    for command in (
        ["rates", str(run)],
        ["plot", str(run), "--out", str(figures)],
        ["report", str(run)],
    ):
        assert cli.main(command) == 2
        line = _error(capsys)
        assert "1 of 4 units missing" in line and "--partial" in line
    assert not figures.exists() and not (run / "report.md").exists()
    assert cli.main(["rates", str(run), "--partial"]) == 0
    assert "PARTIAL: 1 of 4 units missing" in capsys.readouterr().out
    assert (run / "rates.partial.csv").exists() and not (run / "rates.csv").exists()
    assert cli.main(["plot", str(run), "--out", str(figures), "--partial"]) == 0
    assert (figures / "small_loss_D_partial.pdf").exists()
    assert not (figures / "small_loss_D.pdf").exists()
    data = figures / "data" / "small"
    assert (data / "results.partial.parquet").exists() and not (data / "results.parquet").exists()
    assert cli.main(["report", str(run), "--partial"]) == 0
    assert not (run / "report.md").exists()
    assert (run / "report.partial.md").read_text().startswith("**PARTIAL: 1 units missing")


# --------------------------------------------------------------------------------------------
# Figures


def test_replotting_an_unchanged_table_gives_identical_files(finished, tmp_path):
    _, out = finished
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.name for p in (tmp_path / "a").glob("*.*"))
    assert files and any(f.endswith(".pdf") for f in files)
    for name in files:
        a, b = ((tmp_path / d / name).read_bytes() for d in "ab")
        assert a == b, name
        if name.endswith(".pdf"):
            assert b"/Type3" not in a and b"/CreationDate" not in a


def test_committed_pdfs_embed_no_type3_font_and_no_creation_date():
    pdfs = sorted((ROOT / "figures").rglob("*.pdf"))
    assert pdfs
    flagged = [p.name for p in pdfs if re.search(rb"/Type3|/CreationDate", p.read_bytes())]
    assert flagged == [], "re-plot these with moe_lora.palette.save_figure"


def _tick_labels_overlap(fig) -> list[str]:
    """Titles of the panels whose x tick labels (major and minor, as drawn) overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    bad = []
    for ax in fig.axes:
        labels = [*ax.xaxis.get_majorticklabels(), *ax.xaxis.get_minorticklabels()]
        lo, hi = sorted(ax.transData.transform([(x, 0) for x in ax.get_xlim()])[:, 0])
        boxes = sorted(
            (b.x0, b.x1)
            for t in labels
            if t.get_visible() and t.get_text()
            for b in [t.get_window_extent()]
            if lo - 1 <= (b.x0 + b.x1) / 2 <= hi + 1
        )
        if any(a[1] > b[0] for a, b in zip(boxes, boxes[1:])):
            bad.append(ax.get_title())
    return bad


def test_committed_figures_have_no_empty_panel_one_style_and_readable_ticks():
    """Re-drawn from the committed tables: the over-specified sweep (its sample-complexity figure
    was half an empty panel) and the 18-panel head rate figure (its tick labels overlapped)."""
    from moe_lora.head_figure import figure_rates
    from moe_lora.palette import ESTIMATOR_COLORS, estimator_color, estimator_marker
    from moe_lora.runs.store import experiment_of, read_manifest, with_recorded_keys

    data = ROOT / "figures" / "data" / "overspecified"
    m = read_manifest(data)
    exp = experiment_of(m)
    df = with_recorded_keys(pd.read_parquet(data / "results.parquet"), m)
    figures = exp.figures(df, exp.summaries(df))
    assert "overspecified_sample_complexity" in figures
    for stem, fig in figures.items():
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        for ax in panels:
            curves = [
                line
                for line in ax.get_lines()
                if line.get_label().split(":")[0].split(" ")[0] in ESTIMATOR_COLORS
            ]
            if stem.endswith("_diagnostics"):
                continue
            assert curves, f"{stem}: empty panel {ax.get_title()!r}"
            for line in curves:
                est = line.get_label().split(":")[0].split(" ")[0]
                assert line.get_color().lower() == estimator_color(est).lower(), (stem, est)
                assert line.get_marker() == estimator_marker(est), (stem, est)
        assert _tick_labels_overlap(fig) == [], stem
    head = pd.read_parquet(ROOT / "figures" / "data" / "attention_head_sweeps" / "results.parquet")
    fig = figure_rates(head, bootstrap=20)
    assert len(fig.axes) == 18 and _tick_labels_overlap(fig) == []


# --------------------------------------------------------------------------------------------
# Version and the command


def test_packaging_dev_without_ray_py_typed_api_reference_and_constraints():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    assert "ray" not in extras["dev"].lower() and "ray" in extras["ray"]
    assert "py.typed" in cfg["options.package_data"]["moe_lora"]
    assert (ROOT / "moe_lora" / "py.typed").exists()
    assert (
        "pdoc" in extras["docs"] and "pdoc moe_lora -o docs/api" in (ROOT / "README.md").read_text()
    )
    # constraints.txt pins every dependency, at a version its floor admits.
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    for line in cfg["options"]["install_requires"].strip().splitlines():
        req = Requirement(line.split("#")[0].strip())
        assert canonicalize_name(req.name) in pins, req.name
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), (req, pins[req.name])


@pytest.mark.slow
def test_the_quick_start_prints_the_explained_summary_the_readme_states():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1200
    )
    certified, D, L2 = res.stdout.strip().splitlines()
    assert (
        certified.startswith("certified: ")
        and "fits converged at a risk <= the truth's" in certified
    )
    assert D.startswith("D:  ") and "Voronoi loss of the fitted atoms" in D
    assert L2.startswith("L2: ") and "error of the fitted regression function" in L2
    stated = re.search(r"It prints certified (\S+), D (\S+) and L2 (\S+):", section)
    assert stated, "the README says what the quick start prints"
    assert certified.split()[1] == stated[1]
    assert D.split()[1] == stated[2] and L2.split()[1] == stated[3]


def test_one_version_everywhere():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    version = cfg["metadata"]["version"]
    assert moe_lora.__version__ == version
    assert f"version: {version}" in (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^## {re.escape(version)}\b", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_version_flag_and_python_m(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert (
        exit_.value.code == 0
        and capsys.readouterr().out.strip() == f"moe-lora {moe_lora.__version__}"
    )
    res = subprocess.run(
        [sys.executable, "-m", "moe_lora", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: moe-lora" in res.stdout


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from moe_lora import cli; cli.parser().format_help(); "
        "heavy = {'jax', 'pandas', 'matplotlib', 'scipy'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves():
    import inspect

    moe_lora.AttentionWeights  # noqa: B018  (imports moe_lora/attention.py)
    assert inspect.isfunction(moe_lora.attention)  # the function, not its module
    for name in moe_lora.__all__:
        assert getattr(moe_lora, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        moe_lora.nope  # noqa: B018
