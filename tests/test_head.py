"""The attention-head teacher-student simulation (moe_lora.head) and its figure."""

import dataclasses

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree

from moe_lora import head as hd
from moe_lora.attention import LoRA, attention, attention_row_as_mixture
from moe_lora.head_figure import figure_data_efficiency

matplotlib.use("Agg")

TINY = hd.HeadConfig(
    d=4,
    d_k=2,
    d_v=2,
    N=3,
    rank_true=1,
    rank=1,
    steps=300,
    patience=50,
    starts=2,
    n_test=64,
    learning_rate=2e-2,
    sigma=0.1,
)


def test_head_with_lora_equals_the_attention_function():
    config = hd.HeadConfig()
    teacher = hd.draw_teacher(jax.random.key(0), config)
    X = hd.sample_sequences(jax.random.key(1), config, 3)
    for x in X:
        H = hd.head_output(config, teacher.weights, teacher.lora, x)
        np.testing.assert_allclose(
            H, attention(x, teacher.weights, teacher.lora), rtol=1e-12, atol=1e-12
        )
        np.testing.assert_allclose(
            H[2],
            attention_row_as_mixture(x, 2, teacher.weights, teacher.lora).row,
            rtol=1e-12,
            atol=1e-12,
        )
    # the teacher's update is not a no-op, so the comparison above is not vacuous
    zero = LoRA(*(jnp.zeros_like(f) for f in teacher.lora))
    assert not np.allclose(
        hd.head_output(config, teacher.weights, zero, X[0]),
        hd.head_output(config, teacher.weights, teacher.lora, X[0]),
    )


def test_sigmoid_gating_is_the_elementwise_sigmoid_with_bias_minus_log_N():
    config = hd.HeadConfig(gating="sigmoid")
    t = hd.draw_teacher(jax.random.key(0), config)
    x = hd.sample_sequences(jax.random.key(1), config, 1)[0]
    W_Q = t.weights.W_Q + t.lora.B_Q @ t.lora.A_Q
    s = (x @ W_Q) @ (x @ t.weights.W_K).T / np.sqrt(config.d_k)
    expected = jax.nn.sigmoid(s - np.log(config.N)) @ (
        x @ (t.weights.W_V + t.lora.B_V @ t.lora.A_V)
    )
    np.testing.assert_allclose(hd.head_output(config, t.weights, t.lora, x), expected, rtol=1e-12)


@pytest.mark.parametrize("name", list(hd.STUDENTS))
@pytest.mark.parametrize("rank,hidden,separate", [(2, None, False), (3, 5, False), (2, 8, True)])
def test_student_conformance(name, rank, hidden, separate):
    """Every student: a HeadStudent, factors of rank r, its stated parameter count, a zero-update
    start, jit-able and deterministic for a fixed key."""
    config = hd.HeadConfig(rank=rank, rank_true=2, hidden=hidden, separate_trunks=separate)
    student = hd.STUDENTS[name]
    assert isinstance(student, hd.HeadStudent) and student.name == name
    family = hd.draw_teacher(jax.random.key(0), config).family
    p = student.init(jax.random.key(1), config)
    f = jax.jit(lambda q: student.factors(config, family, q))(p)
    assert [x.shape for x in f] == [(16, rank), (rank, 8), (16, rank), (rank, 8)]
    assert (
        student.parameter_count(config)
        == ravel_pytree(p)[0].size
        == hd.parameter_counts(config)[name]
    )
    # the start is the pre-trained head: a zero update
    assert float(jnp.abs(f.B_Q @ f.A_Q).max()) == 0 and float(jnp.abs(f.B_V @ f.A_V).max()) == 0
    again = student.init(jax.random.key(1), config)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(again)))


