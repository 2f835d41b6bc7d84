"""Lower-bound curves and exact flat sets (docs/bounds.md, docs/identifiability.md).

* ``config``: ``BoundConfig`` and the loss names;
* ``quadrature``: L2(mu) by tensor Gauss-Legendre quadrature;
* ``witnesses``: exact flat sets through the truth, built (gate fiber, shared-gate split) and
  searched for;
* ``problem``: what the curves and containment share (the loss, the split truth, a search's
  residual);
* ``containment``: a contained family's witnesses merged into vanilla's curves;
* ``curves``: the two-point curves M(eta), m(eps), Le Cam's bound, the weak triangle constant;
* ``figure``: the lower-bound figure.
"""

from .config import D_LOSS as D_LOSS
from .config import L2_FLOOR as L2_FLOOR
from .config import BoundConfig as BoundConfig
from .config import loss_exponents as loss_exponents
from .curves import bound_curves as bound_curves
from .curves import le_cam_best_c as le_cam_best_c
from .curves import le_cam_flat as le_cam_flat
from .curves import le_cam_lower_bound as le_cam_lower_bound
from .curves import modulus_from_witnesses as modulus_from_witnesses
from .curves import refine_targets as refine_targets
from .curves import solve_witnesses as solve_witnesses
from .curves import split_path_triangle as split_path_triangle
from .curves import triangle_ratios as triangle_ratios
from .curves import vanilla_flat_modulus as vanilla_flat_modulus
from .curves import with_path_triangle as with_path_triangle
from .curves import witness_path_triangle as witness_path_triangle
from .figure import figure_bound as figure_bound
from .figure import run_bound_figures as run_bound_figures
from .problem import cell_terms as cell_terms
from .problem import has_parameters as has_parameters
from .problem import interpolate_modulus as interpolate_modulus
from .problem import split_truth as split_truth
from .quadrature import Quadrature as Quadrature
from .quadrature import l2_distance as l2_distance
from .quadrature import quadrature as quadrature
from .witnesses import flat_edge as flat_edge
from .witnesses import flat_params as flat_params
from .witnesses import gate_fiber as gate_fiber
from .witnesses import setting_truth as setting_truth
from .witnesses import split_witness as split_witness
