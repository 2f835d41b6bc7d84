"""Helpers for exploring the assumptions of the theory, as the notebooks do.

* ``with_values`` / ``run_variants``: run one experiment config (a dict, as in the TOML files)
  once per value of one of its keys, in memory, and get one tidy table with a ``variant`` column.
* ``run_estimator``: fit an estimator the config cannot name (a vanilla fit with another factor
  bound, say) to an experiment's truth, data and starts: a paired comparison.
* ``mixture_on_grid``: gates, experts and the regression function of a mixing measure on a grid
  over the input square (d = 2), to draw what a mixture does with its inputs.
* ``derivative_family``: the numerical check of MODEL.md section 5's identifiability condition for
  an activation: are sigma(eta x), x sigma'(eta x) and x^2 sigma''(eta x) linearly independent
  over distinct scales eta?
* ``dead_atoms`` / ``cell_patterns`` / ``value_valley``: how the fitted atoms of over-specified
  fits fill the Voronoi cells of the true atoms, and which of them sit in vanilla's valley.

The figures that go with them are ``moe_lora.plots.figure_*``; the onset of the asymptotic regime
is ``moe_lora.rates.asymptotic_onset``.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float

from .experiment import ConfigError, Experiment
from .model import Atoms, Base, ModelSpec, gates, regression_function
from .parameterization import ACTIVATIONS, Model
from .sweep import KEY_COLUMNS, Unit, UnitContext, compute_unit, run_frame

# --------------------------------------------------------------------------------------------
# Config variants


def with_values(config: dict, updates: dict) -> dict:
    """A deep copy of ``config`` with dotted keys set: ``{"data.sigma": 0.05, "seed": 1}``.

    Sections missing from ``config`` are created; the result is checked only when it is turned
    into an ``Experiment`` (which names a bad key or value).

    >>> with_values({"data": {"sigma": 0.02}}, {"data.sigma": 0.1, "model.d": 3})
    {'data': {'sigma': 0.1}, 'model': {'d': 3}}
    """
    out = copy.deepcopy(config)
    for dotted, value in updates.items():
        *sections, key = dotted.split(".")
        if len(sections) > 1 or not key:
            raise ConfigError(f"{dotted!r}: expected 'key' or 'section.key'")
        target = out
        for s in sections:
            if not isinstance(target.setdefault(s, {}), dict):
                raise ConfigError(f"{dotted!r}: {s!r} is not a section of the config")
            target = target[s]
        target[key] = copy.deepcopy(value)
    return out


def run_variants(config: dict, key: str, values, *, progress: bool = True, stream=None) -> pd.DataFrame:
    """Run ``config`` once per value of the dotted ``key``, in memory; one table for all.

    Args:
        config: an experiment config as a dict (the TOML layout; see ``moe_lora.experiment``).
        key: the dotted key to vary, e.g. ``"data.sigma"``, ``"model.gating"``, ``"model.d"``.
        values: the values it takes, one run each.
        progress: print a progress line per unit (to ``stream``, default stderr).

    Returns:
        The ``run_frame`` tables of every run, concatenated, with a first column ``variant``
        holding the value (the table's ``attrs["variant_key"]`` names ``key``). Everything
        else in the config, the seed included, is the same in every run: runs that differ only
        in the noise level or the truth's draw share their inputs and noise draws.

    Raises:
        ConfigError: a value the config check refuses, naming the key and the value.
    """
    values = list(values)
    if not values:
        raise ValueError(f"run_variants: no values given for {key!r}")
    frames = []
    for v in values:
        try:
            exp = Experiment.from_dict(with_values(config, {key: v}), name=str(config.get("name") or "variant"))
            df = run_frame(exp, progress=progress, stream=stream)
        except ConfigError as e:  # a bad value, or a truth the value makes impossible to draw
            raise ConfigError(f"{key} = {v!r}: {e}") from None
        df.insert(0, "variant", [v] * len(df))
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["variant_key"] = key
    return out


def run_estimator(exp: Experiment, model: Model, label: str, *, extra: int, truth: str | None = None,
                  sizes=None) -> pd.DataFrame:
    """Fit an estimator the config cannot name (other bounds, maps, ...) to the experiment's data.

    The rows are those ``run_frame(exp)`` would give an estimator called ``label``: the same
    truth, data sets, start keys and evaluation inputs as the experiment's own estimators, so
    the comparison is paired. With ``model = exp.model(name)`` it reproduces that estimator's
    rows exactly.

    Args:
        exp: the experiment whose truths, data and fit settings are used.
        model: the estimator (``moe_lora.make_model``); its spec must be the experiment's.
        label: its name in the ``estimator`` column.
        extra: the setting, L - L*.
        truth: the truth label (default: the experiment's first drawn truth).
        sizes: sample sizes (default: the experiment's).

    Example:
        >>> import jax; jax.config.update("jax_enable_x64", True)
        >>> import moe_lora as ml
        >>> exp = Experiment.from_dict({"model": {"d": 2, "gate_scale": 3.0}, "estimators": ["tanh"],
        ...     "data": {"sigma": 0.02, "sizes": [200], "replicates": 2}})
        >>> wide = ml.make_model(exp.spec, ml.Vanilla(bound=50.0))
        >>> run_estimator(exp, wide, "vanilla R=50", extra=0)[["estimator", "n"]].values.tolist()
        [['vanilla R=50', 200], ['vanilla R=50', 200]]
    """
    if model.spec != exp.spec:
        raise ValueError(f"The estimator's spec {model.spec} differs from the experiment's {exp.spec}")
    if extra not in exp.settings:
        raise ValueError(f"extra={extra!r} is not a setting of the experiment; expected one of {exp.settings}")
    truths = exp.draw_truths()
    truth = truth or next(iter(truths))
    if truth not in truths:
        raise ValueError(f"Unknown truth {truth!r}; expected one of {list(truths)}")
    # The experiment's own unit computation, with ``model`` standing in under the name ``label``.
    context = UnitContext(exp, truths, {label: model}, exp.x_eval())
    frames = [compute_unit(context, Unit(truth, label, extra, int(n), start, min(start + exp.chunk, exp.replicates)))[0]
              for n in (exp.sizes if sizes is None else sizes) for start in range(0, exp.replicates, exp.chunk)]
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Mixtures over the input square


class GridView(NamedTuple):
    """A mixture on a num x num grid over [-lim, lim]^2: inputs, gates, experts and f_G."""

    x1: Float[np.ndarray, "num num"]
    x2: Float[np.ndarray, "num num"]
    gates: Float[np.ndarray, "num num L"]
    experts: Float[np.ndarray, "num num L d_out"]
    f: Float[np.ndarray, "num num d_out"]


def mixture_on_grid(spec: ModelSpec, base: Base, atoms: Atoms, *, num: int = 101, lim: float = 1.0) -> GridView:
    """Gates gate_j(X), experts (V0 + V_j)^T X and f_G(X) on a grid over [-lim, lim]^2 (d = 2 only).

    Example:
        >>> import moe_lora as ml
        >>> spec = ml.ModelSpec(d=2, d_out=1, r=1)
        >>> atoms = ml.Atoms(S=jnp.zeros((2, 2, 2)), V=jnp.ones((2, 2, 1)), c=jnp.zeros(2))
        >>> view = mixture_on_grid(spec, ml.default_base(spec), atoms, num=5)
        >>> view.gates.shape, float(view.gates.sum(-1).min())
        ((5, 5, 2), 1.0)
    """
    if spec.d != 2:
        raise ValueError(f"mixture_on_grid draws the input square: expected d = 2, got d = {spec.d}")
    if not (isinstance(num, (int, np.integer)) and num >= 2):
        raise ValueError(f"num must be an integer >= 2, got {num!r}")
    t = np.linspace(-lim, lim, num)
    x1, x2 = np.meshgrid(t, t)
    X = jnp.asarray(np.stack([x1.ravel(), x2.ravel()], -1), dtype=jnp.result_type(atoms.V))
    g = gates(spec, base, atoms, X)
    experts = jnp.einsum("ni,lio->nlo", X, atoms.V) + (X @ base.V0)[:, None, :]
    f = regression_function(spec, base, atoms, X)
    shape = (num, num)
    return GridView(x1, x2, np.asarray(g).reshape(*shape, -1), np.asarray(experts).reshape(*shape, *experts.shape[1:]),
                    np.asarray(f).reshape(*shape, -1))


# --------------------------------------------------------------------------------------------
# The identifiability condition of an activation


class DerivativeFamily(NamedTuple):
    """Singular values of the derivative family of an activation (``derivative_family``)."""

    activation: str
    singular_values: np.ndarray
    relative_smallest: float
    rank: int
    size: int

    @property
    def independent(self) -> bool:
        """Full numerical rank: the family is linearly independent."""
        return self.rank == self.size


def derivative_family(activation: str, *, scales=(0.5, 1.0), bias: float = 0.3, lim: float = 4.0,
                      num: int = 401, rtol: float = 1e-6) -> DerivativeFamily:
    """Is {sigma(eta x + b), x sigma'(eta x + b), x^2 sigma''(eta x + b) : eta in scales} linearly independent?

    These are the derivatives of order 0, 1 and 2 in eta of sigma(eta x + b): the terms of the
    Taylor expansion that the theory needs to be independent for a non-linear reparameterization
    to keep polynomial rates ("strong identifiability", MODEL.md section 5). Each function is
    evaluated on ``num`` points of [-lim, lim] (a column, scaled to unit norm) and the numerical
    rank of the matrix is counted with relative tolerance ``rtol``.

    A polynomial of degree < 2 (identity) or a piecewise linear activation (relu: sigma'' = 0
    almost everywhere) fails; tanh, sigmoid and gelu pass. At the defaults their smallest
    relative singular values are 2e-4, 4e-5 and 3e-4, and those of identity and relu are exactly
    0 (a zero column), so the verdict does not hinge on ``rtol`` (float32 round-off is ~1e-7).

    >>> derivative_family("tanh").independent, derivative_family("identity").independent
    (True, False)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}")
    scales = np.asarray(scales, float)
    if scales.ndim != 1 or len(scales) < 1 or len(np.unique(scales)) != len(scales):
        raise ValueError(f"scales must be distinct numbers, got {scales!r}")
    act = ACTIVATIONS[activation]
    d1 = jax.vmap(jax.grad(lambda u: act(u)))
    d2 = jax.vmap(jax.grad(jax.grad(lambda u: act(u))))
    x = jnp.linspace(-lim, lim, num, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    cols = []
    for eta in scales:
        u = eta * x + bias
        cols += [act(u), x * d1(u), x**2 * d2(u)]
    M = np.stack([np.asarray(c, float) for c in cols], -1)
    norms = np.linalg.norm(M, axis=0)
    M = M / np.where(norms > 0, norms, 1.0)
    s = np.linalg.svd(M, compute_uv=False)
    rel = s / s[0] if s[0] > 0 else np.zeros_like(s)
    return DerivativeFamily(activation, s, float(rel[-1]), int(np.sum(rel > rtol)), M.shape[1])


# --------------------------------------------------------------------------------------------
# How over-specified fits fill the Voronoi cells


def indexed_columns(df: pd.DataFrame, prefix: str) -> list[str]:
    """The table's per-atom columns ``<prefix>0``, ``<prefix>1``, ... in index order.

    >>> indexed_columns(pd.DataFrame(columns=["cell_10", "cell_size_0", "cell_2"]), "cell_")
    ['cell_2', 'cell_10']
    """
    cols = [c for c in df.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted(cols, key=lambda c: int(c[len(prefix):]))


def dead_atoms(df: pd.DataFrame, *, threshold: float = 1e-3) -> pd.Series:
    """Per row, the number of fitted atoms whose weight pi_i is below ``threshold``.

    Rows of fits with fewer atoms than the table's widest fit have NaN weights there; those
    slots are not counted.
    """
    w = df[indexed_columns(df, "weight_")].to_numpy(float)
    return pd.Series(np.sum(w < threshold, axis=1), index=df.index, name="dead_atoms")


def cell_patterns(df: pd.DataFrame) -> pd.Series:
    """Per row, the sizes of the true atoms' Voronoi cells as a string, e.g. ``"2+1"``.

    Atom j's cell holds the fitted atoms nearest to true atom j; ``"2+1"`` means two fitted atoms
    share the cell of true atom 0 and one sits in atom 1's cell. ``"0+..."`` marks a true atom no
    fitted atom is near.
    """
    sizes = df[indexed_columns(df, "cell_size_")].to_numpy()
    return pd.Series(["+".join(str(int(v)) for v in row if not np.isnan(v)) for row in sizes.astype(float)],
                     index=df.index, name="cells")


def value_valley(df: pd.DataFrame) -> pd.DataFrame:
    """One row per fitted atom: its weight pi_i and ||V_i||, with the row's identifiers.

    Vanilla LoRA's weight/value valley (MODEL.md section 5) shows as atoms with a small weight
    and a large ||V_i|| in the same cell as another atom.
    """
    ids = [c for c in ("variant", "truth", "estimator", "extra", "n", "replicate", "certified") if c in df]
    parts = []
    for w, v, c in zip(indexed_columns(df, "weight_"), indexed_columns(df, "value_norm_"), indexed_columns(df, "cell_")):
        part = df[ids].copy()
        part["atom"] = int(w.split("_")[1])
        part["weight"], part["value_norm"], part["cell"] = df[w].to_numpy(), df[v].to_numpy(), df[c].to_numpy()
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[out["weight"].notna()].reset_index(drop=True)
