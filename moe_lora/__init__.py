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

Every name is imported on first use (``moe_lora.LoRA`` imports ``moe_lora.attention``), so that
``import moe_lora`` and the ``moe-lora`` command start without loading JAX, pandas or
matplotlib. ``moe_lora.__version__`` is the installed version (``importlib.metadata``; the one
source is setup.cfg).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

#: Public name -> the module (relative to moe_lora) that defines it.
_NAMES = {
    "AttentionWeights": "attention",
    "LoRA": "attention",
    "MixtureRow": "attention",
    "attention": "attention",
    "attention_row_as_mixture": "attention",
    "BoundConfig": "bounds",
    "bound_curves": "bounds",
    "flat_edge": "bounds",
    "gate_fiber": "bounds",
    "le_cam_best_c": "bounds",
    "le_cam_lower_bound": "bounds",
    "split_witness": "bounds",
    "vanilla_flat_modulus": "bounds",
    "Config": "config",
    "ConfigError": "config",
    "load_config": "config",
    "with_values": "config",
    "Experiment": "experiment",
    "TruthLabel": "experiment",
    "FitConfig": "fit",
    "FitResult": "fit",
    "InitConfig": "fit",
    "Screen": "fit",
    "empirical_risk": "fit",
    "estimate": "fit",
    "fit_least_squares": "fit",
    "initial_params": "fit",
    "random_starts": "fit",
    "screened_fit": "fit",
    "split_starts": "fit",
    "split_truth": "fit",
    "truth_in": "fit",
    "ExperimentKind": "kinds",
    "experiment_from_dict": "kinds",
    "load_experiment": "kinds",
    "D_EXPONENTS": "losses",
    "Scores": "losses",
    "align_gate_shift": "losses",
    "l2_error": "losses",
    "lora_voronoi_loss": "losses",
    "score": "losses",
    "GATINGS": "model",
    "Atoms": "model",
    "Base": "model",
    "ModelSpec": "model",
    "default_base": "model",
    "gate_strength": "model",
    "gates": "model",
    "mixture_on_grid": "model",
    "mixture_weights": "model",
    "regression_function": "model",
    "sym": "model",
    "STOP_REASONS": "optimize",
    "Finisher": "optimize",
    "LevenbergMarquardt": "optimize",
    "OptaxFinisher": "optimize",
    "Stats": "optimize",
    "relative_gradient": "optimize",
    "ACTIVATIONS": "parameterization",
    "LoRAFactors": "parameterization",
    "Model": "parameterization",
    "Parameterization": "parameterization",
    "Shared": "parameterization",
    "SharedMaps": "parameterization",
    "SharedParams": "parameterization",
    "Vanilla": "parameterization",
    "atoms": "parameterization",
    "derivative_family": "parameterization",
    "factors": "parameterization",
    "init_params": "parameterization",
    "linear": "parameterization",
    "make_model": "parameterization",
    "nonlinear": "parameterization",
    "load_results": "runs",
    "run_estimator": "runs",
    "run_frame": "runs",
    "run_sweep": "runs",
    "run_variants": "runs",
    "Record": "simulate",
    "replicate_keys": "simulate",
    "simulate_replicate": "simulate",
    "simulate_replicates": "simulate",
    "Dataset": "truth",
    "Design": "truth",
    "Truth": "truth",
    "draw_truth": "truth",
    "make_truth": "truth",
    "merging_truth": "truth",
    "sample_dataset": "truth",
    "sample_inputs": "truth",
    "Exponents": "voronoi",
    "VoronoiLoss": "voronoi",
    "voronoi_cells": "voronoi",
    "voronoi_loss": "voronoi",
    "SlopeSettings": "slopes",
}
#: Public submodules, importable as attributes (``moe_lora.figures``) and in the API reference.
_MODULES = (
    "kinds",
    "config",
    "checks",
    "experiment",
    "table",
    "rates",
    "slopes",
    "figures",
    "palette",
    "runs",
    "bounds",
    "head",
    "head_study",
    "model",
    "attention",
    "parameterization",
    "truth",
    "voronoi",
    "losses",
    "optimize",
    "jacobian",
    "fit",
    "simulate",
    "verdicts",
)

__all__ = [*_MODULES, *_NAMES, "__version__"]


def __getattr__(name: str):
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("moe_lora")
        except metadata.PackageNotFoundError:  # a source tree never installed
            return "0+unknown"
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package's module type: importing a submodule binds it to the package's attribute of
    its name; where a public function has that name (``moe_lora.attention``, the function of
    ``moe_lora/attention.py``), the function keeps it, as it did when the package imported
    everything eagerly."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _NAMES.get(name) == name:
            return  # looked up through __getattr__: the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the names above, imported eagerly
    from . import figures as figures
    from . import rates as rates
    from . import runs as runs
    from . import slopes as slopes
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
    from .slopes import SlopeSettings as SlopeSettings
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
