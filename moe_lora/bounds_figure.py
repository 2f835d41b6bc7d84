"""The lower-bound figure; it lives in ``moe_lora.bounds.figure`` (this name is kept for
callers)."""

from .bounds.figure import figure_bound as figure_bound
from .bounds.figure import run_bound_figures as run_bound_figures
