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
    local_slope_table,
    loglog_slope,
    sample_complexity,
    sample_complexity_fit,
    slope_table,
    term_slopes,
)

SIZES = np.array([100, 300, 1000, 3000, 10000, 30000])


def _table(slope=-0.5, R=32, seed=0, noise=0.3, **cols):
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        for k in range(R):
            rows.append(
                {
                    "n": n,
                    "replicate": k,
                    "D": 2.0 * n**slope * rng.lognormal(0, noise),
                    "l2_error": n**-0.5,
                    "certified": k > 0,
                }
                | cols
            )
    return pd.DataFrame(rows)


def test_loglog_slope_exact_and_bad_input():
    s, c = loglog_slope(SIZES, 5.0 * SIZES**-0.25)
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
    df = pd.concat(
        [
            _table(-0.5).assign(estimator=e, extra=x, truth="tanh", through="tanh", delta=np.nan)
            for e in ["vanilla", "tanh"]
            for x in [0, 1]
        ]
    )
    table = slope_table(df, bootstrap=20)
    assert len(table) == 2 * 2 * 2 * 2  # estimators x settings x metrics x statistics
    l2 = table[table["metric"] == "l2_error"]
    np.testing.assert_allclose(l2["slope"], -0.5)
    assert set(table.columns) >= {
        "slope",
        "ci_low",
        "ci_high",
        "n_min",
        "n_max",
        "replicates",
        "certified_fraction",
    }


def test_sample_complexity_is_exact_on_a_power_law_and_censors_the_ends():
    n = np.array([100.0, 1000.0, 10000.0])
    loss = n**-0.5
    assert sample_complexity(n, loss, 10**-1.25) == pytest.approx(
        10**2.5, rel=1e-12
    )  # between sizes
    assert sample_complexity(n, loss, 0.01) == pytest.approx(1e4, rel=1e-12)  # at the last size
    assert np.isnan(
        sample_complexity(n, loss, 0.5)
    )  # already reached at the smallest size: not pinned to it
    assert np.isnan(sample_complexity(n, loss, 1e-3))  # never reached: no extrapolation
    out = sample_complexity(n[::-1], loss[::-1], np.array([10**-1.5, 1e-3]))  # any order, array eps
    assert out[0] == pytest.approx(1000.0) and np.isnan(out[1])
    ne, status = crossing(n, loss, [0.5, 10**-1.25, 1e-3])
    assert status.tolist() == [LEFT_CENSORED, REACHED, RIGHT_CENSORED]
    np.testing.assert_allclose(
        ne, [100.0, 10**2.5, 1e4], rtol=1e-12
    )  # censored: the bound that is known


def test_crossing_recovers_known_answers_on_synthetic_curves():
    rng = np.random.default_rng(0)
    n = np.geomspace(100, 1e5, 14)
    for a, C in ((-0.5, 2.0), (-0.25, 0.7), (-1.0, 30.0)):
        eps = (
            C * np.exp(rng.uniform(np.log(n[1]), np.log(n[-1]), 20)) ** a
        )  # losses the curve reaches inside the grid
        ne, status = crossing(n, C * n**a, eps)
        assert (status == REACHED).all()
        np.testing.assert_allclose(
            ne, (eps / C) ** (1 / a), rtol=1e-10
        )  # exact on a power law: log-log interpolation


def test_sample_complexity_first_crossing_of_a_non_monotone_curve():
    n = np.array([10.0, 100.0, 1000.0])
    assert sample_complexity(n, [1.0, 0.1, 0.5], 0.2) == pytest.approx(
        50.0
    )  # 1 -> 0.1 crosses 0.2 at n = 50


