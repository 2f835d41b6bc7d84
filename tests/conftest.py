"""Fixtures shared by the tests of the main job (``test_sweep``) and of its scale-out
(``test_scaleout``)."""

import pytest

TINY = """
name = "{name}"
seed = {seed}
estimators = {estimators}
[model]
d = 2
gate_scale = 3.0
[truth]
min_separation = 0.5
min_gate_strength = 0.5
[data]
sigma = 0.05
sizes = [60, 120]
replicates = 2
n_eval = 200
[fit]
extra_components = [1]
max_iter = 30
[minimax]
deltas = [0.5]
[execution]
replicates_per_unit = 1
"""


@pytest.fixture(scope="session")
def tiny_toml():
    """``make(name, seed, estimators)``: the text of a tiny sweep config.

    Two sizes, two replicates in units of one, fits over-specified by one atom, the drawn truth
    and one minimax member (delta = 0.5): (2 truths x estimators) x 2 sizes x 2 units.
    """

    def make(name: str, seed: int, estimators: list[str]) -> str:
        return TINY.format(
            name=name, seed=seed, estimators="[" + ", ".join(f'"{e}"' for e in estimators) + "]"
        )

    return make