def test_fixed_maps_are_the_sweeps_shared_parameterization():
    """The fixed-maps student's factors are Shared.factors of the sweeps times the known scales, and
    its Q and V updates move together: changing one latent changes both."""
    from moe_lora.model import ModelSpec
    from moe_lora.parameterization import Shared, SharedParams

    config = hd.HeadConfig(truth="fixed_maps")
    t = hd.draw_teacher(jax.random.key(0), config)
    spec = ModelSpec(d=16, d_out=8, r=2, d_k=8)
    f = Shared("tanh", latent_dim=2).factors(
        spec, t.family.maps, SharedParams(t.params.a[None], t.params.b[None], jnp.zeros(1))
    )
    np.testing.assert_allclose(t.lora.A_V, f.A_V[0], rtol=1e-12)
    np.testing.assert_allclose(t.lora.B_Q, t.family.scale_q * f.B_Q[0], rtol=1e-12)
    moved = hd.FixedMaps().factors(config, t.family, t.params._replace(a=t.params.a + 0.1))
    assert not np.allclose(moved.A_Q, t.lora.A_Q) and not np.allclose(moved.A_V, t.lora.A_V)


@pytest.mark.parametrize("truth", hd.TRUTHS)
def test_teacher_has_the_stated_update_sizes_and_live_gates(truth):
    config = hd.HeadConfig(truth=truth, update_q=0.8, update_v=0.3)
    t = hd.draw_teacher(jax.random.key(3), config)
    np.testing.assert_allclose(
        jnp.linalg.norm(t.lora.B_Q @ t.lora.A_Q) / jnp.linalg.norm(t.weights.W_Q), 0.8, rtol=1e-10
    )
    np.testing.assert_allclose(
        jnp.linalg.norm(t.lora.B_V @ t.lora.A_V) / jnp.linalg.norm(t.weights.W_V), 0.3, rtol=1e-10
    )
    assert t.gate_change >= hd.MIN_GATE_CHANGE and t.gate_saturation <= hd.MAX_GATE_SATURATION
    assert np.linalg.matrix_rank(np.asarray(t.lora.B_Q @ t.lora.A_Q)) == config.rank_true
    if truth == "learned_generator":
        np.testing.assert_allclose(
            hd.generator_factors(t.params, config.activation).B_Q, t.lora.B_Q
        )


def test_degenerate_teacher_gates_are_refused():
    with pytest.raises(ValueError, match="gate_change"):
        hd.draw_teacher(jax.random.key(0), hd.HeadConfig(update_q=1e-4))