def test_sample_complexity_fit_inverts_the_fitted_power_law_with_an_interval():
    # Noise-free: n(eps) is the power law inverted exactly, over the fitted range only.
    exact = sample_complexity_fit(_table(slope=-0.5, noise=0.0), "D", points=5, bootstrap=50)
    np.testing.assert_allclose(exact["n"], (exact["eps"] / 2.0) ** -2.0, rtol=1e-10)
    assert exact["n"].iloc[0] == pytest.approx(SIZES[0]) and exact["n"].iloc[-1] == pytest.approx(
        SIZES[-1]
    )  # eps runs between the line's values at the ends: no extrapolation
    assert exact["span_decades"].iloc[0] == pytest.approx(0.5 * np.log10(SIZES[-1] / SIZES[0]))
    np.testing.assert_allclose(exact["n_low"], exact["n"], rtol=1e-10)  # no noise, no width
    # Noisy: the 95% band covers the true n(eps) (measured: 89% of 140 (table, eps) cells).
    covered = []
    for seed in range(20):
        t = sample_complexity_fit(_table(slope=-0.5, seed=seed), "D", points=7, bootstrap=300)
        true_n = (t["eps"] / (2.0 * np.exp(0.3**2 / 2))) ** -2.0  # the mean of the lognormal
        assert (t["n_low"] <= t["n"]).all() and (t["n"] <= t["n_high"]).all()
        assert (np.diff(t["n"]) > 0).all()  # monotone: eps falls, n grows
        covered += list((t["n_low"] <= true_n) & (true_n <= t["n_high"]))
    assert np.mean(covered) >= 0.8
    # The fit range is honoured; a curve that does not fall has no n(eps).
    sub = sample_complexity_fit(_table(), "D", n_min=1000, bootstrap=20)
    assert sub["n_min"].iloc[0] == 1000 and sub["n"].iloc[0] > 900
    assert sample_complexity_fit(_table(slope=0.1, noise=0.0), "D", bootstrap=20).empty
    with pytest.raises(ValueError, match="statistic"):
        sample_complexity_fit(_table(), "D", "mode")
    with pytest.raises(ValueError, match="points"):
        sample_complexity_fit(_table(), "D", points=1)


def test_term_slope_intervals_cover_known_slopes_by_range():
    # D_mass ~ n^-1 everywhere; D_multi ~ n^-0.25 below n = 1000 and n^-0.5 above: the range
    # matters.
    rng = np.random.default_rng(3)
    sizes = np.geomspace(100, 1e5, 10).round()
    rows = []
    for n in sizes:
        for k in range(32):
            multi = (n**-0.25 if n <= 1000 else 1000**0.25 * n**-0.5) * rng.lognormal(0, 0.3)
            rows.append(
                {
                    "truth": "t",
                    "estimator": "e",
                    "extra": 1,
                    "n": n,
                    "replicate": k,
                    "D_mass": 0.5 / n * rng.lognormal(0, 0.3),
                    "D_multi": multi,
                }
            )
    df = pd.DataFrame(rows)
    table = term_slopes(
        df, [(None, 1000), (1000, None)], terms=("D_mass", "D_multi"), bootstrap=400
    )
    truth = {
        ("D_mass", 100): -1.0,
        ("D_mass", 1000): -1.0,
        ("D_multi", 100): -0.25,
        ("D_multi", 1000): -0.5,
    }
    for row in table.itertuples():
        assert row.ci_low <= truth[(row.term, row.n_min)] <= row.ci_high, row
        assert row.ci_high - row.ci_low < 0.2
    local = local_slope_table(df, "D_multi", window=3, bootstrap=200)
    assert local["slope"].iloc[0] == pytest.approx(-0.25, abs=0.1) and local["slope"].iloc[
        -1
    ] == pytest.approx(-0.5, abs=0.1)


def test_one_slope_settings_object_for_the_sweep_and_the_head_study():
    """The slope settings are one ``SlopeSettings``: keywords are its fields, the head study's
    defaults are one instance of it, and a config's ``[rates]`` gives one."""
    from moe_lora.config import RatesSection
    from moe_lora.head import FIT_MIN_N, HEAD_SLOPES, rate_slopes
    from moe_lora.slopes import SlopeSettings

    df = _table(-0.5)
    given = SlopeSettings(n_min=300, bootstrap=50, seed=3)
    assert curve_slope(df, "D", slopes=given) == curve_slope(
        df, "D", n_min=300, bootstrap=50, seed=3
    )
    assert curve_slope(df, "D", "median", slopes=given) == curve_slope(
        df, "D", slopes=given.replace(statistic="median")
    )
    with pytest.raises(TypeError, match="n_boot"):
        curve_slope(df, "D", n_boot=50)
    with pytest.raises(ValueError, match="n_min <= n_max"):
        SlopeSettings(n_min=10, n_max=5)
    with pytest.raises(ValueError, match="statistic"):
        SlopeSettings(statistic="mode")
    assert HEAD_SLOPES == SlopeSettings(statistic="median", n_min=FIT_MIN_N, bootstrap=2000)
    assert RatesSection().slopes() == SlopeSettings()
    assert RatesSection(n_min=100, statistic="median").slopes(seed=2) == SlopeSettings(
        statistic="median", n_min=100, seed=2
    )
    assert "slopes" in rate_slopes.__kwdefaults__
