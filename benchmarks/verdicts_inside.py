"""The truths of the "well inside the thresholds" verdict runs (simulations/verdicts_inside_*.toml).

Rule, fixed before those runs: per family (tanh, sigmoid, gelu, linear), four truths whose
separation, gate strength and expert separation are all >= INSIDE = 0.6 (1.2 x the 0.5 of
verdicts_identifiable_s*.toml). They are the seeds 0-3 truths that already pass (a truth is keyed by
seed and family only, so it and its data are those of verdicts_identifiable_s{seed}), completed by
the first seeds from 4 on at which a truth passing INSIDE is drawn. Vanilla runs on each new tanh
truth. Prints, per family, the seeds 0-3 truths with whether they pass, the completion seeds, and
whether each committed verdicts_inside config draws exactly the truth listed.

    python benchmarks/verdicts_inside.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSIDE = 0.6
FAMILIES = ("tanh", "sigmoid", "gelu", "linear")
PER_FAMILY = 4


def _truth(cfg, family: str, seed: int, threshold: float | None):
    from moe_lora.experiment import Experiment

    truth = dataclasses.replace(cfg.truth, through=(family,))
    if threshold is not None:
        truth = dataclasses.replace(
            truth,
            min_separation=threshold,
            min_gate_strength=threshold,
            min_expert_separation=threshold,
        )
    exp = Experiment(dataclasses.replace(cfg, seed=seed, estimators=(family,), truth=truth))
    return next(iter(exp.draw_truths().values()))


def _stats(t) -> str:
    return f"sep {t.separation:.3f}, gate {t.gate_strength:.3f}, experts {t.expert_separation:.3f}"


def _passes(t) -> bool:
    return min(t.separation, t.gate_strength, t.expert_separation) >= INSIDE


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    from moe_lora.config import ConfigError, load_config

    base = load_config(ROOT / "simulations" / "verdicts_identifiable_s0.toml")
    for family in FAMILIES:
        kept = []
        print(f"{family}:")
        for seed in range(4):
            t = _truth(base, family, seed, None)
            ok = _passes(t)
            kept += [seed] if ok else []
            print(f"  seed {seed} (threshold 0.5): {_stats(t)} -> {'kept' if ok else 'replaced'}")
        seed = 4
        while len(kept) < PER_FAMILY:
            try:
                t = _truth(base, family, seed, INSIDE)
            except ConfigError:
                print(f"  seed {seed}: no truth at {INSIDE}")
            else:
                kept.append(seed)
                print(f"  seed {seed} (threshold {INSIDE}): {_stats(t)} -> added")
                for name in (family, "vanilla") if family == "tanh" else (family,):
                    path = ROOT / "simulations" / f"verdicts_inside_{name}_s{seed}.toml"
                    print(f"    {path.name} draws this truth: {_same(_committed_truth(path), t)}")
            seed += 1
        print(f"  truths: seeds {kept}")


def _committed_truth(path: Path):
    from moe_lora.config import load_config
    from moe_lora.experiment import Experiment

    (truth,) = Experiment(load_config(path)).draw_truths().values()
    return truth


def _same(a, b) -> bool:
    leaves = zip(jax.tree_util.tree_leaves(a.atoms), jax.tree_util.tree_leaves(b.atoms))
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)


if __name__ == "__main__":
    main()
