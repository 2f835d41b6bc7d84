"""Containment: a family that contains another has an M(eta) at least as large on the same truth.

Vanilla's family contains every shared one (``parameterization.to_vanilla_params``: the same
factors, as vanilla's raw values, where they fit in its compact space). So every witness G that a
shared family's search finds is also a point of vanilla's family, with the same atoms, hence the
same D, L2 distance and neighbourhood. Vanilla's own search does not always find these points (its
starts differ, and the fiber chords of the shared maps have no vanilla counterpart): on the
headline tanh truth its envelope fell below tanh's at 5 of 12 etas (docs/bounds.md).

``embed_rows`` maps a family's witness rows (their raw ``theta``) into vanilla and re-evaluates
them there (atoms, D, L2 and the neighbourhood from vanilla's own factors, nothing copied);
``contain`` merges them into vanilla's curves: M(eta) is the largest D over both sets of witnesses
with L2 <= eta, m(eps) the least L2 on target at each target of either search. Every value stays
attained by an explicit, re-evaluated G of vanilla's family; ``source`` names the search that
found it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from ..fit import truth_in
from ..model import mixture_weights, regression_function
from ..parameterization import Model, Vanilla, to_vanilla_params
from ..truth import Truth
from ..voronoi import Exponents
from .config import BoundConfig, loss_exponents
from .problem import Unravel, has_parameters, interpolate_modulus, split_truth, witness_problem
from .quadrature import Quadrature
from .witnesses import flat_edge, flat_params


def embed_rows(
    rows: pd.DataFrame,
    family: Model,
    vanilla: Model,
    truth: Truth,
    config: BoundConfig,
    quad: Quadrature,
    *,
    vanilla_label: str = "vanilla",
) -> pd.DataFrame:
    """``rows`` (witness rows of ``family``'s ``bound_curves``, with their ``theta``) as witnesses
    of ``vanilla``'s family, re-evaluated there: D, l2, the neighbourhood, S, V, pi and theta are
    vanilla's; ``source`` keeps the family's label. Rows without a witness (the M rows of G*
    itself) and witnesses whose factors leave vanilla's compact space are dropped.

    Raises ``ValueError`` when ``vanilla`` is not vanilla LoRA or ``rows`` has no ``theta``
    (tables written before witnesses carried their parameters).
    """
    if not isinstance(vanilla.parameterization, Vanilla):
        raise ValueError(
            f"embed_rows maps into vanilla LoRA's family, got {vanilla.parameterization.name!r}"
        )
    if "theta" not in rows.columns:
        raise ValueError(
            "rows have no 'theta' column: recompute them with this version of bound_curves"
        )
    if rows.empty:
        return rows.iloc[:0]
    (L,) = set(rows["L"].astype(int))
    unravel_family = ravel_pytree(split_truth(family, truth, L))[1]
    unravel = Unravel(split_truth(vanilla, truth, L))
    f_star = regression_function(vanilla.spec, vanilla.base, truth.atoms, quad.X)
    _, evaluate = witness_problem(vanilla, truth.atoms, quad, f_star, unravel, config)
    evaluate = jax.jit(evaluate)
    dtype = quad.X.dtype
    out = []
    for row in rows.to_dict("records"):
        theta = row.get("theta")
        if not has_parameters(theta):
            continue  # an M row of G* itself: no witness
        try:
            raw = to_vanilla_params(
                family, unravel_family(jnp.asarray(theta, dtype)), vanilla.parameterization
            )
        except ValueError:  # outside vanilla's compact space: not a point of its family
            continue
        exps = Exponents(*(jnp.asarray(x, dtype) for x in loss_exponents(row["loss"])))
        flat = ravel_pytree(raw)[0]
        a, D, _, l2, outside = jax.device_get(evaluate(flat, exps))
        pi = np.asarray(mixture_weights(jnp.asarray(a.c), vanilla.spec.gating))
        out.append(
            dict(
                row,
                estimator=vanilla_label,
                D=float(D),
                l2=float(l2),
                neighbourhood_violation=float(outside),
                inside=bool(float(outside) <= config.neighbourhood_tol),
                S=np.asarray(a.S, float).ravel().tolist(),
                V=np.asarray(a.V, float).ravel().tolist(),
                pi=pi.astype(float).ravel().tolist(),
                theta=np.asarray(flat, float).tolist(),
                source=row.get("source", row["estimator"]),
            )
        )
    return pd.DataFrame(out, columns=rows.columns) if out else rows.iloc[:0]


def _on_target(d: pd.DataFrame, config: BoundConfig) -> pd.Series:
    return d["inside"].astype(bool) & (np.abs(d["D"] / d["eps"] - 1) <= config.constraint_tol)


#: Columns every merged row takes from the unit's own rows.
_KEPT_COLUMNS = ("triangle_constant", "triangle_random", "triangle_path", "truth", "estimator")


def contain(own: pd.DataFrame, embedded: pd.DataFrame, config: BoundConfig) -> pd.DataFrame:
    """A unit's curves ``own`` with other witnesses of its family merged in (``embed_rows``: a
    contained family's, re-evaluated in vanilla; ``flat_set_rows``: its own flat set's).

    Per loss: an m row at every target of either search, the least L2 among the on-target
    witnesses of both at that target (an embedded target vanilla's search did not have adds a row);
    an M row per eta of ``own``, the largest D among both sets' witnesses inside N(G*) with
    L2 <= eta. ``interpolated`` is recomputed from the merged m-curve (never below ``value``).
    Every row keeps the unit's own triangle constants, truth and estimator (``_KEPT_COLUMNS``).
    """
    if embedded.empty:
        return own
    out = []
    for loss, mine in own.groupby("loss", sort=False):
        theirs = embedded[embedded["loss"] == loss]
        m_own = mine[mine["kind"] == "m"]
        m_theirs = theirs[(theirs["kind"] == "m")]
        m_theirs = m_theirs[_on_target(m_theirs, config)]
        m_rows = []
        targets = sorted(set(m_own["eps"]) | set(m_theirs["eps"]))
        for eps in targets:
            here = m_own[np.isclose(m_own["eps"], eps, rtol=1e-9, atol=0)]
            cand = m_theirs[np.isclose(m_theirs["eps"], eps, rtol=1e-9, atol=0)]
            best = here.iloc[0] if len(here) else None
            if len(cand):
                c = cand.loc[cand["l2"].idxmin()]
                if best is None or not bool(best["on_target"]) or c["l2"] < best["l2"]:
                    best = c.copy()
                    best["on_target"] = True
                    best["value"] = best["l2"]
                    best["constraint_violation"] = (best["D"] - eps) / eps
            m_rows.append(best)
        m_curve = [(r["eps"], r["value"]) for r in m_rows if bool(r["on_target"])]
        pool = theirs[theirs["inside"].astype(bool)]
        M_rows = []
        for _, r in mine[mine["kind"] == "M"].iterrows():
            eta = r["eta"]
            cand = pool[pool["l2"] <= eta]
            if len(cand) and cand["D"].max() > r["value"]:
                c = cand.loc[cand["D"].idxmax()].copy()
                c["kind"], c["eta"], c["value"] = "M", eta, c["D"]
                r = c
            else:
                r = r.copy()
            r["interpolated"] = max(float(r["value"]), interpolate_modulus(m_curve, eta))
            M_rows.append(r)
        for r in m_rows + M_rows:
            for col in _KEPT_COLUMNS:
                if col in mine.columns:
                    r[col] = mine[col].iloc[0]
        out += m_rows + M_rows
    return pd.DataFrame(out).reset_index(drop=True)[own.columns]


#: Columns a constructed witness row copies from its unit's rows (the rest is its own or NaN).
_UNIT_COLUMNS = (
    "truth",
    "estimator",
    "L",
    "L_star",
    "extra",
    "triangle_constant",
    "triangle_random",
    "triangle_path",
    "quadrature_order",
    "radius",
    "kappa",
    "delta",
)


def flat_set_rows(
    key,
    truth: Truth,
    estimator: Model,
    rows: pd.DataFrame,
    config: BoundConfig,
    quad: Quadrature,
) -> pd.DataFrame:
    """The exact flat witnesses of one unit, as witness rows (``kind = "flat"``) of its table.

    Per true atom j, ``witnesses.flat_edge`` searches the flat set of cell j with all L - L* extra
    atoms in it, inside ``config.radius`` (``config.flat_edge_starts`` starts), and returns its
    largest-D witness; that G (``flat_params``) is re-evaluated per loss of ``rows`` with the unit's
    own f, D and neighbourhood, so nothing is copied from the search. ``source`` is
    ``"flat_edge"``. Empty when L = L*, when no cell has a flat set, or when the search is off.
    """
    (L,) = set(rows["L"].astype(int))
    true_params = truth_in(estimator, truth)
    L_star = int(true_params.c.shape[0])
    k = L - L_star + 1
    if k < 2 or config.flat_edge_starts == 0 or rows.empty:
        return rows.iloc[:0]
    unravel = Unravel(split_truth(estimator, truth, L))
    f_star = regression_function(estimator.spec, estimator.base, truth.atoms, quad.X)
    _, evaluate = witness_problem(estimator, truth.atoms, quad, f_star, unravel, config)
    evaluate = jax.jit(evaluate)
    dtype = quad.X.dtype
    unit = {c: rows[c].iloc[0] for c in _UNIT_COLUMNS if c in rows.columns}
    out = []
    for j in range(L_star):
        edge = flat_edge(
            jax.random.fold_in(key, j),
            estimator,
            truth.atoms,
            true_params,
            j,
            k,
            radius=config.radius,
            n_starts=config.flat_edge_starts,
            max_iter=min(config.max_iter, 400),
        )
        if not edge.found:
            continue
        flat = ravel_pytree(flat_params(estimator, true_params, j, k, edge.theta, edge.lam))[0]
        flat = jnp.asarray(flat, dtype)
        for loss in dict.fromkeys(rows["loss"]):
            exps = Exponents(*(jnp.asarray(x, dtype) for x in loss_exponents(loss)))
            a, D, _, l2, outside = jax.device_get(evaluate(flat, exps))
            pi = np.asarray(mixture_weights(jnp.asarray(a.c), estimator.spec.gating))
            out.append(
                dict(
                    unit,
                    loss=loss,
                    kind="flat",
                    eps=np.nan,
                    eta=np.nan,
                    value=np.nan,
                    D=float(D),
                    l2=float(l2),
                    neighbourhood_violation=float(outside),
                    inside=bool(float(outside) <= config.neighbourhood_tol),
                    on_target=False,
                    S=np.asarray(a.S, float).ravel().tolist(),
                    V=np.asarray(a.V, float).ravel().tolist(),
                    pi=pi.astype(float).ravel().tolist(),
                    theta=np.asarray(flat, float).tolist(),
                    source="flat_edge",
                )
            )
    return pd.DataFrame(out, columns=rows.columns) if out else rows.iloc[:0]


def with_flat_set(
    key,
    truth: Truth,
    estimator: Model,
    rows: pd.DataFrame,
    config: BoundConfig,
    quad: Quadrature,
) -> pd.DataFrame:
    """One unit's curves with its exact flat witnesses (``flat_set_rows``) merged in (``contain``):
    M(eta) is at least the largest D on the flat set inside the radius at every eta above the
    witnesses' round-off L2, which the eps targets alone can miss between grid points (the
    notebook's tanh truth at L = L* + 1: M(1e-12) = 0 from the targets, 0.045 on the flat set)."""
    return contain(rows, flat_set_rows(key, truth, estimator, rows, config, quad), config)


def contained_in_vanilla(
    rows: pd.DataFrame,
    family_rows: list[tuple[Model, pd.DataFrame]],
    vanilla: Model,
    truth: Truth,
    config: BoundConfig,
    quad: Quadrature,
) -> pd.DataFrame:
    """``contain`` of vanilla's ``rows`` with every family's witness rows at the same L and
    losses."""
    (L,) = set(rows["L"].astype(int))
    label = str(rows["estimator"].iloc[0])
    for family, theirs in family_rows:
        theirs = theirs[(theirs["L"].astype(int) == L) & theirs["loss"].isin(set(rows["loss"]))]
        rows = contain(
            rows,
            embed_rows(theirs, family, vanilla, truth, config, quad, vanilla_label=label),
            config,
        )
    return rows


#: D at round-off: a witness that is G* itself is no containment failure (differences of 1e-16).
D_FLOOR = 1e-12


def envelope(rows: pd.DataFrame, loss: str = "D") -> pd.Series:
    """The M(eta) rows of ``loss`` as a Series over eta (sorted): the curve containment compares."""
    M = rows[(rows["kind"] == "M") & (rows["loss"] == loss)]
    return M.set_index("eta")["value"].sort_index()


def containment_failures(
    family: pd.Series, vanilla: pd.Series, rtol: float = 1e-9, floor: float = D_FLOOR
) -> pd.Series:
    """The etas at which a contained family's M is above its container's (``envelope`` Series on
    the same etas): True where ``family > vanilla (1 + rtol)`` and ``family > floor``. Each True is
    a search artefact, since every witness of the family is a point of the container.

    >>> containment_failures(pd.Series([0.1, 0.3]), pd.Series([0.1, 0.2])).tolist()
    [False, True]
    """
    if not family.index.equals(vanilla.index):
        raise ValueError(
            f"containment compares M on the same etas, got {list(family.index)} and "
            f"{list(vanilla.index)}"
        )
    return (family > vanilla * (1 + rtol)) & (family > floor)
