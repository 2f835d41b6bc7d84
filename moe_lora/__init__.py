"""moe_lora: LoRA seen as a softmax-gated mixture of experts, and the sample complexity of its
estimators.

The model is stated in docs/model.md (a reconstruction of RepLoRA, arXiv 2502.03044, from its
abstract, Figure 1 and sibling papers of the same group, not the paper's equations word for word).
The library never changes global JAX configuration; enable float64 in your script when rates are
measured: ``jax.config.update("jax_enable_x64", True)``.

Public API: the names below, and the modules ``kinds`` (the experiment-kind contract),
``config``, ``checks``, ``experiment``, ``table``, ``rates``, ``figures``, ``palette``, ``runs``
(with ``runs.store``, ``runs.local``, ``runs.ray``) and the
numerical core (``model``, ``attention``, ``parameterization``, ``truth``, ``voronoi``,
``losses``, ``optimize``, ``fit``, ``simulate``). Names that start with ``_`` are internal.
"""

from . import figures as figures
from . import rates as rates
from . import runs as runs
from . import table as table
from .attention import AttentionWeights as AttentionWeights
from .attention import LoRA as LoRA
from .attention import MixtureRow as MixtureRow
from .attention import attention as attention
from .attention import attention_row_as_mixture as attention_row_as_mixture
from .bounds import BoundConfig as BoundConfig
from .bounds import bound_curves as bound_curves
from .bounds import flat_edge as flat_edge
from .bounds import gate_fiber as gate_fiber
from .bounds import le_cam_best_c as le_cam_best_c
from .bounds import le_cam_lower_bound as le_cam_lower_bound
from .bounds import split_witness as split_witness
from .bounds import vanilla_flat_modulus as vanilla_flat_modulus
from .config import Config as Config
from .config import ConfigError as ConfigError
from .config import load_config as load_config
from .config import with_values as with_values
from .experiment import Experiment as Experiment
from .experiment import TruthLabel as TruthLabel
from .fit import FitConfig as FitConfig
from .fit import FitResult as FitResult
from .fit import InitConfig as InitConfig
from .fit import Screen as Screen
from .fit import empirical_risk as empirical_risk
from .fit import estimate as estimate
from .fit import fit_least_squares as fit_least_squares
from .fit import initial_params as initial_params
from .fit import random_starts as random_starts
from .fit import screened_fit as screened_fit
from .fit import split_starts as split_starts
from .fit import split_truth as split_truth
from .fit import truth_in as truth_in
from .kinds import ExperimentKind as ExperimentKind
from .kinds import experiment_from_dict as experiment_from_dict
from .kinds import load_experiment as load_experiment
from .losses import D_EXPONENTS as D_EXPONENTS
from .losses import Scores as Scores
from .losses import align_gate_shift as align_gate_shift
from .losses import l2_error as l2_error
from .losses import lora_voronoi_loss as lora_voronoi_loss
from .losses import score as score
from .model import GATINGS as GATINGS
from .model import Atoms as Atoms
from .model import Base as Base
from .model import ModelSpec as ModelSpec
from .model import default_base as default_base
from .model import gate_strength as gate_strength
from .model import gates as gates
from .model import mixture_on_grid as mixture_on_grid
from .model import mixture_weights as mixture_weights
from .model import regression_function as regression_function
from .model import sym as sym
from .optimize import STOP_REASONS as STOP_REASONS
from .optimize import Finisher as Finisher
from .optimize import LevenbergMarquardt as LevenbergMarquardt
from .optimize import OptaxFinisher as OptaxFinisher
from .optimize import Stats as Stats
from .optimize import relative_gradient as relative_gradient
from .parameterization import ACTIVATIONS as ACTIVATIONS
from .parameterization import LoRAFactors as LoRAFactors
from .parameterization import Model as Model
from .parameterization import Parameterization as Parameterization
from .parameterization import Shared as Shared
from .parameterization import SharedMaps as SharedMaps
from .parameterization import SharedParams as SharedParams
from .parameterization import Vanilla as Vanilla
from .parameterization import atoms as atoms
from .parameterization import derivative_family as derivative_family
from .parameterization import factors as factors
from .parameterization import init_params as init_params
from .parameterization import linear as linear
from .parameterization import make_model as make_model
from .parameterization import nonlinear as nonlinear
from .runs import load_results as load_results
from .runs import run_estimator as run_estimator
from .runs import run_frame as run_frame
from .runs import run_sweep as run_sweep
from .runs import run_variants as run_variants
from .simulate import Record as Record
from .simulate import replicate_keys as replicate_keys
from .simulate import simulate_replicate as simulate_replicate
from .simulate import simulate_replicates as simulate_replicates
from .truth import Dataset as Dataset
from .truth import Design as Design
from .truth import Truth as Truth
from .truth import draw_truth as draw_truth
from .truth import make_truth as make_truth
from .truth import merging_truth as merging_truth
from .truth import sample_dataset as sample_dataset
from .truth import sample_inputs as sample_inputs
from .voronoi import Exponents as Exponents
from .voronoi import VoronoiLoss as VoronoiLoss
from .voronoi import voronoi_cells as voronoi_cells
from .voronoi import voronoi_loss as voronoi_loss

__version__ = "0.1.0"
