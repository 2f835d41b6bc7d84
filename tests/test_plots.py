"""Figures: every file of plot_all is written, and n(eps) of the sample-complexity figure is exact."""

import numpy as np
import pandas as pd
import pytest

from moe_lora import plots

SIZES = [100, 316, 1000, 3162, 10000]
ESTIMATORS = {"vanilla": 3.0, "tanh": 1.0}  # estimator -> constant C of D ~ C n^-1/2


def synthetic_table(deltas=(np.nan,), replicates=8, seed=0) -> pd.DataFrame:
    """A results table with D, l2_error ~ C n^-1/2 times lognormal noise; L* = 2."""
    rng = np.random.default_rng(seed)
    rows = []
    for delta in deltas:
        truth = "tanh" if np.isnan(delta) else f"tanh@delta={delta}"
        for est, C in ESTIMATORS.items():
            for extra in (0, 1):
                for n in SIZES:
                    for r in range(replicates):
                        D = C * n**-0.5 * rng.lognormal(0, 0.3)
                        cells = rng.multinomial(2 + extra, [0.5, 0.5])
                        rows.append(dict(experiment="synthetic", truth=truth, through="tanh", delta=delta, estimator=est,
                                         extra=extra, n=n, replicate=r, D=D, l2_error=0.5 * D * rng.lognormal(0, 0.2),
                                         D_unaligned=1.1 * D, certified=rng.random() < 0.9, converged=rng.random() < 0.95,
                                         min_weight=rng.uniform(0.05, 0.5), iterations=int(rng.integers(10, 200)),
                                         stop_reason="gradient", cell_size_0=cells[0], cell_size_1=cells[1],
                                         L=2 + extra, L_star=2))
    return pd.DataFrame(rows)


def _assert_files(paths, out, stems):
    assert sorted(p.name for p in paths) == sorted(f"synthetic_{s}.{ext}" for s in stems for ext in ("pdf", "png"))
    for p in paths:
        assert p.parent == out and p.stat().st_size > 1000
        assert p.read_bytes().startswith(b"%PDF" if p.suffix == ".pdf" else b"\x89PNG\r\n\x1a\n")


def test_plot_all_single_truths(tmp_path):
    df = synthetic_table()
    df.loc[0, "D"] = np.nan  # NaN and non-positive values are dropped, not fatal
    df.loc[1, "l2_error"] = 0.0
    paths = plots.plot_all(df, tmp_path)
    _assert_files(paths, tmp_path, ["loss_D", "loss_l2", "sample_complexity", "diagnostics"])


def test_plot_all_family(tmp_path):
    paths = plots.plot_all(synthetic_table(deltas=(0.0, 0.25, 0.5), replicates=4), tmp_path)
    _assert_files(paths, tmp_path, ["minimax", "diagnostics"])


def test_sample_complexity_is_exact_on_a_power_law():
    n = np.array([100.0, 1000.0, 10000.0])
    loss = n**-0.5
    assert plots.sample_complexity(n, loss, 10**-1.25) == pytest.approx(10**2.5, rel=1e-12)  # between sizes
    assert plots.sample_complexity(n, loss, 0.01) == pytest.approx(1e4, rel=1e-12)  # at the last size
    assert plots.sample_complexity(n, loss, 0.5) == 100.0  # already reached at the smallest size
    assert np.isnan(plots.sample_complexity(n, loss, 1e-3))  # never reached: no extrapolation
    out = plots.sample_complexity(n[::-1], loss[::-1], np.array([10**-1.5, 1e-3]))  # any order, array eps
    assert out[0] == pytest.approx(1000.0) and np.isnan(out[1])


def test_sample_complexity_first_crossing_of_a_non_monotone_curve():
    n = np.array([10.0, 100.0, 1000.0])
    assert plots.sample_complexity(n, [1.0, 0.1, 0.5], 0.2) == pytest.approx(50.0)  # 1 -> 0.1 crosses 0.2 at n = 50
