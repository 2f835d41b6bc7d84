"""Settings of the lower-bound curves (what a ``[bound]`` config section holds) and loss names."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from ..losses import D_EXPONENTS
from ..model import FieldError
from ..voronoi import Exponents

#: The loss D (exponents 1 in singleton cells, 2 in multi-atom cells): ``losses.D_EXPONENTS``.
D_LOSS = D_EXPONENTS
L2_FLOOR = 1e-13
"""Smallest L2 distance we trust: below it, f_G - f* is round-off (measured: see ``quadrature``)."""

_LOSS_NAME = re.compile(r"^D(?:_(?P<r>[0-9]*\.?[0-9]+))?$")


def loss_exponents(name: str) -> Exponents:
    """Exponents of a loss name: ``"D"`` -> (1, 2), ``"D_r"`` -> (r, r) for r >= 1.

    >>> loss_exponents("D"), loss_exponents("D_2")
    (Exponents(singleton=1.0, multi=2.0), Exponents(singleton=2.0, multi=2.0))
    """
    match = _LOSS_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"Unknown loss {name!r}; expected 'D' or 'D_r' with a number r >= 1, e.g. 'D_2'"
        )
    if match["r"] is None:
        return D_EXPONENTS
    r = float(match["r"])
    if r < 1:
        raise ValueError(f"Loss {name!r} has r = {r:g}; expected r >= 1")
    return Exponents(r, r)


def _positive(name, value):
    if not (
        isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and value > 0
    ):
        raise FieldError(
            name, f"BoundConfig.{name} must be a positive finite number, got {value!r}"
        )


def _count(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise FieldError(name, f"BoundConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class BoundConfig:
    """Static settings of one set of lower-bound curves (what a ``[bound]`` config section holds).

    Args:
        etas: L2 radii eta > 0 at which M(eta) is reported.
        epsilons: loss targets eps > 0 at which m(eps) is solved (their witnesses also give M).
        losses: loss names, ``"D"`` or ``"D_r"`` (r >= 1).
        radius: the neighbourhood N(G*): every fitted atom (S_i, V_i), gauge-aligned, within this
            Euclidean distance of the true atom of its cell.
        kappa: if set, fitted atoms sharing a cell keep gates ||S_i - S_k|| >= kappa (excludes the
            exact flat set of over-specified vanilla); ``None``: no exclusion.
        split_starts, flat_starts, random_starts: starts per eps target (see ``starts``).
        start_scale: raw-parameter perturbation of the starts, times sqrt(eps).
        quadrature_order: Gauss-Legendre nodes per coordinate (d <= 3).
        n_sample: size of the fixed sample standing in for mu when quadrature does not apply.
        penalty: weight lambda of the constraint residual sqrt(lambda) (D - eps) / eps.
        barrier: weight of the neighbourhood (and kappa) residuals.
        cell_rounds: most solves per start, each with the cells of the previous solve's end point.
        max_iter, gtol: Levenberg-Marquardt cap and relative-gradient tolerance per solve.
        constraint_tol: a witness is on target when |D - eps| / eps <= constraint_tol.
        neighbourhood_tol: largest distance outside N(G*) (and kappa shortfall) still counted
        inside. agree_rtol: starts within this relative distance of the best value count as reaching
        it. triangle_samples: random triples used to measure the weak triangle constant.
        canonicalize: move each LM trial point along the exact symmetries (``canonicalize``).
        refine: rounds of adaptive targets (``curves.refine_targets``): each bisects, in log eps,
            the flat set's edge and the m-curve's largest jump.
        flat_edge_starts: starts of the flat-set search (``witnesses.flat_edge``) per true atom
            when L > L*; its exact witnesses (the largest D on each cell's flat set inside the
            radius) join the curves as constructed witnesses (``containment.with_flat_set``).
            0: not searched. 24 starts miss the thin flat band of the headline sigmoid truth at
            d = p = 2 (D about 5e-4) that 96 find (``simulations/analysis/bounds_flat.py``).
    """

    etas: tuple[float, ...] = tuple(float(x) for x in np.logspace(-9, -1, 12))
    epsilons: tuple[float, ...] = tuple(float(x) for x in np.logspace(-6, 0.5, 12))
    losses: tuple[str, ...] = ("D", "D_2")
    radius: float = 0.5
    kappa: float | None = None
    split_starts: int = 1
    flat_starts: int = 2
    random_starts: int = 1
    start_scale: float = 0.5
    quadrature_order: int = 12
    n_sample: int = 20000
    penalty: float = 1.0
    barrier: float = 1e6
    cell_rounds: int = 4
    max_iter: int = 1000
    gtol: float = 1e-10
    constraint_tol: float = 1e-2
    neighbourhood_tol: float = 1e-3
    agree_rtol: float = 0.05
    triangle_samples: int = 4096
    canonicalize: bool = True
    refine: int = 2
    flat_edge_starts: int = 96

    def __post_init__(self):
        for name in ("etas", "epsilons", "losses"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) == 0:
                raise FieldError(
                    name, f"BoundConfig.{name} must be a non-empty sequence, got {value!r}"
                )
            object.__setattr__(self, name, tuple(value))
        for name in ("etas", "epsilons"):
            for x in getattr(self, name):
                if not (
                    isinstance(x, (int, float, np.integer, np.floating))
                    and math.isfinite(x)
                    and x > 0
                ):
                    raise FieldError(
                        name, f"BoundConfig.{name} must hold positive finite numbers, got {x!r}"
                    )
        for loss in self.losses:
            try:
                loss_exponents(loss)
            except ValueError as e:
                raise FieldError("losses", str(e)) from None
        if not (
            isinstance(self.radius, (int, float)) and self.radius > 0 and math.isfinite(self.radius)
        ):
            raise FieldError(
                "radius",
                f"Empty neighbourhood: radius must be positive and finite, got {self.radius!r}",
            )
        if self.kappa is not None:
            _positive("kappa", self.kappa)
            if self.kappa >= 2 * self.radius:
                raise FieldError(
                    "kappa",
                    f"Empty neighbourhood: kappa = {self.kappa} >= 2 * radius = {2 * self.radius}; "
                    "two atoms of one "
                    "cell cannot both lie within radius of its true atom with gates kappa apart",
                )
        for name in ("split_starts", "flat_starts", "random_starts"):
            _count(name, getattr(self, name), 0)
        if self.split_starts + self.flat_starts + self.random_starts < 1:
            raise FieldError(
                "split_starts",
                "BoundConfig needs at least one start (split_starts + flat_starts + random_starts "
                ">= 1)",
            )
        for name in ("quadrature_order", "cell_rounds", "max_iter"):
            _count(name, getattr(self, name), 1)
        _count("n_sample", self.n_sample, 100)
        _count("triangle_samples", self.triangle_samples, 1)
        _count("refine", self.refine, 0)
        _count("flat_edge_starts", self.flat_edge_starts, 0)
        for name in (
            "start_scale",
            "penalty",
            "barrier",
            "gtol",
            "constraint_tol",
            "neighbourhood_tol",
            "agree_rtol",
        ):
            _positive(name, getattr(self, name))

    @property
    def n_starts(self) -> int:
        """Starts per target, the rescaled second-pass start included."""
        return self.split_starts + self.flat_starts + self.random_starts + 1
