"""The verdict rule (``moe_lora.verdicts``) on synthetic tables with known slopes, and its config
keys."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from moe_lora.config import Config, ConfigError
from moe_lora.verdicts import judge, local_slope, verdict, verdict_table

SIZES = np.geomspace(1e3, 1e5, 9).round().astype(int)


def _table(curve, noise, *, truth="t", estimator="tanh", replicates=32, seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(SIZES, replicates)
    D = curve(n.astype(float)) * np.exp(noise * rng.standard_normal(n.size))
    return pd.DataFrame(
        {"truth": truth, "estimator": estimator, "extra": 1, "n": n, "D": D, "certified": True}
    )


def test_local_slope_is_not_the_exponent():
    # sqrt(log n / n) is shallower than n^-1/2 over any finite range (docs/results.md, "Reading a
    # slope").
    assert local_slope("sqrt_log_n_over_n", SIZES) == pytest.approx(-0.45, abs=0.01)
    assert local_slope("inv_sqrt_n", SIZES) == pytest.approx(-0.5, abs=1e-12)
    assert local_slope(-0.25, SIZES) == pytest.approx(-0.25, abs=1e-12)


@pytest.mark.parametrize(
    ("curve", "noise", "expected"),
    [
        (lambda n: np.sqrt(np.log(n) / n), 0.1, "agrees"),  # the prediction itself
        (lambda n: n**-0.25, 0.1, "disagrees"),  # the alternative
        (lambda n: np.sqrt(np.log(n) / n), 3.0, "undecided"),  # so noisy the interval spans both
    ],
)
def test_rule_on_known_slopes(curve, noise, expected):
    res = judge(_table(curve, noise), "D", "sqrt_log_n_over_n", -0.25, bootstrap=400)
    assert res["verdict"] == expected, res


def test_rule_edges():
    assert verdict(-0.5, -0.4, -0.45, -0.25) == "agrees"
    assert verdict(-0.5, -0.2, -0.45, -0.25) == "undecided"
    assert verdict(-0.7, -0.5, -0.45, -0.25) == "disagrees"
    assert verdict(np.nan, np.nan, -0.45, -0.25) == "undecided"


def test_fit_range_is_the_declared_one():
    # A slope change at 1e4: the rule reads only the declared range.
    df = _table(lambda n: np.where(n < 1e4, n**-0.25 * 1e4**0.25, n**-0.5 * 1e4**0.5), 0.05)
    early = judge(df, "D", -0.5, -0.25, n_max=9000, bootstrap=200)
    late = judge(df, "D", -0.5, -0.25, n_min=10000, bootstrap=200)
    assert (early["verdict"], late["verdict"]) == ("disagrees", "agrees")
    assert early["n_max"] <= 9000 and late["n_min"] >= 10000


def test_table_per_truth_and_pooled():
    df = pd.concat([_table(lambda n: 2 * n**-0.5, 0.2, truth=f"t{k}", seed=k) for k in range(4)])
    rules = [dict(label="D", metric="D", prediction="inv_sqrt_n", alternative=-0.25)]
    table = verdict_table(df, rules, bootstrap=200)
    assert list(table["truth"]) == ["t0", "t1", "t2", "t3", "pooled"]
    pooled = table.iloc[-1]
    assert pooled["verdict"] == "agrees" and pooled["truths"] == 4
    # Pooling four truths narrows the interval below any single truth's.
    widths = table["ci_high"] - table["ci_low"]
    assert widths.iloc[-1] < widths.iloc[:-1].min()


def _config(rates):
    return Config.from_dict(
        {
            "estimators": ["tanh"],
            "model": {"d": 2},
            "data": {"sigma": 0.02, "sizes": [100, 1000], "replicates": 4},
            "rates": rates,
        }
    )


def test_config_rules_checked():
    rule = dict(label="D", metric="D", prediction="sqrt_log_n_over_n", alternative=-0.25)
    assert _config({"verdicts": [rule]}).rates.verdicts == (rule,)
    with pytest.raises(ConfigError, match=r"rates.verdicts\[0\].prediction: expected one of"):
        _config({"verdicts": [rule | {"prediction": "fast"}]})
    with pytest.raises(ConfigError, match=r"rates.verdicts\[0\]: unknown keys \['colour'\]"):
        _config({"verdicts": [rule | {"colour": "red"}]})
    with pytest.raises(
        ConfigError, match="rates.statistic: expected 'mean' or 'median', got 'mode'"
    ):
        _config({"statistic": "mode"})


def test_summary_keeps_pooled_rows_only_where_there_are_several_truths():
    from moe_lora.verdicts import summary_rows

    many = pd.concat([_table(lambda n: n**-0.5, 0.2, truth=f"t{k}", seed=k) for k in range(2)])
    one = _table(lambda n: n**-0.5, 0.2, estimator="vanilla")
    rules = [dict(label="D", metric="D", prediction="inv_sqrt_n", alternative=-0.25)]
    table = verdict_table(pd.concat([many, one]), rules, bootstrap=50).assign(run="r")
    kept = summary_rows(table)
    assert list(zip(kept["estimator"], kept["truth"])) == [("tanh", "pooled"), ("vanilla", "t")]


def test_summary_counts_each_truths_verdict():
    from moe_lora.report import verdict_summary

    rules = [dict(label="D", metric="D", prediction="sqrt_log_n_over_n", alternative=-0.25)]
    rows = [_table(lambda n: n**-0.5, 0.05, truth=f"t{k}", seed=k) for k in range(3)]
    rows.append(_table(lambda n: n**-0.1, 0.05, truth="slow", seed=9))
    table = verdict_table(pd.concat(rows), rules, bootstrap=100, stability_seeds=2)
    median = verdict_table(
        pd.concat(rows), rules, bootstrap=100, statistic="median", stability_seeds=2
    )
    (row,) = verdict_summary(pd.concat([table, median]))
    assert row["truths"] == "4: 3 steeper, 1 shallower"
    pooled = table[table["truth"] == "pooled"].iloc[0]
    assert row["mean"].startswith(f"{pooled['slope']:.2f} [")


def test_readme_verdict_summary_is_generated_from_the_canonical_studies_reports():
    """The README's summary table is generated (``moe_lora.report.readme_verdicts``, from the
    ``verdicts.csv`` that ``moe-lora report`` wrote in each canonical study), not typed."""
    from pathlib import Path

    from moe_lora.report import CANONICAL, README_MARKERS, readme_verdicts

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    start = readme.index(README_MARKERS[0]) + len(README_MARKERS[0])
    block = readme[start : readme.index(README_MARKERS[1], start)].strip()
    assert block == readme_verdicts(root / "figures" / "data")
    for _, name in CANONICAL:
        report = (root / "figures" / "data" / name / "report.md").read_text()
        assert f"# Study `{name}`" in report and "pooled (4 truths)" in report
    # Set-up, quick start, this block and links: the details live in the reports and docs/.
    assert len(readme.splitlines()) < 200


def _study(slopes, noise=0.2, replicates=32):
    """A study's table: one truth per seed, its own slope."""
    frames = []
    for seed, slope in enumerate(slopes):
        t = _table(lambda n, s=slope: n**s, noise, truth="tanh", seed=seed, replicates=replicates)
        frames.append(t.assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def test_pooled_interval_resamples_truths_not_only_replicates():
    from moe_lora.verdicts import POOLED_DRAWS, judge_pooled

    # Four truths of clearly different slopes, little noise: resampling replicates alone gives
    # an interval about as narrow as one truth's; resampling the truths spans their spread.
    df = _study([-0.3, -0.45, -0.5, -0.6], noise=0.05)
    pooled = judge_pooled(df, "D", -0.5, -0.25, stability_seeds=1)
    assert pooled["bootstrap_draws"] >= POOLED_DRAWS == 10_000
    one = judge(df[df["seed"] == 1], "D", -0.5, -0.25, bootstrap=400, stability_seeds=1)
    assert pooled["ci_high"] - pooled["ci_low"] > 10 * (one["ci_high"] - one["ci_low"])
    assert pooled["ci_low"] < -0.45 and pooled["ci_high"] > -0.33
    # Truths that do not differ: the pooled interval is narrower than any one truth's.
    same = judge_pooled(_study([-0.5] * 4), "D", -0.5, -0.25, stability_seeds=1)
    single = judge(_study([-0.5])[lambda d: d["seed"] == 0], "D", -0.5, -0.25, stability_seeds=1)
    assert same["ci_high"] - same["ci_low"] < single["ci_high"] - single["ci_low"]


def test_pooling_is_a_group_by_and_keeps_each_truths_row():
    rules = [dict(label="D", metric="D", prediction="inv_sqrt_n", alternative=-0.25)]
    table = verdict_table(_study([-0.5] * 3), rules, bootstrap=100, stability_seeds=2)
    assert table["truth"].tolist() == ["tanh"] * 3 + ["pooled"]
    assert table["seed"].tolist()[:3] == [0, 1, 2] and table["truths"].iloc[-1] == 3


def test_a_verdict_that_changes_with_the_bootstrap_seed_is_borderline():
    from moe_lora.verdicts import STABILITY_SEEDS

    df = _table(lambda n: n**-0.5, 0.3, replicates=8)
    centre = judge(df, "D", -0.5, -2.0, bootstrap=200)["slope"]
    # The prediction at the measured slope: every seed's interval holds it, far from its ends.
    far = judge(df, "D", centre, -2.0, bootstrap=200)
    assert len(far["verdicts_by_seed"].split(",")) == STABILITY_SEEDS == 5
    assert far["borderline"] is False and far["verdict"] == "agrees"
    # The prediction on seed 0's upper end: the seeds disagree on which side it falls.
    edge = far["ci_high"]
    near = [judge(df, "D", edge + eps, -2.0, bootstrap=200) for eps in (0.0, 0.002)]
    assert all(r["borderline"] for r in near)
    assert {"agrees", "disagrees"} <= set(near[0]["verdicts_by_seed"].split(","))


def _run(name, df, truths=None):
    from moe_lora.verdicts import Run

    rates = _config({}).rates
    rule = dict(label="D", metric="D", prediction="inv_sqrt_n", alternative=-0.25)
    return Run(name, df, dataclasses.replace(rates, verdicts=(rule,)), name, truths)


def test_pooling_the_same_truth_twice_is_refused():
    from moe_lora.verdicts import pooled_table

    a = _table(lambda n: n**-0.5, 0.2).assign(seed=1)
    b = _table(lambda n: n**-0.5, 0.2, seed=5).assign(seed=2)
    assert len(pooled_table([_run("a", a), _run("b", b)], stability_seeds=1)) == 3
    with pytest.raises(ValueError, match="the run 'a' is given 2 times"):
        pooled_table([_run("a", a), _run("a", b)])
    with pytest.raises(ValueError, match=r"'a' and 'b' hold the same truth \('t' at seed 1"):
        pooled_table([_run("a", a), _run("b", a)])
    summary = {"atoms": [[0.5, 1.0]]}
    with pytest.raises(ValueError, match="same summary"):
        pooled_table([_run("a", a, {"t": summary}), _run("b", b, {"t": summary})])
    # The same truth under another estimator is another curve, not a double count.
    other = a.assign(estimator="vanilla")
    assert len(pooled_table([_run("a", a), _run("b", other)], stability_seeds=1)) == 2


def test_pooled_verdicts_are_fast():
    import time

    from moe_lora.verdicts import judge_pooled

    df = _study([-0.5, -0.45, -0.55, -0.5])
    t0 = time.perf_counter()
    judge_pooled(df, "D", -0.5, -0.25)  # 5 seeds x 10,000 hierarchical draws
    assert time.perf_counter() - t0 < 10


def _family():
    """A drawn truth and three members of its family, fitted by vanilla at one seed: the drawn
    truth and the two wide members fall like sqrt(log n / n); the member delta = 0.125 sits on a
    flat set (D constant, above the others from n = 1e4 on)."""
    rate = lambda n: np.sqrt(np.log(n) / n)  # noqa: E731
    parts = [_table(rate, 0.05, truth="tanh", estimator="vanilla", seed=1).assign(delta=np.nan)]
    for i, (delta, curve) in enumerate(
        [(1.0, lambda n: 2 * rate(n)), (0.5, lambda n: 3 * rate(n)), (0.125, lambda n: 0.2 + 0 * n)]
    ):
        member = _table(curve, 0.05, truth=f"tanh@delta={delta}", estimator="vanilla", seed=2 + i)
        parts.append(member.assign(delta=delta))
    return pd.concat(parts, ignore_index=True).assign(through="tanh", seed=0)


def test_a_worst_case_rule_reads_the_whole_family_and_names_the_worst_member():
    from moe_lora.verdicts import family_rows

    df = _family()
    rules = [
        dict(label="fixed", metric="D", prediction="sqrt_log_n_over_n", alternative=-0.25),
        dict(
            label="worst",
            metric="D",
            prediction="sqrt_log_n_over_n",
            alternative=-0.25,
            worst_case=True,
        ),
    ]
    table = verdict_table(df, rules, bootstrap=200, stability_seeds=1).set_index("rule")
    # The drawn truth alone agrees; its family's worst case is flat from 1e4 on and disagrees.
    assert table.loc["fixed", "verdict"] == "agrees"
    worst = table.loc["worst"]
    assert worst["truth"] == "tanh (worst case)" and worst["truths"] == 4
    assert worst["verdict"] == "disagrees" and worst["slope"] > -0.3
    # At small n the widest-scaled member (3x the rate) is the worst; at large n the flat one.
    pairs = dict(p.split(":") for p in worst["worst_delta"].split(","))
    assert pairs[str(SIZES[0])] == "0.5" and pairs[str(SIZES[-1])] == "0.125"
    # An estimator that fitted no member has no family rows.
    other = df.assign(estimator="tanh", delta=np.nan)
    assert family_rows(pd.concat([df, other])).estimator.unique().tolist() == ["vanilla"]


def test_worst_case_must_be_a_boolean():
    rule = dict(label="w", metric="D", prediction=-0.5, alternative=-0.25)
    assert _config({"verdicts": [rule | {"worst_case": True}]}).rates.verdicts[0]["worst_case"]
    with pytest.raises(ConfigError, match="worst_case: expected true or false, got 'yes'"):
        _config({"verdicts": [rule | {"worst_case": "yes"}]})
