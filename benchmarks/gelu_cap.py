"""Why gelu's fits reach the iteration cap: the Levenberg-Marquardt trace of capped fits.

The headline setting (``simulations/verdicts_identifiable_s0.toml``, d = 3, L = L* + 1,
``stat_tol = 0.1``), gelu on its own truth, the oracle start of the committed tables, at one n.
For each replicate whose fit reaches the cap, the loop is re-run step by step
(``LevenbergMarquardt.iteration``) and the trace summarised: the share of rejected steps, the
damping mu, the risk still to go (in sigma^2 / n, against the risk at the cap), the relative
gradient and the precision rule's ratio (predicted Gauss-Newton decrease over stat_tol R / m) at
iterations 100, 500, 1000 and 2000, and the smallest eigenvalues of J^T J at the end. A slow
valley shows steady accepted steps with tiny decreases along a near-null direction; a saddle a
plateau, then a drop; the step rule many rejected steps and a large mu.

    python benchmarks/gelu_cap.py --n 10000 --replicates 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import moe_lora as ml  # noqa: E402
from moe_lora.fit import _problem, initial_params, truth_in  # noqa: E402
from moe_lora.simulate import replicate_keys  # noqa: E402
from moe_lora.truth import sample_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--replicates", type=int, default=8)
    p.add_argument("--family", default="gelu")
    a = p.parse_args()
    raw = ml.config.read_toml(ROOT / "simulations" / "verdicts_identifiable_s0.toml")
    exp = ml.Experiment.from_dict(raw, name="gelu_cap")
    label = ml.TruthLabel(a.family)
    truth, est = exp.draw_truths()[label], exp.model(a.family)
    cfg = exp.fit_config(1)
    lm = cfg.finisher
    true_params = truth_in(est, truth)
    scale = exp.sigma**2 / a.n

    @jax.jit
    def trace(data, start):
        template = jax.tree.map(lambda x: x[0], start)
        prob = _problem(est, data.X, data.Y, template, cfg)
        theta0 = jax.flatten_util.ravel_pytree(template)[0]
        init, body = lm.iteration(prob.residual, theta0, prob.canonical, prob.rows, prob.normal_eqs)

        def step(state, _):
            new = body(state)
            m = a.n * est.spec.d_out
            ridge = lm.floor * jnp.max(jnp.diag(new.A))
            A = new.A + ridge * jnp.eye(new.A.shape[0])
            ratio = (new.g @ jnp.linalg.solve(A, new.g)) / (lm.stat_tol * new.R / m)
            rel = ml.optimize.relative_gradient(new.theta, new.R, 2 * new.g)
            return new, (new.R, new.mu, new.R < state.R, ratio, rel, new.reason)

        state, rec = jax.lax.scan(step, init(theta0), None, length=lm.max_iter)
        return rec, jnp.linalg.eigvalsh(state.A)

    for k in range(a.replicates):
        key = replicate_keys(exp.sim_key(label), a.n, [k])[0]
        k_data, k_init = jax.random.split(key)
        data = sample_dataset(k_data, truth, a.n, exp.sigma, exp.design)
        start = initial_params(k_init, est, true_params, cfg)
        (R, mu, accepted, ratio, rel, reason), eig = jax.device_get(trace(data, start))
        stop = np.flatnonzero(reason != -1)
        first = int(stop[0]) + 1 if len(stop) else None
        why = ml.optimize.STOP_REASONS[int(reason[first - 1])] if first else "running"
        print(f"rep {k}: stops at iteration {first} ({why})")
        if first is not None and first < lm.max_iter:
            continue
        print("   it   risk to go (s2/n)   mu        accepted(last 100)  rule ratio  rel_grad")
        for it in (10, 100, 500, 1000, 1999):
            print(
                f"  {it + 1:5d}  {(R[it] - R[-1]) / scale:14.4f}  {mu[it]:9.2e}  "
                f"{accepted[max(0, it - 99) : it + 1].mean():8.2f}  {ratio[it]:10.3g}  "
                f"{rel[it]:9.2e}"
            )
        small = np.round(eig[:4], 12)
        print(f"   smallest eigenvalues of J^T J at the end: {small}, largest {eig[-1]:.3g}")


if __name__ == "__main__":
    main()
