"""Figures of a run: built from a table made by the real row builder, checked for what they draw."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from moe_lora import cli
from moe_lora.figures import figure_loss, figure_sample_complexity, run_figures
from moe_lora.simulate import Record
from moe_lora.slopes import SlopeSettings
from moe_lora.table import record_rows

SIZES = [100, 562, 3162, 17783, 100000]  # 3 decades: D ~ n^-1/2 spans 1.5 decades of eps
ESTIMATORS = {"vanilla": 3.0, "tanh": 1.0}  # estimator -> constant C of D ~ C n^-1/2
L_STAR = 2


def _record(rng, n, C, extra, replicates):
    """A Record with D, l2_error ~ C n^-1/2 times lognormal noise, every field filled."""
    R, L = replicates, L_STAR + extra
    D = C * n**-0.5 * rng.lognormal(0, 0.3, R)
    scalar = lambda v: np.asarray(v, np.float64)
    cells = np.stack([np.sort(rng.integers(0, L_STAR, L)) for _ in range(R)])
    return Record(
        risk=scalar(rng.uniform(1, 2, R)),
        risk_truth=scalar(rng.uniform(2, 3, R)),
        grad_norm=scalar(rng.uniform(0, 1, R)),
        rel_grad=scalar(rng.uniform(0, 1e-6, R)),
        min_weight=scalar(rng.uniform(0.05, 0.5, R)),
        D=D,
        D_unaligned=1.1 * D,
        l2_error=0.5 * D * rng.lognormal(0, 0.2, R),
        iterations=rng.integers(10, 200, R),
        restart=np.zeros(R, np.int64),
        stop_reason=np.zeros(R, np.int64),
        converged=rng.random(R) < 0.95,
        certified=rng.random(R) < 0.9,
        cell_size=np.stack([np.bincount(c, minlength=L_STAR) for c in cells]),
        cell_mass=rng.uniform(0, 0.1, (R, L_STAR)),
        cell_parameter=rng.uniform(0, 0.1, (R, L_STAR)),
        weights=rng.dirichlet(np.ones(L), R),
        cell=cells,
        restart_risks=rng.uniform(1, 2, (R, 1)),
        value_norm=rng.uniform(0.1, 2, (R, L)),
        D_mass=0.2 * D,
        D_singleton=0.3 * D,
        D_multi=0.5 * D,
        D_S=0.4 * D,
        D_V=0.4 * D,
        shared_gate=np.zeros(R, bool),
        D_shared_gate=np.zeros(R),
        cell_gate_gap=np.full((R, L_STAR), np.inf),
        n_restarts=np.ones(R, np.int64),
        n_near_best=np.ones(R, np.int64),
        saturated=np.zeros(R, bool),
        D_ambiguity_min=D,
        D_ambiguity_max=D,
        risk_oracle=np.full(R, np.nan),
        D_oracle=np.full(R, np.nan),
    )


def synthetic_table(deltas=(None,), replicates=8, seed=0) -> pd.DataFrame:
    """A results table built with the real row builder, L* = 2, settings L = L* and L* + 1."""
    rng = np.random.default_rng(seed)
    frames = []
    for delta in deltas:
        truth = "tanh" if delta is None else f"tanh@delta={delta}"
        for est, C in ESTIMATORS.items():
            for extra in (0, 1):
                for n in SIZES:
                    ids = dict(
                        experiment="synthetic",
                        seed=0,
                        truth=truth,
                        through="tanh",
                        delta=delta,
                        estimator=est,
                        extra=extra,
                        L=L_STAR + extra,
                        L_star=L_STAR,
                        n=n,
                        sigma=0.02,
                        truth_separation=1.0,
                        truth_gate_strength=1.0,
                        truth_expert_separation=1.0,
                    )
                    frames.append(
                        record_rows(_record(rng, n, C, extra, replicates), ids, range(replicates))
                    )
    return pd.concat(frames, ignore_index=True)


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_run_figures_of_single_truths_draw_every_estimator_with_its_slope():
    df = synthetic_table()
    df.loc[0, "D"] = np.nan  # NaN and non-positive values are dropped, not fatal
    df.loc[1, "l2_error"] = 0.0
    figures = run_figures(df)
    assert list(figures) == [
        "synthetic_loss_D",
        "synthetic_loss_l2",
        "synthetic_sample_complexity",
        "synthetic_sample_complexity_median",
        "synthetic_diagnostics",
    ]
    assert all(isinstance(f, Figure) for f in figures.values())
    fig = figures["synthetic_loss_D"]
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(panels) == 2  # truth tanh x settings exact, over-specified
    assert [ax.get_title() for ax in panels] == [
        "truth tanh, exact (L = L*)",
        "truth tanh, over-specified (L = L* + 1)",
    ]
    for ax in panels:
        assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_xlabel() == "n"
        lines = _lines(ax)
        for est in ESTIMATORS:
            (label,) = [k for k in lines if k.startswith(f"{est}: slope")]
            slope = float(label.split("slope ")[1].split(" ")[0])
            assert slope == pytest.approx(-0.5, abs=0.15)  # the table's D ~ n^-1/2
            assert list(lines[label].get_xdata()) == SIZES
        assert {"sqrt(log n / n)", "1 / log n"} <= set(lines)
    # vanilla's curve lies above tanh's (C = 3 against 1)
    lines = _lines(panels[0])
    van = next(v for k, v in lines.items() if k.startswith("vanilla"))
    tanh = next(v for k, v in lines.items() if k.startswith("tanh"))
    assert (np.asarray(van.get_ydata()) > np.asarray(tanh.get_ydata())).all()
    assert figures["synthetic_diagnostics"].axes[0].get_ylabel().startswith("fraction certified")
    # n(eps): the fitted power law inverted, n ~ eps^-2, inside the sizes; references through the
    # drawn point of largest 1 / eps
    ax = figures["synthetic_sample_complexity"].axes[0]
    lines = _lines(ax)
    assert {"C eps^-2", "C eps^-4", "exp(C eps^-1/2)"} <= set(lines)
    ends = []
    for est in ESTIMATORS:
        (label,) = [k for k in lines if k.startswith(f"{est}: n ~ eps^")]
        x, n_eps = (np.asarray(v, float) for v in lines[label].get_data())
        assert (n_eps >= SIZES[0] * (1 - 1e-9)).all() and (n_eps <= SIZES[-1] * (1 + 1e-9)).all()
        local = np.diff(np.log(n_eps)) / np.diff(np.log(x))
        np.testing.assert_allclose(local, local[0], rtol=1e-9)  # a power law
        assert local[0] == pytest.approx(2.0, abs=0.4)  # D ~ n^-1/2
        ends.append((x[-1], n_eps[-1]))
    ref = lines["C eps^-2"]
    x, y = np.asarray(ref.get_xdata()), np.asarray(ref.get_ydata())
    np.testing.assert_allclose(np.diff(np.log(y)) / np.diff(np.log(x)), 2.0)
    x0, n0 = max(ends)
    assert np.exp(np.interp(np.log(x0), np.log(x), np.log(y))) == pytest.approx(n0, rel=1e-6)
    assert len(ax.collections) >= len(ESTIMATORS)  # the bootstrap bands


def test_sample_complexity_is_not_drawn_over_less_than_a_decade():
    df = synthetic_table()
    short = df[df["n"] <= 3162]  # 1.5 decades of n: D spans about 0.75 of eps
    assert figure_sample_complexity(short) is None
    assert "synthetic_sample_complexity" not in run_figures(short)
    # The fit range decides it too: the full table fitted above n = 3162 only.
    assert figure_sample_complexity(df, n_min=3162) is None
    fig = figure_sample_complexity(df)
    assert fig is not None
    # run_figures takes the fit range as one SlopeSettings, or its fields as keywords.
    for figures in (run_figures(df, slopes=SlopeSettings(n_min=3162)), run_figures(df, n_min=3162)):
        assert "synthetic_sample_complexity" not in figures and "synthetic_loss_D" in figures
    with pytest.raises(TypeError, match="slope settings are"):
        run_figures(df, n_boot=10)


def test_run_figures_of_a_family_draw_the_worst_member():
    df = synthetic_table(deltas=(None, 0.25, 0.5), replicates=4)
    figures = run_figures(df)
    assert "synthetic_minimax" in figures
    ax = figures["synthetic_minimax"].axes[0]
    assert ax.get_title() == "family tanh, exact (L = L*)"
    thick = [line for line in ax.get_lines() if line.get_linewidth() > 2]
    assert len(thick) == len(ESTIMATORS)
    members = (
        df[(df["estimator"] == "vanilla") & (df["extra"] == 0)]
        .groupby(["truth", "n"])["D"]
        .mean()
        .unstack("truth")
    )
    vanilla = next(line for line in thick if line.get_label().startswith("vanilla"))
    np.testing.assert_allclose(vanilla.get_ydata(), members.max(axis=1).to_numpy())


def test_figure_loss_without_single_truths_is_none():
    assert figure_loss(synthetic_table(deltas=(0.5,)), "D") is None
    with pytest.raises(ValueError, match="Unknown metric 'E'"):
        figure_loss(synthetic_table(), "E")


def test_the_command_saves_each_figure_as_pdf_and_png(tmp_path):
    fig = run_figures(synthetic_table(replicates=2))["synthetic_loss_D"]
    paths = cli.save_figure(fig, tmp_path, "synthetic_loss_D")
    assert [p.name for p in paths] == ["synthetic_loss_D.pdf", "synthetic_loss_D.png"]
    for p in paths:
        assert p.stat().st_size > 1000 and p.read_bytes().startswith(
            b"%PDF" if p.suffix == ".pdf" else b"\x89PNG\r\n\x1a\n"
        )


def test_headline_figure_draws_both_estimators_and_anchored_references():
    from moe_lora.headline import figure_headline

    df = synthetic_table()
    truth = df["truth"].iloc[0]
    fig = figure_headline(
        df[df["extra"] == 1], truth=truth, estimators=("vanilla", "tanh"), n_min=300
    )
    assert isinstance(fig, Figure)
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert any(lab.startswith("vanilla mean: slope") for lab in labels)
        assert any(lab.startswith("tanh mean: slope") for lab in labels)
        # The polynomial reference passes through tanh's mean at the largest n.
        ref = next(
            line for line in ax.get_lines() if line.get_label().startswith("C sqrt(log n / n)")
        )
        metric = "D" if "Voronoi" in ax.get_ylabel() else "l2_error"
        tanh = df[(df["estimator"] == "tanh") & (df["extra"] == 1) & (df["n"] == max(SIZES))][
            metric
        ].mean()
        assert ref.get_ydata()[-1] == pytest.approx(tanh, rel=1e-9)
    with pytest.raises(ValueError, match=r"no rows of estimator\(s\) \['gelu'\]"):
        figure_headline(df, truth=truth, estimators=("vanilla", "gelu"))


def test_the_oracle_figure_draws_estimate_band_and_oracle_only_where_recorded():
    df = synthetic_table()
    assert "synthetic_oracle" not in run_figures(df)  # no oracle diagnostic recorded
    from moe_lora.figures import figure_oracle

    df = df.assign(
        D_oracle=2 * df["D"], D_ambiguity_min=0.5 * df["D"], D_ambiguity_max=1.5 * df["D"]
    )
    fig = run_figures(df)["synthetic_oracle"]
    assert figure_oracle(df.assign(D_oracle=np.nan)) is None
    top = [ax for ax in fig.axes if ax.get_visible() and ax.axison][: 2 * len(ESTIMATORS)]
    for ax in top:
        lines = _lines(ax)
        est, oracle = lines["truth-free estimate"], lines["oracle start"]
        np.testing.assert_allclose(oracle.get_ydata(), 2 * np.asarray(est.get_ydata()))
        assert len(ax.collections) == 1  # the D-ambiguity band
