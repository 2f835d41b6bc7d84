"""moe-lora bound: a checked [bound] section, resumable units in the run directory, and its
figure."""

import pandas as pd
import pytest

from moe_lora import cli
from moe_lora.config import Config, ConfigError

BASE = {
    "estimators": ["tanh"],
    "model": {"d": 2, "gate_scale": 3.0},
    "data": {"sigma": 0.02, "sizes": [100], "replicates": 2},
}

# The shared tiny sweep (tests/conftest.py) with a small [bound] section.
BOUND = """
[bound]
etas = [1e-6, 1e-3]
epsilons = [1e-3, 0.03]
losses = ["D"]
split_starts = 1
flat_starts = 1
random_starts = 0
max_iter = 60
"""


@pytest.mark.parametrize(
    "bound, match",
    [
        ({"radius": -1.0}, r"bound\.radius: Empty neighbourhood"),
        ({"kappa": 2.0}, r"bound\.kappa: Empty neighbourhood"),
        ({"losses": ["D_0.5"]}, r"bound\.losses: .*r >= 1"),
        ({"etas": [0.0, 1e-3]}, r"bound\.etas: .*positive"),
        ({"etas": {"min": 1e-3, "max": 1e-6, "count": 3}}, r"bound\.etas: expected 0 < min < max"),
        ({"extra": [-1]}, r"bound\.extra: expected integers >= 0"),
        ({"max_iters": 3}, r"bound\.max_iters: unknown key"),
        ({"refine": -1}, r"bound\.refine: .*>= 0"),
        ({"flat_edge_starts": -2}, r"bound\.flat_edge_starts: .*>= 0"),
    ],
)
def test_bad_bound_sections_name_the_key(bound, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(BASE | {"bound": bound})


def test_bound_section_defaults_and_grids():
    cfg = Config.from_dict(BASE | {"bound": {"etas": {"min": 1e-8, "max": 1e-2, "count": 4}}}).bound
    assert cfg.bound_config.etas == pytest.approx(
        (1e-8, 1e-6, 1e-4, 1e-2)
    ) and cfg.bound_config.losses == ("D", "D_2")
    assert cfg.bound_config.refine == 2  # BoundConfig's default
    assert Config.from_dict(BASE | {"bound": {"refine": 0}}).bound.bound_config.refine == 0
    assert cfg.bound_config.flat_edge_starts == 96  # BoundConfig's default
    off = Config.from_dict(BASE | {"bound": {"flat_edge_starts": 0}}).bound.bound_config
    assert off.flat_edge_starts == 0
    assert Config.from_dict(BASE).bound is None


@pytest.mark.slow
def test_bound_command_resumes_and_plot_draws_the_figure(tmp_path, capsys, tiny_toml):
    config = tmp_path / "tiny_bound.toml"
    config.write_text(tiny_toml("tiny_bound", 2, ["vanilla", "tanh"]) + BOUND)
    out = tmp_path / "run"
    assert cli.main(["bound", str(config), "--out", str(out), "--quiet"]) == 0
    curves = pd.read_parquet(out / "bound.parquet")
    assert set(curves["estimator"]) == {"vanilla", "tanh"} and set(curves["extra"]) == {1}
    assert set(curves["kind"]) == {"m", "M"}
    units = sorted((out / "bound").glob("*.parquet"))
    assert len(units) == 2
    units[0].unlink()  # an interrupted computation: one unit lost
    (out / "bound.parquet").unlink()
    capsys.readouterr()
    # --units: only the named units, in order; vanilla's needs the unit it contains first
    lost = units[0].stem
    assert lost.split("__")[1] == "tanh"
    vanilla = units[1].stem
    again = ["bound", str(config), "--out", str(out), "--quiet", "--units"]
    assert cli.main([*again, vanilla]) == 0  # present already: nothing to do, no merge
    assert not (out / "bound.parquet").exists()
    (out / "bound" / f"{vanilla}.parquet").rename(tmp_path / "vanilla.parquet")
    assert cli.main([*again, vanilla, lost]) == 2
    assert "neither computed nor before it" in capsys.readouterr().err
    assert cli.main([*again, "nonesuch"]) == 2
    (tmp_path / "vanilla.parquet").rename(out / "bound" / f"{vanilla}.parquet")
    assert cli.main([*again, lost]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "bound.parquet"), curves)
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "tiny_bound_bound_tanh_L+1.png").stat().st_size > 1000
    assert (tmp_path / "fig" / "data" / "tiny_bound" / "bound.parquet").exists()
