"""Slope estimation on synthetic data with known slopes."""

import numpy as np
import pandas as pd
import pytest

from moe_lora.rates import (
    LEFT_CENSORED,
    REACHED,
    RIGHT_CENSORED,
    crossing,
    curve_slope,
    format_slope_table,
    loglog_slope,
    sample_complexity,
    slope_table,
)

SIZES = np.array([100, 300, 1000, 3000, 10000, 30000])


def _table(slope=-0.5, R=32, seed=0, noise=0.3, **cols):
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        for k in range(R):
            rows.append({"n": n, "replicate": k, "D": 2.0 * n ** slope * rng.lognormal(0, noise), "l2_error": n ** -0.5,
                         "certified": k > 0} | cols)
    return pd.DataFrame(rows)


def test_loglog_slope_exact_and_bad_input():
    s, c = loglog_slope(SIZES, 5.0 * SIZES ** -0.25)
    assert s == pytest.approx(-0.25, abs=1e-12) and np.exp(c) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope(SIZES, -SIZES)
    with pytest.raises(ValueError, match="equal length"):
        loglog_slope(SIZES, SIZES[:-1])


@pytest.mark.parametrize("true_slope", [-0.5, -0.25, -0.1])
@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_bootstrap_interval_covers_known_slope(true_slope, statistic):
    res = curve_slope(_table(true_slope), "D", statistic, bootstrap=500)
    assert res["ci_low"] < true_slope < res["ci_high"]
    assert res["ci_high"] - res["ci_low"] < 0.1
    assert abs(res["slope"] - true_slope) < 0.05


def test_fit_range_and_noise_free_interval():
    df = _table(-0.5, noise=0.0)
    res = curve_slope(df, "D", n_min=300, n_max=10000)
    assert (res["n_min"], res["n_max"], res["points"]) == (300, 10000, 4)
    assert res["slope"] == pytest.approx(-0.5) and res["ci_high"] - res["ci_low"] < 1e-9


def test_minimax_curve_takes_the_worst_member():
    # Member delta=0.5 decays at -0.25 against -0.5: the worst-case curve follows it at large n.
    a = _table(-0.5, noise=0.0, delta=np.nan)
    b = _table(-0.25, noise=0.0, delta=0.5)
    df = pd.concat([a, b]).assign(truth="t", through="t", estimator="vanilla", extra=1)
    df.loc[df["delta"] == 0.5, "truth"] = "t@delta=0.5"
    table = slope_table(df, metrics=["D"], statistics=["mean"], bootstrap=50)
    single = table[table["statistic"] == "mean"].iloc[0]
    worst = table[table["statistic"] == "minimax-mean"].iloc[0]
    assert single["truth"] == "t" and single["slope"] == pytest.approx(-0.5)
    worst_curve = np.maximum(2.0 * SIZES**-0.5, 2.0 * SIZES**-0.25)
    assert worst["slope"] == pytest.approx(loglog_slope(SIZES, worst_curve)[0])
    assert worst["certified_fraction"] == pytest.approx(31 / 32)
    assert "minimax-mean" in format_slope_table(table)


def test_slope_table_rows_per_curve():
    df = pd.concat([_table(-0.5).assign(estimator=e, extra=x, truth="tanh", through="tanh", delta=np.nan)
                    for e in ["vanilla", "tanh"] for x in [0, 1]])
    table = slope_table(df, bootstrap=20)
    assert len(table) == 2 * 2 * 2 * 2  # estimators x settings x metrics x statistics
    l2 = table[table["metric"] == "l2_error"]
    np.testing.assert_allclose(l2["slope"], -0.5)
    assert set(table.columns) >= {"slope", "ci_low", "ci_high", "n_min", "n_max", "replicates", "certified_fraction"}


def test_sample_complexity_is_exact_on_a_power_law_and_censors_the_ends():
    n = np.array([100.0, 1000.0, 10000.0])
    loss = n**-0.5
    assert sample_complexity(n, loss, 10**-1.25) == pytest.approx(10**2.5, rel=1e-12)  # between sizes
    assert sample_complexity(n, loss, 0.01) == pytest.approx(1e4, rel=1e-12)  # at the last size
    assert np.isnan(sample_complexity(n, loss, 0.5))  # already reached at the smallest size: not pinned to it
    assert np.isnan(sample_complexity(n, loss, 1e-3))  # never reached: no extrapolation
    out = sample_complexity(n[::-1], loss[::-1], np.array([10**-1.5, 1e-3]))  # any order, array eps
    assert out[0] == pytest.approx(1000.0) and np.isnan(out[1])
    ne, status = crossing(n, loss, [0.5, 10**-1.25, 1e-3])
    assert status.tolist() == [LEFT_CENSORED, REACHED, RIGHT_CENSORED]
    np.testing.assert_allclose(ne, [100.0, 10**2.5, 1e4], rtol=1e-12)  # censored: the bound that is known


def test_crossing_recovers_known_answers_on_synthetic_curves():
    rng = np.random.default_rng(0)
    n = np.geomspace(100, 1e5, 14)
    for a, C in ((-0.5, 2.0), (-0.25, 0.7), (-1.0, 30.0)):
        eps = C * np.exp(rng.uniform(np.log(n[1]), np.log(n[-1]), 20)) ** a  # losses the curve reaches inside the grid
        ne, status = crossing(n, C * n**a, eps)
        assert (status == REACHED).all()
        np.testing.assert_allclose(ne, (eps / C) ** (1 / a), rtol=1e-10)  # exact on a power law: log-log interpolation


def test_sample_complexity_first_crossing_of_a_non_monotone_curve():
    n = np.array([10.0, 100.0, 1000.0])
    assert sample_complexity(n, [1.0, 0.1, 0.5], 0.2) == pytest.approx(50.0)  # 1 -> 0.1 crosses 0.2 at n = 50