@pytest.mark.parametrize(
    "student,truth",
    [("lora", "vanilla"), ("learned_generator", "learned_generator"), ("fixed_maps", "fixed_maps")],
)
def test_student_started_at_the_teacher_stays_there_on_noiseless_data(student, truth):
    config = hd.HeadConfig(truth=truth, steps=100, patience=100)
    t = hd.draw_teacher(jax.random.key(0), config)
    X = hd.sample_sequences(jax.random.key(1), config, 16)
    Y = hd.head_outputs(config, t.weights, t.lora, X)
    best, steps, stopped, val = hd.train_student(
        config,
        hd.STUDENTS[student],
        t.family,
        t.weights,
        t.params,
        (X[:12], Y[:12]),
        (X[12:], Y[12:]),
    )
    for got, want in zip(jax.tree.leaves(best), jax.tree.leaves(t.params)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert float(val) < 1e-20 and int(steps) == 0


def test_student_started_off_the_teacher_moves_toward_it():
    """The check above could pass with an optimizer that never moves; this one could not."""
    config = hd.HeadConfig(steps=300, patience=300)
    t = hd.draw_teacher(jax.random.key(0), config)
    X = hd.sample_sequences(jax.random.key(1), config, 16)
    Y = hd.head_outputs(config, t.weights, t.lora, X)
    start = t.params._replace(A_Q=t.params.A_Q * 0.8)
    _, _, _, val0 = hd.train_student(
        config, hd.LoRAStudent(), t.family, t.weights, start, (X[:12], Y[:12]), (X[12:], Y[12:])
    )
    initial = hd.mean_squared_error(config, t.weights, start, X[12:], Y[12:])
    assert float(val0) < 0.01 * float(initial)


@pytest.mark.slow
def test_more_data_lowers_the_test_error_for_both_students_and_compiles_once():
    key = jax.random.key(7)
    for student in hd.STUDENTS:
        # The fixed maps span a smaller family: only a teacher drawn through them is inside it.
        config = dataclasses.replace(TINY, truth="fixed_maps") if student == "fixed_maps" else TINY
        small = hd.simulate_head(key, config, student, 4, 6)
        large = hd.simulate_head(key, config, student, 64, 6)
        assert np.mean(large.function_error) < 0.5 * np.mean(small.function_error), student
        assert np.mean(large.value_error) < np.mean(small.value_error), student
        before = hd.TRACE_COUNT[(student, 64)]
        again = hd.simulate_head(key, config, student, 64, [6, 7, 8, 9, 10, 11])
        assert hd.TRACE_COUNT[(student, 64)] == before == 1
        assert not np.allclose(again.function_error, large.function_error)


def test_a_learning_rate_grid_keeps_the_best_validation_loss_of_its_single_rate_fits():
    """The grid is the single-rate fits side by side: its record is the one of the rate whose
    fit has the lowest validation loss, and it says which rate that was."""
    rates = (3e-3, 3e-2)
    config = dataclasses.replace(TINY, steps=60, patience=60, learning_rates=list(rates))
    assert config.learning_rates == rates and hash(config)  # a TOML list, made static
    key = jax.random.key(5)
    teacher, X_test = hd.teacher_and_test(key, config)
    fit = lambda c: hd.fit_replicate(jax.random.key(6), teacher, X_test, c, hd.LoRAStudent(), 12)
    grid = fit(config)
    singles = [
        fit(dataclasses.replace(config, learning_rates=None, learning_rate=r)) for r in rates
    ]
    assert singles[0].val_loss != singles[1].val_loss  # the two rates really differ
    best = singles[int(np.argmin([float(r.val_loss) for r in singles]))]
    assert float(grid.learning_rate) == float(best.learning_rate)
    for name in ("val_loss", "function_error", "gate_error", "steps", "start"):
        np.testing.assert_allclose(getattr(grid, name), getattr(best, name), rtol=1e-10)


def test_tuned_against_untuned_comparison_pairs_seeds():
    """benchmarks/head_lr_compare.py pairs each seed's tuned fit with its untuned one."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "head_lr_compare.py"
    spec = importlib.util.spec_from_file_location("head_lr_compare", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    keys = dict(variation="v", student="lora", n=16)
    untuned = pd.DataFrame([dict(keys, seed=k, function_error=0.1) for k in range(4)])
    # seed 3 is absent from the untuned table and must not count
    errors, rates = [0.05, 0.2, 0.1, 9.0], [3e-2, 3e-2, 1e-2, 3e-3]
    tuned = pd.DataFrame(
        [
            dict(keys, seed=k, function_error=e, learning_rate=r)
            for k, (e, r) in enumerate(zip(errors, rates))
        ]
    )
    (row,) = script.compare(tuned, untuned[untuned.seed < 3]).to_dict("records")
    assert row["seeds"] == 3 and row["tuned_better"] == 1
    assert row["tuned_median"] == pytest.approx(0.1) and row["log_ratio_median"] == pytest.approx(0)
    assert (row["kept_0.003"], row["kept_0.01"], row["kept_0.03"]) == (0, 1, 2)


@pytest.mark.slow
def test_unit_is_deterministic_and_a_seed_does_not_depend_on_its_block():
    config = dataclasses.replace(TINY, steps=40, starts=1)
    a = hd.head_unit(jax.random.key(2), config, "learned_generator", 8, [0, 1, 2], variation="v")
    c = hd.head_unit(jax.random.key(2), config, "learned_generator", 8, [4, 5, 1], variation="v")
    metrics = list(hd.METRICS) + ["steps", "val_loss"]
    np.testing.assert_allclose(
        a[a.seed == 1][metrics].to_numpy(float), c[c.seed == 1][metrics].to_numpy(float), rtol=1e-6
    )
    assert not np.allclose(
        a[a.seed == 0][metrics].to_numpy(float), c[c.seed == 4][metrics].to_numpy(float)
    )
    assert list(a.columns[:3]) == ["student", "n", "seed"] and set(hd.METRICS) <= set(a.columns)
    assert (a["variation"] == "v").all() and (
        a["parameters"] == hd.parameter_counts(config)["learned_generator"]
    ).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=17, rank_true=2), "rank 17 is above d=16"),
        (dict(rank=9, rank_true=2), "above d_k=8"),
        (dict(rank_true=3, rank=2), "below the teacher's rank_true=3"),
        (dict(N=0), "N .* >= 1, got 0"),
        (dict(sigma=0.0), "sigma must be positive and finite, got 0.0"),
        (dict(sigma="1"), "sigma must be a number"),
        (dict(sigma=-1.0), "sigma"),
        (dict(gating="relu"), "Unknown gating 'relu'"),
        (dict(truth="other"), "Unknown truth"),
        (dict(truth="fixed_maps", rank=3, rank_true=2), "rank_true == rank"),
        (dict(finisher="bfgs"), "Unknown finisher"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(d_k=0), "d_k must be an integer >= 1, got 0"),
        (dict(learning_rates=[]), "learning_rates must be a non-empty list .* got \\[\\]"),
        (dict(learning_rates=[1e-2, -1e-3]), "learning_rates must be positive .* got -0.001"),
        (dict(learning_rates=[1e-2, 1e-2]), "learning_rates must be distinct"),
        (dict(learning_rates="1e-2"), "learning_rates must be a non-empty list"),
    ],
)
def test_bad_configs_name_the_value_and_the_expectation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hd.HeadConfig(**kwargs)


def test_mismatched_dimensions_are_refused():
    config = hd.HeadConfig()
    t = hd.draw_teacher(jax.random.key(0), config)
    with pytest.raises(
        ValueError, match=r"Shape mismatch for W_K: got \(16, 4\), expected \(16, 8\)"
    ):
        hd.check_head(config, t.weights._replace(W_K=t.weights.W_K[:, :4]), t.lora)
    with pytest.raises(ValueError, match=r"Shape mismatch for A_V"):
        hd.check_head(config, t.weights, t.lora._replace(A_V=t.lora.A_V[:, :3]))
    other = hd.draw_teacher(jax.random.key(0), hd.HeadConfig(d_v=4))
    with pytest.raises(ValueError, match="Shape mismatch for W_V"):
        hd.simulate_head(jax.random.key(0), config, "lora", 8, 1, teacher=other)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        hd.simulate_head(jax.random.key(0), config, "lora", 1, 1)
    with pytest.raises(ValueError, match="Unknown student"):
        hd.simulate_head(jax.random.key(0), config, "dora", 8, 1)


def _synthetic_table():
    """LoRA error 1/n, the learned generator 0.5/n, with seed noise that cancels exactly in every
    statistic."""
    rows = []
    for n in (16, 160, 1600):
        for seed in range(4):
            wiggle = 1 + 0.1 * (-1) ** seed
            for student, c in (("lora", 1.0), ("learned_generator", 0.5)):
                rows.append(
                    dict(
                        student=student,
                        n=n,
                        seed=seed,
                        function_error=c * wiggle / n,
                        variation="synthetic",
                        underfit=student == "lora" and seed == 0 and n == 16,
                    )
                )
    return pd.DataFrame(rows)


def test_data_efficiency_and_improvement_on_a_known_table():
    table = _synthetic_table()
    eff = hd.data_efficiency(table, n_boot=200, seed=0).iloc[0]
    assert eff["candidate"] == "learned_generator" and eff["censored"] == ""
    assert (
        eff["n_ratio"] == pytest.approx(0.5, rel=1e-9)
        and eff["n_ratio_lo"] <= 0.5 <= eff["n_ratio_hi"]
    )
    assert eff["slope_reference"] == pytest.approx(-1.0) and eff["fraction"] == pytest.approx(
        0.5, rel=1e-12
    )
    imp = hd.improvement(table, n_boot=200, seed=0)
    np.testing.assert_allclose(imp["improvement"], 0.5, rtol=1e-12)
    np.testing.assert_allclose(imp["improvement_median"], 0.5, rtol=1e-12)
    np.testing.assert_allclose(imp["log_ratio_median"], np.log(0.5), rtol=1e-12)
    assert (imp["lo"] <= 0.5).all() and (imp["hi"] >= 0.5).all() and (imp["wins"] == 4).all()
    assert (
        imp["underfit_reference"].tolist() == [1, 0, 0] and (imp["underfit_candidate"] == 0).all()
    )
    swapped = table.assign(
        student=table["student"].map({"lora": "learned_generator", "learned_generator": "lora"})
    )
    again = hd.data_efficiency(swapped, n_boot=50, seed=0).iloc[0]
    assert again["censored"] == "not reached" and again["n_ratio"] == pytest.approx(2.0, rel=1e-9)
    assert hd.crossing_fraction([10, 100], [1.0, 0.1], [0.01, 0.001]) == pytest.approx(0.1)


def test_n_ratio_is_not_knife_edged():
    """Curves that coincide up to noise give n_ratio near 1 whichever side the noise falls on; the
    crossing fraction flips between about 1 and "not reached"."""
    base = _synthetic_table()
    for sign in (1, -1):
        t = base.copy()
        rep = t["student"] == "learned_generator"
        t.loc[rep, "function_error"] = t.loc[~rep, "function_error"].to_numpy() * (1 + sign * 1e-3)
        eff = hd.data_efficiency(t, n_boot=50, seed=0).iloc[0]
        assert eff["n_ratio"] == pytest.approx(1.0, abs=0.01)
        assert eff["censored"] == ("not reached" if sign == 1 else "")


def test_rate_slopes_on_a_known_table():
    slopes = hd.rate_slopes(_synthetic_table(), metrics=("function_error",), bootstrap=100)
    np.testing.assert_allclose(slopes["slope"], -1.0, rtol=1e-9)
    assert (slopes["lo"] <= -1 + 1e-9).all() and (slopes["hi"] >= -1 - 1e-9).all()
    # two metrics, and the settings as one object: the same slopes for each
    table = _synthetic_table()
    table["gate_error"] = table["function_error"]
    settings = hd.HEAD_SLOPES.replace(bootstrap=100)
    both = hd.rate_slopes(table, metrics=("function_error", "gate_error"), slopes=settings)
    np.testing.assert_allclose(both["slope"], -1.0, rtol=1e-9)
    assert len(both) == 2 * len(slopes) and set(both["statistic"]) == {"median"}


@pytest.mark.slow
def test_underfit_flag_marks_fits_that_do_not_reach_the_teacher():
    """One Adam step from the zero update cannot reach the teacher: flagged; the least-squares
    finish from there does: not flagged, and its training loss is at most the teacher's."""
    config = dataclasses.replace(TINY, steps=1, patience=1, starts=1)
    stuck = hd.simulate_head(jax.random.key(3), config, "lora", 32, 2)
    assert bool(stuck.underfit.all())
    finished = hd.simulate_head(
        jax.random.key(3), dataclasses.replace(config, finisher="lm"), "lora", 32, 2
    )
    assert not bool(finished.underfit.any()) and bool(finished.finisher_kept.all())
    assert (
        np.asarray(finished.train_loss) <= np.asarray(finished.train_loss_truth) * (1 + 1e-9)
    ).all()


def test_figure_content():
    fig = figure_data_efficiency(_synthetic_table(), n_boot=100)
    left, right = fig.axes
    assert [line.get_label() for line in left.get_lines()] == ["LoRA", "learned generator"]
    np.testing.assert_allclose(left.get_lines()[0].get_ydata(), [1 / 16, 1 / 160, 1 / 1600])
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(), np.log(0.5))
    assert "n_ratio 0.50" in right.get_title()
    assert len(left.collections) == 2 and left.get_xscale() == "log" and left.get_yscale() == "log"
