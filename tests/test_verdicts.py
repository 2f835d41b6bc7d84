"""The verdict rule (``moe_lora.verdicts``) on synthetic tables with known slopes, and its config
keys."""

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


def _summary_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verdicts_summary.py"
    spec = importlib.util.spec_from_file_location("verdicts_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_counts_each_truths_verdict():
    script = _summary_script()
    rules = [dict(label="D", metric="D", prediction="sqrt_log_n_over_n", alternative=-0.25)]
    rows = [_table(lambda n: n**-0.5, 0.05, truth=f"t{k}", seed=k) for k in range(3)]
    rows.append(_table(lambda n: n**-0.1, 0.05, truth="slow", seed=9))
    table = verdict_table(pd.concat(rows), rules, bootstrap=100)
    median = verdict_table(pd.concat(rows), rules, bootstrap=100, statistic="median")
    (row,) = script.summary(pd.concat([table, median]))
    assert row["truths"] == "4: 3 steeper, 1 shallower"
    pooled = table[table["truth"] == "pooled"].iloc[0]
    assert row["mean"].startswith(f"{pooled['slope']:.2f} [")


def test_readme_verdict_summary_is_the_scripts_output(capsys):
    """The README's summary table is generated (benchmarks/verdicts_summary.py), not typed."""
    from pathlib import Path

    _summary_script().main()
    printed = capsys.readouterr().out.strip()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- benchmarks/verdicts_summary.py -->") + len(
        "<!-- benchmarks/verdicts_summary.py -->"
    )
    block = readme[start : readme.index("<!-- end -->", start)].strip()
    assert block == printed
