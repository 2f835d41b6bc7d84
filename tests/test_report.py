"""``moe-lora report DIR`` on a tiny synthetic study: every section, from the run directory
alone."""

import json

import numpy as np
import pandas as pd
import pytest

from moe_lora.cli import main
from moe_lora.experiment import Experiment

RULE = dict(label="D ~ n^-1/2", metric="D", prediction="inv_sqrt_n", alternative=-0.25)
CONFIG = {
    "name": "tiny_study",
    "description": "A synthetic study of two truth seeds",
    "estimators": ["tanh", "vanilla"],
    "model": {"d": 2},
    "truth": {"seeds": [1, 3]},
    "data": {"sigma": 0.02, "sizes": [100, 1000, 10000], "replicates": 6},
    "rates": {"verdicts": [RULE], "bootstrap": 50},
}


def _study_dir(path, *, restarts: bool, config=CONFIG):
    path.mkdir(exist_ok=True)
    name = config["name"]
    exp = Experiment.from_dict(config, name=name)
    rng = np.random.default_rng(0)
    rows = []
    for truth, est in exp.pairs():
        for n in exp.sizes:
            for r in range(exp.replicates):
                rows.append(
                    dict(
                        experiment=name,
                        seed=truth.seed,
                        truth=str(truth),
                        through=truth.through,
                        delta=np.nan,
                        estimator=est,
                        extra=0,
                        n=n,
                        replicate=r,
                        truth_separation=0.5 + truth.seed,
                        truth_gate_strength=0.7,
                        truth_expert_separation=0.3,
                        D=n**-0.5 * np.exp(0.1 * rng.standard_normal()),
                        l2_error=n**-0.5 * np.exp(0.1 * rng.standard_normal()),
                        certified=r != 0,
                        stop_reason="max_iter" if r == 1 else "precise",
                    )
                )
    df = pd.DataFrame(rows)
    if restarts:
        df["n_restarts"] = 4
        df["saturated"] = df["replicate"] % 2 == 0
    df.to_parquet(path / "results.parquet")
    manifest = {"name": name, "seed": 0, "kind": "sweep", "config": exp.config.to_dict()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("restarts", [True, False])
def test_report_has_every_section(tmp_path, capsys, restarts):
    run_dir = _study_dir(tmp_path, restarts=restarts)
    assert main(["report", str(run_dir)]) == 0
    text = (run_dir / "report.md").read_text()
    for section in ("## Config and truths", "## Verdicts", "## Headline figure"):
        assert section in text
    assert "- through `tanh` at seeds [1, 3], fitted by ['tanh', 'vanilla']" in text
    assert "| 1 | tanh | 1.5 |" in text and "| 3 | tanh | 3.5 |" in text  # the truths
    # The verdicts: the rule, a row per truth and the pooled row, for both estimators.
    assert "**D ~ n^-1/2**: D against prediction `inv_sqrt_n`" in text
    for est in ("tanh", "vanilla"):
        assert f"| D ~ n^-1/2 | {est} | 0 | tanh seed 1 |" in text
        assert f"| D ~ n^-1/2 | {est} | 0 | pooled (2 truths) |" in text
    assert "hierarchical bootstrap, 10000 draws" in text
    assert (run_dir / "report" / "headline.png").stat().st_size > 0
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert len(verdicts) == 2 * 3 and "borderline" in verdicts
    # Fit diagnostics: 1 of 6 replicates uncertified, 1 of 6 at the cap.
    diagnostics = text[text.index("## Fit diagnostics") : text.index("## Reproduce")]
    header = "| estimator | extra | fits | certified | at_cap |"
    assert (header + (" restarts | saturated |" if restarts else "")) in diagnostics
    assert "| tanh | 0 | 36 | 0.83 | 0.17 |" + (" 4.00 | 0.50 |" if restarts else "") in diagnostics
    assert f"moe-lora run simulations/tiny_study.toml --out {run_dir}" in text
    assert f"moe-lora report {run_dir}" in text


def test_report_of_a_missing_directory_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no manifest" in capsys.readouterr().err


def _base_and_extension(tmp_path):
    """A tiny study and a study of one of its seeds (3) at one more size, 1e5."""
    base = _study_dir(tmp_path / "base", restarts=False)
    extension = CONFIG | {
        "name": "tiny_ext",
        "truth": {"seeds": [3]},
        "data": CONFIG["data"] | {"sizes": [100000]},
    }
    return base, _study_dir(tmp_path / "ext", restarts=False, config=extension)


def test_report_of_an_extension_reads_the_runs_it_extends(tmp_path, capsys):
    """``--extends``: a study of more sizes of some truths is read with the rows of those truths
    in the runs it extends; a base of another computation, or with the same sizes, is refused."""
    base, ext = _base_and_extension(tmp_path)
    assert main(["report", str(ext), "--extends", str(base)]) == 0
    verdicts = pd.read_csv(ext / "verdicts.csv")
    assert set(verdicts["seed"]) == {3} and "pooled" not in set(verdicts["truth"])
    assert (verdicts["points"] == 4).all() and (verdicts["n_max"] == 100000).all()
    text = (ext / "report.md").read_text()
    assert "Read with the rows of the same truths, estimators and settings in tiny_study" in text
    assert f"moe-lora report {ext} --extends {base}" in text
    other = _study_dir(
        tmp_path / "other", restarts=False, config=CONFIG | {"model": {"d": 3}, "name": "other"}
    )
    capsys.readouterr()
    assert main(["report", str(ext), "--extends", str(other)]) == 2
    assert "describes another computation" in capsys.readouterr().err
    assert main(["report", str(ext), "--extends", str(ext)]) == 2
    assert "has sizes of" in capsys.readouterr().err


def test_an_extension_is_checked_against_its_seeds_truths_in_a_multi_seed_base(tmp_path, capsys):
    """A study directory holds every seed's truths, keyed ``<label>@seed=<k>`` in its manifest:
    an extension of one seed is checked against that seed's truth only (the verdicts_identifiable
    study extended by verdicts_identifiable_1e6 at seed 0)."""
    base, ext = _base_and_extension(tmp_path)
    drawn = {"separation": 3.5}
    for path, truths in (
        (ext, {"tanh": drawn}),
        (base, {"tanh@seed=1": {"separation": 1.5}, "tanh@seed=3": drawn}),
    ):
        manifest = json.loads((path / "manifest.json").read_text())
        (path / "manifest.json").write_text(json.dumps(manifest | {"seed": 3, "truths": truths}))
    assert main(["report", str(ext), "--extends", str(base)]) == 0
    assert set(pd.read_csv(ext / "verdicts.csv")["seed"]) == {3}
    manifest = json.loads((base / "manifest.json").read_text())
    manifest["truths"]["tanh@seed=3"] = {"separation": 9.0}
    (base / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["report", str(ext), "--extends", str(base)]) == 2
    assert "drew another truth 'tanh' at seed 3" in capsys.readouterr().err


def test_the_headline_of_one_seed_of_a_study(tmp_path, monkeypatch):
    """``python -m moe_lora.headline DIR --seed K`` reads only the truth drawn at seed K of a
    study directory (which holds several truths of one label)."""
    from matplotlib.figure import Figure

    from moe_lora import headline

    run_dir = _study_dir(tmp_path / "study", restarts=False)
    seen = []

    def figure(df, **kwargs):
        seen.append(sorted(df["seed"].unique()))
        return Figure()

    monkeypatch.setattr(headline, "figure_headline", figure)
    for seed in ([], ["--seed", "3"]):
        argv = [str(run_dir), "--truth", "tanh", "--out", str(tmp_path), *seed]
        assert headline.main(argv) == 0
    assert seen == [[1, 3], [3]]
